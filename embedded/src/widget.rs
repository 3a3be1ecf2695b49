//! The chat widget as the embedded server serves it: `/widget.js` (the
//! committed bundle `widget/dist/chatroom-widget.js`, compiled into the
//! binary) and `/demo?room=ROOM&user=USER`, a page showing the widget beside
//! a stand-in for the video, signed in with a token this server mints.
//!
//! Minting tokens for whoever asks is a development convenience of the
//! embedded server only: in production the application's backend mints them
//! (the page says so).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chatroom_cluster::auth::{Roles, TokenKey};
use chatroom_proto::ids::check_id;

/// The bundle: one ES module that defines `<chatroom-widget>`.
const BUNDLE: &str = include_str!("../../widget/dist/chatroom-widget.js");

/// How long a demo page's token is valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The room a demo page without `room=` shows.
const DEFAULT_ROOM: &str = "demo";

/// The bundle's entity tag: browsers revalidate with it (`no-cache`) and get
/// a 304 until the binary serves another bundle.
static BUNDLE_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let mut hasher = DefaultHasher::new();
    BUNDLE.hash(&mut hasher);
    let tag = format!("\"{:016x}-{}\"", hasher.finish(), BUNDLE.len());
    // Hex digits, a dash and decimal digits in quotes: always a valid value.
    HeaderValue::from_str(&tag).expect("a valid header value")
});

/// What the demo page needs to know about this server.
#[derive(Debug, Clone)]
pub(crate) struct DemoSite {
    /// Mints the page's token.
    pub(crate) tokens: TokenKey,
    /// `--public-url`, when given: what the page connects to.
    pub(crate) public_url: Option<Arc<str>>,
    /// Where WebSocket clients connect otherwise.
    pub(crate) ws_addr: SocketAddr,
}

impl DemoSite {
    /// The WebSocket URL for a page loaded through `host` (the request's
    /// `Host` header).
    fn ws_url(&self, host: Option<&str>) -> String {
        if let Some(url) = &self.public_url {
            return url.to_string();
        }
        if !self.ws_addr.ip().is_unspecified() {
            return format!("ws://{}{}", self.ws_addr, msg_svc::WS_PATH);
        }
        // Listening on every address: reach it by the name the page came from.
        let name = host.and_then(host_name).unwrap_or("127.0.0.1");
        format!("ws://{name}:{}{}", self.ws_addr.port(), msg_svc::WS_PATH)
    }
}

/// The routes `/widget.js` and `/demo`.
pub(crate) fn routes(site: DemoSite) -> Router {
    Router::new()
        .route("/widget.js", get(bundle))
        .route("/demo", get(demo))
        .with_state(site)
}

async fn bundle(headers: HeaderMap) -> Response {
    let etag = BUNDLE_ETAG.clone();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        BUNDLE,
    )
        .into_response()
}

