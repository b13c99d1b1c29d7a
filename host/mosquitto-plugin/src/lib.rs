//! twinguard inside Mosquitto 2: a broker plugin (interface version 5) that judges every
//! PUBLISH with the same policies, the same [`twinguard::Runtime`] and the same config file as
//! every other twinguard front end, before the broker stores or routes it.
//!
//! ```text
//! plugin /usr/lib/twinguard/libtwinguard_mosquitto.so
//! plugin_opt_config /etc/twinguard/twinguard.toml
//! ```
//!
//! Per message (`MOSQ_EVT_MESSAGE`, on the broker's only thread):
//! - first the identity's budget (`plugin_opt_device_budget_rate`, 1,000 messages/s by
//!   default, [`twinguard::budget`]): its excess is denied unjudged, counted, and raises one
//!   `device-over-budget` event per episode, so a flooding client cannot take the broker's
//!   thread from everyone else with judgements;
//! - the device identity is the client id or the username ([`options::Identity`]); the
//!   content type is the PUBLISH's MQTT 5 content type, else `plugin_opt_content_type`;
//!   MQTT 5 user properties become the message's attributes;
//! - **allow** routes the message unchanged; **redact** replaces its payload (new memory from
//!   `mosquitto_malloc`; the broker frees the old); **alert** routes it (redacted where a
//!   policy redacted) and publishes each security event on `plugin_opt_alerts_topic` besides
//!   the `[alerts]` sinks; **quarantine** commits it to the `[quarantine]` store and denies
//!   it (`MOSQ_ERR_ACL_DENIED`, the only refusal that does not disconnect the publisher);
//! - it fails closed: a failed allocation or a panic denies the message and says why in the
//!   broker's log; a quarantine whose store commit failed follows the judge flow's rule
//!   (`twinguard::judge`): neither routed nor acknowledged, the publisher is disconnected
//!   (`MOSQ_ERR_UNKNOWN`) so it sends the message again. No panic crosses into the broker.
//!
//! Evaluation is bounded by each policy's fuel and deadline. Hot reload: a
//! [`twinguard::watch::Watcher`] thread recompiles changed files off the broker's thread; the
//! broker thread only sees the generation swap, and reports reloads in the broker's log on its
//! next loop tick (`MOSQ_EVT_TICK`). No `mosquitto_*` function is called from any other thread.
//!
//! Metrics: with `plugin_opt_metrics_listen 127.0.0.1:9465` the plugin records the runtime's
//! metrics (`twinguard_messages_total` per route and action, per-policy evaluations, ...) and
//! the store's, sinks' and decision log's, and answers `GET /metrics`, `/healthz` and
//! `/readyz` (a generation loaded, the store takes a write) there, on a thread of its own
//! ([`metrics`]); `plugin_opt_metrics_service_name` names the service (default
//! `twinguard-mosquitto`). Without it there is no listener and no meter. A port in use fails
//! the plugin's start, naming the option. Every metric is in `docs/metrics.md`.
//!
//! See `docs/mosquitto-plugin.md` for the options, the traps of Mosquitto 2.0.11 and a session
//! that shows each outcome.

#![deny(missing_docs)]

mod ffi;
pub mod metrics;
pub mod options;
pub mod plugin;
pub mod workers;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use twinguard::{ContentType, Message};

use crate::ffi::{EvtMessage, Opt, PluginId, Property};
use crate::options::{Identity, Options};
use twinguard::judge::{Judgement, Stored};

use crate::plugin::{Admission, Plugin};
use crate::workers::{Done, Job, Workers};

/// The plugin interface version this plugin implements.
pub const PLUGIN_VERSION: c_int = 5;

/// What `userdata` points to between init and cleanup.
struct State {
    plugin: Plugin,
    identifier: *mut PluginId,
    /// Present with `plugin_opt_workers` above 0.
    workers: Option<Workers>,
}

