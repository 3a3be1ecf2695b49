//! The admin API against its description, `openapi.yaml`.
//!
//! The spec's operations are exactly the routes the router serves: the
//! router's paths are read from its source, and every method on every path
//! is probed on a live server. Then real requests, good and bad, go to live
//! servers (a standalone one, one without a token, and one forwarding to
//! peers that cannot serve the room), and every answer must have a status
//! the spec lists for the operation, a body its schema for that status
//! accepts and the headers it declares. A request the server accepts must
//! be one the spec accepts (path ids, query and body), and one it refuses
//! as malformed must be one the spec refuses, so neither can drift from the
//! other. Every operation's `x-scope` is the scope the server asks of keys.
//! Every status the spec lists must be seen.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use chatroom_cluster::auth::AdminToken;
use chatroom_cluster::membership::{Lease, Members, NodeInfo, Role};
use chatroom_cluster::time::unix_micros;
use chatroom_proto::cluster::v1::SendRequest;
use chatroom_proto::v1::{ErrorCode, Kind};
use http_body_util::Full;
use room_svc::admin::client::{AdminClient, DEFAULT_TIMEOUT};
use room_svc::admin::http_client::{HttpClient, Reply};
use room_svc::admin::keys::{self, Scope, new_key};
use room_svc::admin::{AdminApi, Keyring, MAX_BODY_BYTES, PREFIX, Peers};
use room_svc::core::moderation::MAX_LIST_ENTRIES;
use room_svc::{Ownership, RoomService, RoomStore};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::watch;

const TOKEN: &str = "admin-token-for-tests-0123456789";
const WRONG_TOKEN: &str = "not-the-admin-token-0123456789";

/// The description under test.
const SPEC: &str = include_str!("../openapi.yaml");

/// Where the admin router is built.
const ROUTER_SOURCE: &str = include_str!("../src/admin/mod.rs");

/// The methods a route is probed with. CONNECT is left out: it takes an
/// authority, not a path.
const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

/// Error codes that say the request itself is malformed, whatever the
/// room's state: the spec must refuse every request answered with one.
const MALFORMED: [&str; 5] = [
    "bad_body",
    "bad_query",
    "bad_path",
    "bad_room_id",
    "bad_user_id",
];

// --- The spec -----------------------------------------------------------------

/// One operation: a method on a path of the spec (`/admin/v1/rooms/{room}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    method: String,
    path: String,
}

impl Route {
    fn new(method: &Method, path: &str) -> Self {
        Self {
            method: method.as_str().to_owned(),
            path: path.to_owned(),
        }
    }

    fn http_method(&self) -> Method {
        Method::from_bytes(self.method.as_bytes()).expect("a method of METHODS")
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// `openapi.yaml`, parsed.
struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Self {
        let doc: Value = serde_yaml_ng::from_str(SPEC).expect("openapi.yaml parses");
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "OpenAPI {version}");
        Self { doc }
    }

    /// Every operation the spec describes.
    fn routes(&self) -> BTreeSet<Route> {
        let paths = self.doc["paths"].as_object().expect("paths");
        let mut routes = BTreeSet::new();
        for (path, item) in paths {
            for method in &METHODS {
                if item.get(method.as_str().to_ascii_lowercase()).is_some() {
                    routes.insert(Route::new(method, path));
                }
            }
        }
        routes
    }

    fn operation(&self, route: &Route) -> &Value {
        let operation = &self.doc["paths"][&route.path][route.method.to_ascii_lowercase()];
        assert!(operation.is_object(), "the spec has no {route}");
        operation
    }

