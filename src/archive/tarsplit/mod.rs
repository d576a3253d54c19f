//! Exact re-export ("tar-split"): recording an applied stream so `diff` can give it back byte
//! for byte, and keeping the payloads of files the layer itself later replaced.
//!
//! While a layer is applied, every byte of the uncompressed stream that is not file content —
//! headers, PAX and GNU extension records, padding, the end-of-archive blocks and whatever
//! trails them — is recorded verbatim, and every file payload is recorded as a reference to
//! the file that now holds those bytes. Reassembling the records with the layer's files gives
//! back the original stream byte for byte, so its sha256 (the layer's diffID) is unchanged,
//! whatever tool wrote the tar and whatever vendor records (e.g. Windows `MSWINDOWS.*`) it has.
//!
//! When the layer's own tar later replaces or deletes a file it wrote (the same name twice, a
//! file then its whiteout, a directory replaced by a file), the earlier file is moved into
//! `tarsplit-blobs/` instead of being deleted, so the bytes the stream carried stay
//! retrievable.
//!
//! Files inside the layer directory:
//! * `tarsplit.zst`: records `M <len> <bytes>` (verbatim stream bytes), `F <size> <loc> <name>`
//!   (a payload of `size` bytes from location `loc`, entry name `name`), `E` (end);
//! * `tarsplit-index.zst`: the location table, written last because locations change during
//!   the apply: the directories that hold payloads as (parent, name) nodes, then per payload
//!   `Q <node>` (the file is named by the last component of its entry's name) or `B <n>`
//!   (`tarsplit-blobs/<n>`). Paths are never spelled out, so
//!   trees deeper than `PATH_MAX` are recorded and reopened one component at a time. (The
//!   first version's `P <path>` locations are still read.)
//! * `tarsplit-blobs/`: payloads the layer itself replaced.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::sparse::Segment;
use super::Error;
use crate::fsutil;

/// Record stream file name.
pub const RECORDS: &str = "tarsplit.zst";
/// Location table file name.
pub const INDEX: &str = "tarsplit-index.zst";
/// Directory of replaced payloads.
pub const BLOBS: &str = "tarsplit-blobs";

const MAGIC_RECORDS: &[u8] = b"STRATA-TARSPLIT\x01";
const MAGIC_INDEX: &[u8] = b"STRATA-TSINDEX\x01";
const MAGIC_INDEX2: &[u8] = b"STRATA-TSINDEX\x02";

mod recorder;
pub use recorder::Recorder;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Path(Vec<u8>),
    /// In a directory node, under the last component of the entry's name.
    At(u32),
    Blob(u64),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_varint(r: &mut dyn Read) -> io::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        r.read_exact(&mut b)?;
        v |= ((b[0] & 0x7f) as u64) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "varint too long",
    ))
}

