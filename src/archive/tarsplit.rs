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
//! * `tarsplit-index.zst`: the location table, `P <path>` (relative to the content root) or
//!   `B <n>` (`tarsplit-blobs/<n>`); written last, because locations change during the apply;
//! * `tarsplit-blobs/`: payloads the layer itself replaced.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat2, renameat, Mode, OFlags, ResolveFlags};

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Path(Vec<u8>),
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

/// Writes the record of one apply. Owned by the applier.
pub struct Recorder {
    out: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    dir: PathBuf,
    root: OwnedFd,
    root_path: Vec<u8>,
    blobs: Option<OwnedFd>,
    locations: Vec<Location>,
    by_place: HashMap<((u64, u64), Vec<u8>), usize>,
    dir_paths: HashMap<(u64, u64), Vec<u8>>,
    scratch: Vec<u8>,
}

fn fd_path(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(std::fs::read_link(link)?.into_os_string().into_vec())
}

use std::os::unix::ffi::OsStringExt;

impl Recorder {
    /// Starts recording into `dir` (a staging directory beside the content root `root`).
    pub fn create(dir: &Path, root: BorrowedFd<'_>) -> Result<Recorder, Error> {
        let path = dir.join(RECORDS);
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut out = zstd::stream::write::Encoder::new(BufWriter::new(file), 3)
            .map_err(|e| Error::io("starting the tar-split record", e))?;
        out.write_all(MAGIC_RECORDS)
            .map_err(|e| Error::io("writing the tar-split record", e))?;
        let root = root
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating the root fd", e))?;
        let mut root_path =
            fd_path(root.as_fd()).map_err(|e| Error::io("locating the layer root", e))?;
        root_path.push(b'/');
        Ok(Recorder {
            out,
            dir: dir.to_path_buf(),
            root,
            root_path,
            blobs: None,
            locations: Vec::new(),
            by_place: HashMap::new(),
            dir_paths: HashMap::new(),
            scratch: Vec::new(),
        })
    }

    fn write(&mut self) -> Result<(), Error> {
        self.out
            .write_all(&self.scratch)
            .map_err(|e| Error::io("writing the tar-split record", e))?;
        self.scratch.clear();
        Ok(())
    }

