//! The demo server's `GET /metrics` (docs/DEMO_CONTRACT.md): run as a child process (the
//! example binary, built by the shared helper with this test's features), it answers 200
//! `text/plain` with the Prometheus exposition of the flow's metrics, which count a device
//! authorization and its polls.

mod examples_support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Demo {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Demo {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(examples_support::example_binary("device_server"))
        .args(["--addr", &addr.to_string(), "--interval", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start device_server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read stdout");
    assert!(line.contains("listening"), "device_server said {line:?}");
    Demo { child, addr }
}

/// One request on its own connection: status, headers, body.
async fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{head} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = headers[9..12].parse().expect("status");
    (status, headers.to_ascii_lowercase(), body.to_owned())
}

/// The value of the series `series` (name and labels as rendered) in an exposition.
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn the_demo_serves_prometheus_metrics_of_the_flow() {
    examples_support::check_feature_list();
    let demo = start();
    let (status, _, body) = request(
        demo.addr,
        "POST /oauth/device_authorization",
        "client_id=demo-device&scope=profile",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let codes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let poll = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=demo-device&device_code={}",
        codes["device_code"].as_str().unwrap()
    );
    for _ in 0..2 {
        request(demo.addr, "POST /oauth/token", &poll).await;
    }

    let (status, headers, text) = request(demo.addr, "GET /metrics", "").await;
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: text/plain"), "{headers}");
    if !cfg!(feature = "metrics") {
        return; // the flow records nothing without the feature
    }
    assert_eq!(
        value(&text, "device_flow_grants_created_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "device_flow_polls_total{outcome=\"pending\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "device_flow_polls_total{outcome=\"slow_down\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "device_flow_pending_grants"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE device_flow_grants_created_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# HELP device_flow_grants_created_total"),
        "{text}"
    );
    assert!(
        text.contains("device_flow_request_duration_seconds{endpoint=\"token\""),
        "{text}"
    );
    assert!(
        text.contains("device_flow_store_call_duration_seconds{operation=\"insert_device_grant\""),
        "{text}"
    );
}
