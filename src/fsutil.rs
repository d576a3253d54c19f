//! Small fd-relative filesystem helpers shared by the store, the backends and the diff engine.
//! Nothing here follows a symlink it did not mean to.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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

/// How everything inside a store is resolved: beneath the starting directory, through no
/// symlink at all (not even one pointing back inside), and never through `/proc` magic links.
fn strict() -> rustix::fs::ResolveFlags {
    use rustix::fs::ResolveFlags;
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Opens `rel` (a relative path) beneath the directory `root` (an absolute, trusted path
/// without symlinks, like a store root) with `flags`, refusing any symlink on the way
/// (`ELOOP`) and any path leaving `root` (`EXDEV`).
pub fn open_beneath(root: &Path, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let rfd = openat(
        CWD,
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::openat2(
        &rfd,
        rel,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        strict(),
    )?)
}

/// An `O_PATH` descriptor of the directory `rel` beneath `root` (see [`open_beneath`]): pins
/// the directory itself, whatever is renamed or swapped in afterwards.
pub fn pin_dir_beneath(root: &Path, rel: &Path) -> io::Result<OwnedFd> {
    must_be_dir(open_beneath(root, rel, OFlags::PATH | OFlags::DIRECTORY)?)
}

/// `fd` if it is a directory (an `O_PATH|O_NOFOLLOW` open can pin a symlink itself).
fn must_be_dir(fd: OwnedFd) -> io::Result<OwnedFd> {
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(fd)
}

/// Creates the directory `rel` beneath `root` with `mode` if it is missing (an existing
/// directory is kept as it is) and pins it, resolving as [`open_beneath`] does: a symlink
/// anywhere on the way, or in place of the directory, is refused and nothing is created
/// outside `root`.
pub fn mkdir_beneath(root: &Path, rel: &Path, mode: u32) -> io::Result<OwnedFd> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let pfd = pin_dir_beneath(root, parent)?;
    match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(mode)) {
        Ok(()) => crate::sys::fchmodat_nofollow(pfd.as_fd(), name, mode)?,
        Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    must_be_dir(rustix::fs::openat2(
        &pfd,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        strict(),
    )?)
}

/// `/proc/self/fd/<fd>`: a path naming exactly the object `fd` pins, for calls that take a
/// path (mount options, `mount(2)`); resolving it follows no name in the filesystem.
pub fn fd_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
}

/// Removes `name` inside `dir` and everything beneath it, never following symlinks and never
/// crossing into another mount (a mount point makes the removal fail with `EBUSY` instead of
/// deleting someone else's files). A missing `name`, or entries vanishing underneath (another
/// process sweeping the same tree), are not errors.
///
/// The walk is iterative and holds at most three descriptors whatever the depth: it descends
/// into one subdirectory at a time, remembering only the names on the way down, and climbs back
/// through `..`, checked against the directory it came from (a subtree moved away meanwhile
/// fails the removal instead of deleting elsewhere). So a tree of any depth is deleted on any
/// thread, however small its stack.
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
    empty_dir(child, st.st_dev)?;
    ignore_noent(unlinkat(dir, name, AtFlags::REMOVEDIR))
}

/// One level of the walk in [`empty_dir`]: the name of the directory entered, and the
/// identity (device, inode) of the directory it was entered from.
struct Level {
    name: Box<[u8]>,
    parent: (u64, u64),
}

/// What [`clear_entries`] found: the directory is empty, or it has this subdirectory left.
enum Scan {
    Empty,
    Subdir(Box<[u8]>, OwnedFd),
}

