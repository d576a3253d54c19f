//! A block-level tar reader: strata reads the 512-byte blocks itself and uses the `tar` crate
//! only to decode header fields. Owning the block loop is what lets the engine cap every
//! variable-size record, insist that payloads are complete, and (for exact re-export) see every
//! byte that is not file content.
//!
//! Parsing rules (each pinned by a test below):
//! * The header checksum must match.
//! * A PAX `size` record always wins over the ustar size field (TARmageddon class).
//! * Entry types that carry no data (hard links, symlinks, directories, devices, fifos) must
//!   declare size 0: readers disagree on whether such data exists (Go skips it, tar-rs reads
//!   it), so a non-zero size is an attempt to make two parsers see different archives.
//! * PAX records (`x`, `g`) and GNU long names/links (`L`, `K`) are capped (1 MiB by default)
//!   and parsed strictly: a malformed record is an error, never skipped.
//! * Precedence is Go's: GNU long name/link over PAX `path`/`linkpath` over the header fields;
//!   a later `x` header replaces an earlier one; global `g` headers are read and ignored.
//! * The stream must end with the end-of-archive marker (a zero block; the second is optional,
//!   as in GNU tar); ending anywhere else is "truncated".
//! * Limits on total bytes and entry count are enforced as the stream is read.

use std::io::{self, Read};

use super::fsmeta::Time;
use super::sparse::{self, PaxSparse, Sparse};
use super::{Error, Rule};

/// Tar block size.
pub const BLOCK: usize = 512;

/// Resource limits for reading one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum uncompressed bytes read from the stream (headers, data and padding).
    pub max_bytes: u64,
    /// Maximum number of entries (extension headers not counted).
    pub max_entries: u64,
    /// Maximum size of one PAX header or GNU long name/link record.
    pub max_meta: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 40,
            max_entries: 10_000_000,
            max_meta: 1 << 20,
        }
    }
}

/// The type of a tar entry, as strata applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file (`0`, NUL, `7`).
    Regular,
    /// Directory (`5`, or a legacy NUL-type name ending in `/`).
    Dir,
    /// Symbolic link (`2`).
    Symlink,
    /// Hard link (`1`).
    Hardlink,
    /// Character device (`3`).
    Char,
    /// Block device (`4`).
    Block,
    /// FIFO (`6`).
    Fifo,
}

