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

/// A limit judges the policy, not the machine: with other threads burning every core, honest
/// policies under a tight deadline never fault (one of them works a few hundred microseconds of
/// a 4 ms deadline, so a wall-clock deadline faults it whenever the scheduler parks its thread
/// for a few ms), while a policy that really loops still does. (The work is counted in loop
/// iterations: a policy's clocks read the message's time, so it cannot spin on a clock.)
#[test]
fn a_busy_machine_faults_no_honest_policy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use twinguard::Verdict;

    let rt = twinguard_tests::runtime(
        "[defaults.limits]\ndeadline-ms = 4\nfuel = 1_000_000_000_000\n\
         [[policy]]\nname = \"schema\"\npath = \"@schema-guard\"\n[policy.config]\n\
         required = \"/seq:integer\"\n\
         [[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\nremove = \"/owner\"\n\
         [[policy]]\nname = \"read\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\n\
         fields = \"/seq,/t,/owner/name\"\n\
         [[policy]]\nname = \"work\"\npath = \"@hostile\"\n[policy.config]\nmode = \"burn\"\n\
         bytes = 300_000\n\
         [[policy]]\nname = \"loop\"\npath = \"@hostile\"\n[policy.config]\nmode = \"loop\"\n\
         [[route]]\nfilter = \"loop/#\"\nchain = [\"loop\"]\n\
         [[route]]\nfilter = \"#\"\nchain = [\"schema\", \"pii\", \"read\", \"work\"]\n",
    );
    let stop = AtomicBool::new(false);
    let burners = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let faults = std::thread::scope(|s| {
        for _ in 0..burners {
            s.spawn(|| {
                let mut x = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            });
        }
        let evaluators: Vec<_> = (0..2)
            .map(|t| {
                let rt = &rt;
                s.spawn(move || {
                    let mut faults = Vec::new();
                    for seq in 0..400 {
                        let payload = serde_json::json!({
                            "seq": seq, "t": 21.5, "owner": {"name": "Ada"}
                        });
                        let out = rt.evaluate(&twinguard::Message::new(
                            format!("d{t}"),
                            format!("plant/d{t}/telemetry"),
                            twinguard::ContentType::Json,
                            serde_json::to_vec(&payload).unwrap(),
                        ));
                        faults.extend(
                            out.trace
                                .iter()
                                .filter(|s| matches!(s.verdict, Verdict::Fault(_)))
                                .map(|s| format!("{} {:?}", s.policy, s.verdict)),
                        );
                    }
                    faults
                })
            })
            .collect();
        let faults: Vec<String> = evaluators
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        // Still under load: the looping policy is stopped by its deadline.
        let out = rt.evaluate(&twinguard::Message::new(
            "d9",
            "loop/x",
            twinguard::ContentType::Json,
            b"{}".to_vec(),
        ));
        assert!(
            matches!(
                out.trace[0].verdict,
                Verdict::Fault(twinguard::Fault::Deadline(4))
            ),
            "{out:?}"
        );
        stop.store(true, Ordering::Relaxed);
        faults
    });
    assert!(
        faults.is_empty(),
        "{} faults: {:?}",
        faults.len(),
        &faults[..faults.len().min(5)]
    );
}
