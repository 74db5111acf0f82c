//! Hostile, broken and greedy clients against the real app on the real
//! kiosk-host, over loopback sockets: bodies that never come, bodies too
//! large, heads that trickle, too many connections, too many requests.
//! Each attack runs while a normal client is served.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Host, client, guest_wasm, repo};

const KIOSK: &str = "Bearer dev-kiosk-key";

/// The app with a host configuration file holding `config`.
fn start(config: &str, extra: &[&str]) -> (tempfile::TempDir, Host) {
    guest_wasm("ticket");
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("host.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let host = Host::start_in(&repo().join("spin.toml"), state.path(), &args);
    (state, host)
}

/// A connection that sent `head` and then nothing.
fn half_request(addr: SocketAddr, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Everything the server sends until it closes (or `within` passes).
fn read_answer(stream: &mut TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn ticket_head(length: u64) -> String {
    format!(
        "POST /api/v1/tickets HTTP/1.1\r\nHost: localhost\r\nAuthorization: {KIOSK}\r\n\
         Idempotency-Key: slow-{length}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

async fn issue(host: &Host, key: &str) -> u16 {
    client()
        .post(host.url("/api/v1/tickets"))
        .header("authorization", KIOSK)
        .header("idempotency-key", key)
        .json(&json!({"branch": "demo", "service": "deposit", "channel": "kiosk"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_that_never_come_hold_no_instance_and_are_timed_out() {
    let (_state, host) = start(
        "[server]\nbody_timeout = \"3s\"\n",
        &["--max-instances", "32"],
    );
    // Ten times more silent bodies than instance slots.
    let mut silent: Vec<TcpStream> = (0..320)
        .map(|_| half_request(host.addr, &ticket_head(64)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let http = client();
    for i in 0..5 {
        let board = http
            .get(host.url("/api/v1/queues/demo"))
            .send()
            .await
            .unwrap();
        assert_eq!(board.status(), 200);
        assert_eq!(issue(&host, &format!("normal-{i}")).await, 201);
    }
    // The silent ones get 408 once their body timeout passes.
    let answer = read_answer(&mut silent[0], Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    let last = silent.last_mut().unwrap();
    assert!(read_answer(last, Duration::from_secs(20)).starts_with("HTTP/1.1 408"));
    assert!(!host.stderr().contains("overloaded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_components_limit_is_413_before_it_is_sent() {
    let (_state, host) = start("", &[]);
    // 5 MiB announced (under the host's 10 MiB, over the app's 64 KiB):
    // refused from the head alone.
    let mut stream = half_request(host.addr, &ticket_head(5 * 1024 * 1024));
    let answer = read_answer(&mut stream, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body_too_large\""), "{answer}");

    // A chunked body is cut at the limit.
    let mut stream = half_request(
        host.addr,
        "POST /api/v1/tickets HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer dev-kiosk-key\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = vec![b' '; 16 * 1024];
    let mut refused = String::new();
    for _ in 0..8 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).is_err() {
            break;
        }
    }
    refused.push_str(&read_answer(&mut stream, Duration::from_secs(10)));
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    // Everyone else is still served.
    assert_eq!(issue(&host, "after-413").await, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_head_is_cut_at_the_header_timeout() {
    let (_state, host) = start("[server]\nheader_read_timeout = \"1s\"\n", &[]);
    let started = Instant::now();
    let mut stream = half_request(host.addr, "GET /api/v1/queues/demo HTTP/1.1\r\nHost: loc");
    assert!(closed_within(&mut stream, Duration::from_secs(15)));
    assert!(started.elapsed() < Duration::from_secs(15));
    let board = client()
        .get(host.url("/api/v1/queues/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(board.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_hold_more_than_its_connections() {
    let (_state, host) = start(
        "[server]\nlimit_loopback = true\nmax_connections_per_peer = 5\n",
        &[],
    );
    let held: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(host.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut sixth = half_request(
        host.addr,
        "GET /api/v1/queues/demo HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(
        closed_within(&mut sixth, Duration::from_secs(10)),
        "the sixth connection was served"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = half_request(
        host.addr,
        "GET /api/v1/queues/demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let answer = read_answer(&mut again, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let until = Instant::now() + Duration::from_secs(15);
    while !host.stderr().contains("over_max_connections_per_peer=1") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        host.stderr().contains("over_max_connections_per_peer=1"),
        "{}",
        host.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_sending_too_fast_gets_429_with_retry_after() {
    let (_state, host) = start(
        "[server]\nlimit_loopback = true\n[server.rate_limit]\nper_second = 1.0\nburst = 5\n",
        &[],
    );
    let http = client();
    let mut statuses = Vec::new();
    let mut limited: Option<reqwest::Response> = None;
    for _ in 0..10 {
        let response = http
            .get(host.url("/api/v1/queues/demo"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && limited.is_none() {
            limited = Some(response);
        }
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let limited = limited.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}
