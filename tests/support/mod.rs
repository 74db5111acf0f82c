//! Starts the real `kiosk-host` binary on a free loopback port and talks to
//! it over real sockets.
#![allow(dead_code)]

pub mod ca;
pub mod openapi;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sends signal `name` (`TERM`, `HUP`…) to process `pid`; whether it went.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A runtime config whose `default` store is the Redis at `url`, its ticket
/// numbers fenced, with `extra` lines (e.g. `durability = "volatile"`)
/// added to the store's table; written into `dir`.
pub fn redis_runtime_config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("runtime-config.toml");
    std::fs::write(
        &path,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}/0\"\n\
             sequences = [\"lane-seq:\"]\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A test app under tests/apps/.
pub fn app(name: &str) -> PathBuf {
    repo().join("tests/apps").join(name)
}

/// The guest wasm built by scripts/build-guests.
pub fn guest_wasm(crate_name: &str) -> PathBuf {
    let path = repo()
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests (scripts/test does) first",
        path.display()
    );
    path
}

/// A running kiosk-host process; killed when dropped.
pub struct Host {
    child: Child,
    /// The address it serves plain HTTP on (its HTTPS address when it
    /// serves only HTTPS).
    pub addr: SocketAddr,
    /// The address it serves HTTPS on, if it does.
    pub tls_addr: Option<SocketAddr>,
    /// The admin listener's address, if it has one (`[admin] listen`).
    pub admin_addr: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
    /// Its state dir.
    pub state_dir: PathBuf,
    /// Owns a fresh state dir for the process's life (None when given one).
    _owned_state: Option<tempfile::TempDir>,
}

/// What a `kiosk-host` run printed and how it ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn kiosk_host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiosk-host"))
}

/// Runs `kiosk-host ARGS` to completion.
pub fn run(args: &[&str]) -> Finished {
    let out = kiosk_host().args(args).output().unwrap();
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Host {
    /// `kiosk-host up -f MANIFEST --listen 127.0.0.1:0 EXTRA…` with a fresh state dir.
    pub fn start(manifest: &Path, extra: &[&str]) -> Host {
        let owned = tempfile::tempdir().unwrap();
        let mut host = Self::start_in(manifest, owned.path(), extra);
        host._owned_state = Some(owned);
        host
    }

    /// The same with a given state dir (to test what survives a restart).
    pub fn start_in(manifest: &Path, state_dir: &Path, extra: &[&str]) -> Host {
        Self::start_with_env(manifest, state_dir, extra, &[])
    }

    /// The same with extra environment variables for the host process
    /// (`--listen ADDR` in `extra` replaces the free loopback port).
    pub fn start_with_env(
        manifest: &Path,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Host {
        let mut child = kiosk_host()
            .arg("up")
            .arg("-f")
            .arg(manifest)
            .args(if extra.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env("KIOSK_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let (mut plain, mut tls, mut admin) = (None, None, None);
        let addr = loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "kiosk-host exited before serving:\n{}",
                    stderr.lock().unwrap()
                );
            }
            if let Some(addr) = line.trim().strip_prefix("Serving http://") {
                plain = Some(addr.parse().unwrap());
            }
            if let Some(addr) = line.trim().strip_prefix("Serving https://") {
                tls = Some(addr.parse().unwrap());
            }
            if let Some(addr) = line.trim().strip_prefix("Admin http://") {
                admin = Some(addr.parse().unwrap());
            }
            if line.starts_with("Available Routes") {
                break plain.or(tls).expect("a Serving line");
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = stdout.read_to_string(&mut sink);
        });
        Host {
            child,
            addr,
            tls_addr: tls,
            admin_addr: admin,
            stderr,
            state_dir: state_dir.to_path_buf(),
            _owned_state: None,
        }
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://ADMIN_ADDR/PATH` (the host must have an admin listener).
    pub fn admin_url(&self, path: &str) -> String {
        let addr = self.admin_addr.expect("an `Admin http://` line");
        format!("http://{addr}{path}")
    }

    /// What the host logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (bounded), returning whether it did.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends SIGHUP (reload).
    pub fn hangup(&self) {
        assert!(signal(self.child.id(), "HUP"));
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        assert!(signal(self.child.id(), "TERM"));
    }

    /// Sends SIGUSR2 (hand over to a new process).
    pub fn hand_over(&self) {
        assert!(signal(self.child.id(), "USR2"));
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "kiosk-host did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP client.
pub fn client() -> reqwest::Client {
    // reqwest's TLS (for the HTTPS tests) needs rustls's provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Clients sending `GET url` until stopped, each bounded to 60 s and
/// 20,000 requests: what a user would see of a host while it reloads or
/// hands over.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(u32, Vec<String>)>>,
}

impl Load {
    /// `clients` concurrent clients sharing `http` (a client that keeps no
    /// idle connection opens one per request).
    pub fn start(http: &reqwest::Client, url: &str, clients: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..clients)
            .map(|_| {
                let (http, url, stop) = (http.clone(), url.to_string(), stop.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let (mut ok, mut failed) = (0u32, Vec::new());
                    for _ in 0..20_000 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed)
                            || Instant::now() > deadline
                        {
                            break;
                        }
                        match http.get(&url).send().await {
                            Ok(r) if r.status() == 200 => ok += 1,
                            Ok(r) => failed.push(r.status().to_string()),
                            Err(e) => failed.push(e.to_string()),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, workers }
    }

    /// Stops the clients: how many requests succeeded, and what every
    /// other one got.
    pub async fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for worker in self.workers {
            let (o, f) = worker.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }

    /// Stops the clients and asserts that every request succeeded (and
    /// some were sent); returns how many.
    pub async fn stop_all_served(self) -> u32 {
        let (ok, failed) = self.stop().await;
        assert!(
            failed.is_empty(),
            "{} requests failed ({ok} succeeded): {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(ok > 0, "no request was sent");
        ok
    }
}

/// Sends raw bytes on a new connection and returns everything read back.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && response_complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok());
    length.is_none_or(|n| body.len() >= n)
}

/// The core banking simulator (crates/core-sim), on a free loopback port.
pub struct CoreSim {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl CoreSim {
    /// Starts `core-sim ARGS…`.
    pub fn start(args: &[&str]) -> CoreSim {
        let binary = Path::new(env!("CARGO_BIN_EXE_kiosk-host")).with_file_name("core-sim");
        assert!(
            binary.exists(),
            "{} is missing: cargo build -p core-sim",
            binary.display()
        );
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("Listening on ")
            .expect("core-sim address")
            .to_string();
        CoreSim { child, url }
    }

    /// What the simulator received, newest last.
    pub fn requests(&self) -> serde_json::Value {
        let url = format!("{}/_sim/requests", self.url);
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let reply = raw_exchange(
            addr,
            format!("GET /_sim/requests HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("[]");
        serde_json::from_str(body).unwrap()
    }
}

impl Drop for CoreSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `kiosk-host check -f MANIFEST` and asserts it fails with every one
/// of `expected` in its error output.
pub fn check_fails(manifest: &Path, expected: &[&str]) {
    let out = run(&["check", "-f", manifest.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "check accepted {}",
        manifest.display()
    );
    for needle in expected {
        assert!(
            out.stderr.contains(needle),
            "expected `{needle}` in:\n{}",
            out.stderr
        );
    }
}
