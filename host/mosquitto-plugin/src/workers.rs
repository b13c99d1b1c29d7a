//! Judging off the broker's thread (`plugin_opt_workers N`).
//!
//! Mosquitto 2.0 runs every plugin callback on its one thread, so a message judged inline
//! costs the whole broker the time of its policy chain. With workers, the broker thread only
//! copies the PUBLISH into a queue and denies the original; a worker thread judges it, and
//! the broker thread publishes the judged copy (`mosquitto_broker_publish_copy`) on its next
//! loop tick. Nothing is routed before it is judged, and the evaluation runs on the host's
//! other cores.
//!
//! - **Order per device**: a device always goes to the same worker, whose results are
//!   published in the order its messages arrived.
//! - **Waking the broker**: Mosquitto's loop sleeps up to 100 ms in `epoll_wait` and ticks
//!   plugins only when it wakes. The tick is the last thing a loop turn does before it sleeps,
//!   and a message callback means it is awake; a worker that has a result while the loop may
//!   be asleep sends the broker's thread a real-time signal whose handler does nothing, and
//!   `epoll_wait` returns early. A busy loop is not signalled: it publishes results from its
//!   message callbacks and its tick. A signal that lands just before `epoll_wait` is lost
//!   (Mosquitto unblocks signals only for the call), so a worker with results still unpublished
//!   after 1 ms rings again.
//! - **Backpressure**: each worker's queue is bounded; when it is full the broker thread
//!   waits for room (it never judges inline meanwhile, which would reorder the device).
//! - **Shutdown**: cleanup stops the intake, lets the workers judge everything queued, and
//!   commits each judged but unpublished message to the quarantine store (the broker's loop
//!   has ended, so it cannot be published): an operator can release it.
//! - **Not for MQTT 5 publishers**: a denied MQTT 5 QoS 1/2 PUBLISH gets reason code 135
//!   (not authorized) in its PUBACK, so MQTT 5 clients stay judged inline.

use std::cell::Cell;
use std::ffi::c_int;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use twinguard::judge::{Judge, Judgement};
use twinguard::{Message, Outcome};

/// Queued messages per worker before the broker thread waits for room.
const QUEUE: usize = 1024;

/// How long a worker waits for its results to be published before it signals again.
const RERING: Duration = Duration::from_millis(1);

/// A PUBLISH handed to a worker.
pub struct Job {
    /// The message as the policies see it.
    pub message: Message,
    /// The PUBLISH's QoS, kept for the judged copy.
    pub qos: u8,
    /// The PUBLISH's retain flag, kept for the judged copy.
    pub retain: bool,
}

/// A judged message, to publish (or not) on the broker's thread.
pub struct Done {
    /// The message as it arrived.
    pub job: Job,
    /// What the judge flow decided (a quarantined message is already in the store), or why
    /// it could not judge (a panic: the message is denied, fail closed).
    pub judgement: Result<Judgement, String>,
}

/// The worker threads, their queues and the doorbell.
pub struct Workers {
    inputs: Vec<SyncSender<Job>>,
    results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    doorbell: Arc<Doorbell>,
    /// Only the broker's thread submits.
    waits: Cell<u64>,
}

