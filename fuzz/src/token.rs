//! Tokens: the client token a Connect carries (any string, or one signed
//! with the right secret around any header and claims, so the fuzzer gets
//! past the signature), minting, and the admin API's bearer token.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatroom_cluster::auth::{AdminToken, Roles, TokenKey};
use chatroom_proto::ids::check_id;
use ring::hmac;

/// The secret the targets' tokens are signed with.
pub const SECRET: &[u8] = b"fuzzing-secret-0123456789abcdef";
/// The admin token the targets check bearer headers against.
pub const ADMIN_TOKEN: &str = "fuzzing-admin-token-0123456789";

/// The key msg-svc would verify tokens with.
pub static KEY: LazyLock<TokenKey> =
    LazyLock::new(|| TokenKey::new(SECRET).expect("the secret is long enough"));
static ADMIN: LazyLock<AdminToken> = LazyLock::new(|| {
    AdminToken::new(ADMIN_TOKEN.as_bytes()).expect("the admin token is long enough")
});

/// What the first byte (its two low bits) makes of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// The rest is the token, as a Connect carries it.
    Raw = 0,
    /// The rest is a header and claims (JSON, split at the first 0xff),
    /// signed with the right secret.
    Signed = 1,
    /// The rest is a user id to mint a token for (with the roles the first
    /// byte's next two bits say: admin, system).
    Mint = 2,
    /// The rest is an `Authorization` header's value for the admin API.
    Bearer = 3,
}

impl Mode {
    /// The mode a first byte picks: its two low bits.
    fn of(first: u8) -> Self {
        match first & 3 {
            0 => Self::Raw,
            1 => Self::Signed,
            2 => Self::Mint,
            _ => Self::Bearer,
        }
    }
}

/// A token or a bearer header: verified without a panic; what verifies
/// speaks for a valid user id; a minted token verifies as whom it was minted
/// for; only the admin token itself gets past the admin check.
pub fn token(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    match Mode::of(first) {
        Mode::Raw => verify(&String::from_utf8_lossy(rest)),
        Mode::Signed => {
            let split = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(split);
            verify(&signed(header, claims.get(1..).unwrap_or_default()));
        }
        Mode::Mint => mint(&String::from_utf8_lossy(rest), first >> 2),
        Mode::Bearer => {
            if room_svc::fuzzing::admin_authorized(&ADMIN, rest) {
                let value = String::from_utf8_lossy(rest);
                assert!(
                    value.contains(ADMIN_TOKEN),
                    "{value:?} passed the admin check"
                );
            }
        }
    }
}

/// A token with `header` and `claims` signed with [`SECRET`].
pub fn signed(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let signature = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

fn verify(token: &str) {
    if let Ok(who) = KEY.verify(token) {
        assert_eq!(check_id(&who.user), Ok(()));
        assert_eq!(token.split('.').count(), 3);
    }
}

fn mint(user: &str, role_bits: u8) {
    let roles = Roles {
        admin: role_bits & 1 != 0,
        system: role_bits & 2 != 0,
    };
    match KEY.mint(user, roles, Duration::from_secs(3600)) {
        Ok(token) => {
            let who = KEY.verify(&token).expect("a minted token verifies");
            assert_eq!((&*who.user, who.roles), (user, roles));
        }
        Err(_) => assert!(check_id(user).is_err(), "{user:?} is a valid id"),
    }
}
