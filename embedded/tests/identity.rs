//! Who a client is, end to end over real connections: room grants and
//! private rooms, display info carried with messages, read-only rooms,
//! sessions that end with their token unless refreshed in-band, and tokens
//! from an identity provider's JWKS file, rotated while sessions stay up.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chatroom_client::{ClientError, Event, Events, JoinOptions, TokenSource};
use chatroom_cluster::auth::{
    DisplayInfo, Roles, RoomRoles, TokenClaims, Verifier, VerifierConfig,
};
use chatroom_proto::v1::{ErrorCode, KickReason, Kind};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use spki::der::{Decode, pem};
use support::{PATIENCE, SECRET, TestServer};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster/src/auth/testdata");

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn mint(server: &TestServer, claims: TokenClaims) -> String {
    server
        .tokens
        .mint_claims(&claims, Duration::from_secs(600))
        .expect("valid claims")
}

async fn connect(server: &TestServer, token: String) -> (chatroom_client::Client, Events) {
    chatroom_client::Client::connect(server.client_config(server.transport, token))
        .await
        .expect("connects")
}

/// The server's error for a refused request.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(error) => error
            .code()
            .unwrap_or_else(|| panic!("not a server refusal: {error}")),
        Ok(value) => panic!("accepted: {value:?}"),
    }
}

#[tokio::test]
async fn a_private_room_admits_only_users_whose_token_grants_it() {
    let server = TestServer::start().await;
    server
        .configure("vip:gold", |config| config.private = true)
        .await;

    let (granted, _events) = connect(
        &server,
        mint(&server, TokenClaims::new("alice").room("vip:*")),
    )
    .await;
    let ack = granted
        .join("vip:gold", JoinOptions::default())
        .await
        .expect("a grant opens the room");
    assert_eq!(ack.member_count, 1);

    for claims in [
        TokenClaims::new("bob"),
        TokenClaims::new("carol").room("vip:silver"),
        TokenClaims::new("dave").no_rooms(),
    ] {
        let (client, _events) = connect(&server, mint(&server, claims)).await;
        assert_eq!(
            refusal(client.join("vip:gold", JoinOptions::default()).await),
            ErrorCode::Forbidden
        );
        // Turned away without being counted in.
        assert_eq!(client.member_count("vip:gold"), None);
    }
    let admin = TokenClaims::new("ops").roles(Roles {
        admin: true,
        system: false,
    });
    let (admin, _events) = connect(&server, mint(&server, admin)).await;
    let ack = admin
        .join("vip:gold", JoinOptions::default())
        .await
        .expect("admins go anywhere");
    assert_eq!(ack.member_count, 2, "only alice and the admin are in");
    // Rooms that are not private need no grant.
    let (plain, _events) = connect(&server, mint(&server, TokenClaims::new("erin"))).await;
    plain
        .join("lobby", JoinOptions::default())
        .await
        .expect("open room");
}

#[tokio::test]
async fn display_info_travels_with_messages_and_a_read_only_room_takes_its_staff_only() {
    let server = TestServer::start().await;
    server
        .configure("stage", |config| config.read_only = true)
        .await;
    let info = DisplayInfo {
        name: Some("Alice ✨".into()),
        badges: vec!["vip".into(), "sub-12".into()],
        color: Some("#ff8800".into()),
    };
    let streamer = TokenClaims::new("alice").info(info).room_roles(
        "stage",
        RoomRoles {
            moderator: false,
            streamer: true,
        },
    );
    let (alice, _alice_events) = connect(&server, mint(&server, streamer)).await;
    let (bob, mut bob_events) = connect(&server, mint(&server, TokenClaims::new("bob"))).await;
    for client in [&alice, &bob] {
        client
            .join("stage", JoinOptions::default())
            .await
            .expect("join");
    }
    assert_eq!(
        refusal(bob.send("stage", Kind::Chat, "hi").await),
        ErrorCode::Forbidden
    );
    let sent = alice
        .send("stage", Kind::Chat, "welcome")
        .await
        .expect("a streamer posts");
    let message = loop {
        match bob_events.recv_timeout(PATIENCE).await.expect("an event") {
            Event::Message { message, .. } if message.msg_id == sent.msg_id => break message,
            Event::Closed { reason } => panic!("closed: {reason}"),
            _ => {}
        }
    };
    let shown = message.sender_info.expect("sender info travels");
    assert_eq!(shown.name, "Alice ✨");
    assert_eq!(shown.badges, ["vip", "sub-12"]);
    assert_eq!(shown.color, "#ff8800");
}

