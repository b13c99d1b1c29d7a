//! The gateway's MQTT event loop, for 3.1.1 and 5: rumqttc's packet codecs and session state,
//! driven so that every request queued when the loop wakes goes out in one write.
//!
//! rumqttc's own `EventLoop` writes and flushes each request on its own: two syscalls per
//! message the gateway judges (its forward and its acknowledgement), each paid again by the
//! broker that reads them. Here the loop takes what is queued (up to [`WRITE_BATCH`]), encodes
//! it into one buffer and flushes once. Everything else is rumqttc's: the packets (its codecs),
//! packet ids, the in-flight window and acknowledgements (its `MqttState`), the clients (its
//! `AsyncClient`s over this loop's queue), the events and the errors. Only the order of the
//! loop's own steps is written here, once for both protocols ([`Version`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use rumqttc::tokio_rustls::{rustls, TlsConnector};
use rumqttc::v5 as c5;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::TlsError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::error::Elapsed;
use tokio::time::{sleep, timeout, Instant, Sleep};
use tokio_util::codec::{Decoder, Encoder, Framed};

/// Requests written in one flush at most, so that reading the broker's packets keeps its turn.
const WRITE_BATCH: usize = 64;
/// Packets read in one wake-up at most (rumqttc's figure).
const READ_BATCH: usize = 10;
/// How long connecting (TCP, TLS, CONNECT and CONNACK) or one flush may take: rumqttc's
/// default connection timeout.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Wire<V> = Framed<Box<dyn Io>, <V as Version>::Codec>;

/// What the CONNACK settled.
pub(super) struct Accepted {
    session_present: bool,
    /// The broker's keep-alive, when it overrides ours (MQTT 5).
    keep_alive: Option<Duration>,
}

/// One protocol's packets, state and errors, as rumqttc defines them.
pub(super) trait Version {
    type Packet;
    type Request;
    type Event;
    type State: Send;
    type CodecError: From<std::io::Error>;
    type Codec: Decoder<Item = Self::Packet, Error = Self::CodecError>
        + Encoder<Self::Packet, Error = Self::CodecError>
        + Send;
    type Error: From<std::io::Error> + From<TlsError>;
    /// What the CONNECT says.
    type Options: Send;

    fn codec(max_packet: usize) -> Self::Codec;
    fn keep_alive(o: &Self::Options) -> Duration;
    fn connect(o: &Self::Options) -> Self::Packet;
    /// Checks the answer to CONNECT, applies it and queues its event.
    fn connected(
        state: &mut Self::State,
        wire: &mut Wire<Self>,
        answer: Self::Packet,
    ) -> Result<Accepted, Self::Error>;
    fn outgoing(s: &mut Self::State, r: Self::Request)
        -> Result<Option<Self::Packet>, Self::Error>;
    fn incoming(s: &mut Self::State, p: Self::Packet) -> Result<Option<Self::Packet>, Self::Error>;
    fn next_event(s: &mut Self::State) -> Option<Self::Event>;
    /// Whether a new publish may go: the in-flight window has room and no packet id collided.
    fn window_open(s: &Self::State) -> bool;
    /// What a failed connection leaves to send again.
    fn clean(s: &mut Self::State) -> Vec<Self::Request>;
    fn is_ack(r: &Self::Request) -> bool;
    fn ping() -> Self::Request;
    fn wire_error(e: Self::CodecError) -> Self::Error;
    fn aborted() -> Self::Error;
    fn requests_done() -> Self::Error;
    /// Connecting took longer than [`NETWORK_TIMEOUT`].
    fn network_timeout(e: Elapsed) -> Self::Error;
    /// A flush took longer than [`NETWORK_TIMEOUT`].
    fn flush_timeout(e: Elapsed) -> Self::Error;
}

/// Where to connect, and the in-flight window to keep.
pub(super) struct Target<V: Version> {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub max_packet: usize,
    pub options: V::Options,
}

/// One connection's loop. Polled by one task; the client made with it queues requests from any
/// task.
pub(super) struct EventLoop<V: Version> {
    target: Target<V>,
    keep_alive: Duration,
    state: V::State,
    requests: flume::Receiver<V::Request>,
    /// Requests of a connection that failed, sent first on the next one (if its session lives).
    pending: VecDeque<V::Request>,
    wire: Option<Wire<V>>,
    keepalive: Option<Pin<Box<Sleep>>>,
    /// Where each flush that carried packets is counted, with its packets; `None` for a
    /// client whose writes nobody reads (the CLI's publisher, the drops watcher).
    counts: Option<Arc<super::GatewayStats>>,
}

