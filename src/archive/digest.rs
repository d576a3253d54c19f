//! Verifying a layer's digest (its OCI diffID) over the uncompressed stream.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256, Sha512};

use super::Error;

/// An expected digest, `sha256:<hex>` or `sha512:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Expected {
    /// Parses `algorithm:hex`.
    pub fn parse(s: &str) -> Result<Expected, String> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} is not ALGORITHM:HEX"))?;
        let (algorithm, len) = match alg {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => {
                return Err(format!(
                    "digest algorithm {alg:?} is not supported (sha256, sha512)"
                ))
            }
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(format!("digest {s:?} must have {len} lowercase hex digits"));
        }
        Ok(Expected {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// A hasher for this algorithm.
    pub fn hasher(&self) -> Hasher {
        match self.algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Box::default()),
            Algorithm::Sha512 => Hasher::Sha512(Box::default()),
        }
    }

    /// Compares with what was computed.
    pub fn check(&self, actual: &str) -> Result<(), Error> {
        let expected = self.to_string();
        if actual == expected {
            Ok(())
        } else {
            Err(Error::Digest {
                expected,
                actual: actual.to_string(),
            })
        }
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alg = match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        };
        write!(f, "{alg}:{}", self.hex)
    }
}

/// A running hash.
pub enum Hasher {
    /// SHA-256.
    Sha256(Box<Sha256>),
    /// SHA-512.
    Sha512(Box<Sha512>),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// `algorithm:hex` of everything seen.
    pub fn finish(self) -> String {
        let (alg, bytes) = match self {
            Hasher::Sha256(h) => ("sha256", h.finalize().to_vec()),
            Hasher::Sha512(h) => ("sha512", h.finalize().to_vec()),
        };
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{alg}:{hex}")
    }
}

/// Hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; with no hasher it is a plain pass-through.
    pub fn new(inner: R, hasher: Option<Hasher>) -> Self {
        HashingReader { inner, hasher }
    }

    /// The digest of everything read, if hashing.
    pub fn finish(self) -> Option<String> {
        self.hasher.map(Hasher::finish)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let e = Expected::parse(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .unwrap();
        let mut r = HashingReader::new(&b""[..], Some(e.hasher()));
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        e.check(&r.finish().unwrap()).unwrap();
        assert!(Expected::parse("md5:abc").is_err());
        assert!(Expected::parse("sha256:ABC").is_err());
        assert!(Expected::parse("sha256").is_err());
        let other = Expected::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert!(matches!(
            other.check("sha256:e3b0"),
            Err(Error::Digest { .. })
        ));
    }
}
