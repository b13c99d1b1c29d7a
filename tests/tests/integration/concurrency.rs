//! Many threads evaluating at once, and the async entry point.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use twinguard::{Action, ContentType, Message};
use twinguard_tests::{hostile, json, runtime, substitute};

#[test]
fn many_threads_get_one_correct_outcome_each() {
    let rt = runtime(&substitute(
        "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\nremove = \"/secret\"\n\
         [[policy]]\nname = \"count\"\npath = \"@hostile\"\n[policy.config]\nmode = \"state\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pii\", \"count\"]\n",
    ));
    const THREADS: usize = 8;
    const PER_THREAD: usize = 200;
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let rt = rt.clone();
            let done = &done;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let mut m = json(&json!({"secret": i, "i": i}));
                    // One device per thread, so its state count is exact.
                    m.device_id = format!("dev-{t}");
                    let out = rt.evaluate(&m);
                    assert_eq!(out.action, Action::Alert);
                    let v: serde_json::Value = serde_json::from_slice(&out.payload).unwrap();
                    assert_eq!(
                        v,
                        json!({"i": i}),
                        "each thread sees its own message redacted"
                    );
                    assert_eq!(out.alerts[0].detail, (i + 1).to_string());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(done.load(Ordering::Relaxed), THREADS * PER_THREAD);
    assert!(rt.policies().iter().all(|p| p.faults == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_async_runs_off_the_executor() {
    let rt = runtime(&hostile("echo", ""));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move {
                let m = Message::new(format!("d{i}"), "t", ContentType::Json, b"{}".to_vec());
                rt.evaluate_async(m).await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.unwrap();
        assert!(
            out.alerts[0].detail.contains(&format!("device=d{i} ")),
            "{}",
            out.alerts[0].detail
        );
    }
}