/// Writes one line to the broker's log (a multi-line error, such as TOML's with its caret,
/// is joined into one). Call it only on the broker's thread.
fn log(level: c_int, text: &str) {
    let text: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = format!("twinguard: {}", text.join(" "));
    let line = CString::new(line.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: the format is "%s" and the one argument is a NUL-terminated string that
    // outlives the call; callers run on the broker's thread (in its callbacks).
    unsafe { ffi::mosquitto_log_printf(level, c"%s".as_ptr(), line.as_ptr()) };
}

/// A C string owned by the broker, as text (`None` for a null pointer).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> Option<String> {
    // SAFETY: the caller's contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Called by the broker with the versions it supports: this plugin needs version 5.
///
/// # Safety
/// Called by Mosquitto: `supported_versions` points to `supported_version_count` ints.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_version(
    supported_version_count: c_int,
    supported_versions: *const c_int,
) -> c_int {
    let offered = match usize::try_from(supported_version_count) {
        Ok(n) if n > 0 && !supported_versions.is_null() => {
            // SAFETY: the broker passes an array of `supported_version_count` ints.
            unsafe { std::slice::from_raw_parts(supported_versions, n) }
        }
        _ => &[],
    };
    if offered.contains(&PLUGIN_VERSION) {
        PLUGIN_VERSION
    } else {
        -1
    }
}

/// Reads the options, builds the runtime, store and sinks, and registers the callbacks. On
/// any error, logs it (naming the file and the problem) and fails: the broker does not start.
///
/// # Safety
/// Called by Mosquitto on its thread, once: `identifier` is this plugin's handle, `userdata`
/// a writable slot, `options` an array of `option_count` key/value C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut PluginId,
    userdata: *mut *mut c_void,
    options: *mut Opt,
    option_count: c_int,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the broker passes `option_count` options, each with two C strings.
        let pairs = unsafe { option_pairs(options, option_count) };
        let opened = Options::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .and_then(Plugin::open);
        let plugin = match opened {
            Ok(p) => p,
            Err(e) => {
                log(ffi::MOSQ_LOG_ERR, &format!("cannot start: {e}"));
                return ffi::MOSQ_ERR_INVAL;
            }
        };
        let mut summary = plugin.summary();
        let workers = match plugin.options.workers {
            0 => None,
            n => match Workers::start(n, plugin.judge()) {
                Ok(w) => {
                    summary.push_str(&match w.wake_signal() {
                        Some(s) => format!("; {n} workers (wake-up signal {s})"),
                        None => format!(
                            "; {n} workers (no free real-time signal: results wait for the \
                             broker's next loop turn, up to 100 ms)"
                        ),
                    });
                    Some(w)
                }
                Err(e) => {
                    log(ffi::MOSQ_LOG_ERR, &format!("cannot start: {e}"));
                    plugin.shut_down();
                    return ffi::MOSQ_ERR_UNKNOWN;
                }
            },
        };
        let state = Box::into_raw(Box::new(State {
            plugin,
            identifier,
            workers,
        }));
        // SAFETY: `identifier` is the broker's handle for this plugin; `state` stays valid
        // until cleanup unregisters both callbacks and frees it.
        let rc = unsafe { register(identifier, state.cast()) };
        if rc != ffi::MOSQ_ERR_SUCCESS {
            log(
                ffi::MOSQ_LOG_ERR,
                &format!("cannot register the callbacks (error {rc})"),
            );
            // SAFETY: the identifier we registered with; whatever was registered is removed,
            // so no callback can see `state` after this.
            unsafe { unregister(identifier) };
            // SAFETY: `state` came from Box::into_raw above and no callback holds it.
            let state = unsafe { Box::from_raw(state) };
            state.shut_down();
            return rc;
        }
        if !userdata.is_null() {
            // SAFETY: the broker passes a valid slot for the plugin's userdata.
            unsafe { *userdata = state.cast() };
        }
        log(ffi::MOSQ_LOG_NOTICE, &summary);
        ffi::MOSQ_ERR_SUCCESS
    }));
    result.unwrap_or_else(|_| {
        log(ffi::MOSQ_LOG_ERR, "cannot start: panic during init");
        ffi::MOSQ_ERR_UNKNOWN
    })
}

/// Unregisters the callbacks, stops the watcher and flushes the alert sinks.
///
/// # Safety
/// Called by Mosquitto on its thread, once, with the `userdata` init stored (or null).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    userdata: *mut c_void,
    _options: *mut Opt,
    _option_count: c_int,
) -> c_int {
    if userdata.is_null() {
        return ffi::MOSQ_ERR_SUCCESS;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a non-null userdata is the `State` init leaked, freed only here.
        let state = unsafe { Box::from_raw(userdata.cast::<State>()) };
        // SAFETY: the identifier init registered the callbacks with.
        unsafe { unregister(state.identifier) };
        state.shut_down();
    }));
    match result {
        Ok(()) => ffi::MOSQ_ERR_SUCCESS,
        Err(_) => {
            log(ffi::MOSQ_LOG_ERR, "panic during cleanup");
            ffi::MOSQ_ERR_UNKNOWN
        }
    }
}

