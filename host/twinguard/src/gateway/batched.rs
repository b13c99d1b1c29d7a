//! The MQTT 3.1.1 event loop: rumqttc's packet codec and session state, driven so that every
//! request queued when the loop wakes goes out in one write.
//!
//! rumqttc's own `EventLoop` writes and flushes each request on its own: two syscalls per
//! message the gateway judges (its forward and its acknowledgement), each paid again by the
//! broker that reads them. Here the loop takes what is queued (up to [`WRITE_BATCH`]), encodes it
//! into one buffer and flushes once. Everything else is rumqttc's: the packets
//! ([`rumqttc::Codec`]), packet ids, the in-flight window and acknowledgements
//! ([`rumqttc::MqttState`]), the client ([`rumqttc::AsyncClient`] over this loop's queue), the
//! events and the errors. Only the order of the loop's own steps is written here.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use rumqttc::tokio_rustls::{rustls, TlsConnector};
use rumqttc::{
    Codec, ConnAck, Connect, ConnectReturnCode, ConnectionError, Event, Login, MqttState, Packet,
    PingReq, Request, StateError, TlsError,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant, Sleep};
use tokio_util::codec::Framed;

/// Requests written in one flush at most, so that reading the broker's packets keeps its turn.
const WRITE_BATCH: usize = 64;
/// Packets read in one wake-up at most (rumqttc's figure).
const READ_BATCH: usize = 10;
/// How long connecting (TCP, TLS, CONNECT and CONNACK) or one flush may take: rumqttc's
/// default connection timeout.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Wire = Framed<Box<dyn Io>, Codec>;

/// Where and how to connect: what [`super::mqtt::Settings`] says, owned.
pub(super) struct Target {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub inflight: u16,
    pub credentials: Option<(String, String)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub max_packet: usize,
}

/// One connection's loop. Polled by one task; the [`rumqttc::AsyncClient`] made with it queues
/// requests from any task.
pub(super) struct EventLoop {
    target: Target,
    state: MqttState,
    requests: flume::Receiver<Request>,
    /// Requests of a connection that failed, sent first on the next one (if its session lives).
    pending: VecDeque<Request>,
    wire: Option<Wire>,
    keepalive: Option<Pin<Box<Sleep>>>,
    /// Packets handed to each flush that carried any, for the tests.
    #[cfg(test)]
    flushes: Vec<usize>,
}

/// A client and the loop that serves it; `cap` bounds the request queue.
pub(super) fn client(
    target: Target,
    manual_acks: bool,
    cap: usize,
) -> (rumqttc::AsyncClient, EventLoop) {
    let (tx, rx) = flume::bounded(cap);
    let state = MqttState::new(target.inflight, manual_acks);
    (
        rumqttc::AsyncClient::from_senders(tx),
        EventLoop {
            target,
            state,
            requests: rx,
            pending: VecDeque::new(),
            wire: None,
            keepalive: None,
            #[cfg(test)]
            flushes: Vec::new(),
        },
    )
}

