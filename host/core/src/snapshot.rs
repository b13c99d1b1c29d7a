//! Pre-initialised components for fresh isolation.
//!
//! A `fresh` policy gets a new instance for every message, so that nothing one message leaves
//! in its memory reaches the next. Running `init` in each of them cost more than the
//! evaluation itself (the configuration crosses the boundary, the policy parses it, the host
//! lifts and compares the manifest). `init` depends on nothing but the configuration: during
//! it, state reads find nothing, clocks read zero and random sources are seeded from the
//! module's digest. So the memory it leaves is the same every time, and can be taken once.
//!
//! At load, wasmtime's pre-initializer (`wasmtime-wizer`) instruments the component with
//! exports that read its memories and globals; the host instantiates that with its own linker
//! and limits, runs `init` with the policy's configuration, and the pre-initializer rewrites
//! the component with that memory as its data. Instances of the rewritten component start
//! where `init` ended; the pooling allocator maps their memory copy-on-write from one image.
//!
//! Where a component cannot be taken this way (a shape the pre-initializer does not support,
//! WASI resources held across `init`, a snapshot too large), the policy runs `init` in every
//! instance as before: a snapshot is a speed-up, never a condition.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Once;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{Instance, WasmList};
use wasmtime::{AsContextMut, Store};
use wasmtime_wizer::{ComponentContext, ComponentInstanceState, Wizer};

/// The largest snapshot kept: beyond it (an `init` that filled its memory), running `init` per
/// instance is cheaper than holding and mapping the image.
pub(crate) const MAX_SNAPSHOT_BYTES: usize = 16 << 20;

/// A component instrumented for a snapshot, and what rewriting it needs.
pub(crate) struct Instrumented<'a> {
    wizer: Wizer,
    cx: ComponentContext<'a>,
    /// The component with the pre-initializer's accessor exports: instantiate it, run `init`,
    /// then [`capture`](Self::capture).
    pub bytes: Vec<u8>,
}

impl<'a> Instrumented<'a> {
    /// Instruments `component`; an error names why it cannot be snapshotted.
    pub(crate) fn new(component: &'a [u8]) -> Result<Self, String> {
        let mut wizer = Wizer::new();
        // `init` is called by the host (it takes the configuration), not by the
        // pre-initializer; no top-level export has this name, so none is removed.
        wizer
            .init_func("twinguard-host-runs-init")
            .keep_init_func(true);
        // The pre-initializer validates the module first, but asserts on shapes it does not
        // expect: a panic is a refusal here, never the host's end.
        let (cx, bytes) = caught(|| wizer.instrument_component(component))
            .map_err(|why| format!("the pre-initializer panicked on this component: {why}"))?
            .map_err(|e| format!("{e:#}"))?;
        Ok(Self { wizer, cx, bytes })
    }

    /// The component rewritten with the memories and globals of `instance`, an instance of
    /// [`bytes`](Self::bytes) that has run `init`. `arm` sets the store's limits (fuel,
    /// deadline) before each read: a component may have hundreds of globals, and their reads
    /// together must not count against one call's deadline.
    pub(crate) fn capture<T: Send + 'static>(
        self,
        store: &mut Store<T>,
        instance: Instance,
        arm: impl FnMut(&mut Store<T>) + Send,
    ) -> Result<Vec<u8>, String> {
        let mut access = Access {
            store,
            instance,
            arm: Box::new(arm),
            failed: None,
        };
        let Self { wizer, cx, .. } = self;
        let rewritten = caught(|| ready(wizer.snapshot_component(&cx, &mut access)));
        // A failed read is answered with nothing, on which the pre-initializer may then
        // assert: the read's failure is the reason to give.
        if let Some(why) = access.failed {
            return Err(why);
        }
        rewritten
            .map_err(|why| format!("the pre-initializer panicked: {why}"))?
            .ok_or("the pre-initializer waited on something (it should not)")?
            .map_err(|e| format!("{e:#}"))
    }
}

thread_local! {
    /// Set while [`caught`] runs on this thread: its panics are not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process's panic hook: silent for a thread inside [`caught`], the hook that was
/// there before for every other panic. Installed once, on the first snapshot taken; an
/// embedder's own hook, set before, still sees every panic but these.
fn quiet_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !QUIET.try_with(Cell::get).unwrap_or(false) {
            previous(info);
        }
    }));
}

/// The characters of a caught panic's message kept for the log.
const PANIC_SHOWN: usize = 256;

