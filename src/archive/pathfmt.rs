//! Printing paths a container controls, so that no name can forge output lines or hide bytes.
//!
//! [`escape`] turns a path's bytes into a printable, lossless UTF-8 string (like `ls -b` or
//! Go's `%q`, without the quotes):
//!
//! * a backslash becomes `\\`;
//! * newline, tab and carriage return become `\n`, `\t`, `\r`;
//! * every other byte that is not part of a printable UTF-8 character becomes `\xNN` (two
//!   lowercase hex digits): other ASCII control characters and DEL, bytes of invalid UTF-8,
//!   and the bytes of characters that are invisible or reorder text (C1 controls, Unicode
//!   bidirectional and zero-width format characters, line/paragraph separators);
//! * everything else (including spaces and printable non-ASCII text) is kept as is.
//!
//! The escaping is reversible by [`unescape`], so it is used both for text lines and inside
//! JSON strings (which cannot carry invalid UTF-8).

use std::fmt::Write;

/// Whether `c` is shown as the `\xNN` escapes of its UTF-8 bytes rather than verbatim.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

fn hex_bytes(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "\\x{b:02x}");
    }
}

/// The escaped, printable form of `bytes` (see the module documentation).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if hidden(c) => hex_bytes(&mut out, c.encode_utf8(&mut [0u8; 4]).as_bytes()),
                c => out.push(c),
            }
        }
        hex_bytes(&mut out, chunk.invalid());
    }
    out
}

/// The bytes [`escape`] was given, or `None` if `s` is not a valid escaped string.
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let hex = [bytes.next()?, bytes.next()?];
                let text = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_or_hide() {
        assert_eq!(escape(b"/etc/passwd"), "/etc/passwd");
        assert_eq!(escape(b"/x\nD /etc"), "/x\\nD /etc");
        assert_eq!(escape(b"a\tb\rc\\d"), "a\\tb\\rc\\\\d");
        assert_eq!(escape(b"\x1b[2J\x7f\0"), "\\x1b[2J\\x7f\\x00");
        assert_eq!(escape(b"bad\xff\xfeutf8"), "bad\\xff\\xfeutf8");
        assert_eq!(escape("café ü".as_bytes()), "café ü");
        assert_eq!(
            escape("evil\u{202e}txt".as_bytes()),
            "evil\\xe2\\x80\\xaetxt"
        );
        assert_eq!(escape("c1\u{85}".as_bytes()), "c1\\xc2\\x85");
    }

    #[test]
    fn round_trips_every_byte() {
        let mut all: Vec<u8> = (0..=255u8).collect();
        all.extend_from_slice("é\u{202e}\\x41".as_bytes());
        let e = escape(&all);
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        assert_eq!(unescape(&e).unwrap(), all);
        assert_eq!(unescape("\\q"), None);
        assert_eq!(unescape("\\x4"), None);
    }
}