impl<V: Version> EventLoop<V> {
    /// A loop for `target` over a new request queue of `cap`, counting its writes in
    /// `counts` when given; returns the queue's sender, for the protocol's
    /// `AsyncClient::from_senders`.
    pub fn new(
        target: Target<V>,
        state: V::State,
        cap: usize,
        counts: Option<Arc<super::GatewayStats>>,
    ) -> (flume::Sender<V::Request>, Self) {
        let (tx, rx) = flume::bounded(cap);
        let keep_alive = V::keep_alive(&target.options);
        (
            tx,
            Self {
                target,
                keep_alive,
                state,
                requests: rx,
                pending: VecDeque::new(),
                wire: None,
                keepalive: None,
                counts,
            },
        )
    }

    /// The next event: connects first when not connected (yielding the CONNACK), and after a
    /// failure connects again on the next call. Cancel-safe between events: a request taken
    /// from the queue is written before the call returns.
    pub async fn poll(&mut self) -> Result<V::Event, V::Error> {
        if self.wire.is_none() {
            let connecting = async {
                let mut wire = open::<V>(&self.target).await?;
                wire.send(V::connect(&self.target.options))
                    .await
                    .map_err(V::wire_error)?;
                let answer = match wire.next().await {
                    Some(Ok(packet)) => packet,
                    Some(Err(e)) => return Err(V::wire_error(e)),
                    None => return Err(V::aborted()),
                };
                let accepted = V::connected(&mut self.state, &mut wire, answer)?;
                Ok((wire, accepted))
            };
            let (wire, accepted) = match timeout(NETWORK_TIMEOUT, connecting).await {
                Ok(connected) => connected?,
                Err(e) => return Err(V::network_timeout(e)),
            };
            if !accepted.session_present {
                self.pending.clear();
            }
            if let Some(k) = accepted.keep_alive {
                self.keep_alive = k;
            }
            self.wire = Some(wire);
            if self.keepalive.is_none() && !self.keep_alive.is_zero() {
                self.keepalive = Some(Box::pin(sleep(self.keep_alive)));
            }
        }
        loop {
            if let Some(event) = V::next_event(&mut self.state) {
                return Ok(event);
            }
            if let Err(e) = self.step().await {
                // What was in flight goes again first if the session survives (MQTT requires
                // it); queued acknowledgements do not: the broker redelivers their messages.
                self.wire = None;
                self.keepalive = None;
                self.pending.extend(V::clean(&mut self.state));
                self.pending
                    .extend(self.requests.drain().filter(|r| !V::is_ack(r)));
                return Err(e);
            }
        }
    }

    /// Waits for the network, the request queue or the keep-alive, and handles what came.
    async fn step(&mut self) -> Result<(), V::Error> {
        let Self {
            keep_alive,
            state,
            requests,
            pending,
            wire,
            keepalive,
            counts,
            ..
        } = self;
        let wire = wire.as_mut().ok_or_else(V::requests_done)?;
        // Flow control as rumqttc's: new requests wait while the in-flight window is full or a
        // packet id collided; requests left by a failed connection always go.
        let may_send = !pending.is_empty() || V::window_open(state);
        let mut fed = 0_u64;
        tokio::select! {
            packet = wire.next() => {
                let mut packet = packet;
                let mut read = 0;
                loop {
                    let incoming = match packet {
                        Some(Ok(p)) => p,
                        Some(Err(e)) => return Err(V::wire_error(e)),
                        None => return Err(V::aborted()),
                    };
                    if let Some(reply) = V::incoming(state, incoming)? {
                        wire.feed(reply).await.map_err(V::wire_error)?;
                        fed += 1;
                    }
                    read += 1;
                    if read >= READ_BATCH {
                        break;
                    }
                    match wire.next().now_or_never() {
                        Some(next) => packet = next,
                        None => break,
                    }
                }
            }
            request = next_request::<V>(pending, requests), if may_send => {
                let mut request = request?;
                let mut written = 0;
                loop {
                    if let Some(packet) = V::outgoing(state, request)? {
                        wire.feed(packet).await.map_err(V::wire_error)?;
                        fed += 1;
                    }
                    written += 1;
                    if written >= WRITE_BATCH || (pending.is_empty() && !V::window_open(state)) {
                        break;
                    }
                    match pending.pop_front().or_else(|| requests.try_recv().ok()) {
                        Some(next) => request = next,
                        None => break,
                    }
                }
            }
            () = tick(keepalive), if keepalive.is_some() => {
                if let Some(k) = keepalive.as_mut() {
                    k.as_mut().reset(Instant::now() + *keep_alive);
                }
                // Fails when the last ping went unanswered: the connection is dead.
                if let Some(ping) = V::outgoing(state, V::ping())? {
                    wire.feed(ping).await.map_err(V::wire_error)?;
                    fed += 1;
                }
            }
        }
        if let Some(counts) = counts.as_ref().filter(|_| fed > 0) {
            counts.writes.fetch_add(1, Ordering::Relaxed);
            counts.packets_sent.fetch_add(fed, Ordering::Relaxed);
        }
        match timeout(NETWORK_TIMEOUT, wire.flush()).await {
            Ok(flushed) => flushed.map_err(V::wire_error),
            Err(e) => Err(V::flush_timeout(e)),
        }
    }
}

