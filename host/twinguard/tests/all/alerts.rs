//! Alert sinks against real sockets and files: RFC 5424 over UDP and TCP (octet counting), TCP
//! reconnection, JSON lines, rate limiting on an injected clock, isolation of failing sinks and
//! config refusals.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use twinguard::alerts::{
    AlertSink, Alerts, AlertsConfig, AlertsError, Clock, EventAction, SecurityEvent, SinkError,
    SyslogConfig, SyslogSink, Transport,
};
use twinguard::{Action, Alert, ContentType, Message, Outcome, Severity};

const T0: u64 = 1_700_000_000_000;

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    fn new(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn alert(severity: Severity, code: &str, detail: &str) -> Alert {
    Alert::new("replay-guard", "9f86d081884c7d65", severity, code, detail)
}

fn message(device: &str) -> Message {
    Message::new(
        device,
        format!("plant/{device}/telemetry"),
        ContentType::Json,
        b"{}".to_vec(),
    )
}

fn outcome(alerts: Vec<Alert>) -> Outcome {
    let action = Action::Quarantine {
        policy: Some("replay-guard".into()),
        reason: "replay".into(),
    };
    let mut outcome = Outcome::new(action, b"{}".to_vec(), 4);
    outcome.alerts = alerts;
    outcome
}

fn config(text: &str) -> AlertsConfig {
    AlertsConfig::from_toml(text).unwrap()
}

fn read_lines(path: &Path) -> Vec<SecurityEvent> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// One RFC 5424 message, taken apart.
#[derive(Debug)]
struct Syslog {
    pri: u16,
    version: u32,
    timestamp: String,
    hostname: String,
    app_name: String,
    procid: String,
    msgid: String,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: String,
}

impl Syslog {
    fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no SD param {name} in {self:?}"))
    }
}

/// A strict parser of the subset twinguard writes: one SD element, escapes per RFC 5424 §6.3.3.
fn parse_5424(line: &str) -> Syslog {
    let rest = line.strip_prefix('<').expect("starts with <PRI>");
    let (pri, rest) = rest.split_once('>').expect("PRI closes");
    let mut header = rest.splitn(7, ' ');
    let mut next = || header.next().expect("header field").to_string();
    let (version, timestamp, hostname, app_name, procid, msgid, rest) =
        (next(), next(), next(), next(), next(), next(), next());
    let mut chars = rest.chars().peekable();
    assert_eq!(chars.next(), Some('['), "SD element in {line}");
    let mut sd_id = String::new();
    while let Some(c) = chars.next_if(|c| *c != ' ' && *c != ']') {
        sd_id.push(c);
    }
    let mut params = Vec::new();
    while chars.next_if_eq(&' ').is_some() {
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=') {
            name.push(c);
        }
        assert_eq!(chars.next(), Some('='));
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        loop {
            match chars.next().expect("PARAM-VALUE closes") {
                '\\' => {
                    let c = chars.next().expect("escaped char");
                    assert!(matches!(c, '"' | '\\' | ']'), "bad escape \\{c} in {line}");
                    value.push(c);
                }
                '"' => break,
                ']' => panic!("unescaped ] inside a PARAM-VALUE: {line}"),
                c => value.push(c),
            }
        }
        params.push((name, value));
    }
    assert_eq!(chars.next(), Some(']'), "SD element closes in {line}");
    assert_eq!(chars.next(), Some(' '), "space before MSG in {line}");
    Syslog {
        pri: pri.parse().expect("PRI is a number"),
        version: version.parse().expect("VERSION is a number"),
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        sd_id,
        params,
        msg: chars.collect(),
    }
}

/// Checks one syslog message against the event it carries, and returns the event.
fn check_syslog(m: &Syslog, facility: u16) -> SecurityEvent {
    let event: SecurityEvent = serde_json::from_str(&m.msg).expect("MSG is the JSON event");
    let severity = match event.severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    };
    assert_eq!(m.pri, facility * 8 + severity, "{m:?}");
    assert_eq!(m.version, 1);
    assert_eq!(m.timestamp, event.time);
    assert_eq!(m.hostname, "gw-test");
    assert_eq!(m.app_name, "twinguard");
    assert_eq!(m.procid, std::process::id().to_string());
    assert_eq!(m.msgid, event.code);
    assert_eq!(m.sd_id, "twinguard@32473");
    assert_eq!(m.param("id"), event.id);
    assert_eq!(m.param("device"), event.device_id);
    assert_eq!(m.param("topic"), event.topic);
    assert_eq!(m.param("action"), "quarantine");
    assert_eq!(m.param("policy"), event.policy);
    assert_eq!(m.param("version"), event.policy_version);
    assert_eq!(m.param("code"), event.code);
    assert_eq!(m.param("count"), event.count.to_string());
    assert_eq!(m.param("generation"), "4");
    event
}

