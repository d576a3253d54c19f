//! Native change detection for overlay layers: the changes of a layer against its direct
//! parent, computed from the layer's own `diff/` directory and lookups into the lower layers,
//! without mounting anything and without walking what did not change.
//!
//! The result is, by construction, what [`super::changes::changes_dirs`] reports for the two
//! mounted trees (the layer over its parent, and the parent): at each directory of `diff/`
//! two lists of lower directories are carried — OLD, the parent's merged view of that
//! directory, and NEW, the lower directories still showing through in the layer (the same as
//! OLD, or nothing for an opaque or freshly replaced directory). Every entry of `diff/` is
//! compared with the topmost OLD entry by the same rules as the naive walk (`differs`); a
//! whiteout is a deletion where OLD has something to delete; where nothing shows through,
//! names only in OLD are deletions. Directories that exist only in lower layers are never
//! opened: they cannot have changed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::rc::Rc;

use rustix::fs::FileType;

use super::apply::tree::is_opaque;
use super::changes::differs;
use super::walk::{self, Info};
use super::{Change, ChangeKind, Error};

fn is_whiteout(i: &Info) -> bool {
    i.file_type() == FileType::CharacterDevice && i.rdev == 0
}

/// The topmost lower entry at `name`: the lower directory holding it, its stat, and (for a
/// directory) the lower directories merged at it, topmost first.
type Hit = (Rc<OwnedFd>, Info, Vec<Rc<OwnedFd>>);

fn lookup(lowers: &[Rc<OwnedFd>], name: &[u8]) -> std::io::Result<Option<Hit>> {
    for (i, l) in lowers.iter().enumerate() {
        let Some(info) = walk::lstat_opt(l.as_fd(), name)? else {
            continue;
        };
        if is_whiteout(&info) {
            return Ok(None);
        }
        if !info.is_dir() {
            return Ok(Some((l.clone(), info, Vec::new())));
        }
        let first = Rc::new(walk::open_dir(l.as_fd(), name)?);
        let mut merged = vec![first.clone()];
        if !is_opaque(first.as_fd()) {
            for below in &lowers[i + 1..] {
                match walk::lstat_opt(below.as_fd(), name)? {
                    None => continue,
                    Some(b) if b.is_dir() => {
                        let fd = Rc::new(walk::open_dir(below.as_fd(), name)?);
                        let opaque = is_opaque(fd.as_fd());
                        merged.push(fd);
                        if opaque {
                            break;
                        }
                    }
                    Some(_) => break, // a whiteout or a non-directory hides what is below
                }
            }
        }
        return Ok(Some((l.clone(), info, merged)));
    }
    Ok(None)
}

/// The names visible in the merged view of the lower directories `lowers`.
fn lower_names(lowers: &[Rc<OwnedFd>]) -> std::io::Result<Vec<Vec<u8>>> {
    let mut seen: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for l in lowers {
        for name in walk::read_names(l.as_fd())? {
            if seen.contains_key(&name) {
                continue;
            }
            let present = match walk::lstat_opt(l.as_fd(), &name)? {
                Some(info) => !is_whiteout(&info),
                None => false,
            };
            seen.insert(name, present);
        }
    }
    Ok(seen
        .into_iter()
        .filter(|(_, p)| *p)
        .map(|(n, _)| n)
        .collect())
}

struct Walk {
    out: Vec<(Vec<u8>, ChangeKind)>,
    path: Vec<u8>,
}

impl Walk {
    fn err(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", walk::show(&self.path)), e)
    }

    /// Visits directory `upper` of `diff/` (path `self.path`); `old` and `new` are the lower
    /// merge lists described in the module docs; `reported` says whether the directory itself
    /// is already reported.
    fn dir(
        &mut self,
        upper: BorrowedFd<'_>,
        old: &[Rc<OwnedFd>],
        new: &[Rc<OwnedFd>],
        reported: bool,
    ) -> Result<(), Error> {
        let mark = self.out.len();
        let names = walk::read_names(upper).map_err(|e| self.err("listing", e))?;
        if new.is_empty() && !old.is_empty() {
            // Nothing of the lower directory shows through: what only it had is gone.
            let gone = lower_names(old).map_err(|e| self.err("listing lower layers of", e))?;
            for name in gone {
                if names.binary_search(&name).is_err() {
                    let mut p = self.path.clone();
                    p.push(b'/');
                    p.extend_from_slice(&name);
                    self.out.push((p, ChangeKind::Delete));
                }
            }
        }
        for name in &names {
            let len = self.path.len();
            self.path.push(b'/');
            self.path.extend_from_slice(name);
            let r = self.entry(upper, name, old, new);
            self.path.truncate(len);
            r?;
        }
        if !reported && self.out.len() > mark {
            self.out.push((self.path.clone(), ChangeKind::Modify));
        }
        Ok(())
    }

    fn entry(
        &mut self,
        upper: BorrowedFd<'_>,
        name: &[u8],
        old: &[Rc<OwnedFd>],
        new: &[Rc<OwnedFd>],
    ) -> Result<(), Error> {
        let Some(n) = walk::lstat_opt(upper, name).map_err(|e| self.err("lstat", e))? else {
            return Ok(()); // vanished while walking
        };
        let hit = lookup(old, name).map_err(|e| self.err("looking up lower layers for", e))?;
        if is_whiteout(&n) {
            if hit.is_some() {
                self.out.push((self.path.clone(), ChangeKind::Delete));
            }
            return Ok(());
        }
        let open = |w: &Walk| walk::open_dir(upper, name).map_err(|e| w.err("opening", e));
        match hit {
            None => {
                self.out.push((self.path.clone(), ChangeKind::Add));
                if n.is_dir() {
                    let child = open(self)?;
                    self.dir(child.as_fd(), &[], &[], true)?;
                }
            }
            Some((holder, o, merged)) => {
                let modified = differs(&n, &o, upper, holder.as_fd(), name)
                    .map_err(|e| self.err("comparing", e))?;
                if modified {
                    self.out.push((self.path.clone(), ChangeKind::Modify));
                }
                if n.is_dir() {
                    let child = open(self)?;
                    if o.is_dir() {
                        let shows_through = !new.is_empty() && !is_opaque(child.as_fd());
                        let new_child: &[Rc<OwnedFd>] = if shows_through { &merged } else { &[] };
                        self.dir(child.as_fd(), &merged, new_child, modified)?;
                    } else {
                        self.dir(child.as_fd(), &[], &[], true)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The changes of the overlay layer whose `diff/` is `upper`, against the merged view of
/// `lowers` (its parent's `diff/` and the parent's lowers, topmost first). Sorted by path.
pub fn overlay_changes(
    upper: BorrowedFd<'_>,
    lowers: &[BorrowedFd<'_>],
) -> Result<Vec<Change>, Error> {
    let lowers: Vec<Rc<OwnedFd>> = lowers
        .iter()
        .map(|l| walk::reopen_dir(*l).map(Rc::new))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io("opening lower layers", e))?;
    let mut w = Walk {
        out: Vec::new(),
        path: Vec::new(),
    };
    w.dir(upper, &lowers, &lowers, true)?;
    w.out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(w.out
        .into_iter()
        .map(|(p, kind)| Change {
            path: PathBuf::from(OsString::from_vec(p)),
            kind,
        })
        .collect())
}
