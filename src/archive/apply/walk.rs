//! Walking a path one component at a time in the merged view (see [`super::tree`]): used
//! for overlay trees, for naive trees behind a dangling symlink, and for paths too long for
//! the kernel's own resolution. Symlinks met on the way are followed in-root by the walk
//! itself; only the deepest directories stay open, so no depth exhausts file descriptors.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::sync::Arc;

use rustix::fs::{
    fstat, mkdirat, openat2, readlinkat, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags,
};
use rustix::io::Errno;

use super::super::fsmeta::{self, Meta, Time};
use super::super::{name, Error, Rule};
use super::tree::{
    io_err, is_opaque, is_whiteout, lower_lookup, open_dir_nofollow, Dir, Key, Lower, OPAQUE_XATTR,
};

/// Most symlinks followed while resolving one path (the kernel's limit).
const MAX_HOPS: usize = 40;

/// Directories a walk keeps open at most (the deepest ones); an ancestor beyond them that a
/// `..` returns to is reached again from the start of the walk.
const OPEN_LEVELS: usize = 64;

/// Creates directory `name` in `parent` with `meta` (mode 0755 root:root when `None`).
fn make_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    meta: Option<&Meta>,
    entry: &[u8],
    made: &mut Vec<Key>,
) -> Result<OwnedFd, Error> {
    let default = Meta {
        mode: 0o755,
        ..Meta::default()
    };
    let m = meta.unwrap_or(&default);
    mkdirat(parent, name, Mode::from_raw_mode(m.mode & 0o777)).map_err(|e| {
        if e == Errno::EXIST {
            Error::entry(
                entry,
                Rule::NotDirectory,
                format!("{} exists and is not a directory", name.to_string_lossy()),
            )
        } else {
            io_err(
                entry,
                &format!("creating directory {}", name.to_string_lossy()),
                e,
            )
        }
    })?;
    let pst = fstat(parent).map_err(|e| io_err(entry, "inspecting a directory", e))?;
    made.push(((pst.st_dev, pst.st_ino), name.as_bytes().to_vec()));
    let fd =
        open_dir_nofollow(parent, name).map_err(|e| io_err(entry, "opening a new directory", e))?;
    // Only what the creation did not already get right (umask, setgid parent) is set.
    let st = fstat(fd.as_fd()).map_err(|e| io_err(entry, "inspecting a new directory", e))?;
    let needs = fsmeta::Needs {
        chown: (st.st_uid, st.st_gid) != (m.uid, m.gid),
        chmod: st.st_mode & 0o7777 != m.mode & 0o7777,
    };
    fsmeta::apply_fd(fd.as_fd(), m, needs).map_err(|e| {
        Error::entry(
            entry,
            Rule::Io,
            format!("setting metadata of a new directory: {e}"),
        )
    })?;
    if meta.is_some() {
        fsmeta::set_times_fd(fd.as_fd(), m.atime, m.mtime).map_err(|e| {
            Error::entry(
                entry,
                Rule::Io,
                format!("setting times of a new directory: {e}"),
            )
        })?;
    }
    Ok(fd)
}

/// Reads the metadata of a lower directory to copy it up (overlay's own xattrs excluded).
fn lower_meta(fd: BorrowedFd<'_>) -> std::io::Result<Meta> {
    let st = fstat(fd)?;
    let xattrs = fsmeta::read_fd(fd)?
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b"trusted.overlay.") && !k.starts_with(b"user.overlay."))
        .collect();
    Ok(Meta {
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
        atime: Time {
            sec: st.st_atime,
            nsec: st.st_atime_nsec as u32,
        },
        mtime: Time {
            sec: st.st_mtime,
            nsec: st.st_mtime_nsec as u32,
        },
        xattrs,
    })
}