/// Removes everything inside the open directory `top` (which must be on device `dev`),
/// iteratively (see [`remove_tree_at`]).
fn empty_dir(top: OwnedFd, dev: u64) -> io::Result<()> {
    let mut path: Vec<Level> = Vec::new();
    let mut cur = top;
    loop {
        match clear_entries(cur.as_fd(), dev)? {
            Scan::Subdir(name, sub) => {
                let here = rustix::fs::fstat(&cur)?;
                path.push(Level {
                    name,
                    parent: (here.st_dev, here.st_ino),
                });
                cur = sub;
            }
            Scan::Empty => {
                let Some(level) = path.pop() else {
                    return Ok(());
                };
                let up = openat(
                    &cur,
                    "..",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let up_st = rustix::fs::fstat(&up)?;
                if (up_st.st_dev, up_st.st_ino) != level.parent {
                    return Err(io::Error::other(
                        "a directory was moved out of the tree while it was being deleted",
                    ));
                }
                drop(std::mem::replace(&mut cur, up));
                ignore_noent(unlinkat(
                    &cur,
                    OsStr::from_bytes(&level.name),
                    AtFlags::REMOVEDIR,
                ))?;
            }
        }
    }
}

/// Unlinks every non-directory in `dir` and stops at the first subdirectory, returning it
/// opened (its entry is left for the caller to empty and remove).
fn clear_entries(dir: BorrowedFd<'_>, dev: u64) -> io::Result<Scan> {
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        let name = OsStr::from_bytes(n);
        let ty = entry.file_type();
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
                match open_dir_at(dir, name) {
                    Ok(fd) => return Ok(Scan::Subdir(n.into(), fd)),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        ignore_noent(unlinkat(dir, name, AtFlags::empty()))?;
    }
    Ok(Scan::Empty)
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

    /// A tmpfs mounted over a test directory, detached when dropped.
    struct TmpfsGuard(std::path::PathBuf);

    impl TmpfsGuard {
        fn mount(at: &Path) -> TmpfsGuard {
            rustix::mount::mount(
                "tmpfs",
                at,
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                None,
            )
            .expect("mounting a tmpfs (the unit tests run as root)");
            TmpfsGuard(at.to_path_buf())
        }
    }

    impl Drop for TmpfsGuard {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }

    /// Builds `depth` nested directories `d/d/d/...` under `dir`, fd-relative (no path string
    /// could name the bottom), with a file and a symlink at every 1000th level.
    fn deep_tree(dir: &Path, depth: usize) {
        let mut cur = open_dir(dir).unwrap();
        for i in 0..depth {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            if i % 1000 == 0 {
                let f = openat(
                    &cur,
                    "f",
                    OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .unwrap();
                drop(f);
                rustix::fs::symlinkat("/", &cur, "root-link").unwrap();
            }
            cur = open_dir_at(cur.as_fd(), OsStr::new("d")).unwrap();
        }
    }

    /// Deletes a `depth`-deep tree on a thread with a 64 KiB stack (a recursive walk needs a
    /// frame per level and overflows long before).
    fn delete_deep_on_small_stack(depth: usize) {
        // On a tmpfs of its own: the test is about the walk, not about the disk's speed.
        let t = tempfile::tempdir().unwrap();
        let _fs = TmpfsGuard::mount(t.path());
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"x").unwrap();
        let doomed = t.path().join("doomed");
        std::fs::create_dir(&doomed).unwrap();
        deep_tree(&doomed, depth);
        let d = doomed.clone();
        let r = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || remove_tree(&d))
            .unwrap()
            .join()
            .expect("the deleting thread must not die");
        r.unwrap();
        assert!(
            std::fs::symlink_metadata(&doomed).is_err(),
            "tree must be gone"
        );
        assert!(victim.join("keep").exists());
    }

    #[test]
    fn deletes_a_10000_deep_tree_on_a_small_stack() {
        delete_deep_on_small_stack(10_000);
    }

    #[test]
    fn deletes_a_100000_deep_tree_on_a_small_stack() {
        delete_deep_on_small_stack(100_000);
    }

    #[test]
    fn refuses_to_cross_a_mount_point() {
        let t = tempfile::tempdir().unwrap();
        let doomed = t.path().join("doomed");
        std::fs::create_dir_all(doomed.join("a/mnt")).unwrap();
        std::fs::write(doomed.join("a/f"), b"y").unwrap();
        let mnt = doomed.join("a/mnt");
        rustix::mount::mount(
            "tmpfs",
            &mnt,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mounting a tmpfs (the unit tests run as root)");
        std::fs::write(mnt.join("other"), b"z").unwrap();
        let r = remove_tree(&doomed);
        let kept = mnt.join("other").exists();
        let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBUSY));
        assert!(kept, "files of another mount must not be deleted");
    }
}
