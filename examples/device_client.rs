//! What a CLI or TV app does with the device flow (RFC 8628): ask for codes, show the user code
//! and a QR code of `verification_uri_complete`, poll the token endpoint while the user approves
//! elsewhere, print the tokens, and call the API with them.
//!
//! ```text
//! cargo run --example device_client -- --base http://127.0.0.1:8080 [--client-id demo-device] \
//!     [--scope "profile email"] [--token-file device-token.json] [--no-dpop]
//! ```
//!
//! By default the tokens are DPoP-bound (RFC 9449): the client keeps a P-256 key in a file
//! beside the token file (`device-token.dpop-key.json`, created on first use, readable by the
//! owner only), signs a DPoP proof for every token request and every API call with it, and the
//! server binds the tokens to that key. A copy of the token file without the key file is
//! useless. A server nonce (`use_dpop_nonce`) is honoured by retrying with it. `--no-dpop`
//! asks for plain bearer tokens instead. Afterwards the client calls `GET /api/me` with
//! `Authorization: DPoP <token>` and a proof, and prints the answer.
//!
//! Start a server first (`device_server`, `axum` or `tonic` example), then open the printed
//! URL (or scan the QR code) and sign in as `alice` / `alice-password`.
//!
//! The instructions and the spinner go to stderr; the token response goes to stdout as JSON, so
//! `... | jq -r .access_token` works. Polling honours `interval` and adds 5 seconds on every
//! `slow_down`; `access_denied` and `expired_token` end the program with exit status 1.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use serde_json::Value;

