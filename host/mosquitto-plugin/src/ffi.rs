//! The part of Mosquitto's plugin API the plugin uses, written by hand from Debian's 2.0.11
//! headers (`mosquitto_broker.h`, `mosquitto_plugin.h`, `mosquitto.h`, `mqtt_protocol.h`).
//! Each item names the header line it mirrors; `tests::layouts` checks sizes and offsets
//! against the C layout on this target.
//!
//! The `mosquitto_*` functions are left undefined in the `.so` and resolve against the broker
//! executable when it loads the plugin (`RTLD_NOW | RTLD_GLOBAL`).

use std::ffi::{c_char, c_int, c_void};

/// `mosquitto.h`: `enum mosq_err_t` values the plugin returns.
pub const MOSQ_ERR_SUCCESS: c_int = 0;
/// `MOSQ_ERR_INVAL`: what init returns on a bad configuration (the broker refuses to start).
pub const MOSQ_ERR_INVAL: c_int = 3;
/// `MOSQ_ERR_ACL_DENIED`: the only non-zero return of a message callback that does not
/// disconnect the publisher.
pub const MOSQ_ERR_ACL_DENIED: c_int = 12;
/// `MOSQ_ERR_UNKNOWN`.
pub const MOSQ_ERR_UNKNOWN: c_int = 13;

/// `mosquitto_broker.h`: `enum mosquitto_plugin_event`.
pub const MOSQ_EVT_MESSAGE: c_int = 7;
/// `MOSQ_EVT_TICK`: fired on every pass of the broker's main loop.
pub const MOSQ_EVT_TICK: c_int = 9;

/// `mosquitto.h`: `MOSQ_LOG_*` levels.
pub const MOSQ_LOG_NOTICE: c_int = 1 << 1;
/// `MOSQ_LOG_WARNING`.
pub const MOSQ_LOG_WARNING: c_int = 1 << 2;
/// `MOSQ_LOG_ERR`.
pub const MOSQ_LOG_ERR: c_int = 1 << 3;

/// `mqtt_protocol.h`: `MQTT_PROP_CONTENT_TYPE` (UTF-8 string, PUBLISH).
pub const MQTT_PROP_CONTENT_TYPE: c_int = 3;
/// `MQTT_PROP_USER_PROPERTY` (UTF-8 string pair).
pub const MQTT_PROP_USER_PROPERTY: c_int = 38;

/// `struct mosquitto` (opaque).
#[repr(C)]
pub struct Mosquitto {
    _private: [u8; 0],
}

/// `mosquitto_property` (opaque `struct mqtt5__property`).
#[repr(C)]
pub struct Property {
    _private: [u8; 0],
}

/// `mosquitto_plugin_id_t` (opaque).
#[repr(C)]
pub struct PluginId {
    _private: [u8; 0],
}

/// `mosquitto_plugin.h`: `struct mosquitto_opt { char *key; char *value; }`.
#[repr(C)]
pub struct Opt {
    /// The option's name with `plugin_opt_` stripped.
    pub key: *mut c_char,
    /// Its value.
    pub value: *mut c_char,
}

/// `mosquitto_broker.h`: `struct mosquitto_evt_message`. Writable: `payload` (new memory from
/// `mosquitto_malloc`; the broker frees the old), `payloadlen`, `topic`, `retain`,
/// `properties`. `qos`, `reason_code` and `reason_string` are ignored by 2.0.11.
#[repr(C)]
pub struct EvtMessage {
    /// `void *future`.
    pub future: *mut c_void,
    /// `struct mosquitto *client`: the publisher.
    pub client: *mut Mosquitto,
    /// `char *topic`.
    pub topic: *mut c_char,
    /// `void *payload`.
    pub payload: *mut c_void,
    /// `mosquitto_property *properties`.
    pub properties: *mut Property,
    /// `char *reason_string`.
    pub reason_string: *mut c_char,
    /// `uint32_t payloadlen`.
    pub payloadlen: u32,
    /// `uint8_t qos`.
    pub qos: u8,
    /// `uint8_t reason_code`.
    pub reason_code: u8,
    /// `bool retain`.
    pub retain: bool,
    /// `void *future2[4]`.
    pub future2: [*mut c_void; 4],
}

