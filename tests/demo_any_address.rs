//! The demo contract serves plain HTTP on any `--addr`: the demo started on a non-loopback
//! address (here the wildcard) still serves, with the issuer `http://ADDR`, and warns on stderr
//! that codes and tokens cross the network unencrypted.

mod examples_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

#[test]
fn the_demo_serves_on_a_non_loopback_address_and_warns() {
    let port = TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(examples_support::example_binary("device_server"))
        .args(["--addr", &format!("0.0.0.0:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start device_server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read stdout");
    let answer = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(
            b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    let _ = child.kill();
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    let _ = child.wait();
    assert!(
        line.contains("listening"),
        "device_server said {line:?} / {stderr}"
    );
    let answer = answer.expect("metadata request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!("\"issuer\":\"http://0.0.0.0:{port}\"")),
        "{answer}"
    );
    assert!(stderr.contains("plain HTTP"), "the demo warns: {stderr}");
}