/// # Safety
/// `options` points to `count` valid `Opt`s (or is null with `count` 0).
unsafe fn option_pairs(options: *const Opt, count: c_int) -> Vec<(String, String)> {
    let Ok(n) = usize::try_from(count) else {
        return Vec::new();
    };
    if options.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: the caller's contract.
    let options = unsafe { std::slice::from_raw_parts(options, n) };
    options
        .iter()
        // SAFETY: each key and value is null or a NUL-terminated string owned by the broker.
        .map(|o| unsafe { (text(o.key), text(o.value)) })
        .map(|(k, v)| (k.unwrap_or_default(), v.unwrap_or_default()))
        .collect()
}

/// # Safety
/// `identifier` is this plugin's id; `state` outlives the registration.
unsafe fn register(identifier: *mut PluginId, state: *mut c_void) -> c_int {
    for (event, callback) in [
        (ffi::MOSQ_EVT_MESSAGE, on_message as ffi::GenericCallback),
        (ffi::MOSQ_EVT_TICK, on_tick as ffi::GenericCallback),
    ] {
        // SAFETY: the caller's contract; the callbacks have the generic signature.
        let rc = unsafe {
            ffi::mosquitto_callback_register(identifier, event, callback, ptr::null(), state)
        };
        if rc != ffi::MOSQ_ERR_SUCCESS {
            return rc;
        }
    }
    ffi::MOSQ_ERR_SUCCESS
}

/// # Safety
/// `identifier` is this plugin's id.
unsafe fn unregister(identifier: *mut PluginId) {
    for (event, callback) in [
        (ffi::MOSQ_EVT_MESSAGE, on_message as ffi::GenericCallback),
        (ffi::MOSQ_EVT_TICK, on_tick as ffi::GenericCallback),
    ] {
        // SAFETY: the caller's contract; unregistering a callback that was not registered
        // returns MOSQ_ERR_NOT_FOUND, which is harmless here.
        unsafe { ffi::mosquitto_callback_unregister(identifier, event, callback, ptr::null()) };
    }
}

/// `MOSQ_EVT_MESSAGE`: judge the PUBLISH. Never unwinds; a panic denies the message.
unsafe extern "C" fn on_message(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if event_data.is_null() || userdata.is_null() {
            return ffi::MOSQ_ERR_ACL_DENIED;
        }
        // SAFETY: registered with a `State` that lives until cleanup; the broker calls its
        // callbacks one at a time on its thread, so no other reference exists meanwhile.
        let state = unsafe { &*userdata.cast::<State>() };
        // SAFETY: for MOSQ_EVT_MESSAGE the event data is a `struct mosquitto_evt_message`,
        // ours to read and (for the documented fields) write during the call.
        let event = unsafe { &mut *event_data.cast::<EvtMessage>() };
        // SAFETY: the fields come from the broker as documented in the header.
        unsafe { handle_message(state, event) }
    }));
    result.unwrap_or_else(|_| {
        log(
            ffi::MOSQ_LOG_ERR,
            "panic while judging a message: denied (fail closed); see the broker's stderr",
        );
        ffi::MOSQ_ERR_ACL_DENIED
    })
}

/// `MOSQ_EVT_TICK`: report reloads done by the watcher thread in the broker's log.
unsafe extern "C" fn on_tick(
    _event: c_int,
    _event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if userdata.is_null() {
            return;
        }
        // SAFETY: as in `on_message`.
        let state = unsafe { &*userdata.cast::<State>() };
        if let Some(workers) = &state.workers {
            workers.may_sleep();
            publish_ready(&state.plugin, workers);
        }
        if let Some(line) = state.plugin.budget_news() {
            log(ffi::MOSQ_LOG_NOTICE, &line);
        }
        for (warning, line) in state.plugin.reload_news() {
            let level = if warning {
                ffi::MOSQ_LOG_WARNING
            } else {
                ffi::MOSQ_LOG_NOTICE
            };
            log(level, &line);
        }
    }));
    ffi::MOSQ_ERR_SUCCESS
}

