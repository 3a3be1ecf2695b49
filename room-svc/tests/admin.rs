//! The admin HTTP API over a real socket, in front of an in-process room
//! service with fake msg-svc nodes attached: every route, its effect on the
//! room and on the nodes, and every kind of bad input (answered with a 4xx
//! and a JSON error, changing nothing). Then scoped keys from a keys file
//! that is rewritten while the server runs, and the audit of changes.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use chatroom_cluster::auth::AdminToken;
use chatroom_cluster::reload::Reloaded;
use chatroom_proto::v1::{KickReason, Lane};
use room_svc::RoomService;
use room_svc::admin::client::AdminClient;
use room_svc::admin::http_client::{HttpClient, Reply};
use room_svc::admin::keys::{self, AdminKeys, KeyEntry, Scope, TOKEN_KEY_NAME, new_key};
use room_svc::admin::{AdminApi, AuditRecord, ErrorBody, Keyring, MAX_BODY_BYTES};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;

const TOKEN: &str = "admin-token-for-tests-0123456789";

struct Api {
    service: RoomService,
    base: String,
    client: AdminClient,
    _server: tokio::task::JoinHandle<()>,
}

async fn serve(token: Option<&str>) -> Api {
    let token = token.map(|t| AdminToken::new(t.as_bytes()).unwrap());
    serve_api(|service| AdminApi::new(service, Keyring::new(token, None), None)).await
}

/// Serves the API `api` makes over a fresh room service.
async fn serve_api(api: impl FnOnce(RoomService) -> AdminApi) -> Api {
    let service = start(2);
    let router = api(service.clone()).router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let base = format!("http://{addr}");
    Api {
        service,
        client: AdminClient::new(&base, TOKEN).unwrap(),
        base,
        _server: server,
    }
}

impl Api {
    fn client_base(&self) -> String {
        self.base.clone()
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let reply = self
            .client
            .request(method, path, body.as_ref())
            .await
            .unwrap();
        (reply.status, json_of(&reply))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn raw(&self, method: Method, path: &str, body: &[u8], token: Option<&str>) -> Reply {
        self.client
            .send(method, path, Bytes::copy_from_slice(body), token)
            .await
            .unwrap()
    }
}

fn json_of(reply: &Reply) -> Value {
    if reply.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&reply.body)))
    }
}

/// The reply is the error `code` with `status`, as JSON.
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body: ErrorBody = serde_json::from_slice(&reply.body).expect("a JSON error body");
    assert_eq!(body.error.code, code, "{}", body.error.message);
    assert!(!body.error.message.is_empty());
}

#[tokio::test]
async fn requests_need_the_admin_token() {
    let api = serve(Some(TOKEN)).await;
    for token in [None, Some("wrong-token-wrong-token-wrong"), Some("")] {
        let reply = api
            .raw(Method::GET, "/rooms/lobby/config", b"", token)
            .await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(reply.headers.contains_key("www-authenticate"));
    }
    // A refused change changes nothing.
    let reply = api
        .raw(
            Method::PATCH,
            "/rooms/lobby/config",
            br#"{"normal_per_s": 1}"#,
            Some("wrong-token-wrong-token-wrong"),
        )
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, settings) = api.get("/rooms/lobby/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["config"]["normal_per_s"], 200);
}

#[tokio::test]
async fn the_scheme_is_case_insensitive_and_resetting_nothing_creates_nothing() {
    let api = serve(Some(TOKEN)).await;
    let http = HttpClient::new(std::time::Duration::from_secs(10));
    for scheme in ["bearer", "BEARER"] {
        let request = axum::http::Request::get(format!("{}/admin/v1/rooms/lobby/config", api.base))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(http.send(request).await.unwrap().status, StatusCode::OK);
    }
    let (status, _) = api.call(Method::DELETE, "/rooms/lobby/config", None).await;
    assert_eq!(status, StatusCode::OK);
    let reply = api.raw(Method::GET, "/rooms/lobby", b"", Some(TOKEN)).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "unknown_room");
}