    /// Records stream bytes verbatim.
    pub fn meta(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.scratch.push(b'M');
        put_varint(&mut self.scratch, bytes.len() as u64);
        self.write()?;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("writing the tar-split record", e))
    }

    /// The path of directory `dir` relative to the content root (empty for the root).
    fn rel_dir(&mut self, dir: BorrowedFd<'_>, key: (u64, u64)) -> Result<Vec<u8>, Error> {
        if let Some(p) = self.dir_paths.get(&key) {
            return Ok(p.clone());
        }
        let mut abs =
            fd_path(dir).map_err(|e| Error::io("locating a directory of the layer", e))?;
        abs.push(b'/');
        let rel = abs
            .strip_prefix(self.root_path.as_slice())
            .ok_or_else(|| corrupt("a directory outside the layer root"))?
            .to_vec();
        self.dir_paths.insert(key, rel.clone());
        Ok(rel)
    }

    /// Records that the current entry's payload (`size` bytes) is now the file `name` in
    /// directory `dir`.
    pub fn file(
        &mut self,
        entry: &[u8],
        size: u64,
        segments: Option<&[Segment]>,
        dir: BorrowedFd<'_>,
        key: (u64, u64),
        name: &[u8],
    ) -> Result<(), Error> {
        let mut path = self.rel_dir(dir, key)?;
        path.extend_from_slice(name);
        let idx = self.locations.len();
        self.locations.push(Location::Path(path));
        self.by_place.insert((key, name.to_vec()), idx);
        self.scratch
            .push(if segments.is_some() { b'S' } else { b'F' });
        put_varint(&mut self.scratch, size);
        put_varint(&mut self.scratch, idx as u64);
        put_varint(&mut self.scratch, entry.len() as u64);
        self.scratch.extend_from_slice(entry);
        if let Some(segs) = segments {
            put_varint(&mut self.scratch, segs.len() as u64);
            for &(off, len) in segs {
                put_varint(&mut self.scratch, off);
                put_varint(&mut self.scratch, len);
            }
        }
        self.write()
    }

    fn blobs(&mut self) -> Result<BorrowedFd<'_>, Error> {
        if self.blobs.is_none() {
            let p = self.dir.join(BLOBS);
            std::fs::create_dir(&p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            self.blobs = Some(
                fsutil::open_dir(&p)
                    .map_err(|e| Error::io(format!("opening {}", p.display()), e))?,
            );
        }
        self.blobs
            .as_ref()
            .map(|b| b.as_fd())
            .ok_or_else(|| corrupt("no blob directory"))
    }

    fn move_to_blob(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        idx: usize,
    ) -> Result<(), Error> {
        let blob = idx.to_string();
        renameat(
            parent,
            OsStr::from_bytes(name),
            self.blobs()?,
            blob.as_str(),
        )
        .map_err(|e| Error::io("keeping a replaced payload for exact re-export", e))?;
        self.locations[idx] = Location::Blob(idx as u64);
        Ok(())
    }

    /// Called before `dir/name` is removed or replaced: payloads recorded there (the file
    /// itself, or files beneath a directory) are moved into the blob directory. Returns true
    /// if `name` itself was moved away (nothing is left to remove).
    pub fn preserve(
        &mut self,
        dir: BorrowedFd<'_>,
        key: (u64, u64),
        name: &[u8],
        is_dir: bool,
    ) -> Result<bool, Error> {
        if !is_dir {
            return match self.by_place.remove(&(key, name.to_vec())) {
                Some(idx) => {
                    self.move_to_blob(dir, name, idx)?;
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        let mut prefix = self.rel_dir(dir, key)?;
        prefix.extend_from_slice(name);
        prefix.push(b'/');
        let inside: Vec<(usize, Vec<u8>)> = self
            .locations
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Location::Path(p) if p.starts_with(&prefix) => Some((i, p.clone())),
                _ => None,
            })
            .collect();
        for (idx, path) in inside {
            let split = path.iter().rposition(|b| *b == b'/').unwrap_or(0);
            let parent = openat2(
                self.root.as_fd(),
                OsStr::from_bytes(&path[..split]),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|e| Error::io("finding a replaced payload", e))?;
            self.move_to_blob(parent.as_fd(), &path[split + 1..], idx)?;
        }
        self.by_place
            .retain(|_, idx| !matches!(self.locations[*idx], Location::Blob(_)));
        self.dir_paths.clear();
        Ok(false)
    }

    /// Forgets cached directory paths (after directories were removed, inode numbers may be
    /// reused).
    pub fn forget_dirs(&mut self) {
        self.dir_paths.clear();
    }

    /// Ends the record and writes the location table.
    pub fn finish(mut self) -> Result<(), Error> {
        self.out
            .write_all(b"E")
            .map_err(|e| Error::io("writing the tar-split record", e))?;
        let w = self
            .out
            .finish()
            .map_err(|e| Error::io("finishing the tar-split record", e))?;
        w.into_inner()
            .map_err(|e| Error::io("flushing the tar-split record", e.into_error()))?
            .sync_data()
            .map_err(|e| Error::io("syncing the tar-split record", e))?;
        let mut idx = Vec::with_capacity(self.locations.len() * 48);
        idx.extend_from_slice(MAGIC_INDEX);
        put_varint(&mut idx, self.locations.len() as u64);
        for l in &self.locations {
            match l {
                Location::Path(p) => {
                    idx.push(b'P');
                    put_varint(&mut idx, p.len() as u64);
                    idx.extend_from_slice(p);
                }
                Location::Blob(n) => {
                    idx.push(b'B');
                    put_varint(&mut idx, *n);
                }
            }
        }
        let path = self.dir.join(INDEX);
        let data = zstd::encode_all(idx.as_slice(), 3)
            .map_err(|e| Error::io("compressing the tar-split index", e))?;
        std::fs::write(&path, data).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

/// Whether `layer_dir` holds a tar-split record.
pub fn exists(layer_dir: &Path) -> bool {
    layer_dir.join(RECORDS).is_file() && layer_dir.join(INDEX).is_file()
}

fn read_index(layer_dir: &Path) -> Result<Vec<Location>, Error> {
    let path = layer_dir.join(INDEX);
    let raw =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let data = zstd::decode_all(raw.as_slice())
        .map_err(|e| Error::io(format!("decompressing {}", path.display()), e))?;
    let mut r = data
        .strip_prefix(MAGIC_INDEX)
        .ok_or_else(|| corrupt("bad index header"))?;
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
            b'B' => Location::Blob(get_varint(&mut r).map_err(|_| corrupt("bad index blob"))?),
            _ => return Err(corrupt("bad index tag")),
        });
    }
    Ok(out)
}

/// Reads recorded payloads back by location, for reassembling the recorded stream.
pub struct FileGetter {
    root: OwnedFd,
    blobs: Option<OwnedFd>,
    locations: Vec<Location>,
    names: HashMap<Vec<u8>, (usize, u64)>,
}

impl FileGetter {
    /// Opens the record in `layer_dir` whose content root is `root`.
    pub fn open(layer_dir: &Path, root: BorrowedFd<'_>) -> Result<FileGetter, Error> {
        let locations = read_index(layer_dir)?;
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
            locations,
            names: HashMap::new(),
        })
    }

    /// Opens payload number `idx` and checks it still has `size` bytes (`u64::MAX`: any).
    fn open_payload(&self, idx: usize, size: u64) -> Result<File, Error> {
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
        self.open_payload(idx, size)
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
                let f = getter.open_payload(idx, u64::MAX)?;
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
                let mut f = getter.open_payload(idx, size)?;
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
