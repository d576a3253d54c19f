//! Writing the record of one apply (see the module above), with compact bookkeeping: the
//! directories that hold recorded payloads form a tree of (parent, name) nodes, a payload's
//! location is its directory's node (its name there is the last component of its entry's
//! name, which the record holds), and the payloads are found again by a keyed 64-bit hash of
//! their place (a chance collision, about one in 2^64, could only make a replaced payload
//! unavailable to the exact re-export, which then fails rather than lie). No path is ever
//! formed, so the record copes with trees of any depth.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{fstat, openat, renameat, Mode, OFlags};

use super::{corrupt, put_varint, BLOBS, INDEX, MAGIC_INDEX2, MAGIC_RECORDS, RECORDS};
use crate::archive::apply::hashindex::HashIndex;
use crate::archive::sparse::Segment;
use crate::archive::Error;
use crate::fsutil;

/// A payload moved into the blob directory (its number is its index).
const BLOB: u32 = u32::MAX;

/// Writes the record of one apply. Owned by the applier.
pub struct Recorder {
    out: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    dir: PathBuf,
    blobs: Option<OwnedFd>,
    /// Directory nodes: (parent, name); node 0 is the content root.
    nodes: Vec<(u32, Box<[u8]>)>,
    /// Nodes of directories by identity.
    node_of: HashMap<(u64, u64), u32>,
    root_key: (u64, u64),
    /// The directory node of each payload ([`BLOB`] once moved to the blob directory).
    locs: Vec<u32>,
    /// Payloads by a hash of (directory identity, name); checked against `locs` on use.
    by_place: HashIndex,
    hasher: RandomState,
    scratch: Vec<u8>,
}

fn io_err(what: &str, e: impl Into<std::io::Error>) -> Error {
    Error::io(what.to_string(), e.into())
}

