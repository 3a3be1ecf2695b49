//! Tokens for demos and tests, minted with the secret the embedded server
//! uses (`chatroom` creates [`default_secret_file`](chatroom_cluster::auth::default_secret_file)
//! when it starts without one).

use std::time::Duration;

// What `dev_token` takes and returns, so that a caller can name them
// without depending on the runtime crate.
pub use chatroom_cluster::auth::{Roles, SecretError, SecretSource};

/// A token for `user` with `roles`, valid for `ttl`. A secret file is only
/// read, never created: a missing one means the server has not made it (or
/// uses another secret), which a fresh secret here would only hide.
pub fn dev_token(
    secret: &SecretSource,
    user: &str,
    roles: Roles,
    ttl: Duration,
) -> Result<String, SecretError> {
    let (key, _created) = secret.load(false)?;
    Ok(key.mint(user, roles, ttl)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_cluster::auth::TokenKey;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_token_verifies_with_the_same_secret() {
        let source = SecretSource::Inline(SECRET.into());
        let roles = Roles {
            admin: false,
            system: true,
        };
        let token = dev_token(&source, "alice", roles, Duration::from_secs(60)).unwrap();
        let who = TokenKey::new(SECRET.as_bytes())
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(&*who.user, "alice");
        assert_eq!(who.roles, roles);
    }

    #[test]
    fn missing_secret_file_is_not_created() {
        let path = std::env::temp_dir().join(format!("chatroom-absent-{}", rand::random::<u64>()));
        let source = SecretSource::File(path.clone());
        let err = dev_token(&source, "alice", Roles::default(), Duration::from_secs(1));
        assert!(matches!(err, Err(SecretError::Io { .. })));
        assert!(!path.exists());
    }
}