/// An HS256 token for `user` that expired `ago_s` seconds ago: still inside
/// the verifier's leeway, so it connects, and the session ends soon after.
fn token_expired_ago(user: &str, ago_s: u64) -> String {
    let claims = json!({ "sub": user, "exp": now_s() - ago_s });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("signs")
}

#[tokio::test]
async fn sessions_end_with_their_token_unless_refreshed_in_band() {
    let server = TestServer::start_with(|config| {
        config.node.heartbeat = Duration::from_millis(400);
    })
    .await;
    let (lapsing, mut lapsing_events) = connect(&server, token_expired_ago("alice", 3)).await;
    assert!(lapsing.token_expires_at().expect("told") <= SystemTime::now());

    let fresh = Arc::new(AtomicUsize::new(0));
    let tokens = server.tokens.clone();
    let counted = Arc::clone(&fresh);
    let source = TokenSource::new(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        let token = tokens.mint("bob", Roles::default(), Duration::from_secs(3600));
        Box::pin(async move { token.map_err(|error| error.to_string()) })
    });
    let mut config = server.client_config(server.transport, token_expired_ago("bob", 3));
    config.token_source = Some(source);
    let (kept, mut kept_events) = chatroom_client::Client::connect(config)
        .await
        .expect("connects");
    for client in [&lapsing, &kept] {
        client
            .join("lobby", JoinOptions::default())
            .await
            .expect("join");
    }

    // The lapsing session is closed with its own reason.
    loop {
        match lapsing_events
            .recv_timeout(PATIENCE)
            .await
            .expect("an event")
        {
            Event::Kicked {
                room: None, reason, ..
            } => {
                assert_eq!(reason, KickReason::TokenExpired);
                break;
            }
            Event::Closed { reason } => panic!("closed before the kick: {reason}"),
            _ => {}
        }
    }
    // The same sweep left the refreshed one alone: it still posts and
    // hears its own message.
    assert!(fresh.load(Ordering::Relaxed) >= 1);
    assert!(kept.token_expires_at().expect("told") > SystemTime::now() + Duration::from_secs(600));
    let sent = kept
        .send("lobby", Kind::Chat, "still here")
        .await
        .expect("sends");
    loop {
        match kept_events.recv_timeout(PATIENCE).await.expect("an event") {
            Event::Message { message, .. } if message.msg_id == sent.msg_id => break,
            Event::Closed { reason } => panic!("the refreshed session closed: {reason}"),
            _ => {}
        }
    }

    // A refresh must be for the same user.
    let other = server
        .tokens
        .mint("mallory", Roles::default(), Duration::from_secs(600))
        .expect("mint");
    assert_eq!(refusal(kept.refresh(&other).await), ErrorCode::Forbidden);
    assert_eq!(
        refusal(kept.refresh("not a token").await),
        ErrorCode::Unauthenticated
    );
}