    /// `value`, or what its `$ref` points to in this document.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(target) = value.get("$ref").and_then(Value::as_str) {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{target} points outside the spec"));
            value = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{target} points nowhere"));
        }
        value
    }

    /// The operation's responses by status.
    fn responses(&self, route: &Route) -> BTreeMap<u16, &Value> {
        let responses = self.operation(route)["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{route} has no responses"));
        responses
            .iter()
            .map(|(status, response)| {
                let status = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{route}: status {status}"));
                (status, self.resolve(response))
            })
            .collect()
    }

    /// The operation's parameters, its path's included.
    fn parameters(&self, route: &Route) -> Vec<&Value> {
        let shared = &self.doc["paths"][&route.path]["parameters"];
        let own = &self.operation(route)["parameters"];
        [shared, own]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .map(|parameter| self.resolve(parameter))
            .collect()
    }

    fn parameter(&self, route: &Route, place: &str, name: &str) -> Option<&Value> {
        self.parameters(route)
            .into_iter()
            .find(|parameter| parameter["in"] == place && parameter["name"] == name)
    }

    /// The operation's request body: its JSON schema and whether it is
    /// required.
    fn request_body(&self, route: &Route) -> Option<(&Value, bool)> {
        let body = self.resolve(self.operation(route).get("requestBody")?);
        let schema = &body["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{route}: the request body has no schema"
        );
        Some((schema, body["required"] == true))
    }

    /// The operation's request body example.
    fn example(&self, route: &Route) -> Option<&Value> {
        let body = self.resolve(self.operation(route).get("requestBody")?);
        body["content"]["application/json"].get("example")
    }

    /// Why `instance` does not match `schema`, if it does not. `$ref`s
    /// resolve into this document's `components/schemas`. With `closed`, an
    /// object schema that lists its properties takes no others: answers are
    /// checked that way, so a field the server sends and the spec does not
    /// list fails, while the spec itself leaves clients free to ignore
    /// fields added later.
    fn mismatch(&self, schema: &Value, instance: &Value, closed: bool) -> Option<String> {
        let mut root = schema.clone();
        root["components"] = json!({ "schemas": self.doc["components"]["schemas"] });
        if closed {
            close_objects(&mut root);
        }
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|error| panic!("a schema of the spec does not compile: {error}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|error| format!("at {:?}: {error}", error.instance_path().as_str()))
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

/// Gives every object schema in `schema` that lists its properties and says
/// nothing of others `additionalProperties: false`.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("properties").is_some_and(Value::is_object)
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The paths the admin router is built from, as its source spells them, so
/// a route added to the code is probed whether or not the spec has it.
fn router_paths() -> BTreeSet<String> {
    ROUTER_SOURCE
        .split(".route(")
        .skip(1)
        .map(|call| {
            let literal = call
                .trim_start()
                .strip_prefix('"')
                .and_then(|rest| rest.split_once('"'));
            match literal {
                Some((path, _)) => path.to_owned(),
                None => panic!("a route whose path is not a literal: .route({call:.60}"),
            }
        })
        .collect()
}

/// `segment` with `%XX` escapes decoded; `None` if it is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// --- Checked calls --------------------------------------------------------------

/// Sends requests and checks every answer against the spec, remembering
/// which statuses each operation gave.
struct Checker {
    spec: Spec,
    seen: RefCell<BTreeMap<Route, BTreeSet<u16>>>,
}

impl Checker {
    fn new() -> Self {
        Self {
            spec: Spec::load(),
            seen: RefCell::default(),
        }
    }

    /// Every status the spec lists was seen.
    fn assert_every_status_seen(&self) {
        let seen = self.seen.borrow();
        let mut missing = Vec::new();
        for route in self.spec.routes() {
            for status in self.spec.responses(&route).into_keys() {
                if !seen.get(&route).is_some_and(|s| s.contains(&status)) {
                    missing.push(format!("{route} {status}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented, never answered: {missing:#?}"
        );
    }
}

/// A node's admin API, checked.
struct Target<'c> {
    checker: &'c Checker,
    /// `http://host:port`.
    base: String,
    http: HttpClient,
}

impl<'c> Target<'c> {
    fn new(checker: &'c Checker, addr: &str) -> Self {
        Self {
            checker,
            base: format!("http://{addr}"),
            http: HttpClient::new(DEFAULT_TIMEOUT),
        }
    }

    /// A request to the spec's `path` with its `{…}` parameters filled, in
    /// order, by `segments` (sent as given: escape them yourself).
    fn call(&self, method: Method, path: &str, segments: &[&str]) -> Call<'_, 'c> {
        let route = Route::new(&method, path);
        let mut problems = Vec::new();
        let mut args = segments.iter();
        let mut concrete = Vec::new();
        for part in path.split('/') {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => {
                    let segment = *args.next().unwrap_or_else(|| panic!("{route}: no {name}"));
                    problems.extend(self.path_problem(&route, name, segment));
                    concrete.push(segment);
                }
                None => concrete.push(part),
            }
        }
        assert!(args.next().is_none(), "{route}: too many segments");
        let path = concrete.join("/");
        let below = path
            .strip_prefix(PREFIX)
            .unwrap_or_else(|| panic!("{route} is not under {PREFIX}"));
        let mut call = Call {
            target: self,
            route,
            path: below.to_owned(),
            body: None,
            authorization: Some(bearer(TOKEN)),
            problems,
        };
        let problem = call.body_problem();
        call.problems.extend(problem);
        call
    }

    /// A request to `route` about `room` (and the user `alice`), with the
    /// spec's example body if the operation takes a body.
    fn sample(&self, route: &Route, room: &str) -> Call<'_, 'c> {
        let segments: &[&str] = match route.path.matches('{').count() {
            0 => &[],
            1 => &[room],
            _ => &[room, "alice"],
        };
        let call = self.call(route.http_method(), &route.path, segments);
        if self.checker.spec.request_body(route).is_some() {
            call.example()
        } else {
            call
        }
    }

    fn path_problem(&self, route: &Route, name: &str, segment: &str) -> Option<String> {
        let spec = &self.checker.spec;
        let parameter = spec
            .parameter(route, "path", name)
            .unwrap_or_else(|| panic!("{route}: {{{name}}} is not a path parameter"));
        match percent_decode(segment) {
            Some(value) => spec
                .mismatch(&parameter["schema"], &Value::String(value), false)
                .map(|why| format!("{{{name}}} {segment:?}: {why}")),
            None => Some(format!("{{{name}}} {segment:?} is not UTF-8")),
        }
    }
}

/// A request being built; [`Call::send`] sends and checks it.
struct Call<'t, 'c> {
    target: &'t Target<'c>,
    route: Route,
    /// Below [`PREFIX`], with the query if any.
    path: String,
    body: Option<Bytes>,
    /// The `Authorization` header, if any.
    authorization: Option<String>,
    /// Why the spec refuses the request, if it does.
    problems: Vec<String>,
}

impl Call<'_, '_> {
    fn query(mut self, query: &str) -> Self {
        if query.is_empty() {
            return self;
        }
        self.path = format!("{}?{query}", self.path);
        let spec = &self.target.checker.spec;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(parameter) = spec.parameter(&self.route, "query", name) else {
                self.problems
                    .push(format!("query {name} is not a parameter"));
                continue;
            };
            let value = value
                .parse::<i64>()
                .map_or_else(|_| Value::String(value.to_owned()), Value::from);
            if let Some(why) = spec.mismatch(&parameter["schema"], &value, false) {
                self.problems.push(format!("query {name}: {why}"));
            }
        }
        self
    }

    fn json(self, body: Value) -> Self {
        self.body(body.to_string().into_bytes())
    }

    /// The operation's example body from the spec.
    fn example(self) -> Self {
        let spec = &self.target.checker.spec;
        let example = spec
            .example(&self.route)
            .unwrap_or_else(|| panic!("{} has no example body", self.route))
            .clone();
        self.json(example)
    }

    fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self.problems.retain(|problem| !problem.starts_with("body"));
        let problem = self.body_problem();
        self.problems.extend(problem);
        self
    }

    /// Sends `Authorization: <authorization>`, or no such header.
    fn authorization(mut self, authorization: Option<String>) -> Self {
        self.authorization = authorization;
        self
    }

    /// Why the spec refuses the body (or its absence), if it does. An empty
    /// body, or one of only whitespace, is none.
    fn body_problem(&self) -> Option<String> {
        let spec = &self.target.checker.spec;
        let sent = self
            .body
            .as_deref()
            .filter(|body| !body.iter().all(u8::is_ascii_whitespace));
        match (spec.request_body(&self.route), sent) {
            (None, None) | (Some((_, false)), None) => None,
            (Some((_, true)), None) => Some("body: required, none sent".into()),
            (None, Some(_)) => Some("body: the operation takes none".into()),
            (Some((schema, _)), Some(bytes)) => match serde_json::from_slice::<Value>(bytes) {
                Ok(json) => spec
                    .mismatch(schema, &json, false)
                    .map(|why| format!("body: {why}")),
                Err(error) => Some(format!("body: not JSON: {error}")),
            },
        }
    }

    /// Sends the request and checks the answer against the spec.
    async fn send(self) -> Answer {
        let Self {
            target,
            route,
            path,
            body,
            authorization,
            problems,
        } = self;
        let mut request = Request::builder()
            .method(route.http_method())
            .uri(format!("{}{PREFIX}{path}", target.base))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request.body(Full::new(body.unwrap_or_default())).unwrap();
        let reply = target.http.send(request).await.unwrap();
        let checker = target.checker;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let status = reply.status.as_u16();
        let responses = checker.spec.responses(&route);
        let Some(response) = responses.get(&status) else {
            panic!("{route} ({path}) answered {status}, which the spec does not list: {text}");
        };
        checker
            .seen
            .borrow_mut()
            .entry(route.clone())
            .or_default()
            .insert(status);

        let json = match response["content"]["application/json"].get("schema") {
            Some(schema) => {
                let json: Value = serde_json::from_slice(&reply.body)
                    .unwrap_or_else(|e| panic!("{route} {status}: not JSON ({e}): {text}"));
                if let Some(why) = checker.spec.mismatch(schema, &json, true) {
                    panic!("{route} {status}: the body breaks the spec: {why}\n{json:#}");
                }
                json
            }
            None => {
                assert!(reply.body.is_empty(), "{route} {status}: a body: {text}");
                Value::Null
            }
        };
        check_headers(&checker.spec, &route, status, response, &reply);

        let code = json["error"]["code"].as_str();
        if reply.status.is_success() {
            assert!(
                problems.is_empty(),
                "{route} ({path}) answered {status} to a request the spec refuses: {problems:#?}"
            );
        }
        if let Some(code) = code.filter(|code| MALFORMED.contains(code)) {
            assert!(
                !problems.is_empty(),
                "{route} ({path}) refused as {code} a request the spec accepts: {text}"
            );
        }
        Answer {
            route,
            status: reply.status,
            json,
        }
    }
}

/// The headers the spec declares for the answer are there if required,
/// with values their schemas accept, and the ones the API sends are
/// declared.
fn check_headers(spec: &Spec, route: &Route, status: u16, response: &Value, reply: &Reply) {
    let declared: BTreeMap<String, &Value> = response["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, header)| (name.to_ascii_lowercase(), spec.resolve(header)))
        .collect();
    for (name, header) in &declared {
        let Some(value) = reply.headers.get(name.as_str()) else {
            assert!(
                header["required"] != true,
                "{route} {status}: no {name} header"
            );
            continue;
        };
        let text = value
            .to_str()
            .unwrap_or_else(|_| panic!("{route} {status}: {name} is not text"));
        let value = text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.to_owned()), Value::from);
        if let Some(why) = spec.mismatch(&header["schema"], &value, false) {
            panic!("{route} {status}: {name}: {text:?} breaks the spec: {why}");
        }
    }
    for name in ["retry-after", "www-authenticate"] {
        if reply.headers.contains_key(name) {
            assert!(
                declared.contains_key(name),
                "{route} {status}: {name} is sent but not declared"
            );
        }
    }
}

/// An answer that matched the spec.
struct Answer {
    route: Route,
    status: StatusCode,
    json: Value,
}

impl Answer {
    /// The answer has `status`; its body.
    fn ok(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}: {:#}", self.route, self.json);
        self.json
    }

    /// The answer is the error `code` with `status`.
    fn error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{}: {:#}",
            self.route,
            self.json
        );
    }

    /// The same; the error's message.
    fn error_message(&self, status: StatusCode, code: &str) -> &str {
        self.error(status, code);
        self.json["error"]["message"]
            .as_str()
            .expect("the spec requires a message")
    }
}