/// # Safety
/// `event` holds the broker's pointers for this message: client, topic, payload of
/// `payloadlen` bytes, properties.
unsafe fn handle_message(state: &State, event: &mut EvtMessage) -> c_int {
    let plugin = &state.plugin;
    // SAFETY: the caller's contract for all reads below.
    let identity = unsafe { identity_of(plugin, event) };
    // SAFETY: as above (the topic is read during the call).
    let topic = || unsafe { text(event.topic) }.unwrap_or_default();
    // The budget comes first: a flood's excess costs no copy (of its identity, topic or
    // payload) and no judgement.
    match plugin.admit(&identity, topic) {
        Admission::Judge => {}
        Admission::Resumed(line) => log(ffi::MOSQ_LOG_NOTICE, &line),
        Admission::Shed(first) => {
            if let Some((warning, events)) = first {
                log(ffi::MOSQ_LOG_WARNING, &warning);
                publish_events(plugin, &events);
            }
            return ffi::MOSQ_ERR_ACL_DENIED;
        }
    }
    // SAFETY: as above.
    let message = unsafe { message_of(plugin, event, identity.into_owned(), topic()) };
    // SAFETY: as above.
    let message = match &state.workers {
        Some(workers) if unsafe { offloadable(event) } => {
            // Publishing here as well as on the tick keeps results flowing under load.
            workers.awake();
            publish_ready(plugin, workers);
            let job = Job {
                message,
                qos: event.qos,
                retain: event.retain,
            };
            match workers.submit(job) {
                // The worker's judged copy is published instead of this PUBLISH.
                Ok(()) => return ffi::MOSQ_ERR_ACL_DENIED,
                Err(job) => {
                    log(
                        ffi::MOSQ_LOG_ERR,
                        "a worker thread is gone (see the broker's stderr): judging inline",
                    );
                    job.message
                }
            }
        }
        _ => message,
    };
    let judgement = plugin.judge().judge(&message, Some(&message.topic));
    report(plugin, &message, Ok(&judgement));
    match (&judgement.stored, judgement.forward()) {
        // The judge flow's rule for a failed store write: neither routed nor acknowledged.
        // Any error but ACL_DENIED makes the broker disconnect the publisher before its
        // PUBACK, so the client sends the message again when it reconnects.
        (Stored::Failed(_), _) => ffi::MOSQ_ERR_UNKNOWN,
        (_, None) => ffi::MOSQ_ERR_ACL_DENIED,
        (_, Some(_)) if !judgement.outcome.redacted => ffi::MOSQ_ERR_SUCCESS,
        (_, Some(payload)) => {
            // SAFETY: the payload fields belong to the broker's event, writable here.
            if unsafe { replace_payload(event, payload) } {
                ffi::MOSQ_ERR_SUCCESS
            } else {
                log(
                    ffi::MOSQ_LOG_ERR,
                    &format!(
                        "cannot allocate {} bytes for the redacted payload on {:?}: denied",
                        payload.len(),
                        message.topic
                    ),
                );
                ffi::MOSQ_ERR_ACL_DENIED
            }
        }
    }
}

/// Whether a worker may judge this PUBLISH: not for MQTT 5 clients, whose QoS 1/2 PUBLISH
/// would see the deny as reason code 135.
///
/// # Safety
/// As [`handle_message`].
unsafe fn offloadable(event: &EvtMessage) -> bool {
    let client = event.client.cast_const();
    // SAFETY: a live client of the broker.
    !client.is_null() && unsafe { ffi::mosquitto_client_protocol_version(client) } != 5
}

/// Publishes a judgement's security events on the alerts topic and logs its error (a failed
/// store write, or why a worker could not judge). On the broker's thread only.
fn report(plugin: &Plugin, message: &Message, judgement: Result<&Judgement, &String>) {
    let judgement = match judgement {
        Ok(j) => j,
        Err(error) => {
            log(ffi::MOSQ_LOG_ERR, error);
            return;
        }
    };
    if let Stored::Failed(e) = &judgement.stored {
        log(
            ffi::MOSQ_LOG_ERR,
            &format!(
                "quarantine store: {}; the message from {:?} on {:?} is neither routed nor \
                 acknowledged",
                twinguard::error_chain(e),
                message.device_id,
                message.topic
            ),
        );
    }
    publish_events(plugin, &judgement.events);
}

