//! The verification page in a real browser: headless Chromium, driven through WebDriver
//! (chromedriver, with `fantoccini`), walks the device flow against the axum example (its
//! cookie-session login in front of the page) served on a loopback port.
//!
//! Needs `CHROMEDRIVER` (the chromedriver binary; `CHROMIUM` names the browser, default
//! `/usr/bin/chromium`), as `.ci/run` sets after installing Debian's `chromium` and
//! `chromium-driver`. Without it the test says loudly that it did not run, and fails under
//! `CI=true`. With `SCREENSHOTS=DIR` it also saves each page at phone (390x844) and desktop
//! (1280x800) width, light and dark, into DIR (`docs/screenshots` holds the committed ones).
//!
//! No test here waits on the clock: the server's clock is a `ManualClock`, and the browser
//! is waited for by the elements it shows.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tower_device_flow::{ManualClock, Timestamp};

#[allow(dead_code)] // its `main` is not used here
#[path = "../examples/axum.rs"]
mod example;

mod http_support;
use http_support::Http;

/// 2023-11-14T22:13:20Z, so the screenshots show the same time on every run.
const START_MILLIS: u64 = 1_700_000_000_000;
/// What the TV sends as its user agent, to be seen on the confirmation.
const DEVICE_UA: &str = "DemoTV/4.2 (Living room; DemoOS 11)";
/// How long the browser may take to show what is expected.
const PATIENCE: Duration = Duration::from_secs(15);

/// chromedriver, started on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Driver {
    /// chromedriver from `CHROMEDRIVER`, or `None` (said loudly; a failure under `CI=true`).
    async fn start() -> Option<Driver> {
        let Some(path) = std::env::var_os("CHROMEDRIVER") else {
            let msg = "BROWSER TEST DID NOT RUN: set CHROMEDRIVER=/usr/bin/chromedriver (and \
                       install Debian's chromium and chromium-driver), as .ci/run does";
            eprintln!("\n*** {msg} ***\n");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut child = Command::new(&path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path:?}: {e}"));
        // Ready when it says so (no polling, no sleeping).
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("started successfully") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "chromedriver did not start");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile =
            std::env::temp_dir().join(format!("tdf-browser-test-{}-{port}", std::process::id()));
        Some(Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
        })
    }

    /// A fresh headless Chromium session (its own profile directory), optionally dark.
    async fn session(&self, dark: bool) -> Client {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = self.profile.join(if dark { "dark" } else { "light" });
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--hide-scrollbars".into(),
            "--window-size=1280,800".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if dark {
            args.push("--force-dark-mode".into());
            args.push("--blink-settings=preferredColorScheme=0".into());
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("no browser session: {e}"))
    }
}

/// The example app, on its own server loop, on an ephemeral loopback port.
struct Example {
    base: String,
    clock: ManualClock,
    http: Http,
}

impl Example {
    async fn start() -> Example {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let clock = ManualClock::new(Timestamp::from_unix_millis(START_MILLIS));
        let flow =
            example::demo_flow_builder(&base, Duration::from_secs(900), Duration::from_secs(5))
                .clock(clock.clone())
                .build();
        tokio::spawn(example::serve(listener, example::app(&flow)));
        Example {
            base,
            clock,
            http: Http::default(),
        }
    }

    /// The device asks for codes: (device_code, user_code, verification_uri_complete).
    async fn authorize(&self) -> (String, String, String) {
        let req = http::Request::post(format!("{}/oauth/device_authorization", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", DEVICE_UA)
            .body(http_body_util::Full::from(
                "client_id=demo-device&scope=profile%20email",
            ))
            .expect("request");
        let res = self.http.send(req).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let j = res.json();
        let s = |k: &str| j[k].as_str().expect(k).to_owned();
        (
            s("device_code"),
            s("user_code"),
            s("verification_uri_complete"),
        )
    }

    /// The device's poll.
    async fn poll(&self, device_code: &str) -> http_support::Reply {
        self.http.poll(&self.base, "demo-device", device_code).await
    }
}

/// Screenshots, when `SCREENSHOTS` names a directory.
struct Shots {
    dir: Option<PathBuf>,
}

impl Shots {
    fn from_env() -> Shots {
        let dir = std::env::var_os("SCREENSHOTS").map(PathBuf::from);
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).expect("screenshot directory");
        }
        Shots { dir }
    }

