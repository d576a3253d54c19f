//! Sparse file maps, in every form Go's `archive/tar` (and so Docker) reads: the old GNU `S`
//! entry (four map entries in the header plus extension blocks), and the PAX forms 0.0
//! (repeated `GNU.sparse.offset`/`GNU.sparse.numbytes`), 0.1 (`GNU.sparse.map`) and 1.0 (the
//! map at the start of the entry's data).
//!
//! A map is bounded (at most [`max_segments`] segments, a function of the metadata limit) and
//! validated before any byte is written: segments are in order, do not overlap, lie within the
//! file's real size, and their lengths add up to exactly the data the stream carries.

use super::{Error, Rule};

/// One data segment: where it goes in the file, and how long it is.
pub type Segment = (u64, u64);

/// A sparse file: its logical size and the segments the stream carries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    /// Logical size of the file (holes included).
    pub real_size: u64,
    /// Data segments in stream order.
    pub segments: Vec<Segment>,
}

/// Most segments accepted for a metadata limit of `max_meta` bytes (24 bytes per old GNU
/// entry, the densest encoding).
pub fn max_segments(max_meta: u64) -> usize {
    (max_meta / 24).max(4) as usize
}

fn bad(name: &[u8], detail: impl Into<String>) -> Error {
    Error::entry(name, Rule::Format, detail)
}

/// Parses an octal field of the old GNU map; `None` for an empty slot.
fn octal(field: &[u8]) -> Option<Option<u64>> {
    if field.first().is_none_or(|b| *b == 0) {
        return Some(None);
    }
    let start = field.iter().position(|b| *b != b' ' && *b != 0)?;
    let end = field.iter().rposition(|b| *b != b' ' && *b != 0)? + 1;
    let text = std::str::from_utf8(&field[start..end]).ok()?;
    u64::from_str_radix(text, 8).ok().map(Some)
}

/// Appends the entries of one old GNU map area (`n` slots of 24 bytes); returns false when an
/// empty slot ended the map.
fn gnu_slots(
    area: &[u8],
    n: usize,
    out: &mut Vec<Segment>,
    cap: usize,
    name: &[u8],
) -> Result<bool, Error> {
    for i in 0..n {
        let slot = &area[i * 24..i * 24 + 24];
        let (Some(off), Some(len)) = (octal(&slot[..12]), octal(&slot[12..])) else {
            return Err(bad(name, "malformed GNU sparse map entry"));
        };
        let Some(off) = off else { return Ok(false) };
        if out.len() >= cap {
            return Err(Error::entry(
                name,
                Rule::Limit,
                format!("sparse map has more than {cap} segments"),
            ));
        }
        out.push((off, len.unwrap_or(0)));
    }
    Ok(true)
}

/// The old GNU `S` header's map. `next_block` reads one extension block.
pub fn old_gnu(
    header: &[u8; 512],
    name: &[u8],
    cap: usize,
    mut next_block: impl FnMut() -> Result<[u8; 512], Error>,
) -> Result<Sparse, Error> {
    let real_size = octal(&header[483..495])
        .flatten()
        .ok_or_else(|| bad(name, "malformed GNU sparse real size"))?;
    let mut segments = Vec::new();
    let mut more = gnu_slots(&header[386..482], 4, &mut segments, cap, name)? && header[482] != 0;
    while more {
        let ext = next_block()?;
        more = gnu_slots(&ext[..504], 21, &mut segments, cap, name)? && ext[504] != 0;
    }
    Ok(Sparse {
        real_size,
        segments,
    })
}