/// `mosquitto_broker.h`: `typedef int (*MOSQ_FUNC_generic_callback)(int, void *, void *)`.
pub type GenericCallback =
    unsafe extern "C" fn(event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int;

unsafe extern "C" {
    /// `int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event,
    /// MOSQ_FUNC_generic_callback cb_func, const void *event_data, void *userdata)`.
    pub fn mosquitto_callback_register(
        identifier: *mut PluginId,
        event: c_int,
        cb_func: GenericCallback,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int;

    /// `int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event,
    /// MOSQ_FUNC_generic_callback cb_func, const void *event_data)`.
    pub fn mosquitto_callback_unregister(
        identifier: *mut PluginId,
        event: c_int,
        cb_func: GenericCallback,
        event_data: *const c_void,
    ) -> c_int;

    /// `void *mosquitto_malloc(size_t size)`.
    pub fn mosquitto_malloc(size: usize) -> *mut c_void;

    /// `void mosquitto_log_printf(int level, const char *fmt, ...)`.
    pub fn mosquitto_log_printf(level: c_int, fmt: *const c_char, ...);

    /// `const char *mosquitto_client_id(const struct mosquitto *client)`.
    pub fn mosquitto_client_id(client: *const Mosquitto) -> *const c_char;

    /// `const char *mosquitto_client_username(const struct mosquitto *client)`.
    pub fn mosquitto_client_username(client: *const Mosquitto) -> *const c_char;

    /// `int mosquitto_client_protocol_version(const struct mosquitto *client)`: 3 for MQTT
    /// 3.1, 4 for 3.1.1, 5 for 5.
    pub fn mosquitto_client_protocol_version(client: *const Mosquitto) -> c_int;

    /// `int mosquitto_broker_publish_copy(const char *clientid, const char *topic,
    /// int payloadlen, const void *payload, int qos, bool retain,
    /// mosquitto_property *properties)`.
    pub fn mosquitto_broker_publish_copy(
        clientid: *const c_char,
        topic: *const c_char,
        payloadlen: c_int,
        payload: *const c_void,
        qos: c_int,
        retain: bool,
        properties: *mut Property,
    ) -> c_int;

    /// `const mosquitto_property *mosquitto_property_read_string(const mosquitto_property
    /// *proplist, int identifier, char **value, bool skip_first)`: `*value` is a copy the
    /// caller frees.
    pub fn mosquitto_property_read_string(
        proplist: *const Property,
        identifier: c_int,
        value: *mut *mut c_char,
        skip_first: bool,
    ) -> *const Property;

    /// `const mosquitto_property *mosquitto_property_read_string_pair(const mosquitto_property
    /// *proplist, int identifier, char **name, char **value, bool skip_first)`.
    pub fn mosquitto_property_read_string_pair(
        proplist: *const Property,
        identifier: c_int,
        name: *mut *mut c_char,
        value: *mut *mut c_char,
        skip_first: bool,
    ) -> *const Property;

    /// libc `free`: what releases the strings `mosquitto_property_read_*` return (they come
    /// from `calloc`, not from the broker's tracked allocator).
    pub fn free(ptr: *mut c_void);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// x86-64 / aarch64 LP64 layout of `struct mosquitto_evt_message`, worked out from the
    /// header: six pointers (48 bytes), `uint32_t` at 48, three bytes at 52..55, padding to 56,
    /// `void *future2[4]` at 56, 88 bytes in all.
    #[test]
    fn layouts() {
        assert_eq!(offset_of!(EvtMessage, client), 8);
        assert_eq!(offset_of!(EvtMessage, topic), 16);
        assert_eq!(offset_of!(EvtMessage, payload), 24);
        assert_eq!(offset_of!(EvtMessage, properties), 32);
        assert_eq!(offset_of!(EvtMessage, reason_string), 40);
        assert_eq!(offset_of!(EvtMessage, payloadlen), 48);
        assert_eq!(offset_of!(EvtMessage, qos), 52);
        assert_eq!(offset_of!(EvtMessage, reason_code), 53);
        assert_eq!(offset_of!(EvtMessage, retain), 54);
        assert_eq!(offset_of!(EvtMessage, future2), 56);
        assert_eq!(size_of::<EvtMessage>(), 88);
        assert_eq!(align_of::<EvtMessage>(), 8);
        assert_eq!(size_of::<Opt>(), 16);
    }
}
