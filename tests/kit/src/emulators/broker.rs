//! A real mosquitto broker on a free loopback port, started and killed by the test.

use crate::process::free_port;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to run the broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Keep sessions and queued messages in a file across restarts (saved on a clean
    /// stop and every second).
    pub persistence: bool,
    /// Serve TLS with these files instead of plain TCP.
    pub tls: Option<TlsFiles>,
    /// Require a client certificate signed by the CA (mutual TLS).
    pub require_client_cert: bool,
    /// Refuse anonymous clients; this one user (name, password) may connect.
    pub user: Option<(String, String)>,
}

/// PEM files for a TLS test: a CA, a server certificate for 127.0.0.1/localhost, and a
/// client certificate, all made by `openssl` in the test's directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: a client trusting it must refuse the broker.
    pub other_ca: PathBuf,
}

/// A running mosquitto.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
}

impl Broker {
    /// Starts mosquitto with its config, log and persistence under `dir`.
    pub fn start(dir: &Path, opts: &BrokerOptions) -> Broker {
        std::fs::create_dir_all(dir).expect("broker dir");
        let port = free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous {}\npersistence {}\npersistence_location {}/\n\
             autosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 1000\nset_tcp_nodelay true\n\
             log_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            opts.user.is_none(),
            opts.persistence,
            dir.display(),
            dir.display(),
        );
        if let Some((user, password)) = &opts.user {
            let file = dir.join("passwords");
            let out = Command::new("mosquitto_passwd")
                .arg("-c")
                .arg("-b")
                .arg(&file)
                .args([user, password])
                .output()
                .expect("mosquitto_passwd runs (apt-get install mosquitto)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            conf.push_str(&format!("password_file {}\n", file.display()));
        }
        if nix::unistd::Uid::effective().is_root() {
            // Started as root, mosquitto would switch to user `mosquitto`, which cannot
            // read the test's private directory.
            conf.push_str("user root\n");
        }
        if let Some(tls) = &opts.tls {
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.ca.display(),
                tls.server_cert.display(),
                tls.server_key.display(),
                opts.require_client_cert
            ));
        }
        let conf_path = dir.join("mosquitto.conf");
        let mut broker = Broker {
            child: None,
            port,
            dir: dir.to_path_buf(),
            conf: conf_path,
        };
        for _ in 0..5 {
            std::fs::write(&broker.conf, &conf).expect("write mosquitto.conf");
            if broker.spawn() {
                return broker;
            }
            let port = free_port();
            conf = conf.replacen(&format!("listener {} ", broker.port), &format!("listener {port} "), 1);
            broker.port = port;
        }
        panic!("mosquitto could not bind a free port in 5 tries:\n{}", broker.log());
    }

    /// Starts mosquitto on `self.port`; false if it exited at once (the port was
    /// taken meanwhile: `free_port` only finds a port that was free a moment ago).
    fn spawn(&mut self) -> bool {
        let mut child = Command::new(mosquitto())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        // Something listens; make sure it is ours and not a neighbour test's broker.
        std::thread::sleep(Duration::from_millis(100));
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        self.child = Some(child);
        true
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: whatever was not saved is gone, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same config and persistence file.
    pub fn restart(&mut self) {
        self.kill9();
        assert!(
            self.spawn(),
            "mosquitto did not start again on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// The broker's own log.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("mosquitto.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The `[mqtt]` lines that point the agent at this broker.
    pub fn agent_toml(&self, client_id: &str) -> String {
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"{client_id}\"\nreconnect_initial = \"50ms\"\nreconnect_max = \"500ms\"\n",
            self.port
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn mosquitto() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// Makes a CA, a server certificate (SAN 127.0.0.1 and localhost) and a client
/// certificate with `openssl`, plus an unrelated CA.
pub fn make_tls_files(dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("tls dir");
    let p = |name: &str| dir.join(name);
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for ca in ["ca", "other-ca"] {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=tillgate test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    std::fs::write(p("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext file");
    std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext file");
    for (name, cn) in [("server", "127.0.0.1"), ("client", "tillgate-agent")] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }
    TlsFiles {
        ca: p("ca.pem"),
        server_cert: p("server.pem"),
        server_key: p("server.key"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
        other_ca: p("other-ca.pem"),
    }
}
