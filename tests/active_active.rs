//! Two hosts active-active behind a real load balancer (nginx), sharing one
//! Redis, rolled out one at a time under load: no request fails, no number
//! is handed out twice.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Host, client, guest_wasm, redis_runtime_config, repo};

const KIOSK: &str = "Bearer dev-kiosk-key";

/// nginx in front of `upstreams`, as README's deployment says: keep-alive
/// to the hosts, and a request that meets a host going away (refused,
/// reset, 502/503) tried once more on the other one. Issuing is safe to
/// retry because it requires an Idempotency-Key.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[std::net::SocketAddr]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let servers: String = upstreams
            .iter()
            .map(|u| format!("    server {u} max_fails=0;\n"))
            .collect();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream kiosk {{\n{servers}    keepalive 16;\n  }}\n\
               server {{\n    listen {addr};\n    location / {{\n\
                 proxy_pass http://kiosk;\n      proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
                 proxy_connect_timeout 1s;\n\
                 proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n\
                 proxy_next_upstream_tries 2;\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        // Debian puts it in /usr/sbin, not on every user's PATH.
        let binary = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx (Debian's nginx package; scripts/test installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so the master takes its worker along (SIGKILL would
        // leave the worker running, still holding the port).
        support::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host(manifest: &Path, state: &Path, args: &[&str], listen: Option<&str>) -> Host {
    let mut all: Vec<&str> = args.to_vec();
    if let Some(listen) = listen {
        all.extend(["--listen", listen]);
    }
    Host::start_with_env(manifest, state, &all, &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_behind_nginx_roll_out_one_at_a_time_without_a_failed_request() {
    guest_wasm("ticket");
    let redis = kiosk_kv::testing::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = redis_runtime_config(dir.path(), &redis.url(), "");
    let args = ["--runtime-config-file", config.to_str().unwrap()];
    let manifest = repo().join("spin.toml");
    let states = [dir.path().join("a"), dir.path().join("b")];
    let mut hosts = vec![
        start_host(&manifest, &states[0], &args, None),
        start_host(&manifest, &states[1], &args, None),
    ];
    let addrs: Vec<std::net::SocketAddr> = hosts.iter().map(|h| h.addr).collect();
    let nginx = Nginx::start(&addrs);

    // Four kiosks issue through the load balancer for the whole rollout
    // (bounded: at most 3,000 tickets each).
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|kiosk| {
            let (url, stop, http) = (nginx.url("/api/v1/tickets"), stop.clone(), client());
            tokio::spawn(async move {
                let (mut numbers, mut failed) = (Vec::new(), Vec::new());
                for i in 0..3000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let response = http
                        .post(&url)
                        .header("authorization", KIOSK)
                        .header("idempotency-key", format!("rollout-{kiosk}-{i}"))
                        .json(&json!({"branch": "demo", "service": "deposit", "channel": "kiosk"}))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 201 => {
                            let body: Value = r.json().await.unwrap();
                            numbers.push(body["number"].as_str().unwrap().to_owned());
                        }
                        Ok(r) => failed.push(format!(
                            "{}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (numbers, failed)
            })
        })
        .collect();

    // Roll out: each host in turn drains (SIGTERM) and starts again on
    // its address, as `systemctl restart` does, while the other serves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, addr) in addrs.iter().enumerate() {
        let mut old = hosts.remove(0);
        old.terminate();
        let status = tokio::task::block_in_place(|| old.wait_exit());
        assert!(status.success(), "host {i}: {status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listen = addr.to_string();
        let new =
            tokio::task::block_in_place(|| start_host(&manifest, &states[i], &args, Some(&listen)));
        hosts.push(new);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut numbers, mut failed) = (Vec::new(), Vec::new());
    for task in load {
        let (n, f) = task.await.unwrap();
        numbers.extend(n);
        failed.extend(f);
    }
    let issued = numbers.len();
    numbers.sort();
    numbers.dedup();
    eprintln!(
        "rollout of 2 hosts behind nginx: {issued} tickets issued, {} failed, {} numbers repeated",
        failed.len(),
        issued - numbers.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(numbers.len(), issued, "a number was handed out twice");
    assert!(issued > 100, "only {issued} tickets during the rollout");
}
