//! Size strings parsed exactly like go-units `RAMInBytes`, which Docker uses for the `size`
//! storage option: binary multipliers (k = 1024), case-insensitive `k m g t p`, optionally
//! followed by `b` or `ib`, one optional space before the suffix, decimals allowed (the result
//! is truncated toward zero). `127GB` is 136 365 211 648 bytes.

use std::fmt;

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid size {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for SizeError {}

/// Parses a size such as `10G`, `512 MiB`, `1.5k` or `4096` into bytes.
///
/// Follows go-units v0.5: the number is everything up to the last digit, `.` or space (a
/// single space separating the suffix is dropped); the suffix, at most three characters, is
/// `b`, or one of `kmgtp` optionally followed by `b` or `ib`. Negative and non-finite numbers
/// are rejected, and so are results that do not fit in a signed 64-bit integer.
pub fn ram_in_bytes(s: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: s.to_string(),
        reason,
    };
    let sep = s
        .rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
        .ok_or_else(|| err("no number"))?;
    let (num, sfx) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..sep + 1], &s[sep + 1..])
    };
    let value = parse_go_float(num).ok_or_else(|| err("not a number"))?;
    if value < 0.0 {
        return Err(err("negative"));
    }
    let mult: f64 = if sfx.is_empty() {
        1.0
    } else {
        if sfx.len() > 3 {
            return Err(err("unknown suffix"));
        }
        let lower = sfx.to_ascii_lowercase();
        let b = lower.as_bytes();
        if b[0] == b'b' {
            if b.len() > 1 {
                return Err(err("unknown suffix"));
            }
            1.0
        } else {
            let shift = match b[0] {
                b'k' => 10,
                b'm' => 20,
                b'g' => 30,
                b't' => 40,
                b'p' => 50,
                _ => return Err(err("unknown suffix")),
            };
            match (b.len(), &lower[1..]) {
                (1, _) | (2, "b") | (3, "ib") => {}
                _ => return Err(err("unknown suffix")),
            }
            (1u64 << shift) as f64
        }
    };
    let bytes = value * mult;
    // i64::MAX as f64 rounds up to 2^63, which is already out of range.
    if !bytes.is_finite() || bytes >= 9_223_372_036_854_775_808.0 {
        return Err(err("too large"));
    }
    Ok(bytes as u64)
}

/// Go's `strconv.ParseFloat` for the decimal forms go-units can pass it: optional sign, digits
/// with an optional fraction, optional exponent. Rust's parser would also accept `inf`/`NaN`,
/// which the suffix split above already excludes, and hex floats, which it does not know.
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let mantissa_end = body.find(['e', 'E']).unwrap_or(body.len());
    let (mantissa, exp) = body.split_at(mantissa_end);
    let digits = mantissa.chars().filter(|c| c.is_ascii_digit()).count();
    let dots = mantissa.chars().filter(|c| *c == '.').count();
    if digits == 0 || dots > 1 || digits + dots != mantissa.len() {
        return None;
    }
    if !exp.is_empty() {
        let e = exp[1..].strip_prefix(['+', '-']).unwrap_or(&exp[1..]);
        if e.is_empty() || !e.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::ram_in_bytes;

    const KIB: u64 = 1024;
    const MIB: u64 = KIB * 1024;
    const GIB: u64 = MIB * 1024;
    const TIB: u64 = GIB * 1024;
    const PIB: u64 = TIB * 1024;

    #[test]
    fn go_units_table() {
        // The cases of go-units' TestRAMInBytes, plus the `ib` forms of v0.5.
        let ok: &[(&str, u64)] = &[
            ("32", 32),
            ("32b", 32),
            ("32B", 32),
            ("32k", 32 * KIB),
            ("32K", 32 * KIB),
            ("32kb", 32 * KIB),
            ("32Kb", 32 * KIB),
            ("32Mb", 32 * MIB),
            ("32Gb", 32 * GIB),
            ("32Tb", 32 * TIB),
            ("32Pb", 32 * PIB),
            ("32PB", 32 * PIB),
            ("32P", 32 * PIB),
            ("32.3", 32),
            ("32.3 mb", (32.3 * MIB as f64) as u64),
            ("32.3Mb", 33_869_004),
            ("32.3 Tb", (32.3 * TIB as f64) as u64),
            ("32KiB", 32 * KIB),
            ("32 kib", 32 * KIB),
            ("1.5g", 3 * GIB / 2),
            ("127GB", 136_365_211_648),
            ("50M", 52_428_800),
            ("20G", 20 * GIB),
            ("1e3", 1000),
            ("0", 0),
            ("32 ", 32),
            (".5k", 512),
        ];
        for (input, want) in ok {
            assert_eq!(ram_in_bytes(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn go_units_rejects() {
        for bad in [
            "",
            "hello",
            "-32",
            " 32 ",
            "32m b",
            "32bm",
            "32kk",
            "32kbb",
            "32kib ",
            "32x",
            "32.3.3",
            "inf",
            "NaN",
            "1e",
            "0x10",
            "10ki",
            "k",
            "9000000000P",
            "1e400",
        ] {
            assert!(ram_in_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_message_names_input() {
        let e = ram_in_bytes("12q").unwrap_err().to_string();
        assert!(e.contains("\"12q\"") && e.contains("suffix"), "{e}");
    }
}
