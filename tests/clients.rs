//! Clients from the application's own source (`DeviceFlowBuilder::clients`): every endpoint asks
//! it, on every request, instead of the store. And the metadata's `scopes_supported`, derived
//! from the clients when the flow is not given one.

mod http_support;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::store::{ClientSource, StoreResult};
use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope, Subject};

const TV: &str = "living-room-tv";
const SERVICE: &str = "backend-service";
const SERVICE_SECRET: &str = "service-secret";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The application's own table of clients, which the test edits while the flow runs.
#[derive(Clone, Default)]
struct AppClients(Arc<RwLock<HashMap<String, Client>>>);

impl AppClients {
    fn put(&self, client: Client) {
        let id = client.id().as_str().to_owned();
        self.0.write().unwrap().insert(id, client);
    }

    fn remove(&self, id: &str) {
        self.0.write().unwrap().remove(id);
    }
}

impl ClientSource for AppClients {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.0.read().unwrap().get(client_id).cloned())
    }
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

struct App {
    flow: DeviceFlow<MemoryStore>,
    clients: AppClients,
}

struct Reply {
    status: StatusCode,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.json()["error"], code, "{}", self.body);
    }
}

/// A flow on a store with no clients at all: they come from the application's source alone.
fn app(store: MemoryStore) -> App {
    let clients = AppClients::default();
    clients.put(Client::public(TV, scope("profile")).with_name("Living room TV"));
    clients.put(Client::confidential(
        SERVICE,
        SERVICE_SECRET,
        scope("profile"),
    ));
    let flow = DeviceFlow::builder(store)
        .issuer("https://auth.example.com")
        .end_user(|req: &http::request::Parts| req.extensions.get::<Subject>().cloned())
        .clients(clients.clone())
        .build();
    App { flow, clients }
}

impl App {
    async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let inner = service_fn(|_req: Request<Full<Bytes>>| async {
            let mut res = Response::new(Full::from("not an endpoint"));
            *res.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, std::convert::Infallible>(res)
        });
        let res = self
            .flow
            .endpoints_layer()
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn post(&self, path: &str, body: String, end_user: Option<&str>) -> Reply {
        let mut req = Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::from(body))
            .unwrap();
        if let Some(user) = end_user {
            req.extensions_mut().insert(Subject::new(user));
        }
        self.send(req).await
    }

    async fn authorize(&self, client_id: &str, scope: &str) -> Reply {
        let body = format!("client_id={client_id}&scope={scope}");
        self.post("/oauth/device_authorization", body, None).await
    }

    async fn poll(&self, client_id: &str, device_code: &str) -> Reply {
        let body = format!(
            "grant_type={DEVICE_CODE_GRANT}&client_id={client_id}&device_code={device_code}"
        );
        self.post("/oauth/token", body, None).await
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> Reply {
        let body =
            format!("grant_type=refresh_token&client_id={client_id}&refresh_token={refresh_token}");
        self.post("/oauth/token", body, None).await
    }

    /// Device authorization, approval by alice, redemption: the token response.
    async fn tokens(&self) -> Value {
        let codes = self.authorize(TV, "profile").await;
        assert_eq!(codes.status, 200, "{}", codes.body);
        let codes = codes.json();
        let user_code = codes["user_code"].as_str().unwrap();
        let approve = format!("user_code={user_code}&decision=approve");
        let res = self.post("/device", approve, Some("alice")).await;
        assert_eq!(res.status, 200, "{}", res.body);
        let res = self.poll(TV, codes["device_code"].as_str().unwrap()).await;
        assert_eq!(res.status, 200, "{}", res.body);
        res.json()
    }

    async fn introspect(&self, token: &str, secret: &str) -> Reply {
        let body = format!("client_id={SERVICE}&client_secret={secret}&token={token}");
        self.post("/oauth/introspect", body, None).await
    }
}

