//! Cleaning tar entry names and link targets into in-root path components.
//!
//! A name is split on `/`; empty and `.` components are dropped; `..` removes the previous
//! component. A name whose `..` would climb above the layer root is rejected (rather than
//! clamped, as some extractors do: a layer that tries to climb out is malformed or hostile).
//! A leading `/` is accepted and means the layer root (`/etc/passwd` is `etc/passwd`). An
//! empty name, or one containing a NUL byte, is rejected. A name that cleans to nothing (`.`,
//! `./`, `/`) refers to the root itself.

use super::{Error, Rule};

/// Cleans `raw` into components; an empty result is the layer root.
pub fn clean(raw: &[u8]) -> Result<Vec<&[u8]>, Error> {
    if raw.is_empty() {
        return Err(Error::entry(raw, Rule::BadName, "empty name"));
    }
    if raw.contains(&0) {
        return Err(Error::entry(raw, Rule::BadName, "name contains a NUL byte"));
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(Error::entry(
                        raw,
                        Rule::Escape,
                        "'..' climbs above the layer root",
                    ));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Joins components back into a relative path (for messages and keys).
pub fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        String::from_utf8(join(&clean(raw.as_bytes()).unwrap())).unwrap()
    }

    #[test]
    fn cleans() {
        assert_eq!(ok("a/b/c"), "a/b/c");
        assert_eq!(ok("./a//b/./c/"), "a/b/c");
        assert_eq!(ok("/etc/passwd"), "etc/passwd");
        assert_eq!(ok("a/../b"), "b");
        assert_eq!(
            ok("a..b/..c/d.."),
            "a..b/..c/d..",
            "'..' inside a component is harmless"
        );
        assert_eq!(ok("."), "");
        assert_eq!(ok("/"), "");
    }

    #[test]
    fn rejects() {
        for bad in ["../x", "/../x", "a/../../x", "./..", "a/b/../../.."] {
            assert_eq!(
                clean(bad.as_bytes()).unwrap_err().rule(),
                Some(Rule::Escape),
                "{bad}"
            );
        }
        assert_eq!(clean(b"").unwrap_err().rule(), Some(Rule::BadName));
        assert_eq!(clean(b"a\0b").unwrap_err().rule(), Some(Rule::BadName));
    }
}