fn syslog_alerts(address: SocketAddr, transport: &str) -> Alerts {
    let c = config(&format!(
        "[alerts]\ndedup-window-ms = 60000\n[[alerts.syslog]]\naddress = \"{address}\"\n\
         transport = \"{transport}\"\nfacility = \"local3\"\nhostname = \"gw-test\"\n"
    ));
    Alerts::builder(&c, Path::new("."))
        .clock(ManualClock::new(T0))
        .build()
        .unwrap()
}

/// Device ids with every character RFC 5424 makes us escape.
const NASTY_DEVICE: &str = r#"press"7]\x"#;

#[test]
fn udp_syslog_is_rfc5424_with_the_json_event_as_msg() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let alerts = syslog_alerts(server.local_addr().unwrap(), "udp");
    let sent = alerts.handle(
        &message(NASTY_DEVICE),
        &outcome(vec![
            alert(Severity::Critical, "device-spoofing", "seq \"3\" ] \\ 5"),
            alert(Severity::Info, "inventory", "unknown device"),
        ]),
    );
    assert_eq!(sent.len(), 2);
    assert!(alerts.flush());

    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    for _ in 0..2 {
        let n = server.recv(&mut buf).expect("a datagram");
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            !line.ends_with('\n'),
            "one message per datagram, no trailer"
        );
        got.push(check_syslog(&parse_5424(line), 19));
    }
    got.sort_by_key(|e| e.severity);
    assert_eq!(got[0].code, "inventory");
    assert_eq!(got[1].code, "device-spoofing");
    assert_eq!(got[1].device_id, NASTY_DEVICE);
    assert_eq!(got[1].detail, "seq \"3\" ] \\ 5");
    assert_eq!(got[1].action, EventAction::Quarantine);
    assert_eq!(got[1].count, 1);
    assert_eq!(got[1].time_ms, T0);
    assert_eq!(got[1].time, "2023-11-14T22:13:20.000Z");
    let stats = alerts.stats();
    assert_eq!(stats.sinks[0].sent, 2, "{stats:?}");
}

/// Reads one octet-counted frame (RFC 6587 §3.4.1); `None` when the peer has closed.
fn read_frame(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut len = Vec::new();
    if reader.read_until(b' ', &mut len).unwrap() == 0 {
        return None;
    }
    assert_eq!(len.pop(), Some(b' '), "MSG-LEN then a space");
    let len: usize = std::str::from_utf8(&len)
        .unwrap()
        .parse()
        .expect("MSG-LEN digits");
    let mut frame = vec![0u8; len];
    reader.read_exact(&mut frame).unwrap();
    Some(String::from_utf8(frame).unwrap())
}

/// Every frame until the peer closes.
fn read_frames(stream: TcpStream) -> Vec<String> {
    let mut reader = BufReader::new(stream);
    std::iter::from_fn(|| read_frame(&mut reader)).collect()
}

/// The next connection, within 10 s (a test fails rather than hangs), with reads bounded too.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection came");
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn tcp_syslog_uses_octet_counting_framing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let reader = thread::spawn(move || read_frames(accept(&listener)));
    let alerts = syslog_alerts(address, "tcp");
    for i in 0..3 {
        alerts.handle(
            &message(NASTY_DEVICE),
            &outcome(vec![alert(
                Severity::High,
                "replay",
                &format!("seq {i}]\n"),
            )]),
        );
    }
    assert!(alerts.flush());
    assert_eq!(alerts.stats().sinks[0].sent, 3);
    drop(alerts); // closes the connection, which ends the reader
    let frames = reader.join().unwrap();
    assert_eq!(frames.len(), 3, "{frames:?}");
    for (i, frame) in frames.iter().enumerate() {
        let event = check_syslog(&parse_5424(frame), 19);
        assert_eq!(event.detail, format!("seq {i}]\n"));
    }
}