#[tokio::test]
async fn a_custom_source_runs_the_whole_flow_on_a_store_without_clients() {
    let app = app(MemoryStore::default());
    let codes = app.authorize(TV, "profile").await;
    assert_eq!(codes.status, 200, "{}", codes.body);
    let codes = codes.json();
    let user_code = codes["user_code"].as_str().unwrap();

    // The confirmation names the client, as the application's source knows it.
    let confirm = app
        .post("/device", format!("user_code={user_code}"), Some("alice"))
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("Living room TV"), "{}", confirm.body);

    let approve = format!("user_code={user_code}&decision=approve");
    let res = app.post("/device", approve, Some("alice")).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app.poll(TV, codes["device_code"].as_str().unwrap()).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let tokens = res.json();

    // Refresh, introspection by the confidential client, the connected devices, revocation.
    let res = app
        .refresh(TV, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let tokens = res.json();
    let access = tokens["access_token"].as_str().unwrap();
    let res = app.introspect(access, SERVICE_SECRET).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json()["active"], true, "{}", res.body);
    assert_eq!(res.json()["client_id"], TV);

    let devices = app
        .flow
        .connected_devices_of(&Subject::new("alice"))
        .await
        .unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].client_name.as_deref(), Some("Living room TV"));

    let revoke = format!("client_id={TV}&token={access}");
    let res = app.post("/oauth/revoke", revoke, None).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app.introspect(access, SERVICE_SECRET).await;
    assert_eq!(res.json()["active"], false, "{}", res.body);
}

#[tokio::test]
async fn the_store_is_not_asked_once_a_source_is_set() {
    // A client only the store knows is unknown to a flow that takes its clients elsewhere.
    let store = MemoryStore::builder()
        .client(Client::public("store-only", scope("profile")))
        .build();
    let app = app(store);
    app.authorize("store-only", "profile")
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn a_removed_client_can_neither_start_redeem_nor_refresh() {
    let app = app(MemoryStore::default());
    let tokens = app.tokens().await;
    // A grant pending when the client goes.
    let codes = app.authorize(TV, "profile").await.json();
    let user_code = codes["user_code"].as_str().unwrap();
    let approve = format!("user_code={user_code}&decision=approve");
    let res = app.post("/device", approve, Some("alice")).await;
    assert_eq!(res.status, 200, "{}", res.body);

    app.clients.remove(TV);

    // The token endpoint answers an unknown client as it always has (RFC 6749 5.2).
    app.poll(TV, codes["device_code"].as_str().unwrap())
        .await
        .assert_error(401, "invalid_client");
    app.refresh(TV, tokens["refresh_token"].as_str().unwrap())
        .await
        .assert_error(401, "invalid_client");
    app.authorize(TV, "profile")
        .await
        .assert_error(401, "invalid_client");

    // A confidential client removed: its secret opens nothing any more.
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(access, SERVICE_SECRET).await.status, 200);
    app.clients.remove(SERVICE);
    app.introspect(access, SERVICE_SECRET)
        .await
        .assert_error(401, "invalid_client");

    // Registered again, the client is back at once.
    app.clients
        .put(Client::public(TV, scope("profile")).with_name("Living room TV"));
    let res = app.authorize(TV, "profile").await;
    assert_eq!(res.status, 200, "{}", res.body);
}

#[tokio::test]
async fn an_update_applies_to_the_next_device_authorization() {
    let app = app(MemoryStore::default());
    app.authorize(TV, "profile email")
        .await
        .assert_error(400, "invalid_scope");

    app.clients
        .put(Client::public(TV, scope("profile email")).with_name("Living room TV"));
    let res = app.authorize(TV, "profile email").await;
    assert_eq!(res.status, 200, "{}", res.body);

    // And narrowed again.
    app.clients.put(Client::public(TV, scope("email")));
    app.authorize(TV, "profile")
        .await
        .assert_error(400, "invalid_scope");
}

// ---- scopes_supported from the clients ----

const METADATA: &str = "/.well-known/oauth-authorization-server";

/// Serves `flow`'s endpoints over HTTP on `listener`.
async fn serve<S: tower_device_flow::Store>(
    listener: tokio::net::TcpListener,
    flow: &DeviceFlow<S>,
) {
    let inner = service_fn(|_req: Request<hyper::body::Incoming>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
    });
    http_support::serve_hyper(listener, flow.endpoints_layer().layer(inner));
}