/// Publishes security events on `plugin_opt_alerts_topic`, when set. On the broker's thread.
fn publish_events(plugin: &Plugin, events: &[twinguard::alerts::SecurityEvent]) {
    let Some(topic) = &plugin.options.alerts_topic else {
        return;
    };
    for e in events {
        let rc = broker_publish(topic, plugin.options.alerts_qos, false, &e.to_json_bytes());
        if rc != ffi::MOSQ_ERR_SUCCESS {
            log(
                ffi::MOSQ_LOG_WARNING,
                &format!("cannot publish a security event on {topic:?} (error {rc})"),
            );
        }
    }
}

/// Publishes what the workers have judged since the last call. On the broker's thread only.
fn publish_ready(plugin: &Plugin, workers: &Workers) {
    for done in workers.ready() {
        report(plugin, &done.job.message, done.judgement.as_ref());
        let Job {
            message,
            qos,
            retain,
        } = &done.job;
        // Held back, or not judged: nothing to publish. (The original was denied at intake, so
        // a failed store write cannot make the sender redeliver: it is logged as lost.)
        let Some(payload) = done.judgement.as_ref().ok().and_then(Judgement::forward) else {
            continue;
        };
        let rc = broker_publish(&message.topic, *qos, *retain, payload);
        if rc != ffi::MOSQ_ERR_SUCCESS {
            let why = format!("the broker refused to publish it (error {rc})");
            hold(plugin, &done, &why);
        }
    }
}

/// Commits a judged message that could not be published to the store, so that it is not
/// lost, and logs where it went. False for a denied message: there is nothing to hold.
fn hold(plugin: &Plugin, done: &Done, why: &str) -> bool {
    let Some(outcome) = done.undelivered(why) else {
        return false;
    };
    let topic = &done.job.message.topic;
    match plugin::hold(plugin.judge(), &done.job.message, outcome) {
        Ok(()) => log(
            ffi::MOSQ_LOG_WARNING,
            &format!("message on {topic:?} held in the quarantine store: {why}"),
        ),
        Err(e) => log(
            ffi::MOSQ_LOG_ERR,
            &format!("message on {topic:?} lost: {why}, and the store failed: {e}"),
        ),
    }
    true
}

impl State {
    /// Stops the workers (what they judged but the broker can no longer publish goes to the
    /// store), then the plugin.
    fn shut_down(mut self) {
        if let Some(workers) = self.workers.take() {
            let waits = workers.waits();
            let mut held = 0;
            for done in workers.stop() {
                held += usize::from(hold(
                    &self.plugin,
                    &done,
                    "the broker stopped before publishing it",
                ));
            }
            log(
                ffi::MOSQ_LOG_NOTICE,
                &format!(
                    "workers stopped: {held} judged messages held in the store for release; \
                     the broker waited for a full queue {waits} times"
                ),
            );
        }
        self.plugin.shut_down();
    }
}

/// The device identity of the PUBLISH's client (empty when the broker names none), borrowed
/// from the broker for the call when it is valid UTF-8.
///
/// # Safety
/// As [`handle_message`].
unsafe fn identity_of<'a>(plugin: &Plugin, event: &'a EvtMessage) -> std::borrow::Cow<'a, str> {
    let client = event.client.cast_const();
    if client.is_null() {
        return std::borrow::Cow::Borrowed("");
    }
    // SAFETY: a live client of the broker; the strings it returns are NUL-terminated and
    // outlive this callback.
    let id = unsafe {
        match plugin.options.identity {
            Identity::ClientId => ffi::mosquitto_client_id(client),
            Identity::Username => ffi::mosquitto_client_username(client),
        }
    };
    if id.is_null() {
        return std::borrow::Cow::Borrowed("");
    }
    // SAFETY: as above.
    unsafe { CStr::from_ptr(id) }.to_string_lossy()
}

/// # Safety
/// As [`handle_message`].
unsafe fn message_of(
    plugin: &Plugin,
    event: &EvtMessage,
    identity: String,
    topic: String,
) -> Message {
    let payload = match usize::try_from(event.payloadlen) {
        Ok(n) if n > 0 && !event.payload.is_null() => {
            // SAFETY: `payload` holds `payloadlen` bytes for the duration of the callback.
            unsafe { std::slice::from_raw_parts(event.payload.cast::<u8>(), n) }.to_vec()
        }
        _ => Vec::new(),
    };
    let properties = event.properties.cast_const();
    // SAFETY: the broker's property list (null for MQTT 3.1.1).
    let content_type = unsafe { content_type(properties) }.unwrap_or(plugin.options.content_type);
    let mut message = Message::new(identity, topic, content_type, payload);
    // SAFETY: as above.
    message.attributes = unsafe { user_properties(properties) };
    message
}