fn get_bytes(r: &mut dyn Read, limit: u64) -> io::Result<Vec<u8>> {
    let n = get_varint(r)?;
    if n > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "record too long",
        ));
    }
    let mut v = vec![0u8; n as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

fn corrupt(what: &str) -> Error {
    Error::io(
        format!("reading the layer's tar-split record: {what}"),
        io::Error::new(io::ErrorKind::InvalidData, what.to_string()),
    )
}

/// Whether `layer_dir` holds a tar-split record.
pub fn exists(layer_dir: &Path) -> bool {
    layer_dir.join(RECORDS).is_file() && layer_dir.join(INDEX).is_file()
}

/// The directory nodes (parent, name; node 0, the root, is not listed) and locations.
type Index = (Vec<(u32, Vec<u8>)>, Vec<Location>);

fn read_index(layer_dir: &Path) -> Result<Index, Error> {
    let path = layer_dir.join(INDEX);
    let raw =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let data = zstd::decode_all(raw.as_slice())
        .map_err(|e| Error::io(format!("decompressing {}", path.display()), e))?;
    let mut nodes = Vec::new();
    let mut r = if let Some(mut r) = data.strip_prefix(MAGIC_INDEX2) {
        let n = get_varint(&mut r).map_err(|_| corrupt("truncated index"))?;
        nodes.reserve(n.min(1 << 20) as usize);
        for i in 0..n {
            let parent = get_varint(&mut r).map_err(|_| corrupt("truncated index"))?;
            if parent > i {
                return Err(corrupt("bad directory node"));
            }
            let name = get_bytes(&mut r, 1 << 16).map_err(|_| corrupt("bad directory node"))?;
            nodes.push((parent as u32, name));
        }
        r
    } else {
        data.strip_prefix(MAGIC_INDEX)
            .ok_or_else(|| corrupt("bad index header"))?
    };
    let n = get_varint(&mut r).map_err(|_| corrupt("truncated index"))?;
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let mut tag = [0u8];
        r.read_exact(&mut tag)
            .map_err(|_| corrupt("truncated index"))?;
        out.push(match tag[0] {
            b'P' => {
                Location::Path(get_bytes(&mut r, 1 << 20).map_err(|_| corrupt("bad index path"))?)
            }
            b'Q' => {
                let dir = get_varint(&mut r).map_err(|_| corrupt("bad index entry"))?;
                if dir > nodes.len() as u64 {
                    return Err(corrupt("bad index entry"));
                }
                Location::At(dir as u32)
            }
            b'B' => Location::Blob(get_varint(&mut r).map_err(|_| corrupt("bad index blob"))?),
            _ => return Err(corrupt("bad index tag")),
        });
    }
    Ok((nodes, out))
}

/// Reads recorded payloads back by location, for reassembling the recorded stream.
pub struct FileGetter {
    root: OwnedFd,
    blobs: Option<OwnedFd>,
    /// Directory nodes of the index (parent, name), node 0 being the root.
    nodes: Vec<(u32, Vec<u8>)>,
    /// Directories opened last, by node (a few, for the files that follow in them).
    open: std::cell::RefCell<Vec<(u32, std::rc::Rc<OwnedFd>)>>,
    locations: Vec<Location>,
    names: HashMap<Vec<u8>, (usize, u64)>,
}

impl FileGetter {
    /// Opens the record in `layer_dir` whose content root is `root`.
    pub fn open(layer_dir: &Path, root: BorrowedFd<'_>) -> Result<FileGetter, Error> {
        let (nodes, locations) = read_index(layer_dir)?;
        let blobs_path = layer_dir.join(BLOBS);
        let blobs = if blobs_path.is_dir() {
            Some(
                fsutil::open_dir(&blobs_path)
                    .map_err(|e| Error::io(format!("opening {}", blobs_path.display()), e))?,
            )
        } else {
            None
        };
        Ok(FileGetter {
            root: root
                .try_clone_to_owned()
                .map_err(|e| Error::io("duplicating the root fd", e))?,
            blobs,
            nodes,
            open: Default::default(),
            locations,
            names: HashMap::new(),
        })
    }