async fn demo(
    State(site): State<DemoSite>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let room = query.get("room").map_or(DEFAULT_ROOM, String::as_str);
    if let Err(error) = check_id(room) {
        return refusal(StatusCode::BAD_REQUEST, &format!("room id {error}"));
    }
    let user = match query.get("user") {
        Some(user) => {
            if let Err(error) = check_id(user) {
                return refusal(StatusCode::BAD_REQUEST, &format!("user id {error}"));
            }
            user.clone()
        }
        None => format!("guest-{:04x}", rand::random::<u16>()),
    };
    let token = match site.tokens.mint(&user, Roles::default(), DEMO_TOKEN_TTL) {
        Ok(token) => token,
        Err(error) => {
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot mint a token: {error}"),
            );
        }
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let page = demo_page(&site.ws_url(host), room, &user, &token);
    // The page holds a token: keep it out of caches.
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(page),
    )
        .into_response()
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`), if
/// it looks like a host name or an address.
fn host_name(host: &str) -> Option<&str> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let plausible = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    plausible.then_some(name)
}

/// A short HTML page saying why the demo cannot be shown.
fn refusal(status: StatusCode, why: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>chatroom demo: \
         {status}</title></head>\n<body><h1>{status}</h1><p>{why}</p>\n<p>Room and user ids are \
         1 to 128 bytes of <code>A-Z a-z 0-9 _ . : @ -</code>, e.g. \
         <a href=\"/demo?room=demo\">/demo?room=demo</a>.</p></body></html>\n",
        status = escape(&status.to_string()),
        why = escape(why),
    );
    (status, Html(page)).into_response()
}

fn demo_page(ws_url: &str, room: &str, user: &str, token: &str) -> String {
    let mut page = String::with_capacity(DEMO_PAGE.len() + 512);
    let mut rest = DEMO_PAGE;
    while let Some(start) = rest.find("{{") {
        page.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let value = match &after[..end] {
            "server" => ws_url,
            "room" => room,
            "user" => user,
            "token" => token,
            other => other,
        };
        let _ = write!(page, "{}", escape(value));
        rest = &after[end + 2..];
    }
    page.push_str(rest);
    page
}

/// `text` safe inside HTML text and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The demo page; `{{name}}` marks a value, HTML-escaped when filled in.
const DEMO_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chatroom demo: {{room}}</title>
<link rel="icon" href="data:,">
<script type="module" src="/widget.js"></script>
<style>
  :root { color-scheme: light dark; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  :root[data-theme="light"] { color-scheme: light; }
  :root[data-theme="dark"] { color-scheme: dark; }
  body { margin: 0; background: Canvas; color: CanvasText; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(300px, 380px); gap: 16px;
         padding: 16px; height: calc(100vh - 64px); box-sizing: border-box; }
  .stage { display: grid; place-content: center; gap: 8px; text-align: center; border-radius: 10px;
           color: #f2f4f8; background: radial-gradient(circle at 30% 30%, #3b4a6b, #111521 70%); }
  .stage h1 { margin: 0; font-size: 1.6rem; }
  .stage p { margin: 0; opacity: 0.8; }
  chatroom-widget { height: 100%; }
  footer { display: flex; gap: 12px; align-items: center; justify-content: space-between;
           padding: 0 16px; height: 48px; font-size: 0.85rem; opacity: 0.85; }
  footer button { font: inherit; padding: 4px 10px; }
  @media (max-width: 720px) {
    main { grid-template-columns: 1fr; grid-template-rows: 30vh 1fr; height: auto; min-height: calc(100vh - 64px); }
    chatroom-widget { height: 60vh; }
  }
</style>
</head>
<body>
<main>
  <section class="stage" aria-label="Stream">
    <h1>{{room}}</h1>
    <p>The stream would play here.</p>
  </section>
  <chatroom-widget server="{{server}}" room="{{room}}" token="{{token}}"></chatroom-widget>
</main>
<footer>
  <span>Signed in as <strong>{{user}}</strong> with a one-hour token that this development
    server minted for you; in production your backend mints tokens.</span>
  <button type="button" id="theme">Dark page</button>
</footer>
<script type="module">
  const button = document.getElementById("theme");
  const widget = document.querySelector("chatroom-widget");
  let dark = matchMedia("(prefers-color-scheme: dark)").matches;
  function apply() {
    document.documentElement.dataset.theme = dark ? "dark" : "light";
    widget.setAttribute("theme", dark ? "dark" : "light");
    button.textContent = dark ? "Light page" : "Dark page";
  }
  button.addEventListener("click", () => { dark = !dark; apply(); });
  apply();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn demo_page_fills_every_value_escaped() {
        let page = demo_page("ws://h/ws\"", "r<1>", "u&", "t'");
        assert!(page.contains(r#"server="ws://h/ws&quot;""#), "{page}");
        assert!(page.contains(r#"room="r&lt;1&gt;""#));
        assert!(page.contains("<strong>u&amp;</strong>"));
        assert!(page.contains(r#"token="t&#39;""#));
        assert!(!page.contains("{{"));
    }

    #[test]
    fn host_name_takes_the_name_and_refuses_junk() {
        assert_eq!(host_name("example.com:7401"), Some("example.com"));
        assert_eq!(host_name("example.com"), Some("example.com"));
        assert_eq!(host_name("[::1]:7401"), Some("[::1]"));
        assert_eq!(host_name("a\"b"), None);
        assert_eq!(host_name(""), None);
    }
}
