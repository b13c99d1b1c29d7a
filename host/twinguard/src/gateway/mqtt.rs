//! One MQTT connection, 3.1.1 or 5: rumqttc's two clients behind one small interface, so the
//! gateway's delivery logic (what is acknowledged when) is written once for both protocols.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5 as c5;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::QoS;
use serde::Deserialize;
use twinguard_core::Bytes;

use super::batched;

/// The MQTT protocol version a gateway speaks to its broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1 (the default: every broker speaks it).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5: user properties reach the policies as attributes and can carry the device
    /// identity; the broker can refuse a forward in its PUBACK.
    #[serde(rename = "5")]
    V5,
}

/// How long a persistent MQTT 5 session outlives its connection on the broker: a week, so a
/// gateway that is down for maintenance finds every unacknowledged message waiting.
/// (MQTT 3.1.1 sessions never expire; an MQTT 5 session with expiry 0 ends at disconnect,
/// which would lose what was in flight.)
const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// What a connection needs, for either protocol.
pub(super) struct Settings<'a> {
    pub protocol: Protocol,
    pub client_id: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub keep_alive: Duration,
    /// The gateway's session: persistent, and acknowledged by hand once an outcome is
    /// durable. Otherwise a clean session with automatic acknowledgements (the CLI's
    /// one-shot publishes).
    pub persistent: bool,
    /// Publishes in flight towards the broker; for MQTT 5 also the receive maximum asked of it.
    pub inflight: u16,
    pub credentials: Option<(&'a str, &'a str)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where the loop counts its writes and the packets they carry (the gateway's session).
    pub counts: Option<&'a Arc<super::GatewayStats>>,
}

/// MQTT's own largest packet: the most a remaining length can say (268,435,455) plus the
/// fixed header's five bytes. The client takes packets up to it either way, so a big message
/// is read and judged (the gateway's `max-message-bytes` quarantines it) instead of breaking
/// the connection (3.1.1: the client's limit dropped it, reconnected and met it again, forever)
/// or being silently discarded by the broker (MQTT 5: it honours the Maximum Packet Size the
/// client advertises).
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// Opens (lazily: the first poll connects) a client and its event loop.
pub(super) fn client(s: &Settings<'_>, cap: usize) -> (Client, EventLoop) {
    fn target<V: batched::Version>(s: &Settings<'_>, options: V::Options) -> batched::Target<V> {
        batched::Target {
            host: s.host.to_owned(),
            port: s.port,
            tls: s.tls.clone(),
            max_packet: MQTT_MAX_PACKET,
            options,
        }
    }
    let counts = || s.counts.map(Arc::clone);
    match s.protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(s.client_id, s.host, s.port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_session(!s.persistent);
            if let Some((u, p)) = s.credentials {
                o.set_credentials(u, p);
            }
            let state = batched::State4::new(s.inflight, s.persistent);
            let (tx, l) = batched::EventLoop::new(target(s, o), state, cap, counts());
            (
                Client::V4(rumqttc::AsyncClient::from_senders(tx)),
                EventLoop::V4(l),
            )
        }
        Protocol::V5 => {
            let mut o = c5::MqttOptions::new(s.client_id, s.host, s.port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_start(!s.persistent)
                .set_receive_maximum(Some(s.inflight))
                .set_max_packet_size(Some(MQTT_MAX_PACKET as u32));
            if s.persistent {
                o.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
            }
            if let Some((u, p)) = s.credentials {
                o.set_credentials(u, p);
            }
            let state = batched::State5::new(s.inflight, s.persistent);
            let (tx, l) = batched::EventLoop::new(target(s, o), state, cap, counts());
            (
                Client::V5(c5::AsyncClient::from_senders(tx)),
                EventLoop::V5(l),
            )
        }
    }
}

/// A message the broker delivered, kept until it is acknowledged.
#[derive(Debug, Clone)]
pub(super) enum Received {
    V4(rumqttc::Publish),
    V5(p5::Publish),
}

