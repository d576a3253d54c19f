//! When a freshly created object already has the owner and mode an entry asks for, so the
//! `chown`/`chmod` that would set them can be skipped (most of a layer: root-owned files with
//! ordinary modes). A new object belongs to the process's filesystem uid and gid — or the
//! group of a setgid parent directory — and gets the requested mode minus the umask, unless
//! the parent has a default ACL, which replaces the umask. Anything else is set explicitly.

use super::tree::Dir;

/// The process's filesystem identity and umask, read once per apply.
#[derive(Debug, Clone, Copy)]
pub struct Creds {
    uid: u32,
    gid: u32,
    umask: u32,
}

impl Creds {
    /// The calling process's.
    pub fn current() -> Creds {
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            // Unknown: assume the most restrictive, so modes are always set explicitly.
            .unwrap_or(0o777);
        Creds {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            umask,
        }
    }

    /// Whether an object created in `parent` already has owner `uid:gid`.
    pub fn owner_ok(&self, parent: &Dir, uid: u32, gid: u32) -> bool {
        let group = if parent.setgid { parent.gid } else { self.gid };
        uid == self.uid && gid == group
    }

    /// Whether creating with `mode` in `parent` yields exactly `mode` (no special bits, none
    /// masked by the umask or a default ACL; `dir`: a setgid parent passes its bit on).
    pub fn mode_ok(&self, parent: &Dir, mode: u32, dir: bool) -> bool {
        mode & 0o7000 == 0
            && mode & self.umask == 0
            && !parent.acl_default
            && !(dir && parent.setgid)
    }
}
