//! HTTPS on the real kiosk-host with a CA made by the test: certificates by
//! SNI, HTTP/2 by ALPN, `spin-full-url` with `https`, a stalled handshake
//! that blocks no one, and certificates reloaded on SIGHUP under load.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::ca::Ca;
use support::{Host, Load, app, guest_wasm};

const DEV: &str = "devkiosk.domain.com";
const STAG: &str = "stagkiosk.domain.com";

/// The basics app over HTTPS (dev certificate by default, stag by SNI),
/// plus a plain listener.
fn start(dir: &Path, ca: &Ca) -> Host {
    start_with(dir, ca, "")
}

/// The same with more `[server.tls]` lines.
fn start_with(dir: &Path, ca: &Ca, more_tls: &str) -> Host {
    guest_wasm("echo-headers");
    ca.issue(dir, "dev", &[DEV], 1);
    ca.issue(dir, "stag", &[STAG], 2);
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
[server.tls]
cert = "dev.pem"
key = "dev.key"
handshake_timeout = "2s"
{more_tls}
[[server.tls.sni]]
server_names = ["stagkiosk.domain.com"]
cert = "stag.pem"
key = "stag.key"
"#
        ),
    )
    .unwrap();
    Host::start_in(
        &app("basics").join("spin.toml"),
        dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    )
}

fn url(name: &str, addr: SocketAddr, path: &str) -> String {
    format!("https://{name}:{}{path}", addr.port())
}