#[tokio::test]
async fn without_a_configured_token_the_api_is_off() {
    let api = serve(None).await;
    let reply = api
        .raw(Method::GET, "/rooms/lobby/config", b"", Some(TOKEN))
        .await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "admin_disabled");
}

#[tokio::test]
async fn config_patches_override_defaults_and_reach_the_nodes() {
    let api = serve(Some(TOKEN)).await;
    let mut node = FakeNode::attach(&api.service, "a");
    node.subscribe(ROOM).await;

    let (status, settings) = api.get(&format!("/rooms/{ROOM}/config")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["overrides"], json!({}));
    assert_eq!(settings["config"]["priority_kinds"], json!(["gift"]));

    let patch =
        json!({"normal_per_s": 5, "normal_burst": 5, "priority_kinds": ["gift", "like", 1001]});
    let (status, settings) = api
        .call(Method::PATCH, &format!("/rooms/{ROOM}/config"), Some(patch))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        settings["overrides"],
        json!({"normal_per_s": 5, "normal_burst": 5, "priority_kinds": ["gift", "like", 1001]})
    );
    assert_eq!(settings["config"]["normal_per_s"], 5);
    assert_eq!(settings["config"]["max_payload_bytes"], 4096);
    // The node had the new config before the answer came.
    let update = node.next_update().await;
    let config = update.config.unwrap();
    assert_eq!(config.normal_per_s, 5);
    assert_eq!(config.priority_kinds, [2, 1, 1001]);

    // null drops one override; DELETE drops them all.
    let (_, settings) = api
        .call(
            Method::PATCH,
            &format!("/rooms/{ROOM}/config"),
            Some(json!({"normal_per_s": null})),
        )
        .await;
    assert_eq!(settings["config"]["normal_per_s"], 200);
    assert_eq!(settings["overrides"]["normal_burst"], 5);
    assert_eq!(node.next_update().await.config.unwrap().normal_per_s, 200);
    let (status, settings) = api
        .call(Method::DELETE, &format!("/rooms/{ROOM}/config"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["overrides"], json!({}));
    assert_eq!(node.next_update().await.config.unwrap().normal_burst, 200);
    node.assert_quiet();
}

