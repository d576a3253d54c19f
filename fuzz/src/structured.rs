//! Structured inputs for the `apply_structured` target: a list of entries whose names and
//! link targets are drawn from a vocabulary aimed at the hostile parent layer (`evil`, `up`,
//! `abs`, `upv`, `d/…`, `..`, whiteout prefixes, the victim's absolute path), serialised to a
//! well-formed tar, so the fuzzer spends its time on apply semantics rather than on checksums.

use arbitrary::Arbitrary;

const BLOCK: usize = 512;

/// Path components; the index is taken modulo the table size. `@VICTIM` is replaced by the
/// victim directory's absolute path (without its leading `/`).
const WORDS: &[&str] = &[
    "evil",
    "up",
    "abs",
    "absmarker",
    "upv",
    "upm",
    "d",
    "o",
    "x",
    "f",
    "f2",
    "loop",
    "ping",
    "..",
    ".",
    "",
    ".wh.x",
    ".wh..wh..opq",
    ".wh.evil",
    ".wh.d",
    ".wh.f",
    ".wh.",
    ".wh..wh.plnk",
    "marker",
    "marker-link",
    "dir",
    "secret",
    "etc",
    "new",
    "@VICTIM",
    "meta.redb",
    "layers",
    "staging",
    "base",
    "fs",
];

/// A path: components joined by `/`, optionally absolute, optionally with a trailing `/`.
#[derive(Debug, Arbitrary)]
pub struct PathSpec {
    absolute: bool,
    trailing_slash: bool,
    parts: Vec<u8>,
}

impl PathSpec {
    fn render(&self, victim: &str) -> Vec<u8> {
        let mut out = Vec::new();
        if self.absolute {
            out.push(b'/');
        }
        for (i, p) in self.parts.iter().take(6).enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            let w = WORDS[*p as usize % WORDS.len()];
            if w == "@VICTIM" {
                out.extend_from_slice(victim.trim_start_matches('/').as_bytes());
            } else {
                out.extend_from_slice(w.as_bytes());
            }
        }
        if self.trailing_slash {
            out.push(b'/');
        }
        out
    }
}

/// What an entry is.
#[derive(Debug, Arbitrary)]
pub enum Kind {
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(PathSpec),
    /// A hard link to this target.
    Hardlink(PathSpec),
    /// A fifo.
    Fifo,
    /// A character device (major, minor).
    Char(u16, u16),
    /// A block device (major, minor).
    Block(u16, u16),
    /// A GNU sparse file: real size (KiB), data chunks at (KiB offset, bytes).
    Sparse(u16, Vec<(u16, Vec<u8>)>),
}

/// One entry.
#[derive(Debug, Arbitrary)]
pub struct EntrySpec {
    path: PathSpec,
    kind: Kind,
    mode: u16,
    owner: u8,
    /// PAX records to put before it: (xattr-ish key index, value).
    pax: Vec<(u8, Vec<u8>)>,
    /// Pad the name with `x/` components past 100 bytes (a GNU long-name entry).
    long: bool,
}

/// A whole input: entries and whether the end-of-archive blocks are written.
#[derive(Debug, Arbitrary)]
pub struct TarSpec {
    entries: Vec<EntrySpec>,
    end_blocks: bool,
}

const PAX_KEYS: &[&str] = &[
    "SCHILY.xattr.user.a",
    "SCHILY.xattr.trusted.t",
    "SCHILY.xattr.trusted.overlay.opaque",
    "SCHILY.xattr.security.selinux",
    "SCHILY.xattr.security.capability",
    "path",
    "linkpath",
    "mtime",
    "uid",
    "size",
    "GNU.sparse.map",
    "GNU.sparse.size",
];

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    let b = s.as_bytes();
    let n = b.len().min(field.len());
    field[..n].copy_from_slice(&b[b.len() - n..]);
}

fn header(name: &[u8], kind: u8, size: u64, link: &[u8], mode: u32, owner: u8) -> Vec<u8> {
    let mut h = vec![0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], u64::from(owner));
    octal(&mut h[116..124], u64::from(owner));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(b"ustar  \0");
    h
}

/// Writes the checksum of a header block.
fn seal(mut h: Vec<u8>) -> Vec<u8> {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl TarSpec {
    /// The tar these entries describe.
    pub fn to_tar(&self, victim: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.entries.iter().take(64) {
            let mut name = e.path.render(victim);
            if e.long {
                let mut padded = b"x/".repeat(60);
                padded.extend_from_slice(&name);
                name = padded;
            }
            if !e.pax.is_empty() {
                let mut records = Vec::new();
                for (k, v) in e.pax.iter().take(8) {
                    records.extend(pax_record(PAX_KEYS[*k as usize % PAX_KEYS.len()], v));
                }
                out.extend(seal(header(
                    b"PaxHeader",
                    b'x',
                    records.len() as u64,
                    b"",
                    0o644,
                    0,
                )));
                push_data(&mut out, &records);
            }
            if name.len() > 100 {
                let mut long = name.clone();
                long.push(0);
                out.extend(seal(header(
                    b"././@LongLink",
                    b'L',
                    long.len() as u64,
                    b"",
                    0o644,
                    0,
                )));
                push_data(&mut out, &long);
            }
            let mode = u32::from(e.mode) & 0o7777;
            let (kind, data, link): (u8, Vec<u8>, Vec<u8>) = match &e.kind {
                Kind::File(d) => (b'0', d.clone(), Vec::new()),
                Kind::Dir => (b'5', Vec::new(), Vec::new()),
                Kind::Symlink(t) => (b'2', Vec::new(), t.render(victim)),
                Kind::Hardlink(t) => (b'1', Vec::new(), t.render(victim)),
                Kind::Fifo => (b'6', Vec::new(), Vec::new()),
                Kind::Char(..) => (b'3', Vec::new(), Vec::new()),
                Kind::Block(..) => (b'4', Vec::new(), Vec::new()),
                Kind::Sparse(..) => (b'S', Vec::new(), Vec::new()),
            };
            if link.len() > 100 {
                let mut long = link.clone();
                long.push(0);
                out.extend(seal(header(
                    b"././@LongLink",
                    b'K',
                    long.len() as u64,
                    b"",
                    0o644,
                    0,
                )));
                push_data(&mut out, &long);
            }
            let mut h = header(&name, kind, data.len() as u64, &link, mode, e.owner);
            match &e.kind {
                Kind::Char(a, b) | Kind::Block(a, b) => {
                    octal(&mut h[329..337], u64::from(*a));
                    octal(&mut h[337..345], u64::from(*b));
                }
                Kind::Sparse(real, chunks) => {
                    let mut stored = Vec::new();
                    for (i, (off, d)) in chunks.iter().take(4).enumerate() {
                        let at = 386 + i * 24;
                        octal(&mut h[at..at + 12], u64::from(*off) * 1024);
                        octal(&mut h[at + 12..at + 24], d.len() as u64);
                        stored.extend_from_slice(d);
                    }
                    octal(&mut h[483..495], u64::from(*real) * 1024);
                    octal(&mut h[124..136], stored.len() as u64);
                    out.extend(seal(h));
                    push_data(&mut out, &stored);
                    continue;
                }
                _ => {}
            }
            out.extend(seal(h));
            push_data(&mut out, &data);
        }
        if self.end_blocks {
            out.extend_from_slice(&[0; 2 * BLOCK]);
        }
        out
    }
}