fn peer_der(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_by_server_name_with_h2_by_alpn_and_spin_full_url_in_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let host = start(dir.path(), &ca);
    let tls = host.tls_addr.expect("an HTTPS listener");
    let client = ca.client(&[(DEV, tls), (STAG, tls)]);
    let dev_der = std::fs::read(dir.path().join("dev.pem")).unwrap();
    assert!(!dev_der.is_empty());

    let response = client.get(url(DEV, tls, "/echo/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN h2");
    let body: Value = response.json().await.unwrap();
    let full_url = body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "spin-full-url")
        .map(|h| h[1].as_str().unwrap().to_string())
        .unwrap();
    assert!(full_url.starts_with("https://"), "{full_url}");

    // Each name gets its own certificate.
    let stag = client.get(url(STAG, tls, "/hello")).send().await.unwrap();
    assert_eq!(stag.status(), 200);
    let dev = client.get(url(DEV, tls, "/hello")).send().await.unwrap();
    assert_ne!(peer_der(&stag), peer_der(&dev));

    // The plain listener serves too (for a local load balancer).
    let plain = support::client()
        .get(host.url("/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusing_unknown_names_still_serves_the_default_certificates_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let host = start_with(dir.path(), &ca, r#"unknown_server_name = "refuse""#);
    let tls = host.tls_addr.expect("an HTTPS listener");
    let other = "other.domain.com";
    let client = ca.client(&[(DEV, tls), (STAG, tls), (other, tls)]);
    // The default certificate's name, and an `sni` entry's: served.
    for name in [DEV, STAG] {
        let response = client.get(url(name, tls, "/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
    // Any other name: a clean handshake failure.
    assert!(client.get(url(other, tls, "/hello")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_handshake_blocks_no_one_and_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let host = start(dir.path(), &ca);
    let tls = host.tls_addr.unwrap();
    // Connections that never say hello.
    let mut stalled: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(tls).unwrap())
        .collect();
    let client = ca.client(&[(DEV, tls)]);
    for _ in 0..5 {
        let response = client.get(url(DEV, tls, "/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // Past the 2 s handshake timeout, the host hangs up on them.
    use std::io::Read;
    let first = &mut stalled[0];
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = first.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the stalled connection was closed");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_reload_on_sighup_under_load_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let host = start(dir.path(), &ca);
    let tls = host.tls_addr.unwrap();
    let client = ca.client(&[(DEV, tls)]);

    // Load across ten reloads: every request must succeed.
    let load = Load::start(&client, &url(DEV, tls, "/hello"), 4);
    let mut last_der = Vec::new();
    for serial in 10..20 {
        last_der = ca.issue(dir.path(), "dev", &[DEV], serial);
        host.hangup();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Hangups during a reload are one more reload after it: the last
    // certificate is in force once that one is done.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.get(url(DEV, tls, "/hello")).send().await.unwrap();
        if peer_der(&response) == last_der {
            break;
        }
        assert!(
            Instant::now() < until,
            "the newest certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.stop_all_served().await;
    assert!(host.wait_for_log("reloaded"));

    // A broken certificate: refused, named in the log, the old one stays.
    std::fs::write(dir.path().join("dev.pem"), "not a certificate").unwrap();
    host.hangup();
    assert!(host.wait_for_log("reload refused"));
    let response = client.get(url(DEV, tls, "/hello")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(peer_der(&response), last_der);
}

#[test]
fn a_missing_certificate_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[server.tls]\ncert = \"nowhere.pem\"\nkey = \"nowhere.key\"\n",
    )
    .unwrap();
    let out = support::run(&[
        "up",
        "-f",
        app("basics").join("spin.toml").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("nowhere.pem"), "{}", out.stderr);
}

fn echoed_header(body: &Value, name: &str) -> Option<String> {
    body["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_with_certificates_get_in_and_a_revoked_one_is_refused_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.write_pem(dir.path());
    ca.revoke(dir.path(), &[], 1);
    let host = start_with(
        dir.path(),
        &ca,
        "client_ca = \"ca.pem\"\nclient_crl = [\"crl.pem\"]\nrequire_client_cert = [\"/echo/secure\"]",
    );
    let tls = host.tls_addr.unwrap();
    let kiosk = ca.device("kiosk-gangnam-1", 501);
    let with_cert = ca.client_as(&[(DEV, tls)], Some(&kiosk));
    let without = ca.client(&[(DEV, tls)]);

    // A device with a certificate: the host names it to the app.
    let response = with_cert
        .get(url(DEV, tls, "/echo/secure"))
        .header("kiosk-client-cn", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        echoed_header(&body, "kiosk-client-cn").as_deref(),
        Some("kiosk-gangnam-1")
    );
    assert!(echoed_header(&body, "kiosk-client-serial").is_some());

    // Without one: refused before any instance on the secured prefix, served
    // elsewhere, and a forged identity header never reaches the app.
    let refused = without
        .get(url(DEV, tls, "/echo/secure"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "client_certificate_required");
    let open = without
        .get(url(DEV, tls, "/echo/open"))
        .header("kiosk-client-cn", "forged")
        .send()
        .await
        .unwrap();
    let body: Value = open.json().await.unwrap();
    assert_eq!(echoed_header(&body, "kiosk-client-cn"), None);

    // A certificate from another CA is refused at the handshake.
    let stranger = Ca::new().device("kiosk-stolen", 9);
    let foreign = ca.client_as(&[(DEV, tls)], Some(&stranger));
    assert!(foreign.get(url(DEV, tls, "/hello")).send().await.is_err());

    // Revoked, reloaded: refused; another device is unaffected.
    let counter = ca.device("counter-gangnam-4", 502);
    ca.revoke(dir.path(), &[501], 2);
    host.hangup();
    assert!(host.wait_for_log("reloaded"));
    let revoked = ca.client_as(&[(DEV, tls)], Some(&kiosk));
    assert!(
        revoked
            .get(url(DEV, tls, "/echo/secure"))
            .send()
            .await
            .is_err()
    );
    let other = ca.client_as(&[(DEV, tls)], Some(&counter));
    let response = other
        .get(url(DEV, tls, "/echo/secure"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_reaches_each_environment_name_with_the_bank_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let host = start(dir.path(), &ca);
    let tls = host.tls_addr.unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_pem(dir.path());
    for name in [DEV, STAG] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{http_version}"])
            .arg("--resolve")
            .arg(format!("{name}:{}:127.0.0.1", tls.port()))
            .arg("--cacert")
            .arg(&ca_file)
            .arg(url(name, tls, "/hello"))
            .output()
            .expect("curl (scripts/test installs it)");
        let seen = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            seen,
            "200 2",
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn each_environment_file_checks_with_certificates_from_dev_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let dev_ca = Path::new(env!("CARGO_BIN_EXE_kiosk-host")).with_file_name("dev-ca");
    assert!(
        dev_ca.exists(),
        "{} is missing: cargo build -p dev-ca",
        dev_ca.display()
    );
    let made = std::process::Command::new(&dev_ca)
        .arg("init")
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::create_dir_all(dir.path().join("env")).unwrap();
    for env in ["dev", "stag", "prod"] {
        let file = dir.path().join("env").join(format!("{env}.toml"));
        std::fs::copy(
            support::repo().join(format!("deploy/env/{env}.toml")),
            &file,
        )
        .unwrap();
        let out = support::run(&[
            "check",
            "-f",
            support::repo().join("spin.toml").to_str().unwrap(),
            "--config",
            file.to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{env}: {}", out.stderr);
    }
}