    /// Opens payload number `idx` (of the entry named `entry`) and checks it still has
    /// `size` bytes (`u64::MAX`: any).
    fn open_payload(&self, idx: usize, entry: &[u8], size: u64) -> Result<File, Error> {
        let loc = self
            .locations
            .get(idx)
            .ok_or_else(|| corrupt("payload index out of range"))?;
        let file = match loc {
            Location::Path(p) => {
                fsutil::open_regular_beneath(self.root.as_fd(), OsStr::from_bytes(p)).map_err(
                    |e| {
                        Error::io(
                            format!("opening {} for exact re-export", String::from_utf8_lossy(p)),
                            e,
                        )
                    },
                )?
            }
            Location::At(dir) => {
                let comps = crate::archive::name::clean(entry)
                    .map_err(|_| corrupt("a recorded entry name is not valid"))?;
                let name = comps
                    .last()
                    .ok_or_else(|| corrupt("a recorded entry names the root"))?;
                let d = self.open_node(*dir)?;
                fsutil::open_regular_at(d.as_fd(), OsStr::from_bytes(name)).map_err(|e| {
                    Error::io(
                        format!(
                            "opening {} for exact re-export",
                            String::from_utf8_lossy(name)
                        ),
                        e,
                    )
                })?
            }
            Location::Blob(n) => {
                let blobs = self
                    .blobs
                    .as_ref()
                    .ok_or_else(|| corrupt("missing blob directory"))?;
                fsutil::open_regular_beneath(blobs.as_fd(), OsStr::new(&n.to_string()))
                    .map_err(|e| Error::io("opening a kept payload", e))?
            }
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("inspecting a payload", e))?
            .len();
        if size != u64::MAX && len != size {
            return Err(Error::io(
                "exact re-export",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a file changed size since it was applied ({len} bytes, {size} recorded)"
                    ),
                ),
            ));
        }
        Ok(file)
    }

    /// Opens directory node `node` from the nearest one open (or the root), one component
    /// at a time without following symlinks.
    fn open_node(&self, node: u32) -> Result<std::rc::Rc<OwnedFd>, Error> {
        let mut open = self.open.borrow_mut();
        let mut chain = Vec::new();
        let mut n = node;
        let mut base = loop {
            if let Some((_, fd)) = open.iter().find(|(k, _)| *k == n) {
                break fd.clone();
            }
            if n == 0 {
                let fd = self
                    .root
                    .try_clone()
                    .map_err(|e| Error::io("duplicating the root fd", e))?;
                break std::rc::Rc::new(fd);
            }
            chain.push(n);
            n = self.nodes[n as usize - 1].0;
        };
        for &c in chain.iter().rev() {
            let name = &self.nodes[c as usize - 1].1;
            let fd = fsutil::open_dir_at(base.as_fd(), OsStr::from_bytes(name)).map_err(|e| {
                Error::io(
                    format!(
                        "opening directory {} for exact re-export",
                        String::from_utf8_lossy(name)
                    ),
                    e,
                )
            })?;
            base = std::rc::Rc::new(fd);
            open.push((c, base.clone()));
            if open.len() > 64 {
                open.remove(0);
            }
        }
        Ok(base)
    }

    /// Opens the payload of the entry called `name` in the applied tar (its last occurrence).
    pub fn get(&mut self, layer_dir: &Path, name: &[u8]) -> Result<File, Error> {
        if self.names.is_empty() {
            walk_records(layer_dir, &mut |rec| {
                if let Record::File {
                    size,
                    idx,
                    name,
                    segments,
                } = rec
                {
                    // A sparse file's length is its logical size, not its payload's.
                    let expect = if segments.is_some() { u64::MAX } else { size };
                    self.names.insert(name, (idx, expect));
                }
                Ok(())
            })?;
        }
        let (idx, size) = *self.names.get(name).ok_or_else(|| {
            Error::io(
                format!(
                    "no payload named {:?} in the layer's record",
                    String::from_utf8_lossy(name)
                ),
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        self.open_payload(idx, name, size)
    }
}

enum Record {
    Meta(u64),
    File {
        size: u64,
        idx: usize,
        name: Vec<u8>,
        /// Sparse files: where each run of the payload lies in the file.
        segments: Option<Vec<Segment>>,
    },
}

/// Walks the records; for `Meta`, the callback must not read the bytes (they are skipped).
fn walk_records(
    layer_dir: &Path,
    f: &mut dyn FnMut(Record) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut r = open_records(layer_dir)?;
    loop {
        match next_record(&mut r)? {
            None => return Ok(()),
            Some(Record::Meta(n)) => {
                io::copy(&mut (&mut r).take(n), &mut io::sink())
                    .map_err(|_| corrupt("truncated record"))?;
                f(Record::Meta(n))?;
            }
            Some(rec) => f(rec)?,
        }
    }
}

fn open_records(layer_dir: &Path) -> Result<Box<dyn Read>, Error> {
    let path = layer_dir.join(RECORDS);
    let f = File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut r: Box<dyn Read> = Box::new(BufReader::new(
        zstd::stream::read::Decoder::new(f)
            .map_err(|e| Error::io(format!("decompressing {}", path.display()), e))?,
    ));
    let mut magic = [0u8; MAGIC_RECORDS.len()];
    r.read_exact(&mut magic)
        .map_err(|_| corrupt("truncated header"))?;
    if magic != MAGIC_RECORDS {
        return Err(corrupt("bad header"));
    }
    Ok(r)
}

fn next_record(r: &mut dyn Read) -> Result<Option<Record>, Error> {
    let mut tag = [0u8];
    r.read_exact(&mut tag)
        .map_err(|_| corrupt("missing end record"))?;
    let bad = |_| corrupt("truncated record");
    Ok(match tag[0] {
        b'M' => Some(Record::Meta(get_varint(r).map_err(bad)?)),
        tag @ (b'F' | b'S') => {
            let size = get_varint(r).map_err(bad)?;
            let idx = get_varint(r).map_err(bad)? as usize;
            let name = get_bytes(r, 1 << 20).map_err(bad)?;
            let segments = if tag == b'S' {
                let n = get_varint(r).map_err(bad)?;
                let mut v = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    v.push((get_varint(r).map_err(bad)?, get_varint(r).map_err(bad)?));
                }
                Some(v)
            } else {
                None
            };
            Some(Record::File {
                size,
                idx,
                name,
                segments,
            })
        }
        b'E' => None,
        _ => return Err(corrupt("unknown record tag")),
    })
}

/// Writes the original tar of the layer in `layer_dir` (content root `root`) to `out`.
/// Fails if a recorded file is missing or changed size; callers only use it for layers that
/// have not been modified since their apply.
pub fn reassemble(
    layer_dir: &Path,
    root: BorrowedFd<'_>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let getter = FileGetter::open(layer_dir, root)?;
    let mut r = open_records(layer_dir)?;
    let mut buf = vec![0u8; 256 * 1024];
    let write_err = |e| Error::io("writing the layer tar", e);
    loop {
        match next_record(&mut r)? {
            None => return Ok(()),
            Some(Record::Meta(n)) => {
                let copied = io::copy(&mut (&mut r).take(n), out).map_err(write_err)?;
                if copied != n {
                    return Err(corrupt("truncated record"));
                }
            }
            Some(Record::File {
                idx,
                name,
                segments: Some(segments),
                ..
            }) => {
                use std::os::unix::fs::FileExt;
                let f = getter.open_payload(idx, &name, u64::MAX)?;
                for (off, len) in segments {
                    let mut done = 0u64;
                    while done < len {
                        let k = ((len - done).min(buf.len() as u64)) as usize;
                        f.read_exact_at(&mut buf[..k], off + done).map_err(|e| {
                            Error::io(
                                format!(
                                    "reading {} for exact re-export",
                                    String::from_utf8_lossy(&name)
                                ),
                                e,
                            )
                        })?;
                        out.write_all(&buf[..k]).map_err(write_err)?;
                        done += k as u64;
                    }
                }
            }
            Some(Record::File {
                size, idx, name, ..
            }) => {
                let mut f = getter.open_payload(idx, &name, size)?;
                let mut left = size;
                while left > 0 {
                    let k = (left.min(buf.len() as u64)) as usize;
                    f.read_exact(&mut buf[..k]).map_err(|e| {
                        Error::io(
                            format!(
                                "reading {} for exact re-export",
                                String::from_utf8_lossy(&name)
                            ),
                            e,
                        )
                    })?;
                    out.write_all(&buf[..k]).map_err(write_err)?;
                    left -= k as u64;
                }
            }
        }
    }
}
