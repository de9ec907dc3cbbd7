//! Replays the fuzz corpus and every minimized fuzz finding through the fuzz harness, so CI
//! exercises them without cargo-fuzz. The harness (`tests/fuzz_harness/mod.rs`) is the very
//! code the cargo-fuzz targets in `fuzz/` run; each call panics on an answer that is not a
//! proper RFC answer.
//!
//! To add a finding: minimize it (`cargo fuzz tmin <target> <artifact>`), then add its bytes to
//! [`FINDINGS`] (or copy the file into `tests/fuzz_corpus/<target>/`).

mod fuzz_harness;

use std::path::Path;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use tower::ServiceExt;

use fuzz_harness::{
    block_on, check_reply, encode_requests, run, services_statuses, Endpoint, Fixture, FuzzRequest,
    Reply, DEVICE_CODE_GRANT, RT_VALID, TARGETS,
};

/// Minimized inputs that once crashed a target: (target, input).
const FINDINGS: &[(&str, &[u8])] = &[];

#[test]
fn corpus_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus");
    let mut total = 0;
    for target in TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {target}");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(target, &data));
            assert!(outcome.is_ok(), "{target}: {} failed", file.display());
            total += 1;
        }
    }
    assert!(total >= TARGETS.len());
}

#[test]
fn findings_replay_cleanly() {
    for (target, data) in FINDINGS {
        run(target, data);
    }
}

fn post(path: &'static str, body: &str) -> FuzzRequest {
    FuzzRequest {
        method: http::Method::POST,
        path,
        query: Vec::new(),
        headers: Vec::new(),
        subject: false,
        form: true,
        json: true,
        body: body.as_bytes().to_vec(),
    }
}

/// The oracles are not vacuous: the harness's fixture and request encoding reach the success
/// paths (a full flow, a guarded route) as well as the refusals.
#[test]
fn services_harness_reaches_every_step_of_a_flow() {
    let poll = format!("grant_type={DEVICE_CODE_GRANT}&device_code=dc-new-0&client_id=tv");
    let approve = FuzzRequest {
        subject: true,
        ..post("/device", "user_code=bbbb-bbbb&decision=approve")
    };
    let data = encode_requests(&[
        post("/oauth/device_authorization", "client_id=tv&scope=profile"),
        approve,
        post("/oauth/token", &poll),
        post("/oauth/token", &poll),
    ]);
    assert_eq!(services_statuses(&data), [200, 200, 200, 400]);

    let me = |token: &str| FuzzRequest {
        method: http::Method::GET,
        form: false,
        headers: vec![("authorization", format!("Bearer {token}").into_bytes())],
        ..post("/me", "")
    };
    let revoke = post("/oauth/revoke", "token=at-valid&client_id=tv");
    let data = encode_requests(&[me("at-valid"), me("at-narrow"), revoke, me("at-valid")]);
    assert_eq!(services_statuses(&data), [200, 403, 200, 401]);

    // Store v2: the second use of a just-rotated refresh token, within the 30 s grace period
    // (the clock does not move), is a retry and gets a fresh pair; the rotation revoked the
    // access token the refresh token was issued with.
    let refresh = format!("grant_type=refresh_token&refresh_token={RT_VALID}&client_id=tv");
    let data = encode_requests(&[
        post("/oauth/token", &refresh),
        post("/oauth/token", &refresh),
        me("at-valid"),
    ]);
    assert_eq!(services_statuses(&data), [200, 200, 401]);
}

#[test]
fn basic_and_bearer_harnesses_reach_success() {
    // Flags byte, then the Authorization value: `tv` with an empty password.
    let mut data = vec![0u8];
    data.extend_from_slice(b"Basic dHY6");
    run("basic_auth", &data);
    let mut data = vec![0u8, 15];
    data.extend_from_slice(b"Bearer at-valid");
    run("bearer", &data);
    // The same oracle refuses what must be refused (a confidential client's Basic
    // credentials on the public client's grant).
    let mut data = vec![0u8];
    data.extend_from_slice(b"Basic Y2xpOnMzY3JldA==");
    run("basic_auth", &data);
}

/// Found while writing the harness: the endpoints read their form body under
/// `tokio::time::timeout` whenever *a* Tokio runtime was current, and that panics ("A Tokio
/// 1.x context was found, but timers are disabled") on a runtime built without the time
/// driver. The read timeout is now opt-in; with the default, every form POST is answered.
#[test]
fn form_post_on_a_runtime_without_timer_is_answered() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let fx = Fixture::new().await;
        let req = Request::post("/oauth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "grant_type={DEVICE_CODE_GRANT}&device_code=dc-approved&client_id=tv"
            ))))
            .unwrap();
        let reply = Reply::read(fx.flow.token().oneshot(req).await.unwrap()).await;
        check_reply(Endpoint::Token, &reply, true);
        assert_eq!(reply.status, StatusCode::OK);
    });
}

/// The same request on a runtime with timers (what the harness uses) is answered.
#[test]
fn form_post_on_a_runtime_with_timer_is_answered() {
    block_on(async {
        let fx = Fixture::new().await;
        let req = Request::post("/oauth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "grant_type={DEVICE_CODE_GRANT}&device_code=dc-approved&client_id=tv"
            ))))
            .unwrap();
        let reply = Reply::read(fx.flow.token().oneshot(req).await.unwrap()).await;
        check_reply(Endpoint::Token, &reply, true);
        assert_eq!(reply.status, StatusCode::OK);
    });
}
