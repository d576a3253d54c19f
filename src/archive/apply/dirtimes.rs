//! The closing directory-times pass of an apply, with compact bookkeeping.
//!
//! Creating anything in a directory changes its mtime, so the times a directory entry asks
//! for are set after everything else. What is kept per directory entry holds no path: the
//! directory's identity (dev, ino), its name, its times, and which recorded directory held it
//! (or, when that one was no entry of this layer, the cleaned path of the parent). At the end
//! each directory is reached from its parent by name, never following a symlink, and must
//! still be the same directory (one a later entry replaced is left alone). Parents come
//! before their children in the record, and the pass keeps the last directories it opened,
//! so a deep tree costs neither a path per entry nor a walk from the root per directory.
//! When several entries name the same directory, the last one's times win (as with Docker).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{fstat, openat, Mode, OFlags};
use rustix::io::Errno;

use super::tree::{Dir, Tree};
use crate::archive::fsmeta::{self, Time};
use crate::archive::{name, Error, Rule};

/// The parent is the layer root.
const ROOT: u32 = u32::MAX;
/// The parent's cleaned path is stored before the name.
const PATH: u32 = u32::MAX - 1;

/// Directories whose fds the closing pass keeps for their subdirectories.
const OPEN_DIRS: usize = 256;

struct Rec {
    key: (u64, u64),
    parent: u32,
    /// Where the parent path (for [`PATH`]) and then the name start in the name arena.
    off: usize,
    /// Length of the parent path (0 unless [`PATH`]).
    plen: usize,
    len: usize,
    atime: Time,
    mtime: Time,
}

/// The directory times still to be set.
#[derive(Default)]
pub struct DirTimes {
    recs: Vec<Rec>,
    names: Vec<u8>,
    by_key: HashMap<(u64, u64), u32>,
    root: Option<(Time, Time)>,
}

impl DirTimes {
    /// Notes the times of the layer root.
    pub fn root(&mut self, atime: Time, mtime: Time) {
        self.root = Some((atime, mtime));
    }

    /// Notes the times of directory `comps` (identity `key`), which is in `parent`
    /// (`root_key`: the layer root's identity).
    pub fn note(
        &mut self,
        parent: &Dir,
        root_key: (u64, u64),
        comps: &[&[u8]],
        key: (u64, u64),
        atime: Time,
        mtime: Time,
    ) {
        let Some((last, up)) = comps.split_last() else {
            return self.root(atime, mtime);
        };
        let parent = if parent.key == root_key {
            ROOT
        } else {
            self.by_key.get(&parent.key).copied().unwrap_or(PATH)
        };
        if let Some(&i) = self.by_key.get(&key) {
            // The same directory again (not a new one that reuses a removed one's inode).
            let r = &mut self.recs[i as usize];
            let same_place = parent != PATH
                && r.parent == parent
                && self.names[r.off + r.plen..r.off + r.plen + r.len] == **last;
            if same_place {
                r.atime = atime;
                r.mtime = mtime;
                return;
            }
        }
        let off = self.names.len();
        if parent == PATH {
            self.names.extend_from_slice(&name::join(up));
        }
        let plen = self.names.len() - off;
        self.names.extend_from_slice(last);
        let idx = self.recs.len() as u32;
        self.recs.push(Rec {
            key,
            parent,
            off,
            plen,
            len: last.len(),
            atime,
            mtime,
        });
        self.by_key.insert(key, idx);
    }

    /// Sets every noted time (`tree` reaches the parents recorded by path).
    pub fn apply(self, tree: &mut Tree) -> Result<(), Error> {
        let mut open: HashMap<u32, Arc<OwnedFd>> = HashMap::new();
        let mut order: VecDeque<u32> = VecDeque::new();
        for i in 0..self.recs.len() as u32 {
            let r = &self.recs[i as usize];
            if self.by_key.get(&r.key) != Some(&i) {
                continue; // its inode now belongs to a later directory
            }
            let Some(fd) = self.open(i, tree, &open)? else {
                continue;
            };
            let path = || self.label(i);
            fsmeta::set_times_fd(fd.as_fd(), r.atime, r.mtime).map_err(|e| {
                Error::entry(path(), Rule::Io, format!("setting directory times: {e}"))
            })?;
            open.insert(i, fd);
            order.push_back(i);
            if order.len() > OPEN_DIRS {
                if let Some(old) = order.pop_front() {
                    open.remove(&old);
                }
            }
        }
        if let Some((atime, mtime)) = self.root {
            fsmeta::set_times_fd(tree.root().fd.as_fd(), atime, mtime)
                .map_err(|e| Error::io("setting times of the layer root", e))?;
        }
        Ok(())
    }

    /// The entry name of record `i`, as far as it is known, for messages.
    fn label(&self, i: u32) -> Vec<u8> {
        let r = &self.recs[i as usize];
        self.names[r.off..r.off + r.plen + r.len].to_vec()
    }

    /// Opens directory `i` from its nearest open ancestor; `None` when it is gone (replaced
    /// or removed by a later entry).
    fn open(
        &self,
        i: u32,
        tree: &mut Tree,
        open: &HashMap<u32, Arc<OwnedFd>>,
    ) -> Result<Option<Arc<OwnedFd>>, Error> {
        let mut chain = vec![i];
        let mut up = self.recs[i as usize].parent;
        while up != ROOT && up != PATH && !open.contains_key(&up) {
            chain.push(up);
            up = self.recs[up as usize].parent;
        }
        let mut base = match up {
            ROOT => tree.root().fd.clone(),
            PATH => {
                let top = &self.recs[chain[chain.len() - 1] as usize];
                let parent = &self.names[top.off..top.off + top.plen];
                let comps: Vec<&[u8]> = parent.split(|b| *b == b'/').collect();
                match tree.dir(&comps, false, parent) {
                    Ok(Some(d)) => d.fd,
                    Ok(None) => return Ok(None),
                    Err(e) if e.rule() == Some(Rule::NotDirectory) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            _ => match open.get(&up) {
                Some(fd) => fd.clone(),
                None => return Ok(None),
            },
        };
        for &j in chain.iter().rev() {
            let r = &self.recs[j as usize];
            let name = &self.names[r.off + r.plen..r.off + r.plen + r.len];
            let fd = match openat(
                base.as_fd(),
                super::os(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
                Err(e) => {
                    return Err(Error::entry(
                        self.label(j),
                        Rule::Io,
                        format!("opening a directory to set its times: {e}"),
                    ))
                }
            };
            match fstat(&fd) {
                Ok(st) if (st.st_dev, st.st_ino) == r.key => {}
                _ => return Ok(None),
            }
            base = Arc::new(fd);
        }
        Ok(Some(base))
    }
}