// --- Servers --------------------------------------------------------------------

/// `token` in the `Bearer` scheme.
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Serves `service`'s admin API on a port of its own; its address.
async fn serve(service: RoomService, token: Option<&str>, peers: Option<Peers>) -> String {
    let token = token.map(|t| AdminToken::new(t.as_bytes()).unwrap());
    serve_with(service, Keyring::new(token, None), peers).await
}

/// Serves `service`'s admin API, taking the credentials of `keyring`; its
/// address.
async fn serve_with(service: RoomService, keyring: Keyring, peers: Option<Peers>) -> String {
    let router = AdminApi::new(service, keyring, peers).router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr.to_string()
}

/// A listener that closes every connection unanswered; its address.
async fn hanging_up() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    addr.to_string()
}

fn room_svc_node(id: &str, http_addr: Option<String>) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        role: Role::RoomSvc,
        link_addr: None,
        client_url: None,
        quic_url: None,
        http_addr,
    }
}

/// The `minimum` and `maximum` of a numeric schema, if it has both.
fn range_of(schema: &Value) -> Option<(i64, i64)> {
    Some((schema["minimum"].as_i64()?, schema["maximum"].as_i64()?))
}

/// `path` with every `{…}` segment filled by a valid id.
fn probe_path(path: &str) -> String {
    path.split('/')
        .map(|part| if part.starts_with('{') { "probe" } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

// --- Tests ----------------------------------------------------------------------

const BUSIEST: &str = "/admin/v1/rooms";
const STATS: &str = "/admin/v1/rooms/{room}";
const CONFIG: &str = "/admin/v1/rooms/{room}/config";
const NOTICES: &str = "/admin/v1/rooms/{room}/notices";
const MUTED: &str = "/admin/v1/rooms/{room}/mutes";
const BANNED: &str = "/admin/v1/rooms/{room}/bans";
const WHITELISTED: &str = "/admin/v1/rooms/{room}/whitelist";
const MUTES: &str = "/admin/v1/rooms/{room}/mutes/{user}";
const BANS: &str = "/admin/v1/rooms/{room}/bans/{user}";
const WHITELIST: &str = "/admin/v1/rooms/{room}/whitelist/{user}";
const WORD_LISTS: &str = "/admin/v1/rooms/{room}/word-lists";
const MESSAGES: &str = "/admin/v1/rooms/{room}/messages";
const WORD_LIST: &str = "/admin/v1/rooms/{room}/word-lists/{name}";

#[tokio::test]
async fn the_spec_describes_exactly_the_routes_the_router_serves() {
    let spec = Spec::load();
    let addr = serve(start(1), Some(TOKEN), None).await;
    let client = AdminClient::new(&format!("http://{addr}"), TOKEN).unwrap();
    let mut paths = router_paths();
    assert!(paths.len() >= 2, "no routes found in the router's source");
    for path in &paths {
        assert!(path.starts_with(PREFIX), "{path} is outside {PREFIX}");
    }
    paths.extend(spec.routes().into_iter().map(|route| route.path));

    // Without a token a route answers 401; the router's fallbacks answer
    // 404 `not_found` (no such path) and 405 `method_not_allowed`.
    let mut served = BTreeSet::new();
    for path in &paths {
        let probe = probe_path(path);
        let below = probe.strip_prefix(PREFIX).unwrap_or(&probe);
        for method in &METHODS {
            let reply = client
                .send(method.clone(), below, Bytes::new(), None)
                .await
                .unwrap();
            let code = match reply.status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                other => panic!("{method} {probe} answered {other}"),
            };
            if *method == Method::HEAD {
                assert!(reply.body.is_empty());
            } else {
                let json: Value = serde_json::from_slice(&reply.body).unwrap();
                let error = json!({ "$ref": "#/components/schemas/Error" });
                assert_eq!(spec.mismatch(&error, &json, true), None, "{method} {probe}");
                assert_eq!(json["error"]["code"], code, "{method} {probe}");
            }
            if reply.status == StatusCode::UNAUTHORIZED {
                served.insert(Route::new(method, path));
            }
        }
    }

    // axum answers HEAD wherever GET is routed; the spec leaves it implied.
    let with = |method: Method| -> BTreeSet<String> {
        served
            .iter()
            .filter(|route| route.method == method.as_str())
            .map(|route| route.path.clone())
            .collect()
    };
    assert_eq!(with(Method::HEAD), with(Method::GET));
    served.retain(|route| route.method != Method::HEAD.as_str());

    let documented = spec.routes();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in openapi.yaml: {undocumented:#?}\nin openapi.yaml but not served: {unserved:#?}"
    );
}

#[tokio::test]
async fn every_answer_is_one_the_spec_describes() {
    let checker = Checker::new();
    let service = start(2);
    let api = Target::new(&checker, &serve(service.clone(), Some(TOKEN), None).await);
    refusals_on_every_route(&api).await;
    moderation(&api, &service).await;
    busiest_rooms(&api).await;
    room_settings(&api).await;
    slow_mode(&api, &service).await;
    notices(&api).await;
    published(&api).await;
    word_lists(&api).await;
    the_spec_bounds_are_the_servers(&api).await;
    rooms_nobody_made(&api).await;
    closing(&api).await;
    without_a_token_configured(&checker).await;
    forwarding_to_the_owner(&checker).await;
    scopes_on_every_route(&checker).await;
    checker.assert_every_status_seen();
}

/// No token or the wrong one, malformed ids and bodies too large.
async fn refusals_on_every_route(api: &Target<'_>) {
    let routes = api.checker.spec.routes();
    for route in &routes {
        for authorization in [
            None,
            Some(bearer(WRONG_TOKEN)),
            Some(format!("Basic {TOKEN}")),
            Some(TOKEN.to_owned()),
            Some("Bearer".to_owned()),
        ] {
            let call = api.sample(route, ROOM).authorization(authorization);
            call.send()
                .await
                .error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    // The scheme is case-insensitive; these reads answer 200 for any room.
    for route in routes
        .iter()
        .filter(|route| route.method == "GET" && route.path != STATS)
    {
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let authorization = format!("{scheme} {TOKEN}");
            let call = api.sample(route, ROOM).authorization(Some(authorization));
            call.send().await.ok(StatusCode::OK);
        }
    }
    for route in routes.iter().filter(|route| route.path != BUSIEST) {
        for (room, code) in [
            ("bad%20room", "bad_room_id"),
            ("caf%C3%A9", "bad_room_id"),
            ("%FF", "bad_path"),
        ] {
            let call = api.sample(route, room);
            call.send().await.error(StatusCode::BAD_REQUEST, code);
        }
        if route.path.contains("{user}") {
            let call = api.call(route.http_method(), &route.path, &[ROOM, "eve%21"]);
            call.send()
                .await
                .error(StatusCode::BAD_REQUEST, "bad_user_id");
        }
        let required = api.checker.spec.request_body(route);
        if required.is_some_and(|(_, required)| required) {
            for empty in [&b""[..], b" \r\n"] {
                let call = api.sample(route, ROOM).body(empty);
                let answer = call.send().await;
                let message = answer.error_message(StatusCode::BAD_REQUEST, "bad_body");
                assert!(message.contains("empty"), "{route}: {message}");
            }
        }
        if api.checker.spec.request_body(route).is_some() {
            let huge = vec![b' '; MAX_BODY_BYTES + 1];
            let call = api.sample(route, ROOM).body(huge);
            call.send()
                .await
                .error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
        }
    }
}

/// Mutes (a muted member's send is refused and counted), bans, the
/// whitelist, and lists that are full.
async fn moderation(api: &Target<'_>, service: &RoomService) {
    let mut node = FakeNode::attach(service, "a");
    node.subscribe(ROOM).await;
    node.join(ROOM, &["alice", "bob"]);
    let call = api.call(Method::PUT, MUTES, &[ROOM, "alice"]).example();
    call.send().await.ok(StatusCode::NO_CONTENT);
    node.send(send_body(send(ROOM, "alice", 1)));
    node.next_error().await;
    for body in [json!({}), json!({"duration_s": null})] {
        let call = api.call(Method::PUT, MUTES, &[ROOM, "carol"]).json(body);
        call.send().await.ok(StatusCode::NO_CONTENT);
    }
    let call = api.call(Method::PUT, MUTES, &[ROOM, "dave"]);
    call.send().await.ok(StatusCode::NO_CONTENT);
    let call = api.call(Method::PUT, MUTES, &[ROOM, "dave"]).body(" \n");
    call.send().await.ok(StatusCode::NO_CONTENT);
    for body in [
        json!({"duration_s": -1}),
        json!({"duration_s": "10"}),
        json!({"for": 5}),
    ] {
        let call = api.call(Method::PUT, MUTES, &[ROOM, "erin"]).json(body);
        call.send().await.error(StatusCode::BAD_REQUEST, "bad_body");
    }
    for path in [BANS, WHITELIST] {
        let call = api.call(Method::PUT, path, &[ROOM, "bob"]);
        call.send().await.ok(StatusCode::NO_CONTENT);
    }
    let now_us = unix_micros();
    let stats = api.call(Method::GET, STATS, &[ROOM]).send().await;
    let stats = stats.ok(StatusCode::OK);
    assert_eq!(stats["rejected"], json!({"muted": 1}));
    assert_eq!((&stats["bans"], &stats["members"]), (&json!(1), &json!(1)));

    let mutes = listed(api, MUTED, ROOM, "").await;
    assert_eq!(mutes["total"], 3);
    assert_eq!(user_ids(&mutes), ["alice", "carol", "dave"]);
    let until = mutes["users"][0]["until_us"]
        .as_u64()
        .expect("alice's mute ends");
    let example = api.checker.spec.example(&Route::new(&Method::PUT, MUTES));
    let duration_us = example.unwrap()["duration_s"].as_u64().unwrap() * 1_000_000;
    assert!((now_us..=now_us + duration_us).contains(&until), "{until}");
    for user in &mutes["users"].as_array().unwrap()[1..] {
        assert_eq!(user["until_us"], Value::Null, "muted until unmuted");
    }
    let bob =
        json!({ "room_id": ROOM, "total": 1, "users": [{"user_id": "bob", "until_us": null}] });
    assert_eq!(listed(api, BANNED, ROOM, "").await, bob);
    assert_eq!(listed(api, WHITELISTED, ROOM, "").await, bob);
    let first = listed(api, MUTED, ROOM, "limit=1").await;
    assert_eq!(
        (&first["total"], user_ids(&first)),
        (&json!(3), vec!["alice"])
    );
    for path in [MUTED, BANNED, WHITELISTED] {
        for query in ["limit=x", "limit=-1", "limit=", "by=members", "top=3"] {
            let call = api.call(Method::GET, path, &[ROOM]).query(query);
            call.send()
                .await
                .error(StatusCode::BAD_REQUEST, "bad_query");
        }
    }

    for path in [MUTES, BANS, WHITELIST] {
        for user in ["alice", "nobody"] {
            let call = api.call(Method::DELETE, path, &[ROOM, user]);
            call.send().await.ok(StatusCode::NO_CONTENT);
        }
    }
    assert_eq!(
        user_ids(&listed(api, MUTED, ROOM, "").await),
        ["carol", "dave"]
    );
    assert_eq!(listed(api, BANNED, ROOM, "").await, bob);

    for i in 0..MAX_LIST_ENTRIES {
        let user = format!("u{i}");
        service.mute("full", &user, None).await.unwrap();
        service.ban("full", &user).await.unwrap();
        service.whitelist_add("full", &user).await.unwrap();
    }
    for path in [MUTES, BANS, WHITELIST] {
        let call = api.call(Method::PUT, path, &["full", "one-more"]);
        call.send().await.error(StatusCode::CONFLICT, "list_full");
    }
}

/// The answer to a good request for a moderation list.
async fn listed(api: &Target<'_>, path: &str, room: &str, query: &str) -> Value {
    let call = api.call(Method::GET, path, &[room]).query(query);
    call.send().await.ok(StatusCode::OK)
}

/// The users of a moderation list answer, in its order.
fn user_ids(list: &Value) -> Vec<&str> {
    list["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|user| user["user_id"].as_str().expect("a user id"))
        .collect()
}

async fn busiest_rooms(api: &Target<'_>) {
    for query in [
        "",
        "by=members&limit=2",
        "by=out_per_s",
        "by=in_per_s&limit=1",
    ] {
        let top = api
            .call(Method::GET, BUSIEST, &[])
            .query(query)
            .send()
            .await;
        assert_eq!(top.ok(StatusCode::OK)["unreachable"], json!([]));
    }
    for query in ["limit=x", "limit=-1", "by=loudness", "top=3"] {
        let answer = api
            .call(Method::GET, BUSIEST, &[])
            .query(query)
            .send()
            .await;
        answer.error(StatusCode::BAD_REQUEST, "bad_query");
    }
}

async fn room_settings(api: &Target<'_>) {
    let settings = api.call(Method::GET, CONFIG, &["fresh"]).send().await;
    assert_eq!(settings.ok(StatusCode::OK)["overrides"], json!({}));
    let settings = api
        .call(Method::PATCH, CONFIG, &[ROOM])
        .example()
        .send()
        .await;
    assert_eq!(settings.ok(StatusCode::OK)["config"]["normal_per_s"], 50);
    let every_field = json!({
        "normal_per_s": 100, "normal_burst": 100, "priority_per_s": 10,
        "priority_burst": 10, "normal_ring": 1024, "priority_ring": 64,
        "max_payload_bytes": 2048, "round_interval_ms": 50, "pull_timeout_ms": 1000,
        "slow_consumer_notifies": 3, "history_size": 0, "inline_max_bytes": 0,
        "slow_mode_ms": 1000, "priority_kinds": [],
    });
    let call = api
        .call(Method::PATCH, CONFIG, &[ROOM])
        .json(every_field.clone());
    let settings = call.send().await.ok(StatusCode::OK);
    assert_eq!(settings["overrides"], every_field);
    let nulls = json!({ "history_size": null, "priority_kinds": null });
    let call = api.call(Method::PATCH, CONFIG, &[ROOM]).json(nulls);
    let overrides = &call.send().await.ok(StatusCode::OK)["overrides"];
    let mut kept = every_field.as_object().unwrap().clone();
    kept.retain(|field, _| field != "history_size" && field != "priority_kinds");
    assert_eq!(overrides, &Value::Object(kept));
    for body in [
        json!({"normal_per_s": -5}),
        json!({"normal_per_s": "10"}),
        json!({"normal_per_sec": 5}),
        json!({"priority_kinds": ["gifts"]}),
        json!({"priority_kinds": [7]}),
        json!({"priority_kinds": "gift"}),
        json!([1, 2]),
    ] {
        let call = api.call(Method::PATCH, CONFIG, &[ROOM]).json(body);
        call.send().await.error(StatusCode::BAD_REQUEST, "bad_body");
    }
    for body in [&b"{not json"[..], b"", b"  "] {
        let call = api.call(Method::PATCH, CONFIG, &[ROOM]).body(body);
        call.send().await.error(StatusCode::BAD_REQUEST, "bad_body");
    }
    let settings = api.call(Method::DELETE, CONFIG, &[ROOM]).send().await;
    assert_eq!(settings.ok(StatusCode::OK)["overrides"], json!({}));
}

/// Slow mode as the spec has it: a member's second NORMAL-lane message
/// within the interval is refused and counted; a priority kind is exempt.
async fn slow_mode(api: &Target<'_>, service: &RoomService) {
    let room = "slow";
    let mut node = FakeNode::attach(service, "b");
    node.subscribe(room).await;
    node.join(room, &["alice"]);
    let body = json!({ "slow_mode_ms": 3_600_000 });
    let call = api.call(Method::PATCH, CONFIG, &[room]).json(body);
    let settings = call.send().await.ok(StatusCode::OK);
    assert_eq!(settings["config"]["slow_mode_ms"], 3_600_000);
    assert_eq!(
        node.next_update().await.config.unwrap().slow_mode_ms,
        3_600_000
    );
    node.send(send_body(send(room, "alice", 1)));
    node.next_ack().await;
    node.next_broadcast().await;
    node.send(send_body(send(room, "alice", 2)));
    assert_eq!(code(&node.next_error().await), ErrorCode::RateLimited);
    let gift = SendRequest {
        kind: Kind::Gift as i32,
        ..send(room, "alice", 3)
    };
    node.send(send_body(gift));
    node.next_ack().await;
    node.next_broadcast().await;
    let stats = api.call(Method::GET, STATS, &[room]).send().await;
    assert_eq!(
        stats.ok(StatusCode::OK)["rejected"],
        json!({"rate_limited": 1})
    );
}

async fn notices(api: &Target<'_>) {
    for body in [
        json!({"text": "hello"}),
        json!({"text": "hello", "sender": null}),
    ] {
        let call = api.call(Method::POST, NOTICES, &[ROOM]).json(body);
        call.send().await.ok(StatusCode::CREATED);
    }
    let posted = api
        .call(Method::POST, NOTICES, &[ROOM])
        .example()
        .send()
        .await;
    assert!(posted.ok(StatusCode::CREATED)["msg_id"].as_u64() > Some(0));
    for (body, code) in [
        (json!({}), "bad_body"),
        (json!({"text": 5}), "bad_body"),
        (json!({"text": "hi", "color": "red"}), "bad_body"),
        (json!({"text": "hi", "sender": "not ok"}), "bad_user_id"),
        (json!({"text": "x".repeat(4097)}), "notice_refused"),
    ] {
        let call = api.call(Method::POST, NOTICES, &[ROOM]).json(body);
        call.send().await.error(StatusCode::BAD_REQUEST, code);
    }
}

/// The backend's messages: any kind, on a user's or the system's behalf,
/// once per idempotency key, and refusals of what is not a message.
async fn published(api: &Target<'_>) {
    // A room no other step configured: its policy is the defaults'.
    const FRESH: &str = "published";
    let first = api
        .call(Method::POST, MESSAGES, &[FRESH])
        .example()
        .send()
        .await;
    let first = first.ok(StatusCode::CREATED);
    assert_eq!(first["lane"], "priority", "gifts go PRIORITY by default");
    assert_eq!(first["duplicate"], false);
    let again = api
        .call(Method::POST, MESSAGES, &[FRESH])
        .example()
        .send()
        .await;
    let again = again.ok(StatusCode::OK);
    assert_eq!(again["msg_id"], first["msg_id"]);
    assert_eq!(again["duplicate"], true);
    let like = json!({"kind": "like", "sender": "bob"});
    let like = api
        .call(Method::POST, MESSAGES, &[FRESH])
        .json(like)
        .send()
        .await;
    assert_eq!(like.ok(StatusCode::CREATED)["lane"], "normal");
    let notice = json!({"kind": "notice", "text": "from the system"});
    let notice = api
        .call(Method::POST, MESSAGES, &[FRESH])
        .json(notice)
        .send()
        .await;
    assert_eq!(notice.ok(StatusCode::CREATED)["lane"], "priority");
    for (body, code) in [
        (json!({"kind": "gifts"}), "bad_body"),
        (json!({"kind": 999}), "bad_body"),
        (
            json!({"kind": "chat", "text": "a", "payload_base64": "Yg=="}),
            "bad_body",
        ),
        (
            json!({"kind": "chat", "payload_base64": "not base64!"}),
            "bad_body",
        ),
        (
            json!({"kind": "chat", "text": "a", "sender_info": {"color": "red"}}),
            "bad_body",
        ),
        (
            json!({"kind": "chat", "text": "a", "idempotency_key": "k".repeat(129)}),
            "bad_body",
        ),
        (
            json!({"kind": "chat", "text": "a", "sender": "not ok"}),
            "bad_user_id",
        ),
        (
            json!({"kind": "notice", "text": "a", "sender": "bob"}),
            "publish_refused",
        ),
        (
            json!({"kind": "chat", "text": "x".repeat(4097)}),
            "publish_refused",
        ),
    ] {
        let call = api.call(Method::POST, MESSAGES, &[FRESH]).json(body);
        call.send().await.error(StatusCode::BAD_REQUEST, code);
    }
}

/// A room's word lists: set, listed, replaced, bounded, dropped.
async fn word_lists(api: &Target<'_>) {
    let lists = api.call(Method::GET, WORD_LISTS, &[ROOM]).send().await;
    assert_eq!(lists.ok(StatusCode::OK)["lists"], json!([]));
    api.call(Method::PUT, WORD_LIST, &[ROOM, "mild"])
        .example()
        .send()
        .await
        .ok(StatusCode::NO_CONTENT);
    let replaced = json!({"action": "reject", "words": ["spam", "ｓｃａｍ"]});
    api.call(Method::PUT, WORD_LIST, &[ROOM, "mild"])
        .json(replaced)
        .send()
        .await
        .ok(StatusCode::NO_CONTENT);
    let lists = api.call(Method::GET, WORD_LISTS, &[ROOM]).send().await;
    assert_eq!(
        lists.ok(StatusCode::OK)["lists"],
        json!([{"name": "mild", "action": "reject", "words": ["spam", "ｓｃａｍ"]}])
    );
    for (body, code) in [
        (json!({"action": "ban", "words": ["x"]}), "bad_body"),
        (json!({"words": ["x"]}), "bad_body"),
        (
            json!({"action": "mask", "words": [""]}),
            "invalid_word_lists",
        ),
        (
            json!({"action": "mask", "words": ["x".repeat(65)]}),
            "invalid_word_lists",
        ),
        (
            json!({"action": "mask", "words": vec!["w"; 5001]}),
            "invalid_word_lists",
        ),
    ] {
        let call = api.call(Method::PUT, WORD_LIST, &[ROOM, "more"]).json(body);
        call.send().await.error(StatusCode::BAD_REQUEST, code);
    }
    for n in 1..8 {
        let name = format!("list-{n}");
        let call = api
            .call(Method::PUT, WORD_LIST, &[ROOM, &name])
            .json(json!({"action": "mask", "words": ["w"]}));
        call.send().await.ok(StatusCode::NO_CONTENT);
    }
    let ninth = api
        .call(Method::PUT, WORD_LIST, &[ROOM, "list-9"])
        .json(json!({"action": "mask", "words": ["w"]}));
    ninth
        .send()
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_word_lists");
    let drop = || api.call(Method::DELETE, WORD_LIST, &[ROOM, "mild"]);
    drop().send().await.ok(StatusCode::NO_CONTENT);
    drop()
        .send()
        .await
        .error(StatusCode::NOT_FOUND, "unknown_word_list");
}

/// Every bound the spec gives is the server's: both ends are taken, one
/// past either is refused.
async fn the_spec_bounds_are_the_servers(api: &Target<'_>) {
    let spec = &api.checker.spec;
    let schemas = &spec.doc["components"]["schemas"];
    for (field, schema) in schemas["ConfigPatch"]["properties"].as_object().unwrap() {
        let Some((min, max)) = range_of(schema) else {
            continue;
        };
        for value in [min, max] {
            let call = api
                .call(Method::PATCH, CONFIG, &[ROOM])
                .json(json!({ field: value }));
            assert_eq!(call.send().await.ok(StatusCode::OK)["config"][field], value);
            let call = api.call(Method::DELETE, CONFIG, &[ROOM]);
            call.send().await.ok(StatusCode::OK);
        }
        for value in [min - 1, max + 1] {
            // Below 0 does not parse as a setting; the rest is out of bounds.
            let code = if value < 0 {
                "bad_body"
            } else {
                "invalid_config"
            };
            let call = api
                .call(Method::PATCH, CONFIG, &[ROOM])
                .json(json!({ field: value }));
            call.send().await.error(StatusCode::BAD_REQUEST, code);
        }
    }

    let most = schemas["ConfigPatch"]["properties"]["priority_kinds"]["maxItems"]
        .as_u64()
        .and_then(|most| usize::try_from(most).ok())
        .expect("priority_kinds has maxItems");
    let (min, max) = range_of(&schemas["KindName"]["oneOf"][1]).expect("kind numbers");
    for (kinds, code) in [
        (json!(vec!["gift"; most]), None),
        (json!([min, max]), None),
        (json!(vec!["gift"; most + 1]), Some("invalid_config")),
        (json!([min - 1]), Some("bad_body")),
        (json!([max + 1]), Some("bad_body")),
    ] {
        let body = json!({ "priority_kinds": kinds });
        let answer = api
            .call(Method::PATCH, CONFIG, &[ROOM])
            .json(body)
            .send()
            .await;
        match code {
            None => assert_eq!(
                answer.ok(StatusCode::OK)["overrides"]["priority_kinds"],
                kinds
            ),
            Some(code) => answer.error(StatusCode::BAD_REQUEST, code),
        }
    }

    let (min, max) = range_of(&schemas["Mute"]["properties"]["duration_s"]).expect("duration_s");
    for (value, taken) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
        let call = api.call(Method::PUT, MUTES, &[ROOM, "frank"]);
        let answer = call.json(json!({ "duration_s": value })).send().await;
        if taken {
            answer.ok(StatusCode::NO_CONTENT);
        } else {
            answer.error(StatusCode::BAD_REQUEST, "bad_body");
        }
    }

    // Every `limit`: the busiest rooms', and the lists' on the room whose
    // lists `moderation` filled, so the bounds cut them.
    let mut limited = BTreeSet::new();
    for route in spec.routes() {
        let Some(limit) = spec.parameter(&route, "query", "limit") else {
            continue;
        };
        limited.insert(route.path.clone());
        let (min, max) = range_of(&limit["schema"]).expect("limit's range");
        let default = limit["schema"]["default"]
            .as_i64()
            .expect("limit's default");
        for (query, taken) in [
            (String::new(), Some(default)),
            (format!("limit={min}"), Some(min)),
            (format!("limit={max}"), Some(max)),
            (format!("limit={}", min - 1), None),
            (format!("limit={}", max + 1), None),
        ] {
            let answer = api.sample(&route, "full").query(&query).send().await;
            let Some(limit) = taken else {
                answer.error(StatusCode::BAD_REQUEST, "bad_query");
                continue;
            };
            let answer = answer.ok(StatusCode::OK);
            let limit = usize::try_from(limit).unwrap();
            if let Some(rooms) = answer["rooms"].as_array() {
                assert!(rooms.len() <= limit, "{route}?{query}");
            } else {
                assert_eq!(answer["total"], MAX_LIST_ENTRIES, "{route}");
                let users = user_ids(&answer);
                assert_eq!(users.len(), limit.min(MAX_LIST_ENTRIES), "{route}?{query}");
                assert!(users.is_sorted(), "{route}?{query}: not in id order");
            }
        }
    }
    for path in [BUSIEST, MUTED, BANNED, WHITELISTED] {
        assert!(limited.contains(path), "{path} takes no limit");
    }

    let longest = schemas["Id"]["maxLength"]
        .as_u64()
        .and_then(|most| usize::try_from(most).ok())
        .expect("ids have a maxLength");
    let call = api.call(Method::GET, CONFIG, &[&"r".repeat(longest)]);
    call.send().await.ok(StatusCode::OK);
    let call = api.call(Method::GET, CONFIG, &[&"r".repeat(longest + 1)]);
    call.send()
        .await
        .error(StatusCode::BAD_REQUEST, "bad_room_id");
}

/// A room nobody made is listed empty, resets to the defaults it has, and
/// stays unmade.
async fn rooms_nobody_made(api: &Target<'_>) {
    let room = "never-made";
    let empty = json!({ "room_id": room, "total": 0, "users": [] });
    for path in [MUTED, BANNED, WHITELISTED] {
        assert_eq!(listed(api, path, room, "").await, empty);
    }
    let defaults = api.call(Method::GET, CONFIG, &[room]).send().await;
    let defaults = defaults.ok(StatusCode::OK);
    let reset = api.call(Method::DELETE, CONFIG, &[room]).send().await;
    assert_eq!(reset.ok(StatusCode::OK), defaults);
    let call = api.call(Method::GET, STATS, &[room]);
    call.send()
        .await
        .error(StatusCode::NOT_FOUND, "unknown_room");
}

/// A closed room is gone: unknown to its stats and to closing.
async fn closing(api: &Target<'_>) {
    let call = api.call(Method::DELETE, STATS, &[ROOM]);
    call.send().await.ok(StatusCode::NO_CONTENT);
    for method in [Method::GET, Method::DELETE] {
        let call = api.call(method, STATS, &[ROOM]);
        call.send()
            .await
            .error(StatusCode::NOT_FOUND, "unknown_room");
    }
}

/// Every operation names the scope it needs in `x-scope`: a key of that
/// scope alone gets past the check, a key of any other alone is refused
/// with 403 `insufficient_scope` naming it.
async fn scopes_on_every_route(checker: &Checker) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin-keys.json");
    let made: Vec<_> = Scope::ALL
        .into_iter()
        .map(|scope| (scope, new_key(scope.name(), &[scope]).unwrap()))
        .collect();
    let entries: Vec<_> = made.iter().map(|(_, (_, entry))| entry).collect();
    std::fs::write(&path, json!({ "keys": entries }).to_string()).unwrap();
    let keyring = Keyring::new(None, Some(keys::load(&path).unwrap()));
    let api = Target::new(checker, &serve_with(start(1), keyring, None).await);
    for route in &checker.spec.routes() {
        let needed = checker.spec.operation(route)["x-scope"]
            .as_str()
            .unwrap_or_else(|| panic!("{route} names no x-scope"));
        for (scope, (key, _)) in &made {
            let call = api.sample(route, ROOM).authorization(Some(bearer(key)));
            let answer = call.send().await;
            if scope.name() == needed {
                let refused = [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN];
                assert!(
                    !refused.contains(&answer.status),
                    "{route} refused the {scope} key: {:#}",
                    answer.json
                );
            } else {
                let message = answer.error_message(StatusCode::FORBIDDEN, "insufficient_scope");
                assert!(message.contains(needed), "{route}: {message}");
            }
        }
    }
}

async fn without_a_token_configured(checker: &Checker) {
    let off = Target::new(checker, &serve(start(1), None, None).await);
    for route in &checker.spec.routes() {
        let answer = off.sample(route, ROOM).send().await;
        answer.error(StatusCode::SERVICE_UNAVAILABLE, "admin_disabled");
    }
}

/// A cluster whose views disagree: r1 sees r2, r3 and r4; r2 sees only r1,
/// so owns nothing and refuses what r1 forwards to it; r3 registered no HTTP
/// address; r4 hangs up on every request.
async fn forwarding_to_the_owner(checker: &Checker) {
    let only_r1 = Members::new([room_svc_node("r1", None)]);
    let (_r2_view, r2_members) = watch::channel(Arc::new(only_r1));
    let r2 = RoomService::start_with(
        quiet_config(1),
        RoomStore::memory(),
        Some(Ownership::new("r2", r2_members, Lease::forever())),
    );
    let r2_addr = serve(r2, Some(TOKEN), None).await;
    let r1_view = Arc::new(Members::new([
        room_svc_node("r2", Some(r2_addr)),
        room_svc_node("r3", None),
        room_svc_node("r4", Some(hanging_up().await)),
    ]));
    let owned_by = |owner: &str| -> String {
        (0..)
            .map(|i| format!("room-{i}"))
            .find(|room| {
                r1_view
                    .room_owner(room)
                    .is_some_and(|node| node.id == owner)
            })
            .expect("placement gives every node some rooms")
    };
    let (moving, orphaned, cut_off) = (owned_by("r2"), owned_by("r3"), owned_by("r4"));
    let (_r1_view, r1_members) = watch::channel(Arc::clone(&r1_view));
    let peers = Peers::new("r1", r1_members);
    let r1 = Target::new(checker, &serve(start(1), Some(TOKEN), Some(peers)).await);

    let top = r1.call(Method::GET, BUSIEST, &[]).send().await;
    assert_eq!(top.ok(StatusCode::OK)["unreachable"], json!(["r3", "r4"]));
    for route in checker.spec.routes().iter().filter(|r| r.path != BUSIEST) {
        let answer = r1.sample(route, &moving).send().await;
        answer.error(StatusCode::SERVICE_UNAVAILABLE, "not_owner");
        for (room, why) in [
            (&orphaned, "registered no http address"),
            (&cut_off, "did not answer"),
        ] {
            let answer = r1.sample(route, room).send().await;
            let message = answer.error_message(StatusCode::BAD_GATEWAY, "owner_unreachable");
            assert!(message.contains(why), "{route}: {message}");
        }
    }
}
