//! What a CLI or TV app does with the device flow (RFC 8628): ask for codes, show the user code
//! and a QR code of `verification_uri_complete`, poll the token endpoint while the user approves
//! elsewhere, and print the tokens.
//!
//! ```text
//! cargo run --example device_client -- --base http://127.0.0.1:8080 [--client-id demo-device] [--scope "profile email"]
//! ```
//!
//! Start a server first (`device_server`, `axum` or `tonic` example), then open the printed
//! URL (or scan the QR code) and sign in as `alice` / `alice-password`.
//!
//! The instructions and the spinner go to stderr; the token response goes to stdout as JSON, so
//! `... | jq -r .access_token` works. Polling honours `interval` and adds 5 seconds on every
//! `slow_down`; `access_denied` and `expired_token` end the program with exit status 1.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use serde_json::Value;

const USAGE: &str = "usage: device_client --base URL [--client-id ID] [--scope SCOPES]";

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How much longer to wait after each `slow_down` (RFC 8628 3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// The longest wait between polls after transport errors (exponential backoff).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Args {
    base: String,
    client_id: String,
    scope: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut base = None;
    let mut client_id = "demo-device".to_owned();
    let mut scope = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--base" => base = Some(value.trim_end_matches('/').to_owned()),
            "--client-id" => client_id = value,
            "--scope" => scope = Some(value),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let base = base.ok_or(format!("--base is required\n{USAGE}"))?;
    Ok(Args {
        base,
        client_id,
        scope,
    })
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// POSTs a form and reads the JSON answer.
async fn post_form(
    http: &HttpClient,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(StatusCode, Value), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let body = serde_urlencoded::to_string(form).map_err(|e| e.to_string())?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(Full::from(body))
        .map_err(|e| e.to_string())?;
    let res = http
        .request(req)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?
        .to_bytes();
    let json = serde_json::from_slice(&bytes).map_err(|_| {
        format!(
            "POST {url}: HTTP {status} with a body that is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    Ok((status, json))
}

/// `error: error_description` of an RFC 6749 error response.
fn describe(error: &Value) -> String {
    let code = error["error"].as_str().unwrap_or("unknown_error");
    match error["error_description"].as_str() {
        Some(d) => format!("{code}: {d}"),
        None => code.to_owned(),
    }
}

/// The QR code of `data`, in half-block characters (light modules drawn, for dark terminals).
fn qr(data: &str) -> Option<String> {
    let code = QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Waits `wait`, showing a spinner on a terminal.
async fn wait_with_spinner(wait: Duration, interval: Duration) {
    let mut stderr = std::io::stderr();
    if !stderr.is_terminal() {
        tokio::time::sleep(wait).await;
        return;
    }
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let start = Instant::now();
    let mut frame = 0;
    while start.elapsed() < wait {
        let _ = write!(
            stderr,
            "\r\x1b[2K{} Waiting for approval (polling every {} s)",
            FRAMES[frame % FRAMES.len()],
            interval.as_secs()
        );
        let _ = stderr.flush();
        frame += 1;
        let left = wait.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
    let _ = write!(stderr, "\r\x1b[2K");
    let _ = stderr.flush();
}

/// A line on stderr, over the spinner on a terminal.
fn note(msg: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\r\x1b[2K{msg}");
    } else {
        eprintln!("{msg}");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    if !args.base.starts_with("http://") {
        eprintln!("--base must be an http:// URL (this example has no TLS connector)\n{USAGE}");
        return ExitCode::from(2);
    }
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // 1. Ask for a device code and a user code (RFC 8628 3.1).
    let mut form = vec![("client_id", args.client_id.as_str())];
    if let Some(scope) = &args.scope {
        form.push(("scope", scope.as_str()));
    }
    let url = format!("{}/oauth/device_authorization", args.base);
    let codes = match post_form(&http, &url, &form).await {
        Ok((StatusCode::OK, codes)) => codes,
        Ok((status, error)) => {
            eprintln!(
                "device authorization refused (HTTP {status}): {}",
                describe(&error)
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cannot reach the authorization server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (Some(device_code), Some(user_code), Some(verification_uri)) = (
        codes["device_code"].as_str(),
        codes["user_code"].as_str(),
        codes["verification_uri"].as_str(),
    ) else {
        eprintln!("malformed device authorization response: {codes}");
        return ExitCode::FAILURE;
    };
    let expires_in = Duration::from_secs(codes["expires_in"].as_u64().unwrap_or(1800));
    // RFC 8628 3.2: 5 seconds when the server names no interval.
    let mut interval = Duration::from_secs(codes["interval"].as_u64().unwrap_or(5));
    let deadline = Instant::now() + expires_in;

    // 2. Show the user where to go (RFC 8628 3.3) and, for phones, a QR code (3.3.1).
    eprintln!();
    eprintln!("To sign in, open {verification_uri}");
    eprintln!("and enter the code:  {user_code}");
    if let Some(complete) = codes["verification_uri_complete"].as_str() {
        if let Some(code) = qr(complete) {
            eprintln!("\nor scan this QR code:\n{code}");
        }
        eprintln!("(or open {complete})");
    }
    match expires_in.as_secs() {
        s if s < 120 => eprintln!("The code expires in {s} seconds.\n"),
        s => eprintln!("The code expires in {} minutes.\n", s.div_ceil(60)),
    }

    // 3. Poll the token endpoint (RFC 8628 3.4, 3.5).
    let url = format!("{}/oauth/token", args.base);
    let form = [
        ("grant_type", DEVICE_CODE_GRANT),
        ("device_code", device_code),
        ("client_id", args.client_id.as_str()),
    ];
    let mut wait = interval;
    loop {
        wait_with_spinner(wait, interval).await;
        if Instant::now() >= deadline {
            eprintln!("The code expired before it was approved. Run the program again.");
            return ExitCode::FAILURE;
        }
        wait = interval;
        let error = match post_form(&http, &url, &form).await {
            Ok((StatusCode::OK, tokens)) => {
                eprintln!(
                    "Signed in: token_type={} scope={:?} expires_in={}",
                    tokens["token_type"].as_str().unwrap_or("?"),
                    tokens["scope"].as_str().unwrap_or(""),
                    tokens["expires_in"]
                );
                match serde_json::to_string_pretty(&tokens) {
                    Ok(json) => println!("{json}"),
                    Err(_) => println!("{tokens}"),
                }
                return ExitCode::SUCCESS;
            }
            Ok((_, error)) => error,
            Err(e) => {
                // The server is unreachable or the connection broke: back off (RFC 8628 3.5).
                wait = (wait * 2).min(MAX_BACKOFF);
                note(&format!(
                    "poll failed, retrying in {} s: {e}",
                    wait.as_secs()
                ));
                continue;
            }
        };
        match error["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => {
                interval += SLOW_DOWN_STEP;
                wait = interval;
                note(&format!(
                    "The server asked to slow down: polling every {} s now.",
                    interval.as_secs()
                ));
            }
            Some("access_denied") => {
                eprintln!("The authorization request was denied.");
                return ExitCode::FAILURE;
            }
            Some("expired_token") => {
                eprintln!("The code expired before it was approved. Run the program again.");
                return ExitCode::FAILURE;
            }
            _ => {
                eprintln!("The token endpoint refused: {}", describe(&error));
                return ExitCode::FAILURE;
            }
        }
    }
}