impl Workers {
    /// Starts `count` workers judging with `judge`. Call it on the broker's thread: that is
    /// the thread the doorbell wakes.
    pub fn start(count: usize, judge: &Judge) -> Result<Self, String> {
        let doorbell = Arc::new(Doorbell::install());
        let (done_tx, results) = mpsc::channel();
        let mut inputs = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
            let (judge, done_tx, doorbell) = (judge.clone(), done_tx.clone(), doorbell.clone());
            let thread = std::thread::Builder::new()
                .name(format!("twinguard-judge-{i}"))
                .spawn(move || work(&rx, &judge, &done_tx, &doorbell))
                .map_err(|e| format!("cannot start worker {i}: {e}"))?;
            inputs.push(tx);
            threads.push(thread);
        }
        Ok(Self {
            inputs,
            results,
            threads,
            doorbell,
            waits: Cell::new(0),
        })
    }

    /// How the broker's loop is woken: the signal's number, or `None` when no free real-time
    /// signal was found (results then wait for the loop's own 100 ms wake-up).
    pub fn wake_signal(&self) -> Option<c_int> {
        self.doorbell.signal
    }

    /// Hands `job` to its device's worker, waiting for room when that queue is full. Gives
    /// the job back when the worker is gone (it panicked), for the caller to judge inline
    /// (boxed: the rare path should not widen every `Result`).
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        job.message.device_id.hash(&mut hasher);
        // The modulo keeps the value below the worker count, so it fits a usize.
        #[allow(clippy::cast_possible_truncation)]
        let shard = (hasher.finish() % self.inputs.len() as u64) as usize;
        let input = &self.inputs[shard];
        match input.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                self.waits.set(self.waits.get() + 1);
                input.send(job).map_err(|e| Box::new(e.0))
            }
            Err(TrySendError::Disconnected(job)) => Err(Box::new(job)),
        }
    }

    /// How many times the broker thread found a queue full and waited.
    pub fn waits(&self) -> u64 {
        self.waits.get()
    }

    /// The broker's loop is in a message callback, so awake: no signal is needed until its
    /// next tick.
    pub fn awake(&self) {
        self.doorbell.asleep.store(false, Ordering::Relaxed);
    }

    /// The broker's loop is in its tick, the last step before it may sleep: results from now
    /// on must wake it. Call [`ready`](Self::ready) after this.
    pub fn may_sleep(&self) {
        self.doorbell.asleep.store(true, Ordering::SeqCst);
    }

    /// The results ready now, in the order each worker produced them. Call it on the
    /// broker's thread.
    pub fn ready(&self) -> impl Iterator<Item = Done> + '_ {
        self.results.try_iter().inspect(|_| {
            self.doorbell.outstanding.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Stops the intake, waits for the workers to judge what is queued, and returns every
    /// result not yet taken by [`ready`](Self::ready).
    pub fn stop(self) -> Vec<Done> {
        drop(self.inputs);
        for t in self.threads {
            let _ = t.join();
        }
        self.results.try_iter().collect()
    }
}

/// One worker: judges its queue in order until the queue closes, and signals the broker's
/// thread again while its results wait unpublished.
fn work(rx: &Receiver<Job>, judge: &Judge, done_tx: &Sender<Done>, doorbell: &Doorbell) {
    loop {
        let patience = if doorbell.outstanding.load(Ordering::Acquire) > 0 {
            RERING
        } else {
            Duration::from_secs(3600)
        };
        match rx.recv_timeout(patience) {
            Ok(job) => {
                let judgement = judge_fail_closed(judge, &job.message);
                doorbell.outstanding.fetch_add(1, Ordering::AcqRel);
                if done_tx.send(Done { job, judgement }).is_err() {
                    return;
                }
                doorbell.ring_if_asleep();
            }
            Err(RecvTimeoutError::Timeout) => {
                if doorbell.outstanding.load(Ordering::Acquire) > 0 {
                    doorbell.ring();
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A panic must not end the worker (its queue would be lost with it): it denies the message,
/// as a panic in the inline callback does.
fn judge_fail_closed(judge: &Judge, message: &Message) -> Result<Judgement, String> {
    catch_unwind(AssertUnwindSafe(|| {
        judge.judge(message, Some(&message.topic))
    }))
    .map_err(|_| {
        format!(
            "panic while judging a message from {:?} on {:?}: denied (fail closed); see the \
             broker's stderr",
            message.device_id, message.topic
        )
    })
}

impl Done {
    /// The outcome to store for a message judged deliverable but never published (`why`: the
    /// broker stopped first, or refused the publish); `None` for one held back or not judged.
    /// The payload is the one that would have been published (redacted where a policy
    /// redacted), so a release delivers what the policies allowed.
    pub fn undelivered(&self, why: &str) -> Option<Outcome> {
        let judgement = self.judgement.as_ref().ok()?;
        let payload = judgement.forward()?;
        let mut outcome = Outcome::held(
            &self.job.message,
            format!("judged deliverable, but {why}"),
            judgement.outcome.generation,
        );
        outcome.payload = payload.clone();
        outcome.redacted = judgement.outcome.redacted;
        Some(outcome)
    }
}

/// Wakes the broker's thread out of `epoll_wait` with a signal whose handler does nothing.
struct Doorbell {
    /// Set by the tick, cleared by message callbacks and by the worker that rings.
    asleep: AtomicBool,
    /// Results sent and not yet taken by the broker's thread.
    outstanding: AtomicUsize,
    pid: libc::pid_t,
    tid: libc::pid_t,
    signal: Option<c_int>,
}

extern "C" fn wake(_signal: c_int) {}

impl Doorbell {
    /// Takes the first real-time signal (above those glibc and common runtimes use) that
    /// still has its default disposition, and gives it an empty handler. `SA_RESTART` keeps
    /// the broker's other system calls from seeing `EINTR`; `epoll_wait` is never restarted,
    /// which is the point.
    fn install() -> Self {
        // SAFETY: plain system calls on this process and thread.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        let mut signal = None;
        for s in (libc::SIGRTMIN() + 4)..=libc::SIGRTMAX() {
            // SAFETY: zeroed sigaction structs are valid; `s` is a real-time signal number.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(s, std::ptr::null(), &mut old) != 0
                    || old.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = wake as extern "C" fn(c_int) as libc::sighandler_t;
                new.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut new.sa_mask);
                if libc::sigaction(s, &new, std::ptr::null_mut()) == 0 {
                    signal = Some(s);
                    break;
                }
            }
        }
        Self {
            // Mosquitto's first loop turn has not ticked yet, and may be asleep.
            asleep: AtomicBool::new(true),
            outstanding: AtomicUsize::new(0),
            pid,
            tid,
            signal,
        }
    }

    /// Rings when the loop has ticked since it last ran a message callback. The swap is a
    /// full barrier: the result sent before it is visible to a tick that set `asleep` after.
    fn ring_if_asleep(&self) {
        if self.asleep.swap(false, Ordering::SeqCst) {
            self.ring();
        }
    }

    fn ring(&self) {
        if let Some(signal) = self.signal {
            // SAFETY: tgkill to the broker's thread with a signal whose handler is ours and
            // does nothing; a thread that has exited makes it fail with ESRCH, harmlessly.
            unsafe { libc::syscall(libc::SYS_tgkill, self.pid, self.tid, signal) };
        }
    }
}
