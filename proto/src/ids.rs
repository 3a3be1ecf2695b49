//! Room and user ids: 1 to 128 bytes of `[A-Za-z0-9_.:@-]`. Anything else is
//! rejected at the edge with `BAD_REQUEST`, so no other code has to wonder.

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Zero bytes long.
    #[error("is empty")]
    Empty,
    /// More than [`MAX_ID_LEN`] bytes.
    #[error("is {0} bytes long, more than 128")]
    TooLong(usize),
    /// A byte outside the allowed set.
    #[error("contains {0:?}, outside [A-Za-z0-9_.:@-]")]
    BadChar(char),
}

/// Checks an id against the grammar.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(id.len()));
    }
    match id.chars().find(|&c| !is_id_char(c)) {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_whole_alphabet() {
        assert_eq!(check_id("aZ09_.:@-"), Ok(()));
        assert_eq!(check_id(&"x".repeat(MAX_ID_LEN)), Ok(()));
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id(&"x".repeat(129)), Err(IdError::TooLong(129)));
        assert_eq!(check_id("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(check_id("caf\u{e9}"), Err(IdError::BadChar('\u{e9}')));
        assert_eq!(check_id("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(check_id("a\0"), Err(IdError::BadChar('\0')));
    }
}
