//! Small fd-relative filesystem helpers shared by the store, the backends and the diff engine.
//! Nothing here follows a symlink it did not mean to.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

/// Opens a directory by absolute (trusted) path, refusing a final symlink.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` (one component) inside `dir`, refusing symlinks.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Removes `name` inside `dir` and everything beneath it, never following symlinks and never
/// crossing into another mount (a mount point makes the removal fail with `EBUSY` instead of
/// deleting someone else's files). A missing `name`, or entries vanishing underneath (another
/// process sweeping the same tree), are not errors.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return ignore_noent(unlinkat(dir, name, AtFlags::empty()));
    }
    let child = match open_dir_at(dir, name) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let child_st = rustix::fs::fstat(&child)?;
    if child_st.st_dev != st.st_dev {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    empty_dir(child.as_fd(), st.st_dev)?;
    drop(child);
    ignore_noent(unlinkat(dir, name, AtFlags::REMOVEDIR))
}

/// Removes everything inside the open directory `dir` (which must be on device `dev`).
fn empty_dir(dir: BorrowedFd<'_>, dev: u64) -> io::Result<()> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        names.push((n.to_vec(), entry.file_type()));
    }
    for (n, ty) in names {
        let name = std::os::unix::ffi::OsStrExt::from_bytes(n.as_slice());
        if ty == FileType::Directory || ty == FileType::Unknown {
            let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if st.st_dev != dev {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
                let sub = match open_dir_at(dir, name) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                empty_dir(sub.as_fd(), dev)?;
                drop(sub);
                ignore_noent(unlinkat(dir, name, AtFlags::REMOVEDIR))?;
                continue;
            }
        }
        ignore_noent(unlinkat(dir, name, AtFlags::empty()))?;
    }
    Ok(())
}

fn ignore_noent(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the tree at an absolute (trusted) path; see [`remove_tree_at`].
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let pfd = match open_dir(parent) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_tree_at(pfd.as_fd(), name)
}

/// Opens the regular file at `path` beneath `dir` for reading, without following any symlink
/// and without ever opening anything that is not a regular file: the object is first pinned
/// with `O_PATH`, its type checked, and only then reopened through `/proc/self/fd` (so a
/// device or fifo swapped in by a running container is never opened).
pub fn open_regular_beneath(dir: BorrowedFd<'_>, path: &OsStr) -> io::Result<std::fs::File> {
    use rustix::fs::{openat2, ResolveFlags};
    let pinned = openat2(
        dir,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )?;
    reopen_regular(pinned)
}

/// Opens the regular file `name` (one component) in `dir` for reading, never following a
/// symlink and never opening anything but a regular file (see [`open_regular_beneath`]).
pub fn open_regular_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let pinned = openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    reopen_regular(pinned)
}

/// Turns an `O_PATH` descriptor of a regular file into a readable one; anything else is
/// refused without ever being opened.
fn reopen_regular(pinned: OwnedFd) -> io::Result<std::fs::File> {
    use rustix::fs::fstat;
    let st = fstat(&pinned)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pinned));
    let fd = openat(
        CWD,
        proc.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let again = fstat(&fd)?;
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
        return Err(io::Error::other("file changed while being opened"));
    }
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"x").unwrap();
        let doomed = t.path().join("doomed");
        std::fs::create_dir_all(doomed.join("a/b")).unwrap();
        std::fs::write(doomed.join("a/b/f"), b"y").unwrap();
        std::os::unix::fs::symlink(&victim, doomed.join("a/link")).unwrap();
        remove_tree(&doomed).unwrap();
        assert!(!doomed.exists());
        assert!(victim.join("keep").exists());
        remove_tree(&doomed).unwrap(); // already gone: fine
    }
}