/// The name of directory `child` (identity `key`) in its parent `parent`.
fn name_in(
    parent: BorrowedFd<'_>,
    child: BorrowedFd<'_>,
    key: (u64, u64),
) -> Result<Vec<u8>, Error> {
    // The kernel knows the path while it is short enough.
    let link = format!("/proc/self/fd/{}", child.as_raw_fd());
    if let Ok(p) = std::fs::read_link(link) {
        let p = p.into_os_string().into_encoded_bytes();
        if let Some(i) = p.iter().rposition(|b| *b == b'/') {
            let n = &p[i + 1..];
            if let Ok(st) = rustix::fs::statat(
                parent,
                OsStr::from_bytes(n),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ) {
                if (st.st_dev, st.st_ino) == key {
                    return Ok(n.to_vec());
                }
            }
        }
    }
    let fd = openat(
        parent,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("listing a directory of the layer", e))?;
    for entry in rustix::fs::Dir::read_from(&fd)
        .map_err(|e| io_err("listing a directory of the layer", e))?
    {
        let entry = entry.map_err(|e| io_err("listing a directory of the layer", e))?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." || entry.ino() != key.1 {
            continue;
        }
        if let Ok(st) = rustix::fs::statat(
            parent,
            OsStr::from_bytes(n),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) {
            if (st.st_dev, st.st_ino) == key {
                return Ok(n.to_vec());
            }
        }
    }
    Err(corrupt("a directory of the layer is not in its parent"))
}

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
        let st = fstat(root).map_err(|e| io_err("inspecting the layer root", e))?;
        let root_key = (st.st_dev, st.st_ino);
        Ok(Recorder {
            out,
            dir: dir.to_path_buf(),
            blobs: None,
            nodes: vec![(0, Box::default())],
            node_of: HashMap::from([(root_key, 0)]),
            root_key,
            locs: Vec::new(),
            by_place: HashIndex::default(),
            hasher: RandomState::new(),
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

    /// The node of directory `dir` (identity `key`), adding it and its unknown ancestors
    /// (found through `..`, which stays inside the layer below its root).
    fn node(&mut self, dir: BorrowedFd<'_>, key: (u64, u64)) -> Result<u32, Error> {
        if let Some(&n) = self.node_of.get(&key) {
            return Ok(n);
        }
        // Up to a known directory (naming each one in its parent on the way, with two fds
        // open at a time), then the nodes on the way down.
        let mut chain: Vec<((u64, u64), Vec<u8>)> = Vec::new();
        let mut cur = dir
            .try_clone_to_owned()
            .map_err(|e| io_err("duplicating a directory fd", e))?;
        let mut cur_key = key;
        let mut parent_node = loop {
            let up = openat(
                &cur,
                "..",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("locating a directory of the layer", e))?;
            let st = fstat(&up).map_err(|e| io_err("locating a directory of the layer", e))?;
            let up_key = (st.st_dev, st.st_ino);
            if up_key == cur_key {
                return Err(corrupt("a directory outside the layer root"));
            }
            chain.push((cur_key, name_in(up.as_fd(), cur.as_fd(), cur_key)?));
            if let Some(&n) = self.node_of.get(&up_key) {
                break n;
            }
            cur = up;
            cur_key = up_key;
        };
        for (k, name) in chain.into_iter().rev() {
            let n = self.nodes.len() as u32;
            self.nodes.push((parent_node, name.into_boxed_slice()));
            self.node_of.insert(k, n);
            parent_node = n;
        }
        Ok(parent_node)
    }

    fn place_hash(&self, key: (u64, u64), name: &[u8]) -> u64 {
        self.hasher.hash_one((key, name))
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
        let node = self.node(dir, key)?;
        let idx = self.locs.len();
        self.locs.push(node);
        let h = self.place_hash(key, name);
        self.by_place.insert(h, idx as u32);
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

    /// The payload recorded at `name` in directory `key`, if any.
    fn recorded_at(&self, key: (u64, u64), name: &[u8]) -> Option<usize> {
        let idx = self.by_place.get(self.place_hash(key, name))?;
        let node = *self.node_of.get(&key)?;
        (*self.locs.get(idx as usize)? == node).then_some(idx as usize)
    }

    fn move_to_blob(
        &mut self,
        parent: BorrowedFd<'_>,
        key: (u64, u64),
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
        self.locs[idx] = BLOB;
        let h = self.place_hash(key, name);
        self.by_place.remove(h);
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
            return match self.recorded_at(key, name) {
                Some(idx) => {
                    self.move_to_blob(dir, key, name, idx)?;
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        if self.locs.is_empty() {
            return Ok(false);
        }
        // Walk the doomed tree (depth first, holding open only directories with pending
        // subdirectories) and keep every recorded payload in it.
        let top = fsutil::open_dir_at(dir, OsStr::from_bytes(name))
            .map_err(|e| io_err("opening a replaced directory", e))?;
        let mut todo = vec![std::rc::Rc::new(top)];
        let mut gone = Vec::new();
        while let Some(d) = todo.pop() {
            let st = fstat(&*d).map_err(|e| io_err("inspecting a replaced directory", e))?;
            let dkey = (st.st_dev, st.st_ino);
            gone.push(dkey);
            let listing = openat(
                &*d,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("listing a replaced directory", e))?;
            let mut files = Vec::new();
            for entry in rustix::fs::Dir::read_from(&listing)
                .map_err(|e| io_err("listing a replaced directory", e))?
            {
                let entry = entry.map_err(|e| io_err("listing a replaced directory", e))?;
                let n = entry.file_name().to_bytes();
                if n == b"." || n == b".." {
                    continue;
                }
                match entry.file_type() {
                    rustix::fs::FileType::Directory => {
                        let sub = fsutil::open_dir_at(d.as_fd(), OsStr::from_bytes(n))
                            .map_err(|e| io_err("opening a replaced directory", e))?;
                        todo.push(std::rc::Rc::new(sub));
                    }
                    rustix::fs::FileType::RegularFile => files.push(n.to_vec()),
                    _ => {}
                }
            }
            for n in files {
                if let Some(idx) = self.recorded_at(dkey, &n) {
                    self.move_to_blob(d.as_fd(), dkey, &n, idx)?;
                }
            }
        }
        // The directories are about to go: their inode numbers may come back as others.
        for k in gone {
            if k != self.root_key {
                self.node_of.remove(&k);
            }
        }
        Ok(false)
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
        let path = self.dir.join(INDEX);
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut z = zstd::stream::write::Encoder::new(BufWriter::new(file), 3)
            .map_err(|e| Error::io("compressing the tar-split index", e))?;
        let werr = |e| Error::io(format!("writing {}", path.display()), e);
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(MAGIC_INDEX2);
        put_varint(&mut buf, self.nodes.len() as u64 - 1);
        for (parent, name) in &self.nodes[1..] {
            put_varint(&mut buf, *parent as u64);
            put_varint(&mut buf, name.len() as u64);
            buf.extend_from_slice(name);
            if buf.len() > 32 * 1024 {
                z.write_all(&buf).map_err(werr)?;
                buf.clear();
            }
        }
        put_varint(&mut buf, self.locs.len() as u64);
        for (i, &dir) in self.locs.iter().enumerate() {
            if dir == BLOB {
                buf.push(b'B');
                put_varint(&mut buf, i as u64);
            } else {
                buf.push(b'Q');
                put_varint(&mut buf, dir as u64);
            }
            if buf.len() > 32 * 1024 {
                z.write_all(&buf).map_err(werr)?;
                buf.clear();
            }
        }
        z.write_all(&buf).map_err(werr)?;
        z.finish()
            .map_err(werr)?
            .into_inner()
            .map_err(|e| werr(e.into_error()))?;
        Ok(())
    }
}
