//! A real Mosquitto for tests: started on a free loopback port with its own config, stopped
//! (or killed) on demand, certificates generated at test time.

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Waits until something accepts connections on `port`.
pub fn wait_port(port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// TLS material for a broker on 127.0.0.1 and one client.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: "the wrong CA".
    pub other_ca: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "twinguard test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut sp =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        sp.distinguished_name.push(DnType::CommonName, "broker");
        let server = sp.signed_by(&server_key, &ca, &ca_key).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
        cp.distinguished_name.push(DnType::CommonName, "twinguard");
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = cp.signed_by(&client_key, &ca, &ca_key).unwrap();

        let other_key = KeyPair::generate().unwrap();
        let mut op = CertificateParams::new(Vec::<String>::new()).unwrap();
        op.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        op.distinguished_name
            .push(DnType::CommonName, "some other CA");
        let other = op.self_signed(&other_key).unwrap();

        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
        }
    }
}

/// A running Mosquitto.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub tls_port: Option<u16>,
    config: PathBuf,
    pub dir: PathBuf,
}

impl Broker {
    /// A plain listener with persistence on (sessions and queued QoS 1 messages survive a
    /// restart), and a TLS listener requiring client certificates when `pki` is given.
    pub fn start(dir: &Path, pki: Option<&Pki>) -> Self {
        Self::start_with(dir, pki, "")
    }

    /// [`start`](Self::start) with `extra` appended to the config (e.g. `plugin` lines).
    pub fn start_with(dir: &Path, pki: Option<&Pki>, extra: &str) -> Self {
        let port = free_port();
        let tls_port = pki.map(|_| free_port());
        let data = dir.join("mosquitto-data");
        std::fs::create_dir_all(&data).unwrap();
        let mut conf = format!(
            "user root\nper_listener_settings false\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nautosave_interval 1\nlog_dest stderr\nlog_type error\n\
             log_type warning\nmax_queued_messages 100000\nlistener {port} 127.0.0.1\n",
            data.display()
        );
        if let (Some(pki), Some(tp)) = (pki, tls_port) {
            conf.push_str(&format!(
                "listener {tp} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            ));
        }
        conf.push_str(extra);
        let config = dir.join("mosquitto.conf");
        std::fs::write(&config, conf).unwrap();
        let mut broker = Self {
            child: None,
            port,
            tls_port,
            config,
            dir: dir.to_path_buf(),
        };
        broker.restart();
        broker
    }

    /// Starts it again (after [`stop`](Self::stop)), same ports, same persistence file.
    pub fn restart(&mut self) {
        let mut child = Command::new(mosquitto())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto must be installed (scripts/test.sh installs it)");
        let stderr = child.stderr.take();
        std::thread::spawn(move || {
            if let Some(s) = stderr {
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    eprintln!("[mosquitto] {line}");
                }
            }
        });
        assert!(
            wait_port(self.port, Duration::from_secs(10)),
            "mosquitto did not listen on {}",
            self.port
        );
        if let Some(tp) = self.tls_port {
            assert!(wait_port(tp, Duration::from_secs(10)));
        }
        self.child = Some(child);
    }

    /// A clean stop (SIGTERM): Mosquitto saves its persistence file.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The broker executable.
pub fn mosquitto() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mosquitto")
}