    /// The whole page, at phone and desktop width (`NAME-phone.png`, `NAME-desktop.png`, with
    /// `-dark` for the dark session): the viewport is 390x844 or 1280x800, taller when the
    /// page is.
    async fn take(&self, browser: &Client, name: &str, dark: bool) {
        let Some(dir) = &self.dir else { return };
        let suffix = if dark { "-dark" } else { "" };
        for (width, height, what) in [(390u32, 844u32, "phone"), (1280, 800, "desktop")] {
            // The window is larger than its viewport: size it so the viewport is right.
            let (mut w, mut h) = (width, height);
            for _ in 0..3 {
                browser.set_window_size(w, h).await.expect("resize");
                let (iw, ih, page) = viewport(browser).await;
                let want_h = height.max(page);
                if iw == width && ih == want_h {
                    break;
                }
                w = w + width - iw.min(width);
                h = h + want_h - ih.min(want_h);
            }
            let png = browser.screenshot().await.expect("screenshot");
            assert!(png.starts_with(b"\x89PNG"), "a PNG");
            std::fs::write(dir.join(format!("{name}-{what}{suffix}.png")), png).expect("write");
        }
    }
}

/// The viewport's width and height, and the page's height.
async fn viewport(browser: &Client) -> (u32, u32, u32) {
    let v = browser
        .execute(
            "return [window.innerWidth, window.innerHeight, \
             Math.ceil(document.documentElement.scrollHeight)]",
            vec![],
        )
        .await
        .expect("measure");
    let n = |i: usize| u32::try_from(v[i].as_u64().expect("a number")).expect("fits");
    (n(0), n(1), n(2))
}

/// The text of the element `css`, once it is there.
async fn text_of(browser: &Client, css: &str) -> String {
    match browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element.text().await.expect("text"),
        Err(e) => panic!("no {css}: {e}\n{}", page_source(browser).await),
    }
}

/// Waits until the page's `h1` reads `want` (a navigation has happened).
async fn heading_is(browser: &Client, want: &str) {
    let xpath = format!("//h1[normalize-space()=\"{want}\"]");
    if let Err(e) = browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::XPath(&xpath))
        .await
    {
        panic!(
            "heading never became {want:?} ({e}); page: {}",
            page_source(browser).await
        );
    }
}

async fn page_source(browser: &Client) -> String {
    browser.source().await.unwrap_or_default()
}

async fn body_text(browser: &Client) -> String {
    text_of(browser, "body").await
}

async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

