//! The embedded server's widget routes over a real socket: `/widget.js` is
//! the committed bundle, `/demo` a page that embeds it with a token the
//! server minted, and bad ids get a 400 page that echoes them escaped.

mod support;

use std::net::SocketAddr;

use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bundle as committed; the server compiled this file in.
const BUNDLE: &str = include_str!("../../widget/dist/chatroom-widget.js");

/// An HTTP/1.1 answer: the status code, the head (lower-cased) and the body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
    }
}

async fn get(addr: SocketAddr, target: &str, extra: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head[9..12].parse().expect("a status code");
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// The value of `name="…"` in the page's `<chatroom-widget>`.
fn widget_attribute<'a>(page: &'a str, name: &str) -> &'a str {
    let tag = &page[page.find("<chatroom-widget ").expect("a widget")..];
    let tag = &tag[..tag.find('>').unwrap()];
    let start = tag.find(&format!(" {name}=\"")).expect("the attribute") + name.len() + 3;
    &tag[start..start + tag[start..].find('"').unwrap()]
}

#[tokio::test]
async fn widget_js_is_the_committed_bundle() {
    let server = TestServer::start().await;
    let http = server.server.http_addr();
    let answer = get(http, "/widget.js", "").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(
        answer.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(answer.header("cache-control"), Some("no-cache"));
    assert!(answer.body == BUNDLE, "the served bundle differs");
    assert!(BUNDLE.contains("chatroom-widget"));

    // Revalidation: the same bundle is not sent again.
    let etag = answer.header("etag").expect("an etag").to_owned();
    let again = get(http, "/widget.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(again.status, 304, "{}", again.head);
    assert!(again.body.is_empty());
    server.server.shutdown().await;
}

#[tokio::test]
async fn demo_embeds_the_widget_with_a_minted_token() {
    let server = TestServer::start().await;
    let http = server.server.http_addr();
    let answer = get(http, "/demo?room=stage-1&user=alice", "").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(
        answer.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let page = &answer.body;
    assert!(page.contains(r#"<script type="module" src="/widget.js"></script>"#));
    assert_eq!(widget_attribute(page, "server"), server.url());
    assert_eq!(widget_attribute(page, "room"), "stage-1");
    let who = server
        .tokens
        .verify(widget_attribute(page, "token"))
        .expect("a token signed with the server's secret");
    assert_eq!(&*who.user, "alice");
    assert!(!who.roles.privileged());
    assert!(
        page.contains("development"),
        "the page says the token is a convenience"
    );

    // No user: a guest; no room: the demo room.
    let answer = get(http, "/demo", "").await;
    assert_eq!(answer.status, 200);
    let token = widget_attribute(&answer.body, "token");
    let guest = server.tokens.verify(token).unwrap().user;
    assert!(guest.starts_with("guest-"), "{guest}");
    assert_eq!(widget_attribute(&answer.body, "room"), "demo");
    server.server.shutdown().await;
}

#[tokio::test]
async fn demo_refuses_bad_ids_and_escapes_them() {
    let server = TestServer::start().await;
    let http = server.server.http_addr();
    for target in [
        "/demo?room=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/demo?room=demo&user=%22%3E%3Cimg%20src%3Dx%3E",
        "/demo?room=",
        &format!("/demo?room={}", "x".repeat(129)),
    ] {
        let answer = get(http, target, "").await;
        assert_eq!(answer.status, 400, "{target}: {}", answer.head);
        assert_eq!(
            answer.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(!answer.body.contains("<chatroom-widget"), "{target}");
        assert!(
            !answer.body.contains("<script"),
            "{target}: {}",
            answer.body
        );
        assert!(!answer.body.contains("<img"), "{target}: {}", answer.body);
    }
    let answer = get(http, "/demo?room=%3Cscript%3E", "").await;
    assert!(answer.body.contains("&#39;&lt;&#39;"), "{}", answer.body);
    server.server.shutdown().await;
}

#[tokio::test]
async fn demo_connects_to_the_public_url_when_given() {
    let server = TestServer::start_with(|config| {
        config.public_url = Some("wss://chat.example/ws?a=1&b=\"2\"".into());
    })
    .await;
    let answer = get(server.server.http_addr(), "/demo?room=demo&user=bob", "").await;
    assert_eq!(
        widget_attribute(&answer.body, "server"),
        "wss://chat.example/ws?a=1&amp;b=&quot;2&quot;"
    );
    server.server.shutdown().await;
}