/// The PUBLISH's MQTT 5 content type: `application/json` and `json` (parameters after `;`
/// ignored) and the like; any other declared type is read as binary.
///
/// # Safety
/// `properties` is null or the broker's property list.
unsafe fn content_type(properties: *const Property) -> Option<ContentType> {
    if properties.is_null() {
        return None;
    }
    let mut value: *mut c_char = ptr::null_mut();
    // SAFETY: a valid list; `value` receives a calloc'd copy or stays null.
    let found = unsafe {
        ffi::mosquitto_property_read_string(
            properties,
            ffi::MQTT_PROP_CONTENT_TYPE,
            &mut value,
            false,
        )
    };
    // SAFETY: null or the NUL-terminated copy, which we own and free once read.
    let declared = unsafe { take_string(value) };
    if found.is_null() {
        return None;
    }
    let declared = declared?;
    let essence = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(essence.parse().unwrap_or(ContentType::Binary))
}

/// MQTT 5 user properties, in order.
///
/// # Safety
/// `properties` is null or the broker's property list.
unsafe fn user_properties(properties: *const Property) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cursor = properties;
    let mut skip_first = false;
    while !cursor.is_null() {
        let (mut name, mut value) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: `cursor` is the list or a node of it returned by the previous call;
        // `name` and `value` receive calloc'd copies.
        cursor = unsafe {
            ffi::mosquitto_property_read_string_pair(
                cursor,
                ffi::MQTT_PROP_USER_PROPERTY,
                &mut name,
                &mut value,
                skip_first,
            )
        };
        // SAFETY: each is null or a copy we own.
        let (name, value) = unsafe { (take_string(name), take_string(value)) };
        if let (false, Some(n), Some(v)) = (cursor.is_null(), name, value) {
            out.push((n, v));
        }
        skip_first = true;
    }
    out
}

/// Reads and frees a string that `mosquitto_property_read_*` allocated.
///
/// # Safety
/// `p` is null or a NUL-terminated string from `calloc` that nobody else frees.
unsafe fn take_string(p: *mut c_char) -> Option<String> {
    // SAFETY: the caller's contract.
    let s = unsafe { text(p) };
    if !p.is_null() {
        // SAFETY: allocated with calloc by libmosquitto's property reader; freed once.
        unsafe { ffi::free(p.cast()) };
    }
    s
}

/// Puts `payload` in place of the event's: new memory from `mosquitto_malloc`; the broker
/// frees the old payload itself, so it is left alone. False when allocation fails.
///
/// # Safety
/// `event` is the broker's event for the current callback.
unsafe fn replace_payload(event: &mut EvtMessage, payload: &[u8]) -> bool {
    let Ok(len) = u32::try_from(payload.len()) else {
        return false;
    };
    // SAFETY: plain allocation from the broker's allocator (at least one byte, so that an
    // empty payload still gets a non-null pointer).
    let memory = unsafe { ffi::mosquitto_malloc(payload.len().max(1)) }.cast::<u8>();
    if memory.is_null() {
        return false;
    }
    // SAFETY: `memory` has room for `payload.len()` bytes and does not overlap `payload`.
    unsafe { ptr::copy_nonoverlapping(payload.as_ptr(), memory, payload.len()) };
    event.payload = memory.cast();
    event.payloadlen = len;
    true
}

/// Publishes a copy of `payload` to every subscriber of `topic` (it does not come back
/// through `MOSQ_EVT_MESSAGE`). Returns the broker's error code.
fn broker_publish(topic: &str, qos: u8, retain: bool, payload: &[u8]) -> c_int {
    let (Ok(topic_c), Ok(len)) = (CString::new(topic), c_int::try_from(payload.len())) else {
        return ffi::MOSQ_ERR_INVAL;
    };
    // SAFETY: on the broker's thread (inside a callback); the broker copies the payload and
    // the topic before returning.
    unsafe {
        ffi::mosquitto_broker_publish_copy(
            ptr::null(),
            topic_c.as_ptr(),
            len,
            payload.as_ptr().cast(),
            c_int::from(qos),
            retain,
            ptr::null_mut(),
        )
    }
}