impl EventLoop {
    /// The next event: connects first when not connected (yielding the CONNACK), and after a
    /// failure connects again on the next call. Cancel-safe between events: a request taken
    /// from the queue is written before the call returns.
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        if self.wire.is_none() {
            let (wire, connack) = match timeout(NETWORK_TIMEOUT, connect(&self.target)).await {
                Ok(connected) => connected?,
                Err(_) => return Err(ConnectionError::NetworkTimeout),
            };
            if !connack.session_present {
                self.pending.clear();
            }
            self.wire = Some(wire);
            if self.keepalive.is_none() && !self.target.keep_alive.is_zero() {
                self.keepalive = Some(Box::pin(sleep(self.target.keep_alive)));
            }
            return Ok(Event::Incoming(Packet::ConnAck(connack)));
        }
        loop {
            if let Some(event) = self.state.events.pop_front() {
                return Ok(event);
            }
            if let Err(e) = self.step().await {
                // What was in flight goes again first if the session survives (MQTT requires
                // it); queued acknowledgements do not: the broker redelivers their messages.
                self.wire = None;
                self.keepalive = None;
                self.pending.extend(self.state.clean());
                self.pending.extend(
                    self.requests
                        .drain()
                        .filter(|r| !matches!(r, Request::PubAck(_))),
                );
                return Err(e);
            }
        }
    }

    /// Waits for the network, the request queue or the keep-alive, and handles what came.
    async fn step(&mut self) -> Result<(), ConnectionError> {
        let Self {
            target,
            state,
            requests,
            pending,
            wire,
            keepalive,
            #[cfg(test)]
            flushes,
        } = self;
        let wire = wire.as_mut().ok_or(ConnectionError::RequestsDone)?;
        // Flow control as rumqttc's: new requests wait while the in-flight window is full or a
        // packet id collided; requests left by a failed connection always go.
        let may_send = !pending.is_empty()
            || (state.inflight() < target.inflight && state.collision.is_none());
        let mut fed = 0;
        tokio::select! {
            packet = wire.next() => {
                let mut packet = packet;
                let mut read = 0;
                loop {
                    let incoming = match packet {
                        Some(Ok(p)) => p,
                        Some(Err(e)) => return Err(StateError::Deserialization(e).into()),
                        None => return Err(StateError::ConnectionAborted.into()),
                    };
                    if let Some(reply) = state.handle_incoming_packet(incoming)? {
                        feed(wire, reply).await?;
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
            request = next_request(pending, requests), if may_send => {
                let mut request = request?;
                let mut written = 0;
                loop {
                    if let Some(packet) = state.handle_outgoing_packet(request)? {
                        feed(wire, packet).await?;
                        fed += 1;
                    }
                    written += 1;
                    if written >= WRITE_BATCH
                        || (pending.is_empty()
                            && (state.inflight() >= target.inflight || state.collision.is_some()))
                    {
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
                    k.as_mut().reset(Instant::now() + target.keep_alive);
                }
                // Fails when the last ping went unanswered: the connection is dead.
                if let Some(ping) = state.handle_outgoing_packet(Request::PingReq(PingReq))? {
                    feed(wire, ping).await?;
                    fed += 1;
                }
            }
        }
        #[cfg(test)]
        if fed > 0 {
            flushes.push(fed);
        }
        let _ = fed;
        match timeout(NETWORK_TIMEOUT, wire.flush()).await {
            Ok(flushed) => flushed.map_err(|e| StateError::Deserialization(e).into()),
            Err(_) => Err(ConnectionError::FlushTimeout),
        }
    }
}

/// TCP (no Nagle), TLS when configured, then CONNECT and its CONNACK.
async fn connect(t: &Target) -> Result<(Wire, ConnAck), ConnectionError> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    // No Nagle: see `mqtt::network_options`.
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
    let mut wire = Framed::new(
        io,
        Codec {
            max_incoming_size: t.max_packet,
            max_outgoing_size: t.max_packet,
        },
    );
    let mut connect = Connect::new(t.client_id.as_str());
    connect.keep_alive = u16::try_from(t.keep_alive.as_secs()).unwrap_or(u16::MAX);
    connect.clean_session = t.clean_session;
    connect.login = t.credentials.as_ref().map(|(u, p)| Login::new(u, p));
    wire.send(Packet::Connect(connect))
        .await
        .map_err(StateError::Deserialization)?;
    match wire.next().await {
        Some(Ok(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => Ok((wire, ack)),
        Some(Ok(Packet::ConnAck(ack))) => Err(ConnectionError::ConnectionRefused(ack.code)),
        Some(Ok(other)) => Err(ConnectionError::NotConnAck(other)),
        Some(Err(e)) => Err(StateError::Deserialization(e).into()),
        None => Err(StateError::ConnectionAborted.into()),
    }
}

/// The keep-alive's next tick (never, without one).
async fn tick(keepalive: &mut Option<Pin<Box<Sleep>>>) {
    match keepalive {
        Some(k) => k.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Encodes a packet into the write buffer (which writes out only past its high-water mark).
async fn feed(wire: &mut Wire, packet: Packet) -> Result<(), ConnectionError> {
    wire.feed(packet)
        .await
        .map_err(|e| StateError::Deserialization(e).into())
}

/// The next request: one left by a failed connection first, else the queue's.
async fn next_request(
    pending: &mut VecDeque<Request>,
    requests: &flume::Receiver<Request>,
) -> Result<Request, ConnectionError> {
    match pending.pop_front() {
        Some(r) => Ok(r),
        None => requests
            .recv_async()
            .await
            .map_err(|_| ConnectionError::RequestsDone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Outgoing, QoS};
    use twinguard_fixtures::broker::Broker;

    fn target(port: u16, client_id: &str, clean_session: bool) -> Target {
        Target {
            client_id: client_id.into(),
            host: "127.0.0.1".into(),
            port,
            keep_alive: Duration::from_secs(30),
            clean_session,
            inflight: 100,
            credentials: None,
            tls: None,
            max_packet: 1 << 20,
        }
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
        while acked < N {
            match pub_loop.poll().await.unwrap() {
                Event::Outgoing(Outgoing::Publish(pkid)) => sent.push(pkid),
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                _ => {}
            }
        }
        assert_eq!(sent.len(), N, "one Sent event per publish");
        assert_eq!(
            pub_loop.flushes.first(),
            Some(&N),
            "the {N} queued publishes went out in one write: {:?}",
            pub_loop.flushes
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
        t.keep_alive = Duration::from_secs(1);
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
}