/// TCP, then TLS when configured. No Nagle: an acknowledgement is a 4-byte write, and delaying
/// it behind the peer's delayed ACK stalls the whole in-flight window (measured: 125 messages/s
/// instead of thousands).
async fn open<V: Version>(t: &Target<V>) -> Result<Wire<V>, V::Error> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match &t.tls {
        Some(config) => {
            let name =
                rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(TlsError::from)?;
            let tls = TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(TlsError::from)?;
            Box::new(tls)
        }
        None => Box::new(tcp),
    };
    Ok(Framed::new(io, V::codec(t.max_packet)))
}

/// The keep-alive's next tick (never, without one).
async fn tick(keepalive: &mut Option<Pin<Box<Sleep>>>) {
    match keepalive {
        Some(k) => k.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next request: one left by a failed connection first, else the queue's.
async fn next_request<V: Version>(
    pending: &mut VecDeque<V::Request>,
    requests: &flume::Receiver<V::Request>,
) -> Result<V::Request, V::Error> {
    match pending.pop_front() {
        Some(r) => Ok(r),
        None => requests.recv_async().await.map_err(|_| V::requests_done()),
    }
}

/// MQTT 3.1.1.
pub(super) struct V4;

/// rumqttc's 3.1.1 session state and the in-flight window asked for.
pub(super) struct State4 {
    inner: rumqttc::MqttState,
    window: u16,
}

impl State4 {
    pub fn new(window: u16, manual_acks: bool) -> Self {
        Self {
            inner: rumqttc::MqttState::new(window, manual_acks),
            window,
        }
    }
}

impl Version for V4 {
    type Packet = rumqttc::Packet;
    type Request = rumqttc::Request;
    type Event = rumqttc::Event;
    type State = State4;
    type CodecError = rumqttc::mqttbytes::Error;
    type Codec = rumqttc::Codec;
    type Error = rumqttc::ConnectionError;
    type Options = rumqttc::MqttOptions;

    fn codec(max_packet: usize) -> Self::Codec {
        rumqttc::Codec {
            max_incoming_size: max_packet,
            max_outgoing_size: max_packet,
        }
    }
    fn keep_alive(o: &Self::Options) -> Duration {
        o.keep_alive()
    }
    fn connect(o: &Self::Options) -> Self::Packet {
        let mut connect = rumqttc::Connect::new(o.client_id());
        connect.keep_alive = u16::try_from(o.keep_alive().as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = o.clean_session();
        connect.last_will = o.last_will();
        connect.login = o.credentials();
        rumqttc::Packet::Connect(connect)
    }
    fn connected(
        state: &mut State4,
        _wire: &mut Wire<Self>,
        answer: Self::Packet,
    ) -> Result<Accepted, Self::Error> {
        use rumqttc::{ConnectReturnCode, ConnectionError, Event, Packet};
        match answer {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {
                let accepted = Accepted {
                    session_present: ack.session_present,
                    keep_alive: None,
                };
                state
                    .inner
                    .events
                    .push_back(Event::Incoming(Packet::ConnAck(ack)));
                Ok(accepted)
            }
            Packet::ConnAck(ack) => Err(ConnectionError::ConnectionRefused(ack.code)),
            other => Err(ConnectionError::NotConnAck(other)),
        }
    }
    fn outgoing(s: &mut State4, r: Self::Request) -> Result<Option<Self::Packet>, Self::Error> {
        Ok(s.inner.handle_outgoing_packet(r)?)
    }
    fn incoming(s: &mut State4, p: Self::Packet) -> Result<Option<Self::Packet>, Self::Error> {
        Ok(s.inner.handle_incoming_packet(p)?)
    }
    fn next_event(s: &mut State4) -> Option<Self::Event> {
        s.inner.events.pop_front()
    }
    fn window_open(s: &State4) -> bool {
        s.inner.inflight() < s.window && s.inner.collision.is_none()
    }
    fn clean(s: &mut State4) -> Vec<Self::Request> {
        s.inner.clean()
    }
    fn is_ack(r: &Self::Request) -> bool {
        matches!(r, rumqttc::Request::PubAck(_))
    }
    fn ping() -> Self::Request {
        rumqttc::Request::PingReq(rumqttc::PingReq)
    }
    fn wire_error(e: Self::CodecError) -> Self::Error {
        rumqttc::StateError::Deserialization(e).into()
    }
    fn aborted() -> Self::Error {
        rumqttc::StateError::ConnectionAborted.into()
    }
    fn requests_done() -> Self::Error {
        rumqttc::ConnectionError::RequestsDone
    }
    fn network_timeout(_: Elapsed) -> Self::Error {
        rumqttc::ConnectionError::NetworkTimeout
    }
    fn flush_timeout(_: Elapsed) -> Self::Error {
        rumqttc::ConnectionError::FlushTimeout
    }
}

/// MQTT 5.
pub(super) struct V5;

/// rumqttc's MQTT 5 session state and the in-flight window: ours, or the broker's receive
/// maximum when smaller (its CONNACK says).
pub(super) struct State5 {
    inner: c5::MqttState,
    window: u16,
}

impl State5 {
    pub fn new(window: u16, manual_acks: bool) -> Self {
        Self {
            inner: c5::MqttState::new(window, manual_acks),
            window,
        }
    }
}

impl Version for V5 {
    type Packet = p5::Packet;
    type Request = c5::Request;
    type Event = c5::Event;
    type State = State5;
    type CodecError = c5::mqttbytes::Error;
    type Codec = p5::Codec;
    type Error = c5::ConnectionError;
    type Options = c5::MqttOptions;

    fn codec(max_packet: usize) -> Self::Codec {
        let max = u32::try_from(max_packet).ok();
        p5::Codec {
            max_incoming_size: max,
            max_outgoing_size: None,
        }
    }
    fn keep_alive(o: &Self::Options) -> Duration {
        o.keep_alive()
    }
    fn connect(o: &Self::Options) -> Self::Packet {
        p5::Packet::Connect(
            p5::Connect {
                client_id: o.client_id(),
                keep_alive: u16::try_from(o.keep_alive().as_secs()).unwrap_or(u16::MAX),
                clean_start: o.clean_start(),
                properties: o.connect_properties(),
            },
            o.last_will(),
            o.credentials(),
        )
    }
    fn connected(
        state: &mut State5,
        wire: &mut Wire<Self>,
        answer: Self::Packet,
    ) -> Result<Accepted, Self::Error> {
        use c5::ConnectionError;
        match answer {
            p5::Packet::ConnAck(ack) if ack.code == p5::ConnectReturnCode::Success => {
                let mut accepted = Accepted {
                    session_present: ack.session_present,
                    keep_alive: None,
                };
                if let Some(props) = &ack.properties {
                    if let Some(k) = props.server_keep_alive {
                        accepted.keep_alive = Some(Duration::from_secs(u64::from(k)));
                    }
                    wire.codec_mut().max_outgoing_size = props.max_packet_size;
                    if let Some(max) = props.receive_max {
                        state.window = state.window.min(max);
                    }
                }
                // The state takes the broker's limits (receive maximum, topic aliases) and
                // queues the CONNACK as the first event.
                state
                    .inner
                    .handle_incoming_packet(p5::Packet::ConnAck(ack))?;
                Ok(accepted)
            }
            p5::Packet::ConnAck(ack) => Err(ConnectionError::ConnectionRefused(ack.code)),
            other => Err(ConnectionError::NotConnAck(Box::new(other))),
        }
    }
    fn outgoing(s: &mut State5, r: Self::Request) -> Result<Option<Self::Packet>, Self::Error> {
        Ok(s.inner.handle_outgoing_packet(r)?)
    }
    fn incoming(s: &mut State5, p: Self::Packet) -> Result<Option<Self::Packet>, Self::Error> {
        Ok(s.inner.handle_incoming_packet(p)?)
    }
    fn next_event(s: &mut State5) -> Option<Self::Event> {
        s.inner.events.pop_front()
    }
    fn window_open(s: &State5) -> bool {
        s.inner.inflight() < s.window && s.inner.collision.is_none()
    }
    fn clean(s: &mut State5) -> Vec<Self::Request> {
        s.inner.clean()
    }
    fn is_ack(r: &Self::Request) -> bool {
        matches!(r, c5::Request::PubAck(_))
    }
    fn ping() -> Self::Request {
        c5::Request::PingReq
    }
    fn wire_error(e: Self::CodecError) -> Self::Error {
        c5::StateError::from(e).into()
    }
    fn aborted() -> Self::Error {
        c5::StateError::ConnectionAborted.into()
    }
    fn requests_done() -> Self::Error {
        c5::ConnectionError::RequestsDone
    }
    fn network_timeout(e: Elapsed) -> Self::Error {
        c5::ConnectionError::Timeout(e)
    }
    fn flush_timeout(e: Elapsed) -> Self::Error {
        c5::ConnectionError::Timeout(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Event, Outgoing, Packet, QoS};
    use twinguard_fixtures::broker::Broker;

    /// The writes a loop has counted, and the packets they carried.
    fn written<V: Version>(l: &EventLoop<V>) -> (u64, u64) {
        l.counts.as_ref().map_or((0, 0), |c| {
            (
                c.writes.load(Ordering::Relaxed),
                c.packets_sent.load(Ordering::Relaxed),
            )
        })
    }

    fn target(port: u16, client_id: &str, clean_session: bool) -> Target<V4> {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(clean_session);
        Target {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            max_packet: 1 << 20,
            options,
        }
    }

    fn client(
        target: Target<V4>,
        manual_acks: bool,
        cap: usize,
    ) -> (rumqttc::AsyncClient, EventLoop<V4>) {
        let (tx, l) = EventLoop::new(
            target,
            State4::new(100, manual_acks),
            cap,
            Some(Arc::default()),
        );
        (rumqttc::AsyncClient::from_senders(tx), l)
    }

    /// Requests queued while the loop was busy go out in one write, and the broker takes them
    /// all: each is acknowledged, and a subscriber receives each once, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn queued_requests_share_one_write_and_all_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path(), None);
        let (sub, mut sub_loop) = client(target(broker.port, "batched-sub", true), false, 64);
        sub.subscribe("batched/#", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
                break;
            }
        }
        let (publisher, mut pub_loop) = client(target(broker.port, "batched-pub", true), false, 64);
        assert!(matches!(
            pub_loop.poll().await.unwrap(),
            Event::Incoming(Packet::ConnAck(_))
        ));
        const N: usize = 40;
        for i in 0..N {
            publisher
                .publish(
                    format!("batched/{i}"),
                    QoS::AtLeastOnce,
                    false,
                    i.to_string(),
                )
                .await
                .unwrap();
        }
        let (mut sent, mut acked) = (Vec::new(), 0);
        let mut first_write = None;
        while acked < N {
            let event = pub_loop.poll().await.unwrap();
            // The first poll's write; its events are handed out before the next one.
            first_write.get_or_insert_with(|| written(&pub_loop));
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => sent.push(pkid),
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                _ => {}
            }
        }
        assert_eq!(sent.len(), N, "one Sent event per publish");
        assert_eq!(
            first_write,
            Some((1, N as u64)),
            "the {N} queued publishes went out in one write (writes, packets)"
        );
        let mut got = Vec::new();
        while got.len() < N {
            if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
                got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
        }
        let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(got, want);
    }

    /// With manual acknowledgements, a message not acknowledged before the connection drops
    /// comes back to the next connection of the same persistent session; one acknowledged
    /// does not (the acknowledgements went out in one write with nothing lost).
    #[tokio::test(flavor = "current_thread")]
    async fn unacknowledged_messages_come_back_acknowledged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path(), None);
        let session = || target(broker.port, "batched-session", false);
        let (c, mut l) = client(session(), true, 64);
        c.subscribe("acks/#", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = l.poll().await.unwrap() {
                break;
            }
        }
        let (device, mut device_loop) = client(target(broker.port, "acks-device", true), false, 64);
        for i in 0..10 {
            device
                .publish(format!("acks/{i}"), QoS::AtLeastOnce, false, i.to_string())
                .await
                .unwrap();
        }
        let mut acked = 0;
        while acked < 10 {
            if let Event::Incoming(Packet::PubAck(_)) = device_loop.poll().await.unwrap() {
                acked += 1;
            }
        }
        let mut received = Vec::new();
        while received.len() < 10 {
            if let Event::Incoming(Packet::Publish(p)) = l.poll().await.unwrap() {
                received.push(p);
            }
        }
        // Acknowledge the even ones only, then wait until those acknowledgements are written.
        for p in received.iter().filter(|p| p.payload[0] % 2 == 0) {
            c.ack(p).await.unwrap();
        }
        let mut written = 0;
        while written < 5 {
            if let Event::Outgoing(Outgoing::PubAck(_)) = l.poll().await.unwrap() {
                written += 1;
            }
        }
        // A clean DISCONNECT after them: the broker reads them first, then closes.
        c.disconnect().await.unwrap();
        while l.poll().await.is_ok() {}
        drop(l);
        let (_c2, mut l2) = client(session(), true, 64);
        let mut again = Vec::new();
        let collect = async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) = l2.poll().await.unwrap() {
                    again.push(String::from_utf8(p.payload.to_vec()).unwrap());
                    if again.len() == 5 {
                        break;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), collect)
            .await
            .expect("the five unacknowledged messages come back");
        again.sort();
        assert_eq!(again, ["1", "3", "5", "7", "9"]);
    }

    /// An idle connection pings at its keep-alive interval and the broker answers.
    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_connection_pings() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path(), None);
        let mut t = target(broker.port, "batched-idle", true);
        t.options.set_keep_alive(Duration::from_secs(1));
        let (_c, mut l) = client(t, false, 4);
        let (mut pinged, mut answered) = (false, false);
        let watch = async {
            while !answered {
                match l.poll().await.unwrap() {
                    Event::Outgoing(Outgoing::PingReq) => pinged = true,
                    Event::Incoming(Packet::PingResp) => answered = pinged,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), watch)
            .await
            .expect("a ping and its answer within a minute of a 1 s keep-alive");
    }

    /// MQTT 5: queued publishes go out together, within the receive maximum the broker's
    /// CONNACK announces (Mosquitto's `max_inflight_messages`, 20 by default), and all arrive.
    #[tokio::test(flavor = "current_thread")]
    async fn mqtt5_batches_within_the_brokers_receive_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path(), None);
        let v5 = |id: &str| {
            let mut options = c5::MqttOptions::new(id, "127.0.0.1", broker.port);
            options.set_keep_alive(Duration::from_secs(30));
            let target = Target::<V5> {
                host: "127.0.0.1".into(),
                port: broker.port,
                tls: None,
                max_packet: 1 << 20,
                options,
            };
            let (tx, l) = EventLoop::new(target, State5::new(100, false), 64, Some(Arc::default()));
            (c5::AsyncClient::from_senders(tx), l)
        };
        let (sub, mut sub_loop) = v5("batched5-sub");
        sub.subscribe("batched5/#", c5::mqttbytes::QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let c5::Event::Incoming(p5::Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
                break;
            }
        }
        let (publisher, mut pub_loop) = v5("batched5-pub");
        assert!(matches!(
            pub_loop.poll().await.unwrap(),
            c5::Event::Incoming(p5::Packet::ConnAck(_))
        ));
        assert_eq!(pub_loop.state.window, 20, "the broker's receive maximum");
        const N: usize = 50;
        for i in 0..N {
            publisher
                .publish(
                    format!("batched5/{i}"),
                    c5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    i.to_string(),
                )
                .await
                .unwrap();
        }
        let mut acked = 0;
        let mut first_write = None;
        while acked < N {
            let event = pub_loop.poll().await.unwrap();
            first_write.get_or_insert_with(|| written(&pub_loop));
            if let c5::Event::Incoming(p5::Packet::PubAck(_)) = event {
                acked += 1;
            }
        }
        assert_eq!(
            first_write,
            Some((1, 20)),
            "the first write filled the window (writes, packets)"
        );
        let mut got = Vec::new();
        while got.len() < N {
            if let c5::Event::Incoming(p5::Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
                got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
        }
        let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(got, want);
    }
}
