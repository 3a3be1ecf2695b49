use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key() -> TokenKey {
    TokenKey::new(SECRET).unwrap()
}

fn b64(json: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn far_future() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

#[test]
fn admin_tokens_match_only_themselves() {
    let token = AdminToken::new(SECRET).unwrap();
    assert!(token.verify(SECRET));
    assert!(!token.verify(b"0123456789abcdef0123456789abcdeF"));
    assert!(!token.verify(b""));
    assert!(matches!(
        AdminToken::new(b"short"),
        Err(AuthError::WeakSecret)
    ));
    assert_eq!(format!("{token:?}"), "AdminToken(..)");
}

#[test]
fn minted_tokens_verify_with_their_roles() {
    let key = key();
    let token = key
        .mint(
            "alice",
            Roles {
                admin: true,
                system: false,
            },
            Duration::from_secs(60),
        )
        .unwrap();
    let who = key.verify(&token).unwrap();
    assert_eq!(&*who.user, "alice");
    assert!(who.roles.admin && !who.roles.system);
}

#[test]
fn refuses_a_token_signed_with_another_secret() {
    let other = TokenKey::new(b"another-secret-of-32-bytes-000000").unwrap();
    let token = other
        .mint("alice", Roles::default(), Duration::from_secs(60))
        .unwrap();
    assert!(matches!(key().verify(&token), Err(AuthError::BadSignature)));
}

#[test]
fn refuses_expired_tokens() {
    let key = key();
    let claims = Claims {
        sub: "alice".into(),
        exp: far_future() - 7200,
        roles: Vec::new(),
        ..Claims::default()
    };
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key.encoding).unwrap();
    assert!(matches!(key.verify(&token), Err(AuthError::Expired)));
}