/// The value of the code field.
async fn code_field(browser: &Client) -> String {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Id("user_code"))
        .await
        .expect("code field")
        .prop("value")
        .await
        .expect("value")
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_flow_in_a_real_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = Example::start().await;
    let shots = Shots::from_env();
    let browser = driver.session(false).await;

    // 1. Approve. The TV shows its code; the phone opens verification_uri_complete.
    let (device_code, user_code, complete) = app.authorize().await;
    browser.goto(&complete).await.expect("open the page");
    // Signed out: sent to the application's login page, the way back in its address.
    heading_is(&browser, "Sign in").await;
    let url = browser.current_url().await.expect("url");
    assert_eq!(url.path(), "/login");
    let back: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        back,
        [(
            "return_to".to_owned(),
            format!("/device?user_code={user_code}")
        )]
    );
    shots.take(&browser, "login", false).await;
    type_into(&browser, "#username", "alice").await;
    type_into(&browser, "#password", "alice-password").await;
    click(&browser, "button[type=submit]").await;

    // Back on the page, signed in, the code filled in.
    heading_is(&browser, "Connect a device").await;
    assert_eq!(code_field(&browser).await, user_code);
    assert!(body_text(&browser).await.contains("Signed in as alice"));
    let url = browser.current_url().await.expect("url");
    assert_eq!(url.query(), Some(format!("user_code={user_code}").as_str()));
    shots.take(&browser, "enter-code", false).await;
    click(&browser, "button[type=submit]").await;

    // The confirmation: who asks, for what, from where.
    heading_is(&browser, "Allow Demo device?").await;
    let text = body_text(&browser).await;
    for needle in [
        "Demo device is asking to use your account (alice) to:",
        "See your name and user id",
        "See your email address",
        &format!("matches the one on your device: {user_code}"),
        "2023-11-14 22:13 UTC",
        "127.0.0.1",
        DEVICE_UA,
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    shots.take(&browser, "confirm", false).await;
    click(&browser, "button[value=approve]").await;
    heading_is(&browser, "Device connected").await;
    assert!(body_text(&browser).await.contains("Return to your device"));
    shots.take(&browser, "approved", false).await;

    // The device's next poll gets the token, for alice.
    let res = app.poll(&device_code).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let token = res.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let me = app
        .http
        .get(&format!("{}/api/me", app.base), Some(&token))
        .await;
    assert_eq!(me.json()["sub"], "alice");

    // 2. Deny. Still signed in: the link goes straight to the filled-in form.
    let (device_code, user_code, complete) = app.authorize().await;
    browser.goto(&complete).await.expect("open the page");
    heading_is(&browser, "Connect a device").await;
    assert_eq!(code_field(&browser).await, user_code);
    click(&browser, "button[type=submit]").await;
    heading_is(&browser, "Allow Demo device?").await;
    click(&browser, "button[value=deny]").await;
    heading_is(&browser, "Request denied").await;
    shots.take(&browser, "denied", false).await;
    let res = app.poll(&device_code).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"], "access_denied");

    // 3. A wrong code, typed by hand in lower case with a space: the form again, saying so.
    browser
        .goto(&format!("{}/device", app.base))
        .await
        .expect("open the page");
    heading_is(&browser, "Connect a device").await;
    type_into(&browser, "#user_code", "bcdf ghjk").await;
    click(&browser, "button[type=submit]").await;
    let alert = text_of(&browser, "[role=alert]").await;
    assert!(alert.contains("That code didn't work"), "{alert}");
    assert_eq!(code_field(&browser).await, "bcdf ghjk");
    let invalid = browser
        .find(Locator::Id("user_code"))
        .await
        .expect("field")
        .attr("aria-invalid")
        .await
        .expect("attr");
    assert_eq!(invalid.as_deref(), Some("true"));
    shots.take(&browser, "wrong-code", false).await;

    // The right code typed the same sloppy way (lower case, no dash) works.
    let (device_code, user_code, _) = app.authorize().await;
    let sloppy = user_code.replace('-', "").to_lowercase();
    type_into(&browser, "#user_code", &sloppy).await;
    click(&browser, "button[type=submit]").await;
    heading_is(&browser, "Allow Demo device?").await;
    assert!(body_text(&browser).await.contains(&user_code));

    // 4. It expires while the confirmation is open: approving says what to do.
    app.clock.advance(Duration::from_secs(901));
    click(&browser, "button[value=approve]").await;
    let alert = text_of(&browser, "[role=alert]").await;
    assert!(alert.contains("That code has expired"), "{alert}");
    assert!(alert.contains("Start again on your device"), "{alert}");
    shots.take(&browser, "expired", false).await;
    let res = app.poll(&device_code).await;
    assert_eq!(res.json()["error"], "expired_token");

    browser.close().await.expect("close the browser");

    // The dark look, for the screenshots only.
    if shots.dir.is_some() {
        let dark = driver.session(true).await;
        let (_, _, complete) = app.authorize().await;
        dark.goto(&complete).await.expect("open the page");
        heading_is(&dark, "Sign in").await;
        type_into(&dark, "#username", "bob").await;
        type_into(&dark, "#password", "bob-password").await;
        click(&dark, "button[type=submit]").await;
        heading_is(&dark, "Connect a device").await;
        shots.take(&dark, "enter-code", true).await;
        click(&dark, "button[type=submit]").await;
        heading_is(&dark, "Allow Demo device?").await;
        shots.take(&dark, "confirm", true).await;
        dark.close().await.expect("close the browser");
    }
}
