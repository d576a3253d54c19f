//! What a suite needs from this machine (root, loop devices, overlayfs), and the skip (see
//! [`skip`]) when it is missing.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::skip;

/// Why a backend cannot be tested here, if it cannot: the skip key (see [`skip`]) and the
/// reason.
pub fn skip_reason(backend: &str, dir: &Path) -> Option<(&'static str, String)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some((
            "root",
            "the black-box tests need root (chown, mknod, mounts)".into(),
        ));
    }
    if backend == "block" {
        if !Path::new("/dev/loop-control").exists() {
            return Some((
                "loop",
                "no /dev/loop-control (the block backend needs loop devices)".into(),
            ));
        }
        let tools = ["mkfs.ext4", "debugfs", "tune2fs", "e2fsck", "resize2fs"];
        if let Some(t) = tools.iter().find(|t| {
            !["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(t).exists())
        }) {
            return Some(("e2fsprogs", format!("{t} is missing (install e2fsprogs)")));
        }
    }
    if backend == "overlay" || backend == "block" {
        let fs_list = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs_list
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
        {
            return Some((
                "overlay",
                "the kernel does not list overlay in /proc/filesystems".into(),
            ));
        }
        if fs_magic(dir) == Some(0x794c_7630) {
            return Some((
                "overlay",
                format!(
                    "{} is on overlayfs, which cannot hold overlay upper layers",
                    dir.display()
                ),
            ));
        }
    }
    None
}

/// Whether this process runs as root; when not, the test is skipped (see [`skip`]) and the
/// caller returns.
pub fn require_root(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip("root", &format!("needs root ({why})"));
    false
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into a properly sized, zeroed struct; `c` outlives the call.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) == 0 {
            Some(st.f_type as i64)
        } else {
            None
        }
    }
}