fn tcp_event(i: u32) -> SecurityEvent {
    SecurityEvent::from_alert(
        "dev-1",
        "plant/dev-1/telemetry",
        EventAction::Quarantine,
        4,
        &alert(Severity::High, "replay", &format!("event {i}")),
        T0,
    )
}

/// Accepts connections and forwards every frame's event detail.
fn collect_details(listener: TcpListener, tx: mpsc::Sender<String>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let tx = tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            while let Some(frame) = read_frame(&mut reader) {
                let event: SecurityEvent = serde_json::from_str(&parse_5424(&frame).msg).unwrap();
                let _ = tx.send(event.detail);
            }
        });
    }
}

#[test]
fn tcp_sink_reconnects_after_the_receiver_restarts() {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = first.local_addr().unwrap();
    let sink = SyslogSink::new(&SyslogConfig {
        address: address.to_string(),
        transport: Transport::Tcp,
        facility: Default::default(),
        hostname: Some("gw-test".into()),
        sd_id: None,
    })
    .unwrap();

    sink.send(&tcp_event(0)).unwrap();
    let mut reader = BufReader::new(accept(&first));
    let frame = read_frame(&mut reader).expect("the first event");
    assert!(frame.contains("event 0"), "{frame}");
    // The receiver goes away: listener and connection closed.
    drop(first);
    drop(reader);

    // While it is down, sends fail at once rather than block.
    let started = Instant::now();
    let mut errors = 0;
    for i in 1..=5 {
        if sink.send(&tcp_event(i)).is_err() {
            errors += 1;
        }
    }
    assert_eq!(errors, 5, "nobody listens at {address}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let backoff = sink.send(&tcp_event(6)).unwrap_err();
    assert!(matches!(backoff, SinkError::Backoff { .. }), "{backoff}");

    // Back on the same port: later events arrive once the backoff has passed.
    let second = TcpListener::bind(address).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || collect_details(second, tx));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 100;
    let delivered = loop {
        i += 1;
        if sink.send(&tcp_event(i)).is_ok() {
            break i;
        }
        assert!(Instant::now() < deadline, "the sink never reconnected");
        thread::sleep(Duration::from_millis(20));
    };
    sink.send(&tcp_event(delivered + 1)).unwrap();
    let got: Vec<String> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            format!("event {delivered}"),
            format!("event {}", delivered + 1)
        ]
    );
}

#[test]
fn tcp_sink_loses_nothing_when_the_receiver_restarts_between_events() {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = first.local_addr().unwrap();
    let sink = SyslogSink::new(&SyslogConfig {
        address: address.to_string(),
        transport: Transport::Tcp,
        facility: Default::default(),
        hostname: None,
        sd_id: None,
    })
    .unwrap();
    sink.send(&tcp_event(0)).unwrap();
    let mut reader = BufReader::new(accept(&first));
    assert!(read_frame(&mut reader).unwrap().contains("event 0"));
    drop((first, reader));
    let second = TcpListener::bind(address).unwrap();
    // The old connection is closed; a write to it would vanish. The sink must notice and
    // deliver this very event on a new connection.
    sink.send(&tcp_event(1)).unwrap();
    let mut reader = BufReader::new(accept(&second));
    assert!(read_frame(&mut reader).unwrap().contains("event 1"));
}

#[test]
fn file_sink_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("[alerts]\nfile = \"out/alerts.ndjson\"\n");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let alerts = Alerts::from_config(&c, dir.path()).unwrap();
    for i in 0..5 {
        alerts.handle(
            &message(&format!("dev-{i}")),
            &outcome(vec![alert(
                Severity::Medium,
                "range",
                "temp 900 > 150\nline two",
            )]),
        );
    }
    assert!(alerts.flush());
    let path = dir.path().join("out/alerts.ndjson");
    let events = read_lines(&path);
    assert_eq!(events.len(), 5);
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "ids are unique");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.schema_version, 2);
        assert_eq!(e.device_id, format!("dev-{i}"));
        assert_eq!(e.topic, format!("plant/dev-{i}/telemetry"));
        assert_eq!(e.policy, "replay-guard");
        assert_eq!(e.policy_version, "9f86d081884c7d65");
        assert_eq!(e.severity, Severity::Medium);
        assert_eq!(e.generation, 4);
        assert_eq!((e.count, e.first_seen.as_str()), (1, e.time.as_str()));
        assert_eq!(e.last_seen, e.time);
    }
    // Appends: a second dispatcher on the same file adds to it.
    drop(alerts);
    let again = Alerts::from_config(&c, dir.path()).unwrap();
    again.handle(
        &message("dev-9"),
        &outcome(vec![alert(Severity::Low, "x", "y")]),
    );
    drop(again); // shutdown drains the queue
    assert_eq!(read_lines(&path).len(), 6);
}