impl Received {
    /// The topic. MQTT requires UTF-8; the v5 decoder hands over raw bytes, so a broken name
    /// is shown lossily (and fits no input template: it is quarantined, not dropped).
    pub fn topic(&self) -> Cow<'_, str> {
        match self {
            Self::V4(p) => Cow::Borrowed(&p.topic),
            Self::V5(p) => String::from_utf8_lossy(&p.topic),
        }
    }

    /// The payload, shared (no copy).
    pub fn payload_shared(&self) -> Bytes {
        match self {
            Self::V4(p) => p.payload.clone(),
            Self::V5(p) => p.payload.clone(),
        }
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            Self::V4(p) => &p.payload,
            Self::V5(p) => &p.payload,
        }
    }

    /// Frees the payload, keeping what an acknowledgement needs (an oversized message waits
    /// for its turn to be acknowledged without holding its bytes).
    pub fn drop_payload(&mut self) {
        match self {
            Self::V4(p) => p.payload = Default::default(),
            Self::V5(p) => p.payload = Default::default(),
        }
    }

    /// Whether the broker replayed it from its retained store (see [`super::config::Retained`]).
    pub fn retained(&self) -> bool {
        match self {
            Self::V4(p) => p.retain,
            Self::V5(p) => p.retain,
        }
    }

    /// MQTT 5 user properties, in order (none for 3.1.1).
    pub fn user_properties(&self) -> &[(String, String)] {
        match self {
            Self::V4(_) => &[],
            Self::V5(p) => p
                .properties
                .as_ref()
                .map_or(&[], |p| p.user_properties.as_slice()),
        }
    }

    /// The MQTT 5 properties worth carrying to the forwarded copy.
    pub fn forwarded_properties(&self) -> Option<OutProperties> {
        match self {
            Self::V4(_) => None,
            Self::V5(p) => p.properties.as_ref().map(|p| OutProperties {
                user_properties: p.user_properties.clone(),
                content_type: p.content_type.clone(),
            }),
        }
    }
}

/// Properties of an outgoing MQTT 5 publish (ignored on 3.1.1).
#[derive(Debug, Clone, Default)]
pub(super) struct OutProperties {
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
}

/// What happened on the connection, in the terms the gateway cares about.
pub(super) enum Event {
    /// The broker accepted the connection.
    Connected,
    /// A subscription was answered; `Err` names the refused filters' codes.
    Subscribed(Result<(), String>),
    /// A message for us.
    Message(Received),
    /// A QoS 1 publish of ours went on the wire with this packet id.
    Sent(u16),
    /// The broker answered our publish: `Err` carries its refusal (MQTT 5 reason code).
    Acked(u16, Result<(), String>),
    /// Our DISCONNECT went on the wire, after every request queued before it.
    Disconnected,
    Other,
}

// One per connection, polled in place: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub(super) enum EventLoop {
    V4(batched::EventLoop<batched::V4>),
    V5(batched::EventLoop<batched::V5>),
}

impl EventLoop {
    pub async fn poll(&mut self) -> Result<Event, ConnError> {
        use rumqttc::Outgoing;
        match self {
            Self::V4(l) => {
                use rumqttc::{Event as E, Packet as P};
                Ok(match l.poll().await.map_err(ConnError::V4)? {
                    E::Incoming(P::ConnAck(_)) => Event::Connected,
                    E::Incoming(P::SubAck(a)) => Event::Subscribed(
                        if a.return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                        {
                            Ok(())
                        } else {
                            Err(format!("{:?}", a.return_codes))
                        },
                    ),
                    E::Incoming(P::Publish(p)) => Event::Message(Received::V4(p)),
                    E::Incoming(P::PubAck(a)) => Event::Acked(a.pkid, Ok(())),
                    E::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => Event::Sent(pkid),
                    E::Outgoing(Outgoing::Disconnect) => Event::Disconnected,
                    _ => Event::Other,
                })
            }
            Self::V5(l) => {
                use c5::Event as E;
                use p5::Packet as P;
                Ok(match l.poll().await.map_err(ConnError::V5)? {
                    E::Incoming(P::ConnAck(_)) => Event::Connected,
                    E::Incoming(P::SubAck(a)) => Event::Subscribed(
                        if a.return_codes
                            .iter()
                            .all(|c| matches!(c, p5::SubscribeReasonCode::Success(_)))
                        {
                            Ok(())
                        } else {
                            Err(format!("{:?}", a.return_codes))
                        },
                    ),
                    E::Incoming(P::Publish(p)) => Event::Message(Received::V5(p)),
                    E::Incoming(P::PubAck(a)) => Event::Acked(
                        a.pkid,
                        match a.reason {
                            // No subscriber is not a refusal: the broker took the message.
                            p5::PubAckReason::Success | p5::PubAckReason::NoMatchingSubscribers => {
                                Ok(())
                            }
                            refused => Err(match a.properties.and_then(|p| p.reason_string) {
                                Some(why) => format!("{refused:?}: {why}"),
                                None => format!("{refused:?}"),
                            }),
                        },
                    ),
                    E::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => Event::Sent(pkid),
                    E::Outgoing(Outgoing::Disconnect) => Event::Disconnected,
                    _ => Event::Other,
                })
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum ConnError {
    V4(rumqttc::ConnectionError),
    V5(c5::ConnectionError),
    /// The gateway itself tore the connection down (a worker or the store failed).
    Closed,
}

impl ConnError {
    /// Whether a failed first connection cannot succeed by retrying.
    pub fn fatal(&self) -> bool {
        match self {
            Self::V4(
                rumqttc::ConnectionError::Tls(_) | rumqttc::ConnectionError::ConnectionRefused(_),
            )
            | Self::V5(c5::ConnectionError::Tls(_) | c5::ConnectionError::ConnectionRefused(_)) => {
                true
            }
            // The broker accepted the TCP connection and hung up on the CONNECT: it expects
            // TLS (or speaks something else). A broker that is down refuses the TCP connection.
            Self::V4(_) | Self::V5(_) => self.hung_up(),
            Self::Closed => false,
        }
    }

    /// Whether the peer closed or reset the connection, however deep the client wrapped it.
    fn hung_up(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match self {
            Self::V4(e) => Some(e),
            Self::V5(e) => Some(e),
            Self::Closed => None,
        };
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                return matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                );
            }
            cause = c.source();
        }
        false
    }

    /// The cause, with a hint where to look.
    pub fn explain(&self) -> String {
        let tls_hint = "(check gateway.tls.ca is the CA that signed the broker's certificate, \
                        the broker's name matches its certificate, and the listener speaks TLS)";
        let refused_hint = "(check username, password, client id, and that the broker speaks \
                            the configured protocol)";
        match self {
            Self::V4(rumqttc::ConnectionError::Tls(t)) => format!("TLS: {t} {tls_hint}"),
            Self::V5(c5::ConnectionError::Tls(t)) => format!("TLS: {t} {tls_hint}"),
            Self::V4(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                format!("the broker refused the connection: {code:?} {refused_hint}")
            }
            Self::V5(c5::ConnectionError::ConnectionRefused(code)) => {
                format!("the broker refused the connection: {code:?} {refused_hint}")
            }
            other if other.hung_up() => format!(
                "{} (the broker hung up on the MQTT CONNECT: a TLS listener does this to a \
                 plain client; use mqtts:// with [gateway.tls])",
                other.cause()
            ),
            other => other.cause(),
        }
    }

    fn cause(&self) -> String {
        match self {
            Self::V4(e) => e.to_string(),
            Self::V5(e) => e.to_string(),
            Self::Closed => "closed by the gateway".into(),
        }
    }
}

/// The sending half of a connection. Every method fails only when the connection is gone.
#[derive(Clone)]
pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(c5::AsyncClient),
}

