//! Test support (cargo feature `testing`): a throwaway `redis-server`.
//!
//! Used by this crate's tests and by the host's integration tests, so that the
//! Redis backend is always tested against a real server and never skipped.
//!
//! ```no_run
//! let server = kiosk_kv::testing::RedisServer::start();
//! let url = server.url(); // redis://127.0.0.1:<port>
//! # drop(url);
//! // ... the server is killed when `server` is dropped.
//! ```

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` of its own on a free port of 127.0.0.1, with its working
/// files in a temporary directory. Killed on drop. It keeps an append-only
/// file synced every second, the least durability kiosk-host accepts without
/// `durability = "volatile"`; [`RedisServer::start_volatile`] starts one
/// without persistence.
///
/// If `redis-server` is not installed, the first `start` in the process
/// installs it (`apt-get update && apt-get install -y redis-server`, as root),
/// with a lock file so that test processes running at once install it once.
///
/// Keep it in a local of the test, not in a `static` (a static is never
/// dropped, so its server would outlive the test process).
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    persistence: Vec<String>,
}

impl RedisServer {
    /// Starts a server and waits until it answers.
    ///
    /// # Panics
    ///
    /// If `redis-server` is missing and cannot be installed, or does not come
    /// up: the message says why. Tests that need Redis fail rather than skip.
    pub fn start() -> Self {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ])
    }

    /// A server that keeps nothing on disk (`SHUTDOWN NOSAVE` loses all).
    pub fn start_volatile() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    fn start_with(persistence: &[&str]) -> Self {
        let persistence: Vec<String> = persistence.iter().map(|s| s.to_string()).collect();
        let mut last_error = String::new();
        // The port is free when chosen but another process may take it before
        // redis-server binds it: try a few ports.
        for _ in 0..5 {
            let attempt = free_port()
                .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
                .and_then(|port| {
                    let dir = tempfile::Builder::new()
                        .prefix("kiosk-kv-redis-")
                        .tempdir()
                        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                    let child = spawn_and_wait(port, dir.path(), &persistence)?;
                    Ok(Self {
                        child,
                        port,
                        dir,
                        persistence: persistence.clone(),
                    })
                });
            match attempt {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// `SAVE`: writes a snapshot (`dump.rdb`) that the next
    /// [`crash_and_restart`](Self::crash_and_restart) of a volatile server
    /// starts from, losing every write made after it.
    pub fn save_snapshot(&self) {
        self.command(&["SAVE"]).expect("SAVE");
    }

    /// `FLUSHALL`: every key is gone, the server keeps running.
    pub fn flush_all(&self) {
        self.command(&["FLUSHALL"]).expect("FLUSHALL");
    }

    /// Stops the server the unsafe way (`SHUTDOWN NOSAVE`: nothing is
    /// written on the way out) and starts it again on the same port and
    /// directory. A volatile server comes back empty, or as of its last
    /// [`save_snapshot`](Self::save_snapshot); one with an append-only file
    /// comes back with what the file holds.
    ///
    /// # Panics
    ///
    /// If the server does not stop or does not come back.
    pub fn crash_and_restart(&mut self) {
        // The server closes the connection instead of answering.
        let _ = self.command(&["SHUTDOWN", "NOSAVE"]);
        let until = Instant::now() + STARTUP_TIMEOUT;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < until, "redis-server did not shut down");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The port was ours a moment ago; another process rarely takes it
        // in between, so retry a few times before giving up.
        let mut last_error = String::new();
        for _ in 0..20 {
            match spawn_and_wait(self.port, self.dir.path(), &self.persistence) {
                Ok(child) => {
                    self.child = child;
                    return;
                }
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not come back on port {}: {last_error}",
            self.port
        );
    }

    /// Runs one command on the server, ignoring its reply.
    fn command(&self, args: &[&str]) -> Result<(), String> {
        let client = ::redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let mut cmd = ::redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query::<::redis::Value>(&mut conn)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The URL of the server: `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Runs `redis-server` on `port` with its files in `dir` and waits until
/// it answers; kills it if it does not.
fn spawn_and_wait(port: u16, dir: &Path, persistence: &[String]) -> Result<Child, String> {
    let binary = redis_server_binary();
    let log_path = dir.join("redis.log");
    let log = File::create(&log_path).map_err(|e| format!("cannot create log: {e}"))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot create log: {e}"))?;
    let mut child = Command::new(binary)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(persistence)
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no", "--logfile", ""])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let log_tail = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server exited ({status}) on port {port}:\n{}",
                log_tail()
            ));
        }
        if ping(&url) {
            return Ok(child);
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server on port {port} did not answer within {STARTUP_TIMEOUT:?}:\n{}",
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ping(url: &str) -> bool {
    let Ok(client) = ::redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    ::redis::cmd("PING")
        .query::<String>(&mut conn)
        .is_ok_and(|reply| reply == "PONG")
}

/// The path of `redis-server`, installed first if needed (once per process,
/// and under a lock file across processes).
fn redis_server_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(|| find_redis_server().map_or_else(install_redis_server, Ok)) {
        Ok(path) => path,
        Err(e) => panic!(
            "redis-server is needed by the Redis tests and could not be installed: {e}\n\
             Install it with: apt-get update && apt-get install -y redis-server"
        ),
    }
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

fn install_redis_server() -> Result<PathBuf, String> {
    // Serialise with other test processes doing the same (dpkg allows one
    // install at a time), then look again: another may have installed it.
    let lock_path = std::env::temp_dir().join("kiosk-kv-install-redis.lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if let Some(path) = find_redis_server() {
        return Ok(path);
    }
    eprintln!("kiosk-kv tests: redis-server not found, installing it with apt-get");
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", "redis-server"][..],
    ] {
        let output = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "apt-get {} failed ({}):\n{}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    find_redis_server().ok_or_else(|| "apt-get installed redis-server but it is not on PATH".into())
}