fn dedup_alerts(dir: &Path, clock: &ManualClock) -> Alerts {
    let c = config("[alerts]\nfile = \"alerts.ndjson\"\ndedup-window-ms = 60000\n");
    Alerts::builder(&c, dir)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn identical_alerts_are_sent_once_per_window_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let alerts = dedup_alerts(dir.path(), &clock);
    let same = || outcome(vec![alert(Severity::High, "replay", "seq 7 <= 9")]);

    let mut sent = 0;
    for i in 0..100 {
        clock.set(T0 + i);
        sent += alerts.handle(&message("dev-1"), &same()).len();
    }
    assert_eq!(sent, 1, "100 identical alerts within the window: one event");
    // Another device is another alert.
    assert_eq!(alerts.handle(&message("dev-2"), &same()).len(), 1);
    let stats = alerts.stats();
    assert_eq!((stats.alerts, stats.events, stats.suppressed), (101, 2, 99));

    // After the window, the next one carries the repeats.
    clock.set(T0 + 60_000);
    let next = alerts.handle(&message("dev-1"), &same());
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].count, 100, "99 repeats plus itself");
    assert_eq!(next[0].first_seen, "2023-11-14T22:13:20.001Z");
    assert_eq!(next[0].last_seen, "2023-11-14T22:14:20.000Z");
    assert_eq!(next[0].time, next[0].last_seen);

    // Repeats in the new window go out on flush, in a summary event.
    for i in 1..=10 {
        clock.set(T0 + 60_000 + i);
        assert!(alerts.handle(&message("dev-1"), &same()).is_empty());
    }
    assert!(alerts.flush());
    let events = read_lines(&dir.path().join("alerts.ndjson"));
    let counts: Vec<(String, u64)> = events
        .iter()
        .map(|e| (e.device_id.clone(), e.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("dev-1".to_string(), 1),
            ("dev-2".to_string(), 1),
            ("dev-1".to_string(), 100),
            ("dev-1".to_string(), 10)
        ]
    );
    let summary = &events[3];
    assert_eq!(summary.first_seen, "2023-11-14T22:14:20.001Z");
    assert_eq!(summary.last_seen, "2023-11-14T22:14:20.010Z");
    assert_eq!(
        events.iter().map(|e| e.count).sum::<u64>(),
        alerts.stats().alerts,
        "every occurrence counted exactly once"
    );
    // A flush with nothing pending sends nothing more.
    assert!(alerts.flush());
    assert_eq!(read_lines(&dir.path().join("alerts.ndjson")).len(), 4);
}

#[test]
fn repeats_without_a_later_occurrence_go_out_when_the_window_closes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let alerts = dedup_alerts(dir.path(), &clock);
    for _ in 0..5 {
        alerts.handle(
            &message("dev-1"),
            &outcome(vec![alert(Severity::High, "replay", "a")]),
        );
    }
    // Any later alert sweeps the closed windows.
    clock.set(T0 + 61_000);
    let out = alerts.handle(
        &message("dev-2"),
        &outcome(vec![alert(Severity::Low, "other", "b")]),
    );
    let counts: Vec<(&str, u64)> = out.iter().map(|e| (e.code.as_str(), e.count)).collect();
    assert_eq!(counts, [("other", 1), ("replay", 4)]);
    // The window was forgotten with its summary: the same alert now is new.
    let again = alerts.handle(
        &message("dev-1"),
        &outcome(vec![alert(Severity::High, "replay", "a")]),
    );
    assert_eq!(again[0].count, 1);
}

