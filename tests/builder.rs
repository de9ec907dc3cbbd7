//! `DeviceFlowBuilder::try_build`: the issuer rule of RFC 8414 section 2 and the other
//! configuration that used to fail silently.

use tower_device_flow::{
    BuildError, DeviceFlow, DeviceFlowBuilder, MemoryStore, Paths, DEV_ISSUER,
};

fn builder() -> DeviceFlowBuilder<MemoryStore> {
    DeviceFlow::builder(MemoryStore::default())
}

fn issuer_error(issuer: &str) -> Option<BuildError> {
    builder().issuer(issuer).try_build().err()
}

#[test]
fn try_build_refuses_a_flow_without_an_issuer() {
    let e = builder().try_build().unwrap_err();
    assert_eq!(e, BuildError::MissingIssuer);
    assert!(e.to_string().contains(".issuer("), "{e}");
}

/// Collects what the test's subscriber writes.
#[cfg(debug_assertions)]
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(debug_assertions)]
impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The only test here that builds without an issuer: the warning is logged once per process.
#[cfg(debug_assertions)]
#[test]
fn a_debug_build_falls_back_to_the_development_issuer_and_warns_once() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(builder().build().issuer(), DEV_ISSUER);
        assert_eq!(builder().build().issuer(), DEV_ISSUER);
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.matches("no issuer set").count(), 1, "{logs}");
    assert!(logs.contains("WARN"), "{logs}");
}

// The release rule (no fallback) is tested in src/flow.rs, where the build mode is a parameter.

#[test]
fn https_issuers_are_accepted() {
    for issuer in [
        "https://auth.example.com",
        "https://auth.example.com:8443",
        "https://example.com/tenant/a",
    ] {
        assert_eq!(issuer_error(issuer), None, "{issuer}");
    }
}

#[test]
fn plain_http_only_on_loopback_hosts() {
    for issuer in [
        "http://localhost",
        "http://localhost:8080",
        "http://LOCALHOST:8080",
        "http://127.0.0.1:3000",
        "http://[::1]:3000",
    ] {
        assert_eq!(issuer_error(issuer), None, "{issuer}");
    }
    for issuer in [
        "http://auth.example.com",
        "http://0.0.0.0:8080",
        "http://10.0.0.1",
        "http://localhost.example.com",
    ] {
        let e = issuer_error(issuer).unwrap_or_else(|| panic!("{issuer} accepted"));
        assert!(
            matches!(&e, BuildError::InvalidIssuer { reason, .. } if reason.contains("loopback")),
            "{issuer}: {e}"
        );
    }
}

#[test]
fn an_issuer_must_be_an_absolute_url() {
    for issuer in ["auth.example.com", "/oauth", "", "https://", "not a url"] {
        assert!(
            matches!(issuer_error(issuer), Some(BuildError::InvalidIssuer { .. })),
            "{issuer:?} accepted"
        );
    }
}

#[test]
fn an_issuer_has_no_query_fragment_or_other_scheme() {
    for (issuer, why) in [
        ("https://auth.example.com?tenant=a", "query"),
        ("https://auth.example.com/?", "query"),
        ("https://auth.example.com#top", "fragment"),
        ("ftp://auth.example.com", "scheme"),
    ] {
        match issuer_error(issuer) {
            Some(BuildError::InvalidIssuer { reason, .. }) => {
                assert!(reason.contains(why), "{issuer}: {reason}")
            }
            other => panic!("{issuer}: {other:?}"),
        }
    }
}

#[test]
fn trailing_slashes_are_dropped_so_endpoint_urls_have_one() {
    let flow = builder().issuer("https://auth.example.com/").build();
    assert_eq!(flow.issuer(), "https://auth.example.com");
    let flow = builder().issuer("https://example.com/tenant//").build();
    assert_eq!(flow.issuer(), "https://example.com/tenant");
}

#[tokio::test]
async fn metadata_joins_the_trimmed_issuer_and_the_paths() {
    let flow = builder().issuer("https://auth.example.com/").build();
    let doc = flow.metadata().document().await;
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["issuer"], "https://auth.example.com");
    assert_eq!(
        doc["token_endpoint"],
        "https://auth.example.com/oauth/token"
    );
}

#[test]
fn a_verification_uri_must_be_absolute() {
    let try_uri = |uri: &str| {
        builder()
            .issuer("https://auth.example.com")
            .verification_uri(uri)
            .try_build()
            .err()
    };
    assert_eq!(try_uri("https://example.com/activate"), None);
    assert_eq!(try_uri("http://127.0.0.1:8080/device"), None);
    for uri in [
        "/device",
        "example.com/device",
        "http://example.com/device",
        "https://example.com/#x",
    ] {
        assert!(
            matches!(
                try_uri(uri),
                Some(BuildError::InvalidVerificationUri { .. })
            ),
            "{uri} accepted"
        );
    }
}

#[test]
fn endpoint_paths_start_with_a_slash() {
    let paths = Paths {
        token: "oauth/token".into(),
        ..Paths::default()
    };
    let e = builder()
        .issuer("https://auth.example.com")
        .paths(paths)
        .try_build()
        .unwrap_err();
    assert!(
        matches!(
            &e,
            BuildError::InvalidPath {
                endpoint: "token",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn two_endpoints_cannot_share_a_path() {
    let paths = Paths {
        revoke_device: "/account/devices".into(),
        ..Paths::default()
    };
    let e = builder()
        .issuer("https://auth.example.com")
        .paths(paths)
        .try_build()
        .unwrap_err();
    assert_eq!(
        e,
        BuildError::DuplicatePath {
            path: "/account/devices".into(),
            endpoints: ("connected_devices", "revoke_device"),
        }
    );
    assert!(e.to_string().contains("/account/devices"), "{e}");
}

#[test]
#[should_panic(expected = "plain http is only for loopback hosts")]
fn build_panics_with_the_reason() {
    let _ = builder().issuer("http://auth.example.com").build();
}

#[test]
fn plain_http_elsewhere_only_when_allowed_and_still_an_absolute_url() {
    let build = |issuer: &str, allow: bool| {
        DeviceFlow::builder(MemoryStore::default())
            .issuer(issuer)
            .allow_plain_http(allow)
            .try_build()
            .err()
    };
    assert!(build("http://10.0.0.1:8080", false).is_some());
    assert!(build("http://10.0.0.1:8080", true).is_none());
    assert!(build("http://auth.internal", true).is_none());
    // The escape hatch is for the scheme only: the rest of the form is still checked.
    assert!(build("http://10.0.0.1:8080/#x", true).is_some());
    assert!(build("ftp://10.0.0.1", true).is_some());
    assert!(build("/relative", true).is_some());
}