/// One entry's effective header, after extension records are applied.
#[derive(Debug, Clone)]
pub struct Header {
    /// Effective name (raw bytes).
    pub name: Vec<u8>,
    /// Effective link target (hard and symbolic links).
    pub link: Vec<u8>,
    /// Entry type.
    pub kind: Kind,
    /// Bytes of content that follow in the stream.
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Time,
    /// Access time, when the archive carries one.
    pub atime: Option<Time>,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes from `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For sparse files: the logical size and where the data segments go.
    pub sparse: Option<Sparse>,
    /// Offset of the entry's first header block in the uncompressed stream.
    pub offset: u64,
}

/// Reads entries from an uncompressed tar stream.
pub struct TarReader<R> {
    r: R,
    pos: u64,
    limits: Limits,
    entries: u64,
    /// Unread payload bytes of the current entry, then its padding.
    remaining: u64,
    padding: u64,
    current: Vec<u8>,
    done: bool,
    /// Whether bytes that are not claimed file content are kept for [`TarReader::take_meta`].
    recording: bool,
    meta: Vec<u8>,
    /// Whether the current entry's payload belongs to the caller (not recorded as meta).
    claimed: bool,
}

/// Records from one PAX header that strata interprets.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Time>,
    atime: Option<Time>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: Option<PaxSparse>,
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a PAX time (`[-]sec[.frac]`).
fn parse_pax_time(v: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec = parse_decimal(whole.as_bytes())? as i64;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if !neg {
        return Some(Time { sec, nsec });
    }
    // -1.25 means 1.25 s before the epoch: sec -2, nsec 0.75e9.
    if nsec == 0 {
        Some(Time { sec: -sec, nsec: 0 })
    } else {
        Some(Time {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        })
    }
}

impl Pax {
    /// Parses `LEN KEY=VALUE\n` records strictly.
    fn parse(data: &[u8], offset: u64, cap: usize) -> Result<Pax, Error> {
        let bad = |detail: String| Error::Stream { offset, detail };
        let mut pax = Pax::default();
        let mut rest = data;
        while !rest.is_empty() {
            let sp = rest
                .iter()
                .position(|b| *b == b' ')
                .ok_or_else(|| bad("PAX record without a length".into()))?;
            let len = parse_decimal(&rest[..sp])
                .ok_or_else(|| bad("PAX record length is not a number".into()))?
                as usize;
            if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(bad(format!(
                    "PAX record length {len} does not match its content"
                )));
            }
            let record = &rest[sp + 1..len - 1];
            let eq = record
                .iter()
                .position(|b| *b == b'=')
                .ok_or_else(|| bad("PAX record without '='".into()))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let num = |what: &str| {
                parse_decimal(value).ok_or_else(|| {
                    bad(format!(
                        "PAX {what} {:?} is not a number",
                        String::from_utf8_lossy(value)
                    ))
                })
            };
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => pax.size = Some(num("size")?),
                b"uid" => pax.uid = Some(num("uid")?),
                b"gid" => pax.gid = Some(num("gid")?),
                b"mtime" => {
                    pax.mtime = Some(
                        parse_pax_time(value)
                            .ok_or_else(|| bad("PAX mtime is malformed".into()))?,
                    )
                }
                b"atime" => {
                    pax.atime = Some(
                        parse_pax_time(value)
                            .ok_or_else(|| bad("PAX atime is malformed".into()))?,
                    )
                }
                _ if key.starts_with(b"SCHILY.xattr.") => pax
                    .xattrs
                    .push((key[b"SCHILY.xattr.".len()..].to_vec(), value.to_vec())),
                _ if key.starts_with(b"GNU.sparse.") => pax
                    .sparse
                    .get_or_insert_with(PaxSparse::default)
                    .record(&key[b"GNU.sparse.".len()..], value, cap)
                    .map_err(bad)?,
                // ctime, uname, gname, charset, comment, vendor records (MSWINDOWS.*,
                // LIBARCHIVE.*): carried byte-exact by the stream, not applied.
                _ => {}
            }
            rest = &rest[len..];
        }
        Ok(pax)
    }
}

impl<R: Read> TarReader<R> {
    /// Starts reading `r` under `limits`.
    pub fn new(r: R, limits: Limits) -> Self {
        TarReader {
            r,
            pos: 0,
            limits,
            entries: 0,
            remaining: 0,
            padding: 0,
            current: Vec::new(),
            done: false,
            recording: false,
            meta: Vec::new(),
            claimed: false,
        }
    }

    /// Keeps every byte that is not claimed file content (headers, extension records,
    /// padding, end-of-archive blocks), for exact re-export.
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// Takes the non-content bytes read since the last call.
    pub fn take_meta(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.meta)
    }

    /// Declares that the current entry's payload is the caller's (it will be stored as file
    /// content, so a recording references it instead of copying it).
    pub fn claim_payload(&mut self) {
        self.claimed = true;
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Name of the entry being read (for error messages).
    pub fn current_name(&self) -> &[u8] {
        &self.current
    }

    fn account(&mut self, n: u64) -> Result<(), Error> {
        self.pos += n;
        if self.pos > self.limits.max_bytes {
            return Err(Error::entry(
                &self.current,
                Rule::Limit,
                format!("layer exceeds {} bytes", self.limits.max_bytes),
            ));
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ended before the first byte.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, Error> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("reading the layer at byte {}", self.pos + got as u64),
                        e,
                    ))
                }
            }
        }
        self.account(got as u64)?;
        if self.recording {
            self.meta.extend_from_slice(&buf[..got]);
        }
        if got == 0 {
            return Ok(false);
        }
        if got < buf.len() {
            return Err(self.truncated());
        }
        Ok(true)
    }

    fn truncated(&self) -> Error {
        if self.current.is_empty() {
            Error::Stream {
                offset: self.pos,
                detail: "the stream ends in the middle of a tar block (truncated)".into(),
            }
        } else {
            Error::entry(
                &self.current,
                Rule::Format,
                format!(
                    "the stream ends at byte {} inside this entry (truncated)",
                    self.pos
                ),
            )
        }
    }

    /// Reads and discards `n` bytes.
    fn discard(&mut self, mut n: u64) -> Result<(), Error> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            if !self.fill(&mut buf[..k])? {
                return Err(self.truncated());
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads the rest of the current entry's payload and padding.
    pub fn skip_payload(&mut self) -> Result<(), Error> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.discard(n)
    }

    /// Payload bytes of the current entry not read yet.
    pub fn payload_remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads payload of the current entry into `buf`; `Ok(0)` once it is complete. A stream
    /// that ends before the declared size is an error naming the entry.
    pub fn read_payload(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.remaining == 0 {
            if self.padding > 0 {
                let p = self.padding;
                self.padding = 0;
                self.discard(p)?;
            }
            return Ok(0);
        }
        let want = (self.remaining.min(buf.len() as u64)) as usize;
        let n = loop {
            match self.r.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("reading the layer at byte {}", self.pos),
                        e,
                    ))
                }
            }
        };
        if n == 0 {
            return Err(self.truncated());
        }
        self.account(n as u64)?;
        if self.recording && !self.claimed {
            self.meta.extend_from_slice(&buf[..n]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads a whole extension record (PAX data or a GNU long name) of `size` bytes.
    fn read_meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>, Error> {
        if size > self.limits.max_meta {
            return Err(Error::entry(
                &self.current,
                Rule::Limit,
                format!(
                    "{what} of {size} bytes exceeds the {}-byte limit",
                    self.limits.max_meta
                ),
            ));
        }
        let mut data = vec![0u8; size as usize];
        if size > 0 && !self.fill(&mut data)? {
            return Err(self.truncated());
        }
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.discard(pad)?;
        Ok(data)
    }

    /// Advances to the next entry, skipping whatever is left of the current one. `Ok(None)` at
    /// the end-of-archive marker.
    pub fn next_entry(&mut self) -> Result<Option<Header>, Error> {
        if self.done {
            return Ok(None);
        }
        self.skip_payload()?;
        self.claimed = false;
        self.current.clear();
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut extensions = 0;
        let mut block = [0u8; BLOCK];
        let cap = sparse::max_segments(self.limits.max_meta);
        loop {
            let offset = self.pos;
            if !self.fill(&mut block)? {
                if offset == 0 {
                    // A stream with no bytes at all is an empty layer, as for Docker (Go's
                    // tar reader reports a clean end); anything else must end properly.
                    self.done = true;
                    return Ok(None);
                }
                return Err(Error::Stream {
                    offset,
                    detail: "the stream ends without the end-of-archive marker (truncated)".into(),
                });
            }
            if block.iter().all(|b| *b == 0) {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(Error::Stream {
                        offset,
                        detail: "extension header not followed by an entry".into(),
                    });
                }
                // A second zero block is customary; GNU tar accepts one.
                let mut second = [0u8; BLOCK];
                let _ = self.fill(&mut second)?;
                self.done = true;
                return Ok(None);
            }
            let h = tar::Header::from_byte_slice(&block);
            self.current = h.path_bytes().into_owned();
            verify_checksum(&block, offset)?;
            let stored_size = parse_numeric(&block[124..136]).ok_or_else(|| Error::Stream {
                offset,
                detail: "bad size field".into(),
            })?;
            let flag = block[156];
            match flag {
                b'x' | b'g' | b'L' | b'K' => {
                    extensions += 1;
                    if extensions > 16 {
                        return Err(Error::Stream {
                            offset,
                            detail: "more than 16 extension headers in a row".into(),
                        });
                    }
                    let data = self.read_meta(stored_size, "extension header")?;
                    match flag {
                        b'x' => pax = Some(Pax::parse(&data, offset, cap)?),
                        b'g' => {
                            Pax::parse(&data, offset, cap)?;
                        }
                        b'L' => long_name = Some(gnu_string(&data, offset, "long name")?),
                        _ => long_link = Some(gnu_string(&data, offset, "long link")?),
                    }
                    continue;
                }
                _ => {}
            }
            let pax = pax.unwrap_or_default();
            let mut name = long_name
                .or(pax.path.clone())
                .unwrap_or_else(|| h.path_bytes().into_owned());
            let link = long_link
                .or(pax.linkpath.clone())
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned()))
                .unwrap_or_default();
            self.current = name.clone();
            let kind = match flag {
                b'0' | b'7' => Kind::Regular,
                0 if name.ends_with(b"/") => Kind::Dir,
                0 => Kind::Regular,
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'S' => Kind::Regular,
                other => {
                    return Err(Error::entry(
                        &name,
                        Rule::Unsupported,
                        format!("entry type {:?} is not supported", other as char),
                    ))
                }
            };
            let mut size = pax.size.unwrap_or(stored_size);
            let total = size;
            let sparse_map = if flag == b'S' {
                let mut next = || -> Result<[u8; BLOCK], Error> {
                    let mut b = [0u8; BLOCK];
                    if !self.fill(&mut b)? {
                        return Err(self.truncated());
                    }
                    Ok(b)
                };
                Some(sparse::old_gnu(&block, &name, cap, &mut next)?)
            } else if let Some(ps) = &pax.sparse {
                if kind != Kind::Regular {
                    return Err(Error::entry(
                        &name,
                        Rule::Format,
                        "sparse records on a non-file entry",
                    ));
                }
                if let Some(real) = &ps.name {
                    name = real.clone();
                    self.current = name.clone();
                }
                if ps.map_in_data() {
                    let real_size = ps.real_size(&name)?;
                    let limit = self.limits.max_meta.min(size);
                    let (map, used) = {
                        let mut next = || -> Result<[u8; BLOCK], Error> {
                            let mut b = [0u8; BLOCK];
                            if !self.fill(&mut b)? {
                                return Err(self.truncated());
                            }
                            Ok(b)
                        };
                        sparse::data_map(&name, real_size, cap, limit, &mut next)?
                    };
                    size -= used;
                    Some(map)
                } else {
                    Some(ps.header_map(&name, cap)?)
                }
            } else {
                None
            };
            if let Some(m) = &sparse_map {
                sparse::validate(m, size, &name)?;
            }
            if kind != Kind::Regular && size != 0 {
                return Err(Error::entry(
                    &name,
                    Rule::Format,
                    format!("a {kind:?} entry declares {size} bytes of data; readers disagree on whether they exist"),
                ));
            }
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(Error::entry(
                    &name,
                    Rule::Limit,
                    format!("more than {} entries", self.limits.max_entries),
                ));
            }
            let num = |range: std::ops::Range<usize>, what: &str| {
                parse_numeric(&block[range])
                    .ok_or_else(|| Error::entry(&name, Rule::Format, format!("bad {what} field")))
            };
            let id = |v: u64, what: &str| -> Result<u32, Error> {
                if v >= u32::MAX as u64 {
                    return Err(Error::entry(
                        &name,
                        Rule::Limit,
                        format!("{what} {v} is out of range"),
                    ));
                }
                Ok(v as u32)
            };
            let uid = id(
                match pax.uid {
                    Some(v) => v,
                    None => num(108..116, "uid")?,
                },
                "uid",
            )?;
            let gid = id(
                match pax.gid {
                    Some(v) => v,
                    None => num(116..124, "gid")?,
                },
                "gid",
            )?;
            let mtime = match pax.mtime {
                Some(t) => t,
                None => Time {
                    sec: num(136..148, "mtime")?.min(i64::MAX as u64) as i64,
                    nsec: 0,
                },
            };
            let gnu = &block[257..265] == b"ustar  \0";
            let atime = match pax.atime {
                Some(t) => Some(t),
                None if gnu => match num(345..357, "atime")? {
                    0 => None,
                    a => Some(Time {
                        sec: a.min(i64::MAX as u64) as i64,
                        nsec: 0,
                    }),
                },
                None => None,
            };
            let mode = (num(100..108, "mode")? & 0o7777) as u32;
            let (dev_major, dev_minor) = if matches!(kind, Kind::Char | Kind::Block) {
                let dev = |range, what: &str| -> Result<u32, Error> {
                    let v = parse_numeric(&block[range]).ok_or_else(|| {
                        Error::entry(&name, Rule::Device, format!("bad {what} number"))
                    })?;
                    u32::try_from(v).map_err(|_| {
                        Error::entry(
                            &name,
                            Rule::Device,
                            format!("{what} number {v} is out of range"),
                        )
                    })
                };
                (dev(329..337, "major")?, dev(337..345, "minor")?)
            } else {
                (0, 0)
            };
            if kind == Kind::Dir {
                while name.len() > 1 && name.ends_with(b"/") {
                    name.pop();
                }
            }
            self.remaining = size;
            self.padding = (BLOCK as u64 - total % BLOCK as u64) % BLOCK as u64;
            return Ok(Some(Header {
                name,
                link,
                kind,
                size,
                mode,
                uid,
                gid,
                mtime,
                atime,
                dev_major,
                dev_minor,
                xattrs: pax.xattrs,
                sparse: sparse_map,
                offset,
            }));
        }
    }

    /// After the end-of-archive marker: reads the rest of the stream (so that a compressed
    /// stream's checksum is verified and a digest covers every byte) and returns the input.
    /// When recording, the pending meta bytes and then the trailing bytes go to `sink`.
    pub fn finish(mut self, sink: &mut dyn FnMut(&[u8])) -> Result<R, Error> {
        if self.recording {
            sink(&std::mem::take(&mut self.meta));
        }
        let mut buf = [0u8; 8192];
        loop {
            match self.r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.account(n as u64)?;
                    if self.recording {
                        sink(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("reading the layer after its end at byte {}", self.pos),
                        e,
                    ))
                }
            }
        }
        Ok(self.r)
    }
}

/// Decodes a numeric header field as Go's `archive/tar` does: base-256 when the high bit of
/// the first byte is set (negative values rejected), otherwise octal text with surrounding
/// spaces and NULs ignored; an empty field is 0.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if let Some(first) = field.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return None; // negative
            }
            let mut v: u64 = (first & 0x3f) as u64;
            for b in &field[1..] {
                v = v.checked_mul(256)?.checked_add(*b as u64)?;
            }
            return Some(v);
        }
    }
    let start = field
        .iter()
        .position(|b| *b != b' ' && *b != 0)
        .unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| *b != b' ' && *b != 0)
        .map_or(start, |e| e + 1);
    let text = &field[start..end];
    if text.is_empty() {
        return Some(0);
    }
    if !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 8).ok()
}

/// A GNU long name/link record: the name, NUL-terminated. Trailing NULs are dropped; a NUL
/// inside the name is an error (readers would cut the name at different places).
fn gnu_string(data: &[u8], offset: u64, what: &str) -> Result<Vec<u8>, Error> {
    let mut end = data.len();
    while end > 0 && data[end - 1] == 0 {
        end -= 1;
    }
    if data[..end].contains(&0) {
        return Err(Error::Stream {
            offset,
            detail: format!("GNU {what} contains a NUL byte"),
        });
    }
    Ok(data[..end].to_vec())
}

/// Checks a header block's checksum (unsigned sum, or the historical signed sum).
fn verify_checksum(block: &[u8; BLOCK], offset: u64) -> Result<(), Error> {
    let field = &block[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| *b != 0 && *b != b' ')
        .collect();
    let stored = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
        .ok_or_else(|| Error::Stream {
            offset,
            detail: "header checksum field is not an octal number".into(),
        })?;
    let mut unsigned: u32 = 0;
    let mut signed: i32 = 0;
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += b as u32;
        signed += b as i8 as i32;
    }
    if stored != unsigned && stored as i32 != signed {
        return Err(Error::Stream {
            offset,
            detail: format!("header checksum mismatch (stored {stored}, computed {unsigned})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, ty: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    /// One `LEN KEY=VALUE\n` record, LEN counting its own digits.
    pub(crate) fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
        let rest = 1 + k.len() + 1 + v.len() + 1;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        let mut r = format!("{len} {k}=").into_bytes();
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    }

    fn pax_block(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        let mut out = header("pax", tar::EntryType::XHeader, data.len() as u64)
            .as_bytes()
            .to_vec();
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(Header, Vec<u8>)>, Error> {
        let mut r = TarReader::new(bytes, Limits::default());
        let mut out = Vec::new();
        while let Some(h) = r.next_entry()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_payload(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((h, data));
        }
        r.finish(&mut |_| {})?;
        Ok(out)
    }

    fn end() -> Vec<u8> {
        vec![0u8; 1024]
    }

    #[test]
    fn reads_plain_entries() {
        let mut t = header("a.txt", tar::EntryType::Regular, 5)
            .as_bytes()
            .to_vec();
        t.extend_from_slice(b"hello");
        t.resize(1024, 0);
        t.extend(header("d/", tar::EntryType::Directory, 0).as_bytes());
        t.extend(end());
        let e = read_all(&t).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0.name, b"a.txt");
        assert_eq!(e[0].1, b"hello");
        assert_eq!(e[1].0.kind, Kind::Dir);
        assert_eq!(e[1].0.name, b"d");
    }

    #[test]
    fn pax_size_wins_over_ustar_size() {
        // ustar says 0; PAX says 600: the 600 bytes are content, not a smuggled header.
        let mut smuggled = header("evil", tar::EntryType::Regular, 0)
            .as_bytes()
            .to_vec();
        smuggled.resize(600, b'x');
        let mut t = pax_block(&[("size", b"600")]);
        t.extend(header("f", tar::EntryType::Regular, 0).as_bytes());
        t.extend(&smuggled);
        t.resize(t.len().div_ceil(BLOCK) * BLOCK, 0);
        t.extend(end());
        let e = read_all(&t).unwrap();
        assert_eq!(e.len(), 1, "the smuggled header must be read as data");
        assert_eq!(e[0].0.size, 600);
        assert_eq!(e[0].1, smuggled);
    }

    #[test]
    fn pax_path_and_xattrs_apply() {
        let mut t = pax_block(&[
            ("path", b"long/name/from/pax"),
            ("SCHILY.xattr.user.k", b"v\0bin"),
            ("mtime", b"1700000000.5"),
        ]);
        t.extend(header("short", tar::EntryType::Regular, 0).as_bytes());
        t.extend(end());
        let e = read_all(&t).unwrap();
        assert_eq!(e[0].0.name, b"long/name/from/pax");
        assert_eq!(
            e[0].0.xattrs,
            vec![(b"user.k".to_vec(), b"v\0bin".to_vec())]
        );
        assert_eq!(
            e[0].0.mtime,
            Time {
                sec: 1_700_000_000,
                nsec: 500_000_000
            }
        );
    }

    #[test]
    fn empty_stream_is_an_empty_layer() {
        assert!(read_all(&[]).unwrap().is_empty());
    }

    #[test]
    fn truncation_is_an_error() {
        let mut t = header("f", tar::EntryType::Regular, 1000)
            .as_bytes()
            .to_vec();
        t.extend(vec![b'a'; 700]);
        let err = read_all(&t).unwrap_err();
        assert_eq!(err.rule(), Some(Rule::Format));
        assert!(
            err.to_string().contains("\"f\"") && err.to_string().contains("truncated"),
            "{err}"
        );
        // Ends cleanly between entries but without the end-of-archive marker.
        let mut t = header("g", tar::EntryType::Regular, 3).as_bytes().to_vec();
        t.extend(b"abc");
        t.resize(1024, 0);
        let err = read_all(&t).unwrap_err();
        assert!(err.to_string().contains("end-of-archive"), "{err}");
        // Mid-header.
        let t = header("h", tar::EntryType::Regular, 0).as_bytes()[..300].to_vec();
        assert!(read_all(&t).is_err());
    }

    #[test]
    fn header_only_types_must_not_declare_data() {
        let mut h = header("l", tar::EntryType::Symlink, 512);
        h.set_link_name("target").unwrap();
        h.set_cksum();
        let mut t = h.as_bytes().to_vec();
        t.extend(header("smuggled", tar::EntryType::Regular, 0).as_bytes());
        t.extend(end());
        let err = read_all(&t).unwrap_err();
        assert_eq!(err.rule(), Some(Rule::Format));
    }

    #[test]
    fn bad_checksum_and_malformed_pax_are_errors() {
        let mut t = header("f", tar::EntryType::Regular, 0).as_bytes().to_vec();
        t[0] = b'g';
        t.extend(end());
        assert!(read_all(&t).unwrap_err().to_string().contains("checksum"));
        let mut t = header("pax", tar::EntryType::XHeader, 12)
            .as_bytes()
            .to_vec();
        let mut data = b"99 path=x\n".to_vec();
        data.resize(BLOCK, 0);
        t.extend(data);
        t.extend(header("f", tar::EntryType::Regular, 0).as_bytes());
        t.extend(end());
        assert!(read_all(&t).is_err());
    }

    #[test]
    fn limits_apply() {
        let mut t = Vec::new();
        for i in 0..5 {
            t.extend(header(&format!("f{i}"), tar::EntryType::Regular, 0).as_bytes());
        }
        t.extend(end());
        let mut r = TarReader::new(
            t.as_slice(),
            Limits {
                max_entries: 3,
                ..Limits::default()
            },
        );
        let mut err = None;
        for _ in 0..5 {
            match r.next_entry() {
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err.unwrap().rule(), Some(Rule::Limit));
        // A long-name record beyond max_meta.
        let mut t = header("././@LongLink", tar::EntryType::GNULongName, 5000)
            .as_bytes()
            .to_vec();
        t.extend(vec![b'a'; 5120]);
        let mut r = TarReader::new(
            t.as_slice(),
            Limits {
                max_meta: 4096,
                ..Limits::default()
            },
        );
        assert_eq!(r.next_entry().unwrap_err().rule(), Some(Rule::Limit));
        // Total bytes.
        let mut t = header("big", tar::EntryType::Regular, 4096)
            .as_bytes()
            .to_vec();
        t.extend(vec![0u8; 4096]);
        t.extend(end());
        let mut r = TarReader::new(
            t.as_slice(),
            Limits {
                max_bytes: 2048,
                ..Limits::default()
            },
        );
        r.next_entry().unwrap();
        let mut buf = [0u8; 4096];
        let mut res = Ok(1);
        while let Ok(n) = res {
            if n == 0 {
                break;
            }
            res = r.read_payload(&mut buf);
        }
        assert_eq!(res.unwrap_err().rule(), Some(Rule::Limit));
    }

    #[test]
    fn gnu_long_name_overrides_pax_path_and_rejects_nul() {
        let mut t = pax_block(&[("path", b"from-pax")]);
        let name = b"from-gnu\0";
        t.extend(
            header(
                "././@LongLink",
                tar::EntryType::GNULongName,
                name.len() as u64,
            )
            .as_bytes(),
        );
        let mut d = name.to_vec();
        d.resize(BLOCK, 0);
        t.extend(d);
        t.extend(header("short", tar::EntryType::Regular, 0).as_bytes());
        t.extend(end());
        assert_eq!(read_all(&t).unwrap()[0].0.name, b"from-gnu");
        let name = b"a\0../../x";
        let mut t = header(
            "././@LongLink",
            tar::EntryType::GNULongName,
            name.len() as u64,
        )
        .as_bytes()
        .to_vec();
        let mut d = name.to_vec();
        d.resize(BLOCK, 0);
        t.extend(d);
        t.extend(header("short", tar::EntryType::Regular, 0).as_bytes());
        t.extend(end());
        assert!(read_all(&t).is_err());
    }

    #[test]
    fn numeric_fields_like_go() {
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  755 \0"), Some(0o755));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]), Some(256));
        assert_eq!(
            parse_numeric(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(parse_numeric(b"0009\0"), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Time {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(parse_pax_time(b"12"), Some(Time { sec: 12, nsec: 0 }));
        assert_eq!(
            parse_pax_time(b"1.0000000019"),
            Some(Time { sec: 1, nsec: 1 })
        );
        assert_eq!(parse_pax_time(b"1.x"), None);
    }
}