/// A signing key of the identity provider and its public JWK.
struct IdpKey {
    encoding: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

impl IdpKey {
    fn rsa(kid: &str) -> Self {
        let private = std::fs::read(format!("{TESTDATA}/rsa2048.key.pem")).expect("fixture");
        let public = std::fs::read(format!("{TESTDATA}/rsa2048.pub.pem")).expect("fixture");
        let (_, der) = pem::decode_vec(&public).expect("pem");
        let info = spki::SubjectPublicKeyInfoRef::from_der(&der).expect("spki");
        let rsa = pkcs1::RsaPublicKey::from_der(info.subject_public_key.raw_bytes()).expect("rsa");
        Self {
            encoding: EncodingKey::from_rsa_pem(&private).expect("rsa key"),
            alg: Algorithm::RS256,
            jwk: json!({
                "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                "n": b64(rsa.modulus.as_bytes()), "e": b64(rsa.public_exponent.as_bytes()),
            }),
        }
    }

    fn ec(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a p-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("its pair");
        // Uncompressed point: 0x04, then x and y.
        let point = pair.public_key().as_ref();
        Self {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            alg: Algorithm::ES256,
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
        }
    }

    fn token(&self, user: &str) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        let claims =
            json!({ "sub": user, "exp": now_s() + 600, "aud": "chat", "iss": "https://idp.test" });
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("signs")
    }
}

fn write_jwks(path: &Path, keys: &[&IdpKey]) {
    let keys: Vec<&Value> = keys.iter().map(|key| &key.jwk).collect();
    std::fs::write(path, json!({ "keys": keys }).to_string()).expect("write jwks");
}

#[tokio::test]
async fn identity_provider_tokens_verify_from_a_jwks_file_rotated_while_sessions_stay_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    let (rsa, ec) = (IdpKey::rsa("rsa-1"), IdpKey::ec("ec-1"));
    write_jwks(&jwks, &[&rsa, &ec]);
    let verifier = Verifier::new(VerifierConfig {
        jwks: Some(jwks.clone()),
        audience: Some("chat".into()),
        issuer: Some("https://idp.test".into()),
        ..VerifierConfig::default()
    })
    .expect("keys load");
    let server = TestServer::start_with(|config| config.verifier = Some(verifier.clone())).await;

    let (alice, _alice_events) = connect(&server, rsa.token("alice")).await;
    let (bob, mut bob_events) = connect(&server, ec.token("bob")).await;
    assert_eq!(alice.user_id(), "alice");
    for client in [&alice, &bob] {
        client
            .join("lobby", JoinOptions::default())
            .await
            .expect("join");
    }
    // The server's own HS256 secret is not trusted when only a JWKS is.
    let hs = server.token("mallory");
    let refused =
        chatroom_client::Client::connect(server.client_config(server.transport, hs)).await;
    assert_eq!(refusal(refused), ErrorCode::Unauthenticated);

    // Rotation: the provider drops rsa-1 and publishes ec-2.
    let ec2 = IdpKey::ec("ec-2");
    write_jwks(&jwks, &[&ec, &ec2]);
    assert!(
        verifier.reload().expect("the new file loads"),
        "keys changed"
    );
    let stale = chatroom_client::Client::connect(
        server.client_config(server.transport, rsa.token("alice2")),
    )
    .await;
    assert_eq!(refusal(stale), ErrorCode::Unauthenticated);
    let (carol, _carol_events) = connect(&server, ec2.token("carol")).await;
    assert_eq!(carol.user_id(), "carol");

    // A bad file keeps the keys in force.
    std::fs::write(&jwks, "{\"keys\": [").expect("truncate");
    assert!(verifier.reload().is_err());
    assert_eq!(verifier.reload_failures(), 1);
    connect(&server, ec2.token("dave")).await;

    // Sessions opened before the rotation stay up.
    let sent = alice
        .send("lobby", Kind::Chat, "after the rotation")
        .await
        .expect("sends");
    loop {
        match bob_events.recv_timeout(PATIENCE).await.expect("an event") {
            Event::Message { message, .. } if message.msg_id == sent.msg_id => break,
            Event::Closed { reason } => panic!("closed: {reason}"),
            _ => {}
        }
    }
}