#[tokio::test]
async fn bad_config_input_is_refused_and_changes_nothing() {
    let api = serve(Some(TOKEN)).await;
    let mut node = FakeNode::attach(&api.service, "a");
    node.subscribe(ROOM).await;
    let path = format!("/rooms/{ROOM}/config");
    let (_, before) = api.get(&path).await;
    let cases: [(&[u8], StatusCode, &str); 11] = [
        (
            br#"{"normal_per_s": -5}"#,
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            br#"{"normal_per_s": 5000000}"#,
            StatusCode::BAD_REQUEST,
            "invalid_config",
        ),
        (
            br#"{"normal_per_s": 1e99}"#,
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            br#"{"round_interval_ms": 0}"#,
            StatusCode::BAD_REQUEST,
            "invalid_config",
        ),
        (
            br#"{"max_payload_bytes": "big"}"#,
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            br#"{"normal_per_sec": 5}"#,
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            br#"{"priority_kinds": ["gifts"]}"#,
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            br#"{"priority_kinds": [7]}"#,
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (br#"[1, 2]"#, StatusCode::BAD_REQUEST, "bad_body"),
        (b"{not json", StatusCode::BAD_REQUEST, "bad_body"),
        (b" \n", StatusCode::BAD_REQUEST, "bad_body"),
    ];
    for (body, status, code) in cases {
        let reply = api.raw(Method::PATCH, &path, body, Some(TOKEN)).await;
        assert_error(&reply, status, code);
    }
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let reply = api.raw(Method::PATCH, &path, &huge, Some(TOKEN)).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    let (_, after) = api.get(&path).await;
    assert_eq!(before, after);
    node.assert_quiet();
}

#[tokio::test]
async fn malformed_ids_and_unknown_routes_are_refused() {
    let api = serve(Some(TOKEN)).await;
    let too_long = "r".repeat(129);
    for path in [
        "/rooms/bad%20room/config".to_owned(),
        "/rooms/%E2%9C%93/config".to_owned(),
        format!("/rooms/{too_long}"),
    ] {
        let reply = api.raw(Method::GET, &path, b"", Some(TOKEN)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_room_id");
    }
    let reply = api
        .raw(Method::PUT, "/rooms/lobby/bans/eve%21", b"", Some(TOKEN))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_user_id");
    let reply = api
        .raw(Method::GET, "/rooms/%FF/config", b"", Some(TOKEN))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_path");
    let reply = api.raw(Method::GET, "/nowhere", b"", Some(TOKEN)).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    let reply = api
        .raw(Method::POST, "/rooms/lobby/config", b"{}", Some(TOKEN))
        .await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let reply = api.raw(Method::GET, "/rooms/lobby", b"", Some(TOKEN)).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "unknown_room");
    for query in ["limit=0", "limit=1001", "limit=x", "by=loudness", "top=3"] {
        let reply = api
            .raw(Method::GET, &format!("/rooms?{query}"), b"", Some(TOKEN))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_query");
    }
}

#[tokio::test]
async fn moderation_mutes_bans_with_a_kick_and_whitelists() {
    let api = serve(Some(TOKEN)).await;
    let mut node = FakeNode::attach(&api.service, "a");
    node.subscribe(ROOM).await;
    node.join(ROOM, &["alice", "bob", "vip"]);

    let mute = |user: &str| format!("/rooms/{ROOM}/mutes/{user}");
    let (status, _) = api
        .call(
            Method::PUT,
            &mute("alice"),
            Some(json!({"duration_s": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::PUT, &mute("bob"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for bad in [
        json!({"duration_s": 0}),
        json!({"duration_s": -1}),
        json!({"for": 5}),
    ] {
        let reply = api
            .raw(
                Method::PUT,
                &mute("vip"),
                bad.to_string().as_bytes(),
                Some(TOKEN),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_body");
    }
    node.send(send_body(send(ROOM, "alice", 1)));
    let error = node.next_error().await;
    assert_eq!(code(&error), chatroom_proto::v1::ErrorCode::Muted);
    assert!(error.retry_after_ms > 590_000);
    let (status, _) = api.call(Method::DELETE, &mute("alice"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    node.send(send_body(send(ROOM, "alice", 2)));
    node.next_ack().await;
    node.next_broadcast().await;

    // A ban kicks at once: the Kick is on the node before the answer.
    let (status, _) = api
        .call(Method::PUT, &format!("/rooms/{ROOM}/bans/bob"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let kick = node.next_kick().await;
    assert_eq!(
        (kick.user_id.as_str(), kick.reason),
        ("bob", KickReason::Banned as i32)
    );

    let (status, _) = api
        .call(Method::PUT, &format!("/rooms/{ROOM}/whitelist/vip"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    node.send(send_body(send(ROOM, "vip", 3)));
    assert_eq!(node.next_ack().await.lane, Lane::Priority as i32);
    node.next_broadcast().await;

    let (status, mutes) = api.get(&format!("/rooms/{ROOM}/mutes")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mutes["total"], 1);
    assert_eq!(mutes["users"][0]["user_id"], "bob");
    assert_eq!(mutes["users"][0]["until_us"], Value::Null, "until unmuted");
    let (_, bans) = api.get(&format!("/rooms/{ROOM}/bans?limit=5")).await;
    assert_eq!(bans["users"], json!([{"user_id": "bob", "until_us": null}]));
    let (_, whitelist) = api.get(&format!("/rooms/{ROOM}/whitelist")).await;
    assert_eq!(whitelist["users"][0]["user_id"], "vip");
    for query in ["limit=0", "limit=10001", "top=1"] {
        let reply = api
            .raw(
                Method::GET,
                &format!("/rooms/{ROOM}/bans?{query}"),
                b"",
                Some(TOKEN),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_query");
    }
    let (_, stats) = api.get(&format!("/rooms/{ROOM}")).await;
    assert_eq!(
        (stats["mutes"].as_u64(), stats["bans"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["whitelist"], 1);
    assert_eq!(stats["members"], 2);
    assert_eq!(stats["rejected"]["muted"], 1);

    for (list, user) in [("bans", "bob"), ("whitelist", "vip"), ("mutes", "bob")] {
        let (status, _) = api
            .call(
                Method::DELETE,
                &format!("/rooms/{ROOM}/{list}/{user}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (_, stats) = api.get(&format!("/rooms/{ROOM}")).await;
    assert_eq!(
        (&stats["mutes"], &stats["bans"], &stats["whitelist"]),
        (&json!(0), &json!(0), &json!(0))
    );
}

#[tokio::test]
async fn notices_go_to_the_priority_lane() {
    let api = serve(Some(TOKEN)).await;
    let mut node = FakeNode::attach(&api.service, "a");
    node.subscribe(ROOM).await;
    let (status, posted) = api
        .call(
            Method::POST,
            &format!("/rooms/{ROOM}/notices"),
            Some(json!({"text": "stream starts in 5 minutes", "sender": "ops"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let broadcast = node.next_broadcast().await;
    let notice = &broadcast.messages[0];
    assert_eq!(posted["msg_id"], notice.msg_id);
    assert_eq!(notice.lane, Lane::Priority as i32);
    assert_eq!(notice.sender, "ops");
    assert_eq!(&notice.payload[..], b"stream starts in 5 minutes");

    let too_big = "x".repeat(4097);
    let reply = api
        .raw(
            Method::POST,
            &format!("/rooms/{ROOM}/notices"),
            json!({ "text": too_big }).to_string().as_bytes(),
            Some(TOKEN),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "notice_refused");
    let reply = api
        .raw(
            Method::POST,
            &format!("/rooms/{ROOM}/notices"),
            b"{}",
            Some(TOKEN),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_body");
    node.assert_quiet();
}

#[tokio::test]
async fn stats_busiest_rooms_and_close() {
    let api = serve(Some(TOKEN)).await;
    let mut node = FakeNode::attach(&api.service, "a");
    for (room, users, sends) in [("quiet", 3, 1), ("busy", 1, 4), ("big", 5, 0)] {
        node.subscribe(room).await;
        let names: Vec<String> = (0..users).map(|i| format!("u{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        node.join(room, &names);
        for i in 0..sends {
            node.send(send_body(send(room, "u0", i + 1)));
            node.next_ack().await;
            node.next_broadcast().await;
        }
    }
    let (status, stats) = api.get("/rooms/busy").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["accepted_normal"], 4);
    assert_eq!(stats["in_per_s"], 0.4);
    assert_eq!(stats["nodes"], 1);

    let (_, top) = api.get("/rooms").await;
    let ids: Vec<&str> = top["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["busy", "quiet", "big"]);
    assert_eq!(top["by"], "in_per_s");
    let (_, top) = api.get("/rooms?by=members&limit=2").await;
    assert_eq!(top["rooms"][0]["room_id"], "big");
    assert_eq!(top["rooms"].as_array().unwrap().len(), 2);

    let (status, _) = api.call(Method::DELETE, "/rooms/busy", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let update = node.next_update().await;
    assert!(update.closed);
    let reply = api.raw(Method::GET, "/rooms/busy", b"", Some(TOKEN)).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "unknown_room");
    let reply = api
        .raw(Method::DELETE, "/rooms/busy", b"", Some(TOKEN))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "unknown_room");
}

/// Runs `room-svc admin --url URL --token TOKEN ARGS...`; its exit code,
/// stdout and stderr.
async fn cli(api: &Api, args: &[&str]) -> (i32, String, String) {
    let url = api.client_base();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_room-svc"));
    command
        .args(["admin", "--url", &url, "--token", TOKEN])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_drives_the_api() {
    let api = serve(Some(TOKEN)).await;
    let (code, out, err) = cli(
        &api,
        &["set", ROOM, "normal_per_s=5", "priority_kinds=gift,like"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let settings: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(settings["overrides"]["normal_per_s"], 5);
    assert_eq!(
        api.service
            .room_config(ROOM)
            .await
            .unwrap()
            .config
            .priority_kinds,
        [2, 1]
    );

    let (code, out, err) = cli(&api, &["mute", ROOM, "alice", "--for", "10m"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "muted alice in stream-1 for 10m"),
        "{err}"
    );
    assert_eq!(api.service.stats(ROOM).await.unwrap().mutes, 1);

    let (code, _, err) = cli(&api, &["set", ROOM, "round_interval_ms=5"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("refused (invalid_config)"), "{err}");
    let (code, _, err) = cli(&api, &["set", ROOM, "normal_per_s=lots"]).await;
    assert_eq!(code, 64);
    assert!(err.contains("not a whole number"), "{err}");
    assert_eq!(
        api.service
            .room_config(ROOM)
            .await
            .unwrap()
            .config
            .normal_per_s,
        5,
        "refused changes changed nothing"
    );
}

// --- Scoped keys ----------------------------------------------------------------

/// A keys file of the test's own.
struct KeysFile {
    dir: tempfile::TempDir,
}

impl KeysFile {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("admin-keys.json")
    }

    /// Replaces the file whole (write, then rename), so a reader never sees
    /// half of it.
    fn write(&self, contents: &str) {
        let next = self.dir.path().join("next.json");
        std::fs::write(&next, contents).unwrap();
        std::fs::rename(&next, self.path()).unwrap();
    }

    fn write_keys(&self, entries: &[&KeyEntry]) {
        self.write(&json!({ "keys": entries }).to_string());
    }
}

/// A new key with `scopes`, and its entry for the file.
fn key(name: &str, scopes: &[Scope]) -> (String, KeyEntry) {
    new_key(name, scopes).unwrap()
}

/// The audit records the API handed out.
#[derive(Clone, Default)]
struct Audited(Arc<Mutex<Vec<AuditRecord>>>);

impl Audited {
    fn taken(&self) -> Vec<AuditRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Api {
    async fn status(&self, method: Method, path: &str, body: &[u8], key: &str) -> StatusCode {
        self.raw(method, path, body, Some(key)).await.status
    }
}

/// A served API taking `TOKEN` and the keys of `keys`, auditing to `audited`.
async fn serve_keys(keys: &Reloaded<AdminKeys>, audited: &Audited) -> Api {
    let token = AdminToken::new(TOKEN.as_bytes()).unwrap();
    let keyring = Keyring::new(Some(token), Some(keys.clone()));
    let audited = audited.clone();
    serve_api(move |service| {
        AdminApi::new(service, keyring, None).with_audit(Arc::new(move |record| {
            audited.0.lock().unwrap().push(record);
        }))
    })
    .await
}

#[tokio::test]
async fn keys_reach_only_the_routes_of_their_scopes() {
    let file = KeysFile::new();
    let (viewer, viewer_entry) = key("viewer", &[Scope::Read]);
    let (moderator, moderator_entry) = key("moderator", &[Scope::Read, Scope::Moderate]);
    file.write_keys(&[&viewer_entry, &moderator_entry]);
    let keys = keys::load(file.path()).unwrap();
    let audited = Audited::default();
    let api = serve_keys(&keys, &audited).await;
    let mut node = FakeNode::attach(&api.service, "a");
    node.subscribe(ROOM).await;
    let ban = format!("/rooms/{ROOM}/bans/bob");
    let config = format!("/rooms/{ROOM}/config");

    // Read-only: every read, no change.
    for path in [format!("/rooms/{ROOM}"), "/rooms".into(), config.clone()] {
        assert_eq!(
            api.status(Method::GET, &path, b"", &viewer).await,
            StatusCode::OK
        );
    }
    let reply = api.raw(Method::PUT, &ban, b"", Some(&viewer)).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    let message = serde_json::from_slice::<ErrorBody>(&reply.body)
        .unwrap()
        .error
        .message;
    assert!(
        message.contains("moderate") && message.contains("viewer"),
        "{message}"
    );
    assert_eq!(api.service.stats(ROOM).await.unwrap().bans, 0);

    // Moderation, but not configuration or notices.
    assert_eq!(
        api.status(Method::PUT, &ban, b"", &moderator).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.service.stats(ROOM).await.unwrap().bans, 1);
    let patch = br#"{"normal_per_s": 1}"#;
    let reply = api
        .raw(Method::PATCH, &config, patch, Some(&moderator))
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    let notice = format!("/rooms/{ROOM}/notices");
    let reply = api
        .raw(
            Method::POST,
            &notice,
            br#"{"text": "hi"}"#,
            Some(&moderator),
        )
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    let (_, settings) = api.get(&config).await;
    assert_eq!(settings["config"]["normal_per_s"], 200);

    // The admin token still does everything.
    assert_eq!(
        api.status(Method::PATCH, &config, patch, TOKEN).await,
        StatusCode::OK
    );
    let notice_body = br#"{"text": "hi"}"#;
    assert_eq!(
        api.status(Method::POST, &notice, notice_body, TOKEN).await,
        StatusCode::CREATED
    );
    assert_eq!(
        api.status(Method::DELETE, &ban, b"", TOKEN).await,
        StatusCode::NO_CONTENT
    );

    // An unknown key, or none, is unauthorized, and not audited.
    for unknown in ["not-a-key-of-the-file-0123456789", ""] {
        let reply = api.raw(Method::PUT, &ban, b"", Some(unknown)).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    }

    // Every change by a known key is audited, done or refused; reads are not.
    let record = |key: &str, method: &str, path: &str, status: u16| {
        (
            key.to_owned(),
            method.to_owned(),
            format!("/admin/v1{path}"),
            status,
        )
    };
    let records = audited.taken();
    let seen: Vec<_> = records
        .iter()
        .map(|r| (r.key.clone(), r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            record("viewer", "PUT", &ban, 403),
            record("moderator", "PUT", &ban, 204),
            record("moderator", "PATCH", &config, 403),
            record("moderator", "POST", &notice, 403),
            record(TOKEN_KEY_NAME, "PATCH", &config, 200),
            record(TOKEN_KEY_NAME, "POST", &notice, 201),
            record(TOKEN_KEY_NAME, "DELETE", &ban, 204),
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.room.as_deref() == Some(ROOM) && r.at_us > 0)
    );
    let json = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(
        json.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["at_us", "key", "method", "path", "room", "status"]
    );
}

/// Asks with `key` until `want` is the answer, for at most ten seconds.
async fn until_status(api: &Api, key: &str, want: StatusCode) {
    let path = format!("/rooms/{ROOM}/config");
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while api.status(Method::GET, &path, b"", key).await != want {
            // Paces the polling; the loop ends on the answer, not the time.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never answered {want}");
}

#[tokio::test]
async fn the_keys_file_is_reloaded_while_the_server_runs() {
    let file = KeysFile::new();
    let (old, old_entry) = key("old", &[Scope::Read]);
    let (new, new_entry) = key("new", &[Scope::Read, Scope::Moderate]);
    file.write_keys(&[&old_entry]);
    let keys = keys::load(file.path()).unwrap();
    let api = serve_keys(&keys, &Audited::default()).await;
    let config = format!("/rooms/{ROOM}/config");
    assert_eq!(
        api.status(Method::GET, &config, b"", &old).await,
        StatusCode::OK
    );
    assert_eq!(
        api.status(Method::GET, &config, b"", &new).await,
        StatusCode::UNAUTHORIZED
    );

    // One key revoked, another added: in force once the file is checked.
    file.write_keys(&[&new_entry]);
    assert!(keys.check().unwrap());
    assert_eq!(
        api.status(Method::GET, &config, b"", &old).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.status(Method::GET, &config, b"", &new).await,
        StatusCode::OK
    );
    let ban = format!("/rooms/{ROOM}/bans/bob");
    assert_eq!(
        api.status(Method::PUT, &ban, b"", &new).await,
        StatusCode::NO_CONTENT
    );

    // A bad file keeps the keys in force and counts a failure.
    let duplicate = json!({ "keys": [&new_entry, &new_entry] }).to_string();
    for bad in ["{\"keys\": [", duplicate.as_str()] {
        file.write(bad);
        assert!(keys.check().is_err());
        assert_eq!(
            api.status(Method::GET, &config, b"", &new).await,
            StatusCode::OK
        );
        assert_eq!(
            api.status(Method::GET, &config, b"", &old).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(keys.failures(), 2);
    assert_eq!(
        api.status(Method::GET, &config, b"", TOKEN).await,
        StatusCode::OK
    );

    // The watch the node runs picks up the next good file by itself.
    let _watch = keys::watch(&keys);
    file.write_keys(&[&old_entry]);
    until_status(&api, &old, StatusCode::OK).await;
    assert_eq!(
        api.status(Method::GET, &config, b"", &new).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_cli_makes_keys_the_api_takes() {
    let output = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_room-svc"))
            .args([
                "admin", "new-key", "--name", "ops", "--scope", "read", "--scope", "publish",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let [made, entry] = stdout.lines().collect::<Vec<_>>()[..] else {
        panic!("expected the key and its entry: {stdout}");
    };
    let entry: KeyEntry = serde_json::from_str(entry).unwrap();
    assert_eq!(entry.scopes, [Scope::Read, Scope::Publish]);

    let file = KeysFile::new();
    file.write_keys(&[&entry]);
    let api = serve_keys(&keys::load(file.path()).unwrap(), &Audited::default()).await;
    let notice = format!("/rooms/{ROOM}/notices");
    let (text, config) = (br#"{"text": "hi"}"#, format!("/rooms/{ROOM}/config"));
    assert_eq!(
        api.status(Method::POST, &notice, text, made).await,
        StatusCode::CREATED
    );
    assert_eq!(
        api.status(Method::GET, &config, b"", made).await,
        StatusCode::OK
    );
    assert_eq!(
        api.status(Method::DELETE, &config, b"", made).await,
        StatusCode::FORBIDDEN
    );

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_room-svc"))
        .args(["admin", "new-key", "--name", "no good", "--scope", "read"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(64));
}

#[tokio::test]
async fn a_keys_file_alone_turns_the_api_on() {
    let file = KeysFile::new();
    let (viewer, entry) = key("viewer", &[Scope::Read]);
    file.write_keys(&[&entry]);
    let keys = keys::load(file.path()).unwrap();
    let api =
        serve_api(|service| AdminApi::new(service, Keyring::new(None, Some(keys)), None)).await;
    let config = format!("/rooms/{ROOM}/config");
    assert_eq!(
        api.status(Method::GET, &config, b"", &viewer).await,
        StatusCode::OK
    );
    let reply = api.raw(Method::GET, &config, b"", Some(TOKEN)).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(matches!(
        keys::load(Path::new("/nonexistent/admin-keys.json")),
        Err(chatroom_cluster::reload::ReloadError::Io { .. })
    ));
}
