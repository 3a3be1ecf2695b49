//! The room service's store over a Redis that demands a password and TLS
//! with client certificates (a real `redis-server` with both): it proves
//! itself with what its flags give, and a store without any one of them is
//! refused.

mod support;

use std::path::Path;

use chatroom_cluster::local::{LocalServer, RedisOptions, RedisSecurity, RedisTlsFiles, free_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use room_svc::{RedisTarget, RoomService, RoomStore};
use support::*;

const PASSWORD: &str = "s3cret-redis";

/// A CA and what it signed: a server certificate for 127.0.0.1 and a
/// client certificate, all PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test redis CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        // Not the CA's subject, or OpenSSL takes it for self-signed.
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf("127.0.0.1");
    let client = leaf("room-svc");
    Pki { ca, server, client }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_proves_itself_to_a_redis_with_a_password_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ours = pki();
    let theirs = pki();
    let tls = RedisTlsFiles {
        cert: write(dir.path(), "server.crt", &ours.server.0),
        key: write(dir.path(), "server.key", &ours.server.1),
        ca: write(dir.path(), "ca.crt", &ours.ca),
        port: free_port().unwrap(),
    };
    let security = RedisSecurity {
        password: Some(PASSWORD.into()),
        tls: Some(tls),
    };
    let options = RedisOptions {
        durable: false,
        security,
    };
    let server = LocalServer::redis_with(&dir.path().join("redis"), options).unwrap();
    let url = server.redis_url();
    assert!(url.starts_with("rediss://"), "{url}");
    let target = RedisTarget {
        url: url.clone(),
        password: Some(PASSWORD.into()),
        ca: Some(ours.ca.clone().into_bytes()),
        client_cert: Some((
            ours.client.0.clone().into_bytes(),
            ours.client.1.clone().into_bytes(),
        )),
    };
    let store = |target: &RedisTarget| {
        RoomStore::redis_with(target, "secured", test_store_config()).expect("a valid target")
    };

    // With everything: messages are acked once stored, and are there.
    let service = RoomService::start_with(quiet_config(2), store(&target), None);
    let mut node = FakeNode::attach(&service, "a");
    node.subscribe(ROOM).await;
    node.join(ROOM, &["alice"]);
    let mut acked = Vec::new();
    for request_id in 1..=3 {
        node.send(send_body(send(ROOM, "alice", request_id)));
        acked.push(node.next_ack().await.msg_id);
        node.next_broadcast().await;
    }
    service.flush().await.expect("written over TLS");
    let kept = store(&target)
        .load(ROOM, u64::MAX)
        .await
        .expect("loaded over TLS")
        .expect("the room is kept");
    let stored: Vec<u64> = kept.history.iter().map(|m| m.msg_id).collect();
    assert_eq!(stored, acked);

    // Without any one of them, Redis refuses (or is never reached).
    let refused = [
        (
            "no password",
            RedisTarget {
                password: None,
                ..target.clone()
            },
        ),
        (
            "a wrong password",
            RedisTarget {
                password: Some("guess".into()),
                ..target.clone()
            },
        ),
        (
            "no client certificate",
            RedisTarget {
                client_cert: None,
                ..target.clone()
            },
        ),
        (
            "a server certificate another CA signed trusted",
            RedisTarget {
                ca: Some(theirs.ca.clone().into_bytes()),
                ..target.clone()
            },
        ),
        (
            "a client certificate of another CA",
            RedisTarget {
                client_cert: Some((
                    theirs.client.0.clone().into_bytes(),
                    theirs.client.1.clone().into_bytes(),
                )),
                ..target.clone()
            },
        ),
        (
            "plaintext to the TLS port",
            RedisTarget {
                url: url.replace("rediss://", "redis://"),
                ca: None,
                client_cert: None,
                ..target.clone()
            },
        ),
    ];
    for (what, target) in refused {
        assert!(
            store(&target).load("another-room", 1).await.is_err(),
            "{what} was let in"
        );
    }
    let shown = format!("{target:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[test]
fn tls_settings_with_a_plain_url_are_a_clear_error() {
    let target = RedisTarget {
        ca: Some(pki().ca.into_bytes()),
        ..RedisTarget::url("redis://127.0.0.1:6379")
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let error = RoomStore::redis(&target, "c").unwrap_err();
    assert!(error.to_string().contains("rediss://"), "{error}");
}
