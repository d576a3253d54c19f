//! The only module that issues raw system calls or holds `unsafe` code. Everything here is a
//! thin, documented wrapper; policy lives in the callers.
#![allow(unsafe_code)]

pub mod jail;
pub mod label;
pub mod lock;
pub mod loopdev;
pub mod mount;
pub mod mountinfo;
pub mod quota;

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// `/proc/self/fd/<fd>/<name>`: addresses a single-component `name` inside an open directory
/// for the few calls that have no fd-relative form (`l*xattr`). The magic link pins the
/// directory; `name` is resolved once, relative to it.
pub fn proc_fd_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

/// `fchmodat2(dir, name, mode, AT_SYMLINK_NOFOLLOW)`: changes the mode of `dir/name` without
/// following a final symlink (Linux 6.6+). On older kernels it falls back to checking the type
/// with `fstatat(AT_SYMLINK_NOFOLLOW)` and refusing symlinks before a plain `fchmodat`.
pub fn fchmodat_nofollow(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let cname =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `dir` is a valid open descriptor for the duration of the call, `cname` is a
    // NUL-terminated string that outlives it, and fchmodat2 does not retain either pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            cname.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    rustix::fs::chmodat(
        dir,
        name,
        rustix::fs::Mode::from_raw_mode(mode),
        rustix::fs::AtFlags::empty(),
    )?;
    Ok(())
}

/// The kernel's boot id: changes on every boot, so refcounts recorded under another boot id
/// describe mounts that no longer exist.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