#[test]
fn refuses_alg_none_and_unsigned_tokens() {
    let body = b64(&format!(r#"{{"sub":"alice","exp":{}}}"#, far_future()));
    let none = format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    assert!(matches!(
        key().verify(&none),
        Err(AuthError::WrongAlgorithm)
    ));
    let unsigned = format!("{}.{body}", b64(r#"{"alg":"HS256","typ":"JWT"}"#));
    assert!(matches!(key().verify(&unsigned), Err(AuthError::Malformed)));
    let empty_sig = format!("{}.{body}.", b64(r#"{"alg":"HS256","typ":"JWT"}"#));
    assert!(matches!(
        key().verify(&empty_sig),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn refuses_other_algorithms_and_garbage() {
    let body = b64(&format!(r#"{{"sub":"alice","exp":{}}}"#, far_future()));
    let hs512 = format!("{}.{body}.c2ln", b64(r#"{"alg":"HS512","typ":"JWT"}"#));
    assert!(matches!(
        key().verify(&hs512),
        Err(AuthError::WrongAlgorithm)
    ));
    assert!(matches!(
        key().verify("not a token"),
        Err(AuthError::Malformed)
    ));
    assert!(matches!(key().verify(""), Err(AuthError::Malformed)));
}

#[test]
fn refuses_bad_user_ids_and_weak_secrets() {
    assert!(matches!(
        key().mint("a b", Roles::default(), Duration::from_secs(1)),
        Err(AuthError::BadUserId(_))
    ));
    assert!(matches!(
        TokenKey::new(b"short"),
        Err(AuthError::WeakSecret)
    ));
}

#[test]
fn secret_file_is_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/token-secret");
    let source = SecretSource::File(path.clone());
    let (first, created) = source.load(true).unwrap();
    assert!(created);
    let (second, created_again) = source.load(true).unwrap();
    assert!(!created_again);
    let token = first
        .mint("bob", Roles::default(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(&*second.verify(&token).unwrap().user, "bob");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let missing = SecretSource::File(dir.path().join("absent"));
    assert!(matches!(missing.load(false), Err(SecretError::Io { .. })));
}

/// `claims` signed with the test secret, whatever they hold.
fn sign(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// Claims for alice, valid for an hour, with `extra` merged in.
fn alice_with(extra: serde_json::Value) -> serde_json::Value {
    let mut claims = serde_json::json!({ "sub": "alice", "exp": far_future() });
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

#[test]
fn grants_room_roles_and_info_round_trip() {
    let info = DisplayInfo {
        name: Some("Alice ✨".into()),
        badges: vec!["subscriber".into(), "vip-2".into()],
        color: Some("#ff8800".into()),
    };
    let moderator = RoomRoles {
        moderator: true,
        streamer: false,
    };
    let streamer = RoomRoles {
        moderator: false,
        streamer: true,
    };
    let claims = TokenClaims::new("alice")
        .roles(Roles {
            admin: false,
            system: true,
        })
        .room("lobby")
        .room("vip:*")
        .room_roles("show:*", moderator)
        .room_roles("show:7", streamer)
        .info(info.clone());
    let token = key().mint_claims(&claims, Duration::from_secs(60)).unwrap();
    let who = key().verify(&token).unwrap();
    assert_eq!(&*who.user, "alice");
    assert!(who.roles.system && !who.roles.admin);
    assert!(who.access.may_join("lobby") && who.access.may_join("vip:1"));
    assert!(!who.access.may_join("show:7") && !who.access.may_join("lobby:1"));
    assert_eq!(who.access.roles_in("show:1"), moderator);
    assert_eq!(
        who.access.roles_in("show:7"),
        RoomRoles {
            moderator: true,
            streamer: true
        }
    );
    assert_eq!(who.info.as_deref(), Some(&info));
    let now = far_future() - 3600;
    assert!((now + 59..=now + 61).contains(&who.expires_at));

    let everywhere = TokenClaims::new("bob").room("*");
    let token = key()
        .mint_claims(&everywhere, Duration::from_secs(60))
        .unwrap();
    assert!(key().verify(&token).unwrap().access.may_join("any:room"));
}

#[test]
fn tokens_without_the_new_claims_share_the_empty_access() {
    let token = key()
        .mint("alice", Roles::default(), Duration::from_secs(60))
        .unwrap();
    let who = key().verify(&token).unwrap();
    assert!(Arc::ptr_eq(&who.access, &RoomAccess::none()));
    assert!(who.access.is_empty() && who.info.is_none());
    let token = key()
        .mint_claims(
            &TokenClaims::new("alice").no_rooms(),
            Duration::from_secs(60),
        )
        .unwrap();
    let who = key().verify(&token).unwrap();
    assert!(!who.access.is_empty() && !who.access.may_join("lobby"));
}

#[test]
fn every_bound_refuses_the_token_naming_the_claim() {
    let grants: Vec<String> = (0..65).map(|i| format!("room{i}")).collect();
    let many_roles: serde_json::Map<String, serde_json::Value> = (0..65)
        .map(|i| (format!("room{i}"), serde_json::json!(["moderator"])))
        .collect();
    let too_large = [
        (serde_json::json!({ "rooms": grants }), "rooms"),
        (serde_json::json!({ "rooms": ["x".repeat(130)] }), "rooms"),
        (
            serde_json::json!({ "room_roles": many_roles }),
            "room_roles",
        ),
        (
            serde_json::json!({ "room_roles": { "lobby": vec!["streamer"; 9] } }),
            "room_roles",
        ),
        (
            serde_json::json!({ "info": { "badges": vec!["b"; 9] } }),
            "info.badges",
        ),
        (
            serde_json::json!({ "info": { "badges": ["b".repeat(33)] } }),
            "info.badges",
        ),
        (
            serde_json::json!({ "info": { "name": "n".repeat(65) } }),
            "info.name",
        ),
    ];
    for (extra, expected) in too_large {
        let result = key().verify(&sign(&alice_with(extra.clone())));
        assert!(
            matches!(result, Err(AuthError::ClaimTooLarge { claim, .. }) if claim == expected),
            "{extra}: {result:?}"
        );
    }
    let malformed = [
        (serde_json::json!({ "rooms": "lobby" }), "rooms"),
        (serde_json::json!({ "rooms": ["a b"] }), "rooms"),
        (serde_json::json!({ "rooms": ["vip*x"] }), "rooms"),
        (serde_json::json!({ "room_roles": ["lobby"] }), "room_roles"),
        (
            serde_json::json!({ "room_roles": { "a/b": [] } }),
            "room_roles",
        ),
        (serde_json::json!({ "info": "alice" }), "info"),
        (serde_json::json!({ "info": { "name": "" } }), "info.name"),
        (
            serde_json::json!({ "info": { "name": "a\nb" } }),
            "info.name",
        ),
        (
            serde_json::json!({ "info": { "badges": ["a b"] } }),
            "info.badges",
        ),
        (
            serde_json::json!({ "info": { "color": "red" } }),
            "info.color",
        ),
        (
            serde_json::json!({ "info": { "color": "#12345g" } }),
            "info.color",
        ),
        (
            serde_json::json!({ "info": { "color": 255 } }),
            "info.color",
        ),
    ];
    for (extra, expected) in malformed {
        let result = key().verify(&sign(&alice_with(extra.clone())));
        assert!(
            matches!(result, Err(AuthError::BadClaim { claim, .. }) if claim == expected),
            "{extra}: {result:?}"
        );
    }
    let at_the_bounds = serde_json::json!({
        "rooms": (0..64).map(|i| format!("room{i}")).collect::<Vec<_>>(),
        "room_roles": { "lobby": ["moderator", "x", "x", "x", "x", "x", "x", "x"] },
        "info": { "name": "n".repeat(64), "badges": vec!["b".repeat(32); 8], "color": "#ABCdef" },
    });
    let who = key().verify(&sign(&alice_with(at_the_bounds))).unwrap();
    assert!(who.access.may_join("room63") && who.access.roles_in("lobby").moderator);
}

#[test]
fn minting_refuses_what_verifying_would() {
    let mut claims = TokenClaims::new("alice");
    for i in 0..65 {
        claims = claims.room(&format!("room{i}"));
    }
    assert!(matches!(
        key().mint_claims(&claims, Duration::from_secs(60)),
        Err(AuthError::ClaimTooLarge { claim: "rooms", .. })
    ));
    let info = DisplayInfo {
        color: Some("blue".into()),
        ..DisplayInfo::default()
    };
    assert!(matches!(
        key().mint_claims(
            &TokenClaims::new("alice").info(info),
            Duration::from_secs(60)
        ),
        Err(AuthError::BadClaim {
            claim: "info.color",
            ..
        })
    ));
}

#[test]
fn nbf_is_honoured_and_aud_iss_ignored_by_the_token_key() {
    let later = alice_with(serde_json::json!({ "nbf": far_future() }));
    assert!(matches!(
        key().verify(&sign(&later)),
        Err(AuthError::NotYetValid)
    ));
    let skewed = alice_with(serde_json::json!({ "nbf": far_future() - 3600 + 3 }));
    assert!(key().verify(&sign(&skewed)).is_ok());
    let foreign = alice_with(serde_json::json!({ "aud": "elsewhere", "iss": "someone" }));
    assert!(key().verify(&sign(&foreign)).is_ok());
}

#[test]
fn the_token_key_refuses_other_algorithms_than_hs256() {
    let header = b64(r#"{"alg":"RS256","typ":"JWT"}"#);
    let body = b64(&format!(r#"{{"sub":"alice","exp":{}}}"#, far_future()));
    assert!(matches!(
        key().verify(&format!("{header}.{body}.c2ln")),
        Err(AuthError::AlgorithmMismatch)
    ));
}

#[test]
fn reasons_are_short_stable_labels() {
    assert_eq!(AuthError::Expired.reason(), "expired");
    assert_eq!(AuthError::UnknownKid.reason(), "unknown_kid");
    assert_eq!(AuthError::WrongAlgorithm.reason(), "wrong_algorithm");
    let large = AuthError::ClaimTooLarge {
        claim: "rooms",
        reason: "more than 64 grants",
    };
    assert_eq!(large.reason(), "claim_too_large");
    assert_eq!(large.to_string(), "token claim rooms: more than 64 grants");
}