/// Runs `f`, a panic caught as an error carrying its message. The pre-initializer asserts on
/// component shapes it does not expect: that is a policy loading without a snapshot (said in
/// the log, with the reason), not a backtrace on the operator's terminal.
fn caught<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(quiet_hook);
    let was = QUIET.replace(true);
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.set(was);
    result.map_err(|payload| {
        let text = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        // It goes into a log line and may quote the component: one line, and short.
        crate::text::bounded(text.unwrap_or("(no message)"), PANIC_SHOWN).into_owned()
    })
}

/// Drives a future that never waits: the accessors below answer at once.
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// What sets a store's limits before each read (see [`Instrumented::capture`]).
type Arm<'s, T> = dyn FnMut(&mut Store<T>) + Send + 's;

/// Reads an instrumented instance's memories and globals through its accessor exports,
/// synchronously, under the store's own limits. The trait has no error channel: a failure is
/// recorded and answered with a zero, and [`Instrumented::capture`] discards the result.
struct Access<'s, T: 'static> {
    store: &'s mut Store<T>,
    instance: Instance,
    arm: Box<Arm<'s, T>>,
    failed: Option<String>,
}

impl<T: Send + 'static> Access<'_, T> {
    fn call<R, O: Default>(
        &mut self,
        interface: &str,
        func: &str,
        take: impl FnOnce(&Store<T>, R) -> O,
    ) -> O
    where
        R: wasmtime::component::Lift + wasmtime::component::ComponentType + Send + Sync + 'static,
    {
        if self.failed.is_some() {
            return O::default();
        }
        let result = (|| -> Result<O, String> {
            let missing = || format!("no accessor {interface}#{func}");
            let (_, outer) = self
                .instance
                .get_export(self.store.as_context_mut(), None, interface)
                .ok_or_else(missing)?;
            let (_, index) = self
                .instance
                .get_export(self.store.as_context_mut(), Some(&outer), func)
                .ok_or_else(missing)?;
            let typed = self
                .instance
                .get_typed_func::<(), (R,)>(self.store.as_context_mut(), index)
                .map_err(|e| format!("{e:#}"))?;
            (self.arm)(self.store);
            let (value,) = typed
                .call(self.store.as_context_mut(), ())
                .map_err(|e| format!("{e:#}"))?;
            Ok(take(self.store, value))
        })();
        result.unwrap_or_else(|why| {
            self.failed = Some(format!("reading the initialised instance: {why}"));
            O::default()
        })
    }
}

impl<T: Send + 'static> ComponentInstanceState for Access<'_, T> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let mut contents = Some(contents);
        self.call(instance, func, |store, list: WasmList<u8>| {
            if let Some(f) = contents.take() {
                f(list.as_le_slice(store));
            }
        });
        // On failure the callback never ran: hand it nothing, the result is discarded.
        if let Some(f) = contents {
            f(&[]);
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, v: i32| v)
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, v: i64| v)
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, v: f32| v.to_bits())
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, v: f64| v.to_bits())
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;

    use super::*;

    #[test]
    fn a_caught_panic_is_an_error_and_not_printed_and_other_panics_still_are() {
        // A hook that notes which threads it saw, under ours: it stands for the default hook
        // (the one that prints) or an embedder's.
        let seen: Arc<Mutex<Vec<ThreadId>>> = Arc::default();
        let noted = Arc::clone(&seen);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            noted.lock().unwrap().push(std::thread::current().id());
            previous(info);
        }));
        quiet_hook();
        let me = std::thread::current().id();
        let count = || seen.lock().unwrap().iter().filter(|&&t| t == me).count();

        let why = caught(|| -> u8 { panic!("assertion failed: shape") }).unwrap_err();
        assert_eq!(why, "assertion failed: shape");
        let why = caught(|| -> u8 { panic!("{} globals", 3) }).unwrap_err();
        assert_eq!(why, "3 globals");
        assert_eq!(caught(|| 7).unwrap(), 7);
        let why = caught(|| -> u8 { panic!("{}\nforged", "x".repeat(1000)) }).unwrap_err();
        assert!(why.ends_with("… (1007 bytes)") && why.len() < 300, "{why}");
        assert_eq!(count(), 0, "a caught panic reached the hook below");

        assert!(std::panic::catch_unwind(|| panic!("elsewhere")).is_err());
        assert_eq!(count(), 1, "another panic did not reach the hook below");
    }
}