const USAGE: &str = "usage: device_client --base URL [--client-id ID] [--scope SCOPES] \
[--token-file PATH] [--no-dpop]";

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How much longer to wait after each `slow_down` (RFC 8628 3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// The longest wait between polls after transport errors (exponential backoff).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Args {
    base: String,
    client_id: String,
    scope: Option<String>,
    token_file: PathBuf,
    dpop: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut base = None;
    let mut client_id = "demo-device".to_owned();
    let mut scope = None;
    let mut token_file = PathBuf::from("device-token.json");
    let mut dpop = true;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        if flag == "--no-dpop" {
            dpop = false;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--base" => base = Some(value.trim_end_matches('/').to_owned()),
            "--client-id" => client_id = value,
            "--scope" => scope = Some(value),
            "--token-file" => token_file = PathBuf::from(value),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let base = base.ok_or(format!("--base is required\n{USAGE}"))?;
    Ok(Args {
        base,
        client_id,
        scope,
        token_file,
        dpop,
    })
}

/// The device's DPoP key (RFC 9449): ES256, kept as a private JWK in a file beside the token.
struct DpopKey {
    key: p256_client::ecdsa::SigningKey,
}

impl DpopKey {
    /// The key in `path`, or a new one written there (owner-only permissions) if there is none.
    fn load_or_create(path: &Path) -> Result<Self, String> {
        if let Ok(text) = std::fs::read_to_string(path) {
            let jwk: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let d = jwk["d"]
                .as_str()
                .and_then(|d| URL_SAFE_NO_PAD.decode(d).ok())
                .ok_or(format!("{}: not a private P-256 JWK", path.display()))?;
            let key = p256_client::ecdsa::SigningKey::from_slice(&d)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(DpopKey { key });
        }
        let key = DpopKey {
            key: p256_client::ecdsa::SigningKey::random(&mut rand_core::OsRng),
        };
        let mut jwk = key.public_jwk();
        jwk["d"] = URL_SAFE_NO_PAD.encode(key.key.to_bytes()).into();
        write_private(path, &jwk.to_string())?;
        eprintln!("Created the DPoP key {}", path.display());
        Ok(key)
    }

    fn public_jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        let (x, y) = (
            point.x().map(|x| URL_SAFE_NO_PAD.encode(x)),
            point.y().map(|y| URL_SAFE_NO_PAD.encode(y)),
        );
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})
    }

    /// A DPoP proof (RFC 9449 4.2) for `htm` `htu`, with `ath` of `access_token` and the
    /// server's `nonce` if any.
    fn proof(
        &self,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        use p256_client::ecdsa::signature::Signer;
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = serde_json::json!({
            "jti": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
            "htm": htm,
            "htu": htu,
            "iat": iat,
        });
        if let Some(token) = access_token {
            claims["ath"] = URL_SAFE_NO_PAD
                .encode(Sha256::digest(token.as_bytes()))
                .into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let header =
            serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk()});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: p256_client::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Writes `contents` to `path`, readable by the owner only where the platform allows.
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The key file kept beside `token_file`: `device-token.json` -> `device-token.dpop-key.json`.
fn key_file(token_file: &Path) -> PathBuf {
    let stem = token_file.file_stem().map_or_else(
        || "device-token".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    token_file.with_file_name(format!("{stem}.dpop-key.json"))
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// POSTs a form and reads the JSON answer.
async fn post_form(
    http: &HttpClient,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(StatusCode, Value), String> {
    let (status, _, json) = send(http, Method::POST, url, Some(form), &[]).await?;
    Ok((status, json))
}

/// Sends a request (a form if given, and extra headers) and reads the JSON answer, with the
/// `DPoP-Nonce` header if the server sent one.
async fn send(
    http: &HttpClient,
    method: Method,
    url: &str,
    form: Option<&[(&str, &str)]>,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Option<String>, Value), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::ACCEPT, HeaderValue::from_static("application/json"));
    let body = match form {
        Some(form) => {
            req = req.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            serde_urlencoded::to_string(form).map_err(|e| e.to_string())?
        }
        None => String::new(),
    };
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::from(body)).map_err(|e| e.to_string())?;
    let url = format!("{method} {url}");
    let res = http.request(req).await.map_err(|e| format!("{url}: {e}"))?;
    let status = res.status();
    let nonce = res
        .headers()
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    let json = serde_json::from_slice(&bytes).map_err(|_| {
        format!(
            "{url}: HTTP {status} with a body that is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    Ok((status, nonce, json))
}

/// A token-endpoint POST with a fresh DPoP proof (when `key` is given), retried once with the
/// server's nonce after `use_dpop_nonce` (RFC 9449 8). Remembers the latest nonce.
async fn post_token(
    http: &HttpClient,
    url: &str,
    form: &[(&str, &str)],
    key: Option<&DpopKey>,
    nonce: &mut Option<String>,
) -> Result<(StatusCode, Value), String> {
    let Some(key) = key else {
        return post_form(http, url, form).await;
    };
    for _ in 0..2 {
        let proof = key.proof("POST", url, None, nonce.as_deref());
        let (status, new_nonce, json) =
            send(http, Method::POST, url, Some(form), &[("dpop", &proof)]).await?;
        let retry = json["error"] == "use_dpop_nonce" && new_nonce.is_some();
        if new_nonce.is_some() {
            *nonce = new_nonce;
        }
        if !retry {
            return Ok((status, json));
        }
    }
    Err("the server kept asking for a new DPoP nonce".into())
}

/// `GET {base}/api/me` with the access token: `Authorization: DPoP` and a proof, or `Bearer`.
async fn call_api(
    http: &HttpClient,
    base: &str,
    tokens: &Value,
    key: Option<&DpopKey>,
) -> Result<(StatusCode, Value), String> {
    let url = format!("{base}/api/me");
    let token = tokens["access_token"].as_str().ok_or("no access_token")?;
    let Some(key) = key.filter(|_| tokens["token_type"] == "DPoP") else {
        let auth = format!("Bearer {token}");
        let (status, _, json) =
            send(http, Method::GET, &url, None, &[("authorization", &auth)]).await?;
        return Ok((status, json));
    };
    let auth = format!("DPoP {token}");
    let mut nonce = None;
    for _ in 0..2 {
        let proof = key.proof("GET", &url, Some(token), nonce.as_deref());
        let (status, new_nonce, json) = send(
            http,
            Method::GET,
            &url,
            None,
            &[("authorization", &auth), ("dpop", &proof)],
        )
        .await?;
        if json["error"] == "use_dpop_nonce" && new_nonce.is_some() {
            nonce = new_nonce;
            continue;
        }
        return Ok((status, json));
    }
    Err("the API kept asking for a new DPoP nonce".into())
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
    let key = if args.dpop {
        match DpopKey::load_or_create(&key_file(&args.token_file)) {
            Ok(key) => Some(key),
            Err(e) => {
                eprintln!("cannot use the DPoP key: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let mut nonce = None;

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
        let error = match post_token(&http, &url, &form, key.as_ref(), &mut nonce).await {
            Ok((StatusCode::OK, tokens)) => {
                eprintln!(
                    "Signed in: token_type={} scope={:?} expires_in={}",
                    tokens["token_type"].as_str().unwrap_or("?"),
                    tokens["scope"].as_str().unwrap_or(""),
                    tokens["expires_in"]
                );
                if key.is_some() && tokens["token_type"] != "DPoP" {
                    // RFC 9449 5: the server did not bind the tokens; they work as bearer tokens.
                    eprintln!("warning: the server issued bearer tokens, not DPoP-bound ones");
                }
                let json =
                    serde_json::to_string_pretty(&tokens).unwrap_or_else(|_| tokens.to_string());
                match write_private(&args.token_file, &json) {
                    Ok(()) => eprintln!("Saved the tokens to {}", args.token_file.display()),
                    Err(e) => eprintln!("warning: cannot save the tokens: {e}"),
                }
                println!("{json}");
                match call_api(&http, &args.base, &tokens, key.as_ref()).await {
                    Ok((status, answer)) => eprintln!("GET /api/me: HTTP {status} {answer}"),
                    Err(e) => eprintln!("GET /api/me failed: {e}"),
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