/// The client's request queue is closed: the connection is being torn down.
#[derive(Debug)]
pub(super) struct Gone;

impl Client {
    pub fn try_subscribe(&self, filter: &str) -> Result<(), Gone> {
        match self {
            Self::V4(c) => c.try_subscribe(filter, QoS::AtLeastOnce).map_err(|_| Gone),
            Self::V5(c) => c
                .try_subscribe(filter, c5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|_| Gone),
        }
    }

    /// Queues a QoS 1 publish (waits for room in the request queue). The payload is handed
    /// over shared: a forwarded message's bytes are the ones that arrived.
    pub async fn publish(
        &self,
        topic: String,
        payload: Bytes,
        properties: Option<OutProperties>,
    ) -> Result<(), Gone> {
        match self {
            // `publish_bytes` takes `Bytes` as they are but, unlike `publish`, does not check
            // the topic: check it here, as `publish` would.
            Self::V4(c) if rumqttc::valid_topic(&topic) => c
                .publish_bytes(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|_| Gone),
            Self::V4(_) => Err(Gone),
            Self::V5(c) => match properties {
                Some(p) => c
                    .publish_with_properties(
                        topic,
                        c5::mqttbytes::QoS::AtLeastOnce,
                        false,
                        payload,
                        v5_properties(p),
                    )
                    .await
                    .map_err(|_| Gone),
                None => c
                    .publish(topic, c5::mqttbytes::QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|_| Gone),
            },
        }
    }

    /// Queues a QoS 1 publish without waiting; fails when the queue is full.
    pub fn try_publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Self::V4(c) => c
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string()),
            Self::V5(c) => c
                .try_publish(topic, c5::mqttbytes::QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// Acknowledges a delivered message (QoS 0 needs none: nothing is sent).
    pub async fn ack(&self, input: &Received) -> Result<(), Gone> {
        match (self, input) {
            (Self::V4(c), Received::V4(p)) => c.ack(p).await.map_err(|_| Gone),
            (Self::V5(c), Received::V5(p)) => c.ack(p).await.map_err(|_| Gone),
            // A message is acknowledged on the connection that delivered it.
            _ => Err(Gone),
        }
    }

    pub fn try_disconnect(&self) {
        let _ = match self {
            Self::V4(c) => c.try_disconnect().map_err(|_| ()),
            Self::V5(c) => c.try_disconnect().map_err(|_| ()),
        };
    }

    pub async fn disconnect(&self) {
        let _ = match self {
            Self::V4(c) => c.disconnect().await.map_err(|_| ()),
            Self::V5(c) => c.disconnect().await.map_err(|_| ()),
        };
    }
}

fn v5_properties(p: OutProperties) -> p5::PublishProperties {
    p5::PublishProperties {
        user_properties: p.user_properties,
        content_type: p.content_type,
        ..Default::default()
    }
}