#[test]
fn the_sweeper_sends_pending_repeats_on_the_system_clock() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("[alerts]\nfile = \"alerts.ndjson\"\ndedup-window-ms = 50\n");
    let alerts = Alerts::from_config(&c, dir.path()).unwrap();
    for _ in 0..3 {
        alerts.handle(
            &message("dev-1"),
            &outcome(vec![alert(Severity::High, "replay", "a")]),
        );
    }
    let path = dir.path().join("alerts.ndjson");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts: Vec<u64> = read_lines(&path).iter().map(|e| e.count).collect();
        if counts == [1, 2] {
            break;
        }
        assert!(Instant::now() < deadline, "no summary: {counts:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dead_syslog_receivers_neither_block_nor_fail_the_file_sink() {
    // Ports that were just free: nobody listens there.
    let dead_tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead_udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = config(&format!(
        "[alerts]\nfile = \"alerts.ndjson\"\n\
         [[alerts.syslog]]\naddress = \"{dead_tcp}\"\ntransport = \"tcp\"\n\
         [[alerts.syslog]]\naddress = \"{dead_udp}\"\ntransport = \"udp\"\n"
    ));
    let alerts = Alerts::from_config(&c, dir.path()).unwrap();
    let started = Instant::now();
    for i in 0..200 {
        alerts.handle(
            &message(&format!("dev-{i}")),
            &outcome(vec![alert(Severity::High, "replay", "x")]),
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the message path waited on a sink: {:?}",
        started.elapsed()
    );
    assert!(alerts.flush());
    assert_eq!(read_lines(&dir.path().join("alerts.ndjson")).len(), 200);
    let stats = alerts.stats();
    let [file, tcp, udp] = &stats.sinks[..] else {
        panic!("{stats:?}")
    };
    assert_eq!(
        (file.sent, file.failed, file.dropped),
        (200, 0, 0),
        "{stats:?}"
    );
    assert_eq!(tcp.sent, 0, "{stats:?}");
    assert_eq!(tcp.failed + tcp.dropped, 200, "{stats:?}");
    assert!(tcp.name.starts_with("syslog-tcp:127.0.0.1:"), "{stats:?}");
    assert_eq!(udp.sent + udp.failed + udp.dropped, 200, "{stats:?}");
}

/// A sink that tells when it is handed an event, then blocks until released, then refuses it.
struct Stuck {
    entered: Mutex<mpsc::Sender<()>>,
    gate: Mutex<mpsc::Receiver<()>>,
}

impl AlertSink for Stuck {
    fn send(&self, _: &SecurityEvent) -> Result<(), SinkError> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.gate.lock().unwrap().recv();
        Err(SinkError::Other("refused".into()))
    }
}

/// A sink that counts what it is given.
struct Counting(Arc<AtomicU64>);

impl AlertSink for Counting {
    fn send(&self, _: &SecurityEvent) -> Result<(), SinkError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, gate) = mpsc::channel();
    let counted = Arc::new(AtomicU64::new(0));
    let c = config("[alerts]\nqueue-capacity = 2\n");
    let alerts = Alerts::builder(&c, Path::new("."))
        .sink(
            "stuck",
            Stuck {
                entered: Mutex::new(entered_tx),
                gate: Mutex::new(gate),
            },
        )
        .sink("counting", Counting(Arc::clone(&counted)))
        .build()
        .unwrap();
    let raise = |i: u64| {
        let started = Instant::now();
        alerts.handle(
            &message(&format!("dev-{i}")),
            &outcome(vec![alert(Severity::High, "replay", "x")]),
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "handle blocked"
        );
        wait_for("the counting sink", || {
            counted.load(Ordering::SeqCst) == i + 1
        });
    };
    raise(0);
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    for i in 1..10 {
        raise(i);
    }
    let stats = alerts.stats();
    let [stuck, counting] = &stats.sinks[..] else {
        panic!("{stats:?}")
    };
    assert_eq!(stuck.name, "stuck");
    // One in the sink's hands, two queued, the other seven dropped; the other sink got all.
    assert_eq!(
        (stuck.sent, stuck.failed, stuck.dropped),
        (0, 0, 7),
        "{stats:?}"
    );
    assert_eq!((counting.sent, counting.dropped), (10, 0), "{stats:?}");
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    assert!(alerts.flush_timeout(Duration::from_secs(5)));
    assert_eq!(alerts.stats().sinks[0].failed, 3);
}

fn refusal(text: &str) -> String {
    AlertsConfig::from_toml(text).unwrap_err().to_string()
}

