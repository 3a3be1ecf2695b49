//! The msg-svc binary as an operator starts it: node links are secured or,
//! by explicit choice, plaintext; never silently either.

use std::process::Command;

fn msg_svc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_msg-svc"))
        .args(args)
        .env_remove("CHATROOM_LINK_PLAINTEXT")
        .env_remove("CHATROOM_LINK_CA")
        .output()
        .expect("msg-svc runs")
}

#[test]
fn a_node_without_link_certificates_or_the_plaintext_flag_refuses_to_start() {
    let out = msg_svc(&["--zk", "127.0.0.1:1", "--node-id", "m1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--link-ca"), "{stderr}");
    assert!(stderr.contains("--link-plaintext"), "{stderr}");
}

#[test]
fn unreadable_link_certificates_are_named() {
    let out = msg_svc(&[
        "--zk",
        "127.0.0.1:1",
        "--node-id",
        "m1",
        "--link-ca",
        "/nonexistent/ca.crt",
        "--link-cert",
        "/nonexistent/tls.crt",
        "--link-key",
        "/nonexistent/tls.key",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.crt"), "{stderr}");
}

#[test]
fn plaintext_and_certificates_together_are_refused() {
    let out = msg_svc(&[
        "--zk",
        "127.0.0.1:1",
        "--node-id",
        "m1",
        "--link-plaintext",
        "--link-ca",
        "ca.crt",
    ]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}