async fn scopes_supported(base: &str) -> Option<Vec<String>> {
    let res = http_support::Http::default()
        .get(&format!("{base}{METADATA}"), None)
        .await;
    assert_eq!(res.status, 200);
    res.json()["scopes_supported"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
}

#[tokio::test]
async fn metadata_lists_the_scopes_of_the_registered_clients() {
    let store = MemoryStore::builder()
        .client(Client::public("tv", scope("profile")))
        .client(Client::confidential(
            "svc",
            "secret",
            scope("email profile"),
        ))
        .build();
    let (listener, base) = http_support::bind().await;
    let flow = DeviceFlow::builder(store).issuer(base.clone()).build();
    serve(listener, &flow).await;
    assert_eq!(scopes_supported(&base).await.unwrap(), ["email", "profile"]);

    // A client registered while the server runs shows on the next request.
    flow.store()
        .add_client(Client::public("printer", scope("print")));
    assert_eq!(
        scopes_supported(&base).await.unwrap(),
        ["email", "print", "profile"]
    );
    flow.store().remove_client("svc");
    assert_eq!(scopes_supported(&base).await.unwrap(), ["print", "profile"]);
}

#[tokio::test]
async fn explicit_scopes_supported_wins_over_the_clients() {
    let store = MemoryStore::builder()
        .client(Client::public("tv", scope("profile email")))
        .build();
    let (listener, base) = http_support::bind().await;
    let flow = DeviceFlow::builder(store)
        .issuer(base.clone())
        .scopes_supported(scope("profile"))
        .build();
    serve(listener, &flow).await;
    assert_eq!(scopes_supported(&base).await.unwrap(), ["profile"]);
    flow.store().add_client(Client::public("p", scope("print")));
    assert_eq!(scopes_supported(&base).await.unwrap(), ["profile"]);
}

#[tokio::test]
async fn a_source_that_cannot_list_its_clients_leaves_scopes_supported_out() {
    // `AppClients` keeps the provided `known_scopes`: it cannot enumerate.
    let (listener, base) = http_support::bind().await;
    let clients = AppClients::default();
    clients.put(Client::public(TV, scope("profile")));
    let flow = DeviceFlow::builder(MemoryStore::default())
        .issuer(base.clone())
        .clients(clients)
        .build();
    serve(listener, &flow).await;
    assert_eq!(scopes_supported(&base).await, None);
}

/// A source that lists its clients: the flow asks it, not the store.
#[derive(Clone, Default)]
struct ListedClients(AppClients);

impl ClientSource for ListedClients {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        self.0.client(client_id).await
    }

    async fn known_scopes(&self) -> StoreResult<Option<Scope>> {
        let clients = self.0 .0.read().unwrap();
        let all = clients
            .values()
            .fold(Scope::empty(), |all, c| all.union(c.allowed_scope()));
        Ok(Some(all))
    }
}

#[tokio::test]
async fn metadata_asks_the_flows_own_client_source() {
    let store = MemoryStore::builder()
        .client(Client::public("store-only", scope("ignored")))
        .build();
    let (listener, base) = http_support::bind().await;
    let clients = ListedClients::default();
    clients.0.put(Client::public(TV, scope("profile")));
    let flow = DeviceFlow::builder(store)
        .issuer(base.clone())
        .clients(clients.clone())
        .build();
    serve(listener, &flow).await;
    assert_eq!(scopes_supported(&base).await.unwrap(), ["profile"]);
    clients.0.put(Client::public("radio", scope("listen")));
    assert_eq!(
        scopes_supported(&base).await.unwrap(),
        ["listen", "profile"]
    );
}

/// A source whose listing fails (its database is down).
struct FailingListing;

impl ClientSource for FailingListing {
    async fn client(&self, _client_id: &str) -> StoreResult<Option<Client>> {
        Ok(None)
    }

    async fn known_scopes(&self) -> StoreResult<Option<Scope>> {
        Err(tower_device_flow::StoreError::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn derived_documents_are_revalidated_and_a_failed_listing_is_not_cached() {
    let store = MemoryStore::builder()
        .client(Client::public(TV, scope("profile")))
        .build();
    let (listener, base) = http_support::bind().await;
    let flow = DeviceFlow::builder(store).issuer(base.clone()).build();
    serve(listener, &flow).await;
    let http = http_support::Http::default();
    let res = http.get(&format!("{base}{METADATA}"), None).await;
    assert_eq!(res.header("cache-control"), "no-cache");

    // Discovery still works when the clients cannot be listed; the answer is not kept.
    let (listener, base) = http_support::bind().await;
    let flow = DeviceFlow::builder(MemoryStore::default())
        .issuer(base.clone())
        .clients(FailingListing)
        .build();
    serve(listener, &flow).await;
    let res = http.get(&format!("{base}{METADATA}"), None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("cache-control"), "no-store");
    assert_eq!(res.json()["issuer"], base.as_str());
    assert!(res.json().get("scopes_supported").is_none());
}
