//! SELinux mount labels (`context=` of a mount): what a caller may pass.
//!
//! A label ends up inside mount options, so it is checked against the SELinux context grammar
//! before anything is mounted: `user:role:type[:range]`, where user, role and type are
//! identifiers (`[A-Za-z0-9_.-]`), and the optional MLS/MCS range is `level[-level]` with a
//! level `s<N>[:<categories>]` and categories `c<N>[.c<N>]` separated by commas (the only place
//! a comma may appear; on the classic `mount(2)` path the whole label is quoted, as Docker
//! does, so the commas of a category list stay inside the option). Quotes, spaces, NUL,
//! control characters, `=` and anything else outside this grammar are refused.

/// Longest label accepted, in bytes (real contexts are well under 256).
pub const MAX_LABEL_LEN: usize = 1024;

fn identifier(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn number_after(prefix: u8, s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b.len() <= 11 && b[0] == prefix && b[1..].iter().all(u8::is_ascii_digit)
}

fn category(c: &str) -> bool {
    match c.split_once('.') {
        Some((lo, hi)) => number_after(b'c', lo) && number_after(b'c', hi),
        None => number_after(b'c', c),
    }
}

fn level(l: &str) -> bool {
    match l.split_once(':') {
        Some((sens, cats)) => number_after(b's', sens) && cats.split(',').all(category),
        None => number_after(b's', l),
    }
}

/// Checks `label` against the SELinux context grammar; the error says what is wrong (without
/// repeating the label, which the caller names).
pub fn validate(label: &str) -> Result<(), String> {
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "it is {} bytes long, more than {MAX_LABEL_LEN}",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '\'' | ' ' | '=' | '\\'))
    {
        return Err(format!(
            "it contains {c:?}, which no SELinux context has and which could end a mount option"
        ));
    }
    let mut parts = label.splitn(4, ':');
    let (user, role, ty) = (parts.next(), parts.next(), parts.next());
    let (Some(user), Some(role), Some(ty)) = (user, role, ty) else {
        return Err("an SELinux context is user:role:type[:level]".into());
    };
    for (what, part) in [("user", user), ("role", role), ("type", ty)] {
        if !identifier(part) {
            return Err(format!(
                "its {what} {part:?} is not an identifier (letters, digits, '_', '.', '-')"
            ));
        }
    }
    if let Some(range) = parts.next() {
        let ok = match range.split_once('-') {
            Some((lo, hi)) => level(lo) && level(hi),
            None => level(range),
        };
        if !ok {
            return Err(format!(
                "its level {range:?} is not an MLS range (s<N>[:c<N>[.c<N>][,...]][-s<N>...])"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_contexts() {
        for l in [
            "system_u:object_r:container_file_t:s0:c123,c456",
            "system_u:object_r:svirt_sandbox_file_t:s0:c1.c3,c9",
            "system_u:object_r:container_file_t:s0",
            "unconfined_u:object_r:user_home_t",
            "system_u:system_r:spc_t:s0-s0:c0.c1023",
        ] {
            validate(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        }
    }

    #[test]
    fn refuses_option_injection_and_junk() {
        for l in [
            "system_u:object_r:container_file_t:s0\",lowerdir=/,upperdir=/tmp",
            "a:b:c:s0,lowerdir=/",
            "a:b:c,upperdir=/tmp",
            "a:b:c:s0:c1,upperdir=/tmp",
            "a:b",
            "a:b:c:s0\0",
            "a:b:c:s0\n",
            "a:b:c:s0:c1 ",
            "a:b:c\\:s0",
            "a:b:c:'s0'",
            ":b:c",
            "a:b:c:",
            "a:b:c:s0:",
            "a:b:c:s0:c1,",
            "a:b:c:x0",
        ] {
            assert!(validate(l).is_err(), "{l:?} must be refused");
        }
        assert!(validate(&format!("a:b:{}", "t".repeat(MAX_LABEL_LEN))).is_err());
    }
}