#[test]
fn config_refusals_name_the_key_and_value() {
    let syslog =
        |line: &str| format!("[alerts]\n[[alerts.syslog]]\naddress = \"127.0.0.1:514\"\n{line}\n");
    let e = refusal(&syslog("transport = \"sctp\""));
    assert!(
        e.contains("transport \"sctp\": expected \"udp\" or \"tcp\""),
        "{e}"
    );
    let e = refusal(&syslog("facility = \"local9\""));
    assert!(e.contains("facility \"local9\": expected one of"), "{e}");
    let e = refusal(&syslog("sd-id = \"a b\""));
    assert!(e.contains("alerts.syslog #1 sd-id \"a b\""), "{e}");
    let e = refusal(&syslog("hostnme = \"x\""));
    assert!(e.contains("hostnme"), "{e}");
    let e = refusal("[alerts]\n[[alerts.syslog]]\naddress = \"siem.local\"\n");
    assert!(
        e.contains("alerts.syslog #1 address \"siem.local\": expected host:port"),
        "{e}"
    );
    let e = refusal("[alerts]\n[[alerts.syslog]]\naddress = \"10.0.0.5:70000\"\n");
    assert!(
        e.contains("address \"10.0.0.5:70000\": port \"70000\""),
        "{e}"
    );
    let e = refusal("[alerts]\n[[alerts.syslog]]\ntransport = \"tcp\"\n");
    assert!(e.contains("address"), "{e}");
    let e = refusal("[alerts]\nqueue-capacity = 0\n");
    assert!(
        e.contains("alerts.queue-capacity must be at least 1"),
        "{e}"
    );
    let e = refusal("[alerts]\nfiel = \"a.ndjson\"\n");
    assert!(e.contains("fiel"), "{e}");

    // Building validates too (for configs embedded elsewhere), and names the file it cannot open.
    let mut c = AlertsConfig::default();
    c.syslog.push(SyslogConfig {
        address: "nowhere".into(),
        transport: Transport::Udp,
        facility: Default::default(),
        hostname: None,
        sd_id: None,
    });
    let e = Alerts::from_config(&c, Path::new(".")).unwrap_err();
    assert!(matches!(e, AlertsError::Config(_)), "{e}");
    assert!(
        e.to_string()
            .contains("alerts.syslog #1 address \"nowhere\""),
        "{e}"
    );
    let c = config("[alerts]\nfile = \"no/such/dir/alerts.ndjson\"\n");
    let dir = tempfile::tempdir().unwrap();
    let e = Alerts::from_config(&c, dir.path()).unwrap_err();
    assert!(e.to_string().starts_with("alerts.file "), "{e}");
    assert!(e.to_string().contains("no/such/dir/alerts.ndjson"), "{e}");
}

/// A policy's alert code and detail full of CR, LF, ESC, NUL and U+2028 cannot forge a record:
/// syslog's STRUCTURED-DATA and MSG and the JSON lines file carry them escaped, and a
/// receiver that splits on line ends still sees one record.
#[test]
fn control_characters_in_alerts_never_reach_a_sink_raw() {
    let forged = "ok\r\n<14>1 2026-12-04T00:00:00Z forged - - - -\x1b[2J\0\u{2028}end";
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.ndjson");
    let c = config(&format!(
        "[alerts]\nfile = {:?}\n[[alerts.syslog]]\naddress = \"{}\"\ntransport = \"udp\"\n",
        file.display().to_string(),
        server.local_addr().unwrap()
    ));
    let alerts = Alerts::builder(&c, Path::new("."))
        .clock(ManualClock::new(T0))
        .build()
        .unwrap();
    let sent = alerts.handle(
        &message("press-7"),
        &outcome(vec![alert(Severity::High, forged, forged)]),
    );
    assert_eq!(sent.len(), 1);
    assert!(alerts.flush());

    let mut buf = [0u8; 65536];
    let n = server.recv(&mut buf).expect("a datagram");
    let record = std::str::from_utf8(&buf[..n]).unwrap();
    for raw in ['\r', '\n', '\x1b', '\0', '\u{2028}'] {
        assert!(!record.contains(raw), "{raw:?} raw in {record:?}");
    }
    let m = parse_5424(record);
    assert_eq!(m.param("code"), twinguard::text::escape_controls(forged));
    // MSG is still the event, whose JSON gives back the exact text.
    let event: SecurityEvent = serde_json::from_str(&m.msg).unwrap();
    assert_eq!(event.code, forged);

    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), 1, "{written:?}");
    assert!(!written.contains('\u{2028}'), "{written:?}");
    let event: SecurityEvent = serde_json::from_str(written.trim_end()).unwrap();
    assert_eq!(event.detail, forged);
}

#[test]
fn a_new_alerts_file_is_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.ndjson");
    drop(twinguard::alerts::FileSink::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