/// PAX `GNU.sparse.*` records of one header.
#[derive(Debug, Default, Clone)]
pub struct PaxSparse {
    major: Option<u64>,
    minor: Option<u64>,
    /// `GNU.sparse.name`: the real name (0.1, 1.0).
    pub name: Option<Vec<u8>>,
    size: Option<u64>,
    map: Option<Vec<u8>>,
    offsets: Vec<u64>,
    numbytes: Vec<u64>,
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

impl PaxSparse {
    /// Takes one `GNU.sparse.<key>` record; an error message for malformed ones.
    pub fn record(&mut self, key: &[u8], value: &[u8], cap: usize) -> Result<(), String> {
        let num = || {
            decimal(value).ok_or_else(|| {
                format!(
                    "GNU.sparse.{} is not a number",
                    String::from_utf8_lossy(key)
                )
            })
        };
        match key {
            b"major" => self.major = Some(num()?),
            b"minor" => self.minor = Some(num()?),
            b"name" => self.name = Some(value.to_vec()),
            b"size" | b"realsize" => self.size = Some(num()?),
            b"map" => self.map = Some(value.to_vec()),
            b"offset" | b"numbytes" => {
                if self.offsets.len() + self.numbytes.len() >= 2 * cap {
                    return Err(format!("sparse map has more than {cap} segments"));
                }
                let n = num()?;
                if key == b"offset" {
                    self.offsets.push(n);
                } else {
                    self.numbytes.push(n);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the map is stored at the start of the entry's data (format 1.0).
    pub fn map_in_data(&self) -> bool {
        self.major == Some(1) && self.minor == Some(0)
    }

    /// The map of formats 0.0 and 0.1.
    pub fn header_map(&self, name: &[u8], cap: usize) -> Result<Sparse, Error> {
        let real_size = self
            .size
            .ok_or_else(|| bad(name, "PAX sparse file without GNU.sparse.size"))?;
        let segments = if let Some(map) = &self.map {
            let nums: Vec<&[u8]> = if map.is_empty() {
                Vec::new()
            } else {
                map.split(|b| *b == b',').collect()
            };
            if !nums.len().is_multiple_of(2) || nums.len() / 2 > cap {
                return Err(bad(name, "malformed or oversized GNU.sparse.map"));
            }
            let mut v = Vec::with_capacity(nums.len() / 2);
            for pair in nums.chunks(2) {
                match (decimal(pair[0]), decimal(pair[1])) {
                    (Some(o), Some(l)) => v.push((o, l)),
                    _ => return Err(bad(name, "malformed GNU.sparse.map")),
                }
            }
            v
        } else {
            if self.offsets.len() != self.numbytes.len() {
                return Err(bad(name, "unpaired GNU.sparse.offset/numbytes records"));
            }
            self.offsets
                .iter()
                .copied()
                .zip(self.numbytes.iter().copied())
                .collect()
        };
        Ok(Sparse {
            real_size,
            segments,
        })
    }

    /// The real size given for a 1.0 map.
    pub fn real_size(&self, name: &[u8]) -> Result<u64, Error> {
        self.size
            .ok_or_else(|| bad(name, "PAX sparse file without GNU.sparse.realsize"))
    }
}

/// Parses a format 1.0 map from the start of the data: decimal numbers, one per line (the
/// count, then offset/length pairs), padded to a block. `next_block` reads the next data
/// block; returns the map and how many data bytes it occupied.
pub fn data_map(
    name: &[u8],
    real_size: u64,
    cap: usize,
    max_bytes: u64,
    mut next_block: impl FnMut() -> Result<[u8; 512], Error>,
) -> Result<(Sparse, u64), Error> {
    let mut text: Vec<u8> = Vec::new();
    let mut consumed = 0u64;
    let mut numbers: Vec<u64> = Vec::new();
    let mut pos = 0;
    let mut want: Option<usize> = None;
    loop {
        // Parse complete lines already buffered.
        while let Some(nl) = text[pos..].iter().position(|b| *b == b'\n') {
            let n = decimal(&text[pos..pos + nl])
                .ok_or_else(|| bad(name, "malformed sparse map in the data"))?;
            pos += nl + 1;
            if want.is_none() {
                let count = usize::try_from(n).unwrap_or(usize::MAX);
                if count > cap {
                    return Err(Error::entry(
                        name,
                        Rule::Limit,
                        format!("sparse map has more than {cap} segments"),
                    ));
                }
                want = Some(count * 2);
            } else {
                numbers.push(n);
            }
            if want == Some(numbers.len()) {
                let segments = numbers.chunks(2).map(|p| (p[0], p[1])).collect();
                return Ok((
                    Sparse {
                        real_size,
                        segments,
                    },
                    consumed,
                ));
            }
        }
        if consumed >= max_bytes {
            return Err(Error::entry(
                name,
                Rule::Limit,
                "sparse map in the data is too long",
            ));
        }
        text.extend_from_slice(&next_block()?);
        consumed += 512;
    }
}

/// Encodes a format 1.0 map as it goes at the start of the entry's data (the inverse of
/// [`data_map`]): the segment count, then each segment's offset and length, one decimal
/// number per line, padded with zeros to a whole block.
pub fn encode_data_map(segments: &[Segment]) -> Vec<u8> {
    let mut text = format!("{}\n", segments.len()).into_bytes();
    for (off, len) in segments {
        text.extend_from_slice(format!("{off}\n{len}\n").as_bytes());
    }
    text.resize(text.len().div_ceil(512) * 512, 0);
    text
}

/// Checks a map against the data the stream carries for it.
pub fn validate(s: &Sparse, data: u64, name: &[u8]) -> Result<(), Error> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(off, len) in &s.segments {
        let stop = off
            .checked_add(len)
            .ok_or_else(|| bad(name, "sparse segment overflows"))?;
        if off < end || stop > s.real_size {
            return Err(bad(
                name,
                format!(
                    "sparse segment {off}+{len} overlaps or lies beyond the file's {} bytes",
                    s.real_size
                ),
            ));
        }
        end = stop;
        total += len;
    }
    if total != data {
        return Err(bad(
            name,
            format!("sparse map covers {total} bytes but the entry carries {data}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_maps() {
        let s = Sparse {
            real_size: 100,
            segments: vec![(0, 10), (50, 10)],
        };
        validate(&s, 20, b"f").unwrap();
        assert!(validate(&s, 21, b"f").is_err(), "data size must match");
        let overlap = Sparse {
            real_size: 100,
            segments: vec![(0, 10), (5, 10)],
        };
        assert!(validate(&overlap, 20, b"f").is_err());
        let beyond = Sparse {
            real_size: 10,
            segments: vec![(5, 10)],
        };
        assert!(validate(&beyond, 10, b"f").is_err());
        let overflow = Sparse {
            real_size: u64::MAX,
            segments: vec![(u64::MAX, 2)],
        };
        assert!(validate(&overflow, 2, b"f").is_err());
    }

    #[test]
    fn pax_maps() {
        let mut p = PaxSparse::default();
        for (k, v) in [(&b"size"[..], &b"1000"[..]), (b"map", b"0,10,500,20")] {
            p.record(k, v, 100).unwrap();
        }
        assert_eq!(
            p.header_map(b"f", 100).unwrap().segments,
            vec![(0, 10), (500, 20)]
        );
        let mut p = PaxSparse::default();
        for (k, v) in [
            (&b"size"[..], &b"9"[..]),
            (b"offset", b"1"),
            (b"numbytes", b"2"),
            (b"offset", b"5"),
            (b"numbytes", b"1"),
        ] {
            p.record(k, v, 100).unwrap();
        }
        assert_eq!(
            p.header_map(b"f", 100).unwrap().segments,
            vec![(1, 2), (5, 1)]
        );
        let mut p = PaxSparse::default();
        p.record(b"map", b"1,2,3", 100).unwrap();
        p.record(b"size", b"10", 100).unwrap();
        assert!(p.header_map(b"f", 100).is_err());
    }

    #[test]
    fn encoded_maps_read_back() {
        let segments = vec![(0, 10), (4096, 5), (1 << 40, 1)];
        let text = encode_data_map(&segments);
        assert_eq!(text.len(), 512);
        let mut blocks = text.chunks(512).map(|c| <[u8; 512]>::try_from(c).unwrap());
        let (s, used) = data_map(b"f", 1 << 41, 10, 4096, || Ok(blocks.next().unwrap())).unwrap();
        assert_eq!((s.segments, used), (segments, 512));
        let many: Vec<Segment> = (0..100).map(|i| (i * 1_000_000_000, 7)).collect();
        let text = encode_data_map(&many);
        assert_eq!(text.len() % 512, 0);
        let mut blocks = text.chunks(512).map(|c| <[u8; 512]>::try_from(c).unwrap());
        let (s, used) =
            data_map(b"f", 1 << 41, 200, 1 << 20, || Ok(blocks.next().unwrap())).unwrap();
        assert_eq!((s.segments, used), (many, text.len() as u64));
        assert_eq!(encode_data_map(&[]), {
            let mut v = b"0\n".to_vec();
            v.resize(512, 0);
            v
        });
    }

    #[test]
    fn data_maps_are_bounded() {
        let mut block = [0u8; 512];
        let text = b"2\n0\n10\n100\n5\n";
        block[..text.len()].copy_from_slice(text);
        let (s, used) = data_map(b"f", 200, 10, 4096, || Ok(block)).unwrap();
        assert_eq!((s.segments, used), (vec![(0, 10), (100, 5)], 512));
        let mut huge = [b'9'; 512];
        huge[511] = b'\n';
        assert!(data_map(b"f", 200, 10, 4096, || Ok(huge)).is_err());
        let endless = [b'1'; 512];
        assert_eq!(
            data_map(b"f", 200, 10, 2048, || Ok(endless))
                .unwrap_err()
                .rule(),
            Some(Rule::Limit)
        );
    }
}
