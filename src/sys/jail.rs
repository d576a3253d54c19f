//! Confining a helper process's writes to a few directories: a private mount namespace in
//! which every mount is read-only except bind mounts of the directories it may write.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::mount::{mount_bind, mount_change, MountPropagationFlags};
use rustix::thread::{unshare_unsafe, UnshareFlags};

/// `mount_setattr(2)` on `path` (`AT_RECURSIVE` when `recursive`), setting and clearing
/// mount attributes (Linux 5.12+).
fn mount_setattr(path: &Path, recursive: bool, set: u64, clear: u64) -> io::Result<()> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 } as libc::c_uint;
    // SAFETY: `cpath` is NUL-terminated and `attr` is a properly initialised `mount_attr`;
    // both outlive the call, the size passed is the struct's size, and the kernel only reads
    // them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling process into a new mount namespace where the whole filesystem is
/// read-only except `writable` (each bind-mounted onto itself first), and forbids gaining
/// privileges through exec. Must run before any other thread is started.
pub fn confine_writes_to(writable: &[&Path]) -> io::Result<()> {
    // SAFETY: only NEWNS is unshared, which does not touch the file descriptor table (the
    // hazard `unshare_unsafe` exists for); it is called before the process starts threads.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS)? };
    // Nothing done here may propagate back to the host's mounts.
    mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )?;
    for dir in writable {
        mount_bind(*dir, *dir)?;
    }
    mount_setattr(Path::new("/"), true, libc::MOUNT_ATTR_RDONLY, 0)?;
    for dir in writable {
        mount_setattr(dir, false, 0, libc::MOUNT_ATTR_RDONLY)?;
    }
    rustix::thread::set_no_new_privs(true)?;
    Ok(())
}