fn resolve_in_root(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match openat2(
            root,
            OsStr::from_bytes(path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        ) {
            // The kernel asks for a retry when a rename raced with the lookup.
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

pub(super) fn naive_dir(
    root: &Dir,
    comps: &[&[u8]],
    create: bool,
    entry: &[u8],
    notes: Notes<'_>,
) -> Result<Option<Dir>, Error> {
    let wrap = |fd: OwnedFd| -> Result<Dir, Error> {
        Dir::new(Arc::new(fd), root.lowers.clone())
            .map_err(|e| io_err(entry, "inspecting a directory", e))
    };
    let path = name::join(comps);
    match resolve_in_root(root.fd.as_fd(), &path) {
        Ok(fd) => return Ok(Some(wrap(fd)?)),
        Err(Errno::NOENT) if create => {}
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(io_err(
                entry,
                &format!("resolving {}", String::from_utf8_lossy(&path)),
                e,
            ))
        }
    }
    // Something is missing, possibly behind a dangling symlink: walk it one component at a
    // time (the merged-view walker with no lowers), creating directories in-root.
    Ok(overlay_dir(root, comps, true, entry, true, notes)?.flatten())
}

/// What a walk notes for the [`Tree`]: directories it created, lower symlinks it followed.
pub(super) type Notes<'a> = (&'a mut Vec<Key>, &'a mut HashSet<Key>);

/// One step of the merged-view walk.
struct Pos {
    diff: Arc<OwnedFd>,
    lowers: Vec<Rc<OwnedFd>>,
}

/// A directory on a walk's way: its name in the one before, and its [`Pos`] while it is
/// among the [`OPEN_LEVELS`] deepest (the first one, where the walk started, stays open).
struct Level {
    name: Vec<u8>,
    pos: Option<Pos>,
}

/// Goes one level up; when the level reached was closed, the walk starts over from its
/// first level along the names on the way (queued in front of what remains to walk).
fn level_up(stack: &mut Vec<Level>, queue: &mut std::collections::VecDeque<Vec<u8>>) {
    stack.pop();
    if stack.last().is_some_and(|l| l.pos.is_none()) {
        for l in stack.drain(1..).rev() {
            queue.push_front(l.name);
        }
    }
}

/// Enters `pos` (named `name`), closing the level that falls out of the open window.
fn level_down(stack: &mut Vec<Level>, name: Vec<u8>, pos: Pos) {
    stack.push(Level {
        name,
        pos: Some(pos),
    });
    if stack.len() > OPEN_LEVELS + 1 {
        let i = stack.len() - OPEN_LEVELS - 1;
        if i > 0 {
            stack[i].pos = None;
        }
    }
}

/// Walks `comps` from `root` in the merged view. With `is_root` false, `root` is a resolved
/// ancestor rather than the layer root, and `Ok(None)` means a symlink led above it or to an
/// absolute path: the caller must walk from the real root. Otherwise `Ok(Some(found))`.
pub(super) fn overlay_dir(
    root: &Dir,
    comps: &[&[u8]],
    create: bool,
    entry: &[u8],
    is_root: bool,
    (made, lower_links): Notes<'_>,
) -> Result<Option<Option<Dir>>, Error> {
    // Whether the directory on top of the stack was created by this walk.
    let mut last_made = false;
    let mut stack = vec![Level {
        name: Vec::new(),
        pos: Some(Pos {
            diff: root.fd.clone(),
            lowers: root.lowers.to_vec(),
        }),
    }];
    let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        let made_before_step = made.len();
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                last_made = false;
                if stack.len() > 1 {
                    level_up(&mut stack, &mut queue);
                } else if !is_root {
                    return Ok(None);
                }
                continue;
            }
            _ => {}
        }
        let name = OsStr::from_bytes(&c);
        let cur = stack
            .last()
            .and_then(|l| l.pos.as_ref())
            .ok_or_else(|| Error::entry(entry, Rule::Io, "empty resolution stack"))?;
        let here = match statat(cur.diff.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err(entry, "looking up a parent directory", e)),
        };
        let mut follow: Option<Vec<u8>> = None;
        let next = match here {
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                let fd = open_dir_nofollow(cur.diff.as_fd(), name)
                    .map_err(|e| io_err(entry, "opening a parent directory", e))?;
                let lowers = if is_opaque(fd.as_fd()) {
                    Vec::new()
                } else {
                    lower_lookup(&cur.lowers, name)
                        .map_err(|e| io_err(entry, "looking up lower layers", e))?
                        .1
                };
                Some(Pos {
                    diff: Arc::new(fd),
                    lowers,
                })
            }
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                follow = Some(
                    readlinkat(cur.diff.as_fd(), name, Vec::new())
                        .map_err(|e| io_err(entry, "reading a symlink", e))?
                        .into_bytes(),
                );
                None
            }
            Some(st) if is_whiteout(&st) => {
                if !create {
                    return Ok(Some(None));
                }
                // Deleted in this layer, re-created now: hide whatever the lowers had.
                rustix::fs::unlinkat(cur.diff.as_fd(), name, AtFlags::empty())
                    .map_err(|e| io_err(entry, "removing a whiteout", e))?;
                let fd = make_dir(cur.diff.as_fd(), name, None, entry, made)?;
                rustix::fs::fsetxattr(
                    fd.as_fd(),
                    OPAQUE_XATTR,
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| io_err(entry, "marking a directory opaque", e))?;
                Some(Pos {
                    diff: Arc::new(fd),
                    lowers: Vec::new(),
                })
            }
            Some(_) => {
                return Err(Error::entry(
                    entry,
                    Rule::NotDirectory,
                    format!("{} is not a directory", String::from_utf8_lossy(&c)),
                ))
            }
            None => match lower_lookup(&cur.lowers, name)
                .map_err(|e| io_err(entry, "looking up lower layers", e))?
            {
                (Lower::Dir, merged) => {
                    let meta = lower_meta(merged[0].as_fd()).map_err(|e| {
                        Error::entry(entry, Rule::Io, format!("reading a lower directory: {e}"))
                    })?;
                    let fd = make_dir(cur.diff.as_fd(), name, Some(&meta), entry, made)?;
                    Some(Pos {
                        diff: Arc::new(fd),
                        lowers: merged,
                    })
                }
                (Lower::Other(dir, st), _)
                    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink =>
                {
                    let at = fstat(cur.diff.as_fd())
                        .map_err(|e| io_err(entry, "inspecting a directory", e))?;
                    lower_links.insert(((at.st_dev, at.st_ino), c.clone()));
                    follow = Some(
                        readlinkat(dir.as_fd(), name, Vec::new())
                            .map_err(|e| io_err(entry, "reading a symlink", e))?
                            .into_bytes(),
                    );
                    None
                }
                (Lower::Other(..), _) => {
                    return Err(Error::entry(
                        entry,
                        Rule::NotDirectory,
                        format!("{} is not a directory", String::from_utf8_lossy(&c)),
                    ))
                }
                (Lower::Absent, _) => {
                    if !create {
                        return Ok(Some(None));
                    }
                    let fd = make_dir(cur.diff.as_fd(), name, None, entry, made)?;
                    Some(Pos {
                        diff: Arc::new(fd),
                        lowers: Vec::new(),
                    })
                }
            },
        };
        if let Some(p) = next {
            last_made = made.len() > made_before_step;
            level_down(&mut stack, c, p);
            continue;
        }
        if let Some(target) = follow {
            hops += 1;
            if hops > MAX_HOPS {
                return Err(Error::entry(
                    entry,
                    Rule::Escape,
                    "too many levels of symbolic links",
                ));
            }
            if target.is_empty() {
                return Err(Error::entry(
                    entry,
                    Rule::NotDirectory,
                    "empty symlink target in a parent path",
                ));
            }
            if target.starts_with(b"/") {
                if !is_root {
                    return Ok(None);
                }
                last_made = false;
                stack.truncate(1);
            }
            for part in target.split(|b| *b == b'/').rev() {
                queue.push_front(part.to_vec());
            }
        }
    }
    let top = stack
        .pop()
        .and_then(|l| l.pos)
        .ok_or_else(|| Error::entry(entry, Rule::Io, "empty resolution stack"))?;
    let fresh = last_made;
    Dir::new(top.diff, Rc::new(top.lowers))
        .map(|mut d| {
            d.fresh = fresh;
            Some(Some(d))
        })
        .map_err(|e| io_err(entry, "inspecting a directory", e))
}
