//! The record `evaluate` receives, lowered without a guest allocation for an empty list.
//!
//! The canonical ABI lowers every `list`, even an empty one, by calling the guest's
//! `cabi_realloc` for its bytes: a call into the guest, with wasmtime's entry and exit, for a
//! zero-byte allocation. Most policies declare no `keep-last` values, and many no fields, so
//! two such calls were a sixth of allow-all's instructions per message. An empty list here is
//! lowered as the pointer the guest's allocator answers for zero bytes (its alignment, in the
//! Rust and C bindings) and length 0, without the call: the guest reads no byte of it, and
//! frees nothing for it. A list with elements is lowered by wasmtime as before.
//!
//! [`Call`] mirrors the WIT `message` record field for field; wasmtime type-checks it against
//! the component's own `evaluate` before the first call ([`Pre::instantiate`]), so a mismatch
//! is a load error, never a bad lowering.

use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{
    ComponentExportIndex, ComponentType, Func, Instance, InstancePre, Lower, TypedFunc,
};
use wasmtime::{AsContextMut, Store, ValRaw};

use crate::policy::{bindings, wit, HostState};

/// A list that does not call the guest's allocator when it is empty (see the module's doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Lean<T>(pub Vec<T>);

impl<T> Deref for Lean<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T> DerefMut for Lean<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

// SAFETY: the same representation and type check as wasmtime's own `[T]`, which this defers to.
#[allow(unsafe_code)]
unsafe impl<T: ComponentType> ComponentType for Lean<T> {
    type Lower = <[T] as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <[T] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[T] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: an empty list is the pair (aligned pointer, 0), which the canonical ABI's lifting
// accepts for any pointer aligned to the element and within memory; the first page always is.
// Every other case is wasmtime's own lowering of `[T]`.
#[allow(unsafe_code)]
unsafe impl<T: Lower> Lower for Lean<T> {
    fn linear_lower_to_flat<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        if self.0.is_empty() {
            // Pointers are written as 64-bit values whatever the memory's width, as wasmtime does.
            dst.write([ValRaw::i64(i64::from(T::ALIGN32)), ValRaw::i64(0)]);
            return Ok(());
        }
        self.0.as_slice().linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        // Only reached if the record were passed through memory; it is passed flat.
        self.0.as_slice().linear_lower_to_memory(cx, ty, offset)
    }
}

/// The declared fields as a call carries them.
pub(crate) type Fields = Result<Lean<Option<wit::Value>>, wit::FieldError>;

/// The WIT `message` record, kept by an instance between calls so its strings and lists keep
/// their buffers (see `Instance::call`).
#[derive(Debug, ComponentType, Lower)]
#[component(record)]
pub(crate) struct Call {
    #[component(name = "device-id")]
    pub device_id: Option<String>,
    #[component(name = "topic")]
    pub topic: Option<String>,
    #[component(name = "content-type")]
    pub content_type: wit::ContentType,
    #[component(name = "payload-len")]
    pub payload_len: u32,
    #[component(name = "received-at-ms")]
    pub received_at_ms: u64,
    #[component(name = "seed")]
    pub seed: u64,
    #[component(name = "fields")]
    pub fields: Fields,
    #[component(name = "last")]
    pub last: Lean<Option<wit::Value>>,
}

impl Default for Call {
    fn default() -> Self {
        Self {
            device_id: None,
            topic: None,
            content_type: wit::ContentType::Binary,
            payload_len: 0,
            received_at_ms: 0,
            seed: 0,
            fields: Ok(Lean::default()),
            last: Lean::default(),
        }
    }
}

/// `evaluate`'s signature with [`Call`] as its parameter.
type Evaluate<'a> = TypedFunc<(&'a Call,), (wit::Decision,)>;

/// Calls `evaluate` with `call`. `func` must come from [`Pre::instantiate`], which checked
/// its type.
pub(crate) fn evaluate(
    func: Func,
    store: &mut Store<HostState>,
    call: &Call,
) -> wasmtime::Result<wit::Decision> {
    // SAFETY: `Pre::instantiate` checked this export's type against `Evaluate` for the
    // component every instance of it is made from.
    #[allow(unsafe_code)]
    let typed = unsafe { Evaluate::new_unchecked(func) };
    typed.call(store, (call,)).map(|(decision,)| decision)
}

/// A policy's component, linked: what its instances are made from, and where `evaluate` is.
#[derive(Clone)]
pub(crate) struct Pre {
    instance_pre: InstancePre<HostState>,
    indices: bindings::PolicyIndices,
    evaluate: ComponentExportIndex,
    /// Set once `evaluate`'s type has been checked against [`Call`] in an instance.
    checked: Arc<AtomicBool>,
}

impl Pre {
    /// Finds the exports the host calls; an error names what the component lacks.
    pub(crate) fn new(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        let indices = bindings::PolicyIndices::new(&instance_pre)?;
        let handler = format!(
            "{}/handler@{}",
            crate::policy::WIT_PACKAGE,
            crate::policy::WIT_VERSION
        );
        let component = instance_pre.component();
        let evaluate = component
            .get_export_index(None, &handler)
            .and_then(|i| component.get_export_index(Some(&i), "evaluate"))
            .ok_or_else(|| wasmtime::format_err!("no export `{handler}#evaluate`"))?;
        Ok(Self {
            instance_pre,
            indices,
            evaluate,
            checked: Arc::default(),
        })
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<HostState> {
        &self.instance_pre
    }

    /// A new instance in `store` and its `evaluate`. The generated bindings (a lookup and type
    /// check of every export) are left to [`Pre::bindings`]: an instance from a snapshot never
    /// runs `init`, so it needs `evaluate` alone.
    pub(crate) fn instantiate(
        &self,
        mut store: impl AsContextMut<Data = HostState>,
    ) -> wasmtime::Result<(Instance, Func)> {
        let mut store = store.as_context_mut();
        let instance = self.instance_pre.instantiate(&mut store)?;
        let func = instance
            .get_func(&mut store, self.evaluate)
            .ok_or_else(|| wasmtime::format_err!("`evaluate` is not a function"))?;
        if !self.checked.load(Ordering::Acquire) {
            func.typed::<(&Call,), (wit::Decision,)>(&store)?;
            self.checked.store(true, Ordering::Release);
        }
        Ok((instance, func))
    }

    /// The generated bindings of `instance`, for `init`; an error names the export that is
    /// missing or of the wrong type.
    pub(crate) fn bindings(
        &self,
        store: impl AsContextMut<Data = HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<bindings::Policy> {
        self.indices.load(store, instance)
    }
}
