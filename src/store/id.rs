//! Layer id validation. Ids become directory names under `layers/`, so they must be a single,
//! harmless path component, and must not collide with the names the store itself uses.

use crate::error::{Error, Result};

/// Longest accepted id in bytes (Docker's are 64 hex characters plus `-init`).
pub const MAX_ID_LEN: usize = 128;

/// Suffix reserved for layer directories being removed.
pub const REMOVING_SUFFIX: &str = "-removing";

/// Checks that `id` is usable: 1..=128 bytes of `[A-Za-z0-9_.:-]`, not starting with `.` or
/// `-`, and not ending in `-removing`.
pub fn validate(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("longer than 128 bytes");
    }
    if id.contains('/') {
        return bad("contains '/'");
    }
    if id.contains("..") {
        return bad("contains '..'");
    }
    if id.starts_with('.') || id.starts_with('-') {
        return bad("starts with '.' or '-'");
    }
    if id.ends_with(REMOVING_SUFFIX) {
        return bad("ends with the reserved suffix '-removing'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
    {
        return bad("only letters, digits and '_' '.' '-' ':' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_docker_ids() {
        let hex = "a".repeat(64);
        validate(&hex).unwrap();
        validate(&format!("{hex}-init")).unwrap();
        validate("base").unwrap();
        validate("sha256:abc").unwrap();
    }

    #[test]
    fn rejects_dangerous_ids() {
        for id in [
            "",
            "a/b",
            "..",
            ".",
            "../x",
            ".hidden",
            "-x",
            "x-removing",
            "a b",
            "a\0b",
            "é",
        ] {
            assert!(validate(id).is_err(), "{id:?}");
        }
        assert!(validate(&"x".repeat(129)).is_err());
        validate(&"x".repeat(128)).unwrap();
    }
}
