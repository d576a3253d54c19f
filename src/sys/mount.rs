//! Mounting: overlayfs through the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`,
//! one `lowerdir+` per layer, so chain depth is limited only by the kernel), with a fallback to
//! classic `mount(2)` where `lowerdir+` is unknown (Linux < 6.8); read-only bind mounts; and
//! unmounting.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::CWD;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, mount, mount_bind, mount_remount,
    move_mount, unmount as sys_unmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags,
    MoveMountFlags, UnmountFlags,
};

/// What to mount with overlayfs.
#[derive(Debug, Clone, Default)]
pub struct OverlaySpec {
    /// Lower directories, topmost (nearest) first.
    pub lowers: Vec<PathBuf>,
    /// Upper and work directory; `None` for a read-only mount.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// SELinux context for the mount, when SELinux is enabled.
    pub label: Option<String>,
    /// Extra `key=value` options (e.g. `index=off`, `redirect_dir=off`).
    pub options: Vec<(String, String)>,
}

/// Reads the messages the kernel queued on a filesystem context, for error reports.
fn fs_log(fs: &OwnedFd) -> String {
    let mut msgs = Vec::new();
    let mut f = std::fs::File::from(match fs.try_clone() {
        Ok(fd) => fd,
        Err(_) => return String::new(),
    });
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA ends the queue.
    for _ in 0..16 {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => msgs.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    msgs.join("; ")
}

fn with_log(fs: &OwnedFd, what: &str, e: rustix::io::Errno) -> io::Error {
    let log = fs_log(fs);
    let msg = if log.is_empty() {
        format!("{what}: {e}")
    } else {
        format!("{what}: {e} ({log})")
    };
    io::Error::new(io::Error::from(e).kind(), msg)
}

/// Whether the running kernel knows overlayfs (listed in `/proc/filesystems`).
pub fn kernel_has_overlay() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
}

/// Whether strata mounts overlays with the new mount API: the kernel's overlayfs accepts
/// `lowerdir+` (Linux 6.8+, probed once) and `STRATA_MOUNT_API=classic` does not force the
/// classic path (for testing it on new kernels).
pub fn use_new_mount_api() -> bool {
    std::env::var_os("STRATA_MOUNT_API").is_none_or(|v| v != "classic")
        && overlay_supports_lowerdir_plus()
}

/// Whether this kernel's overlayfs accepts `lowerdir+` (Linux 6.8+). Probed once.
pub fn overlay_supports_lowerdir_plus() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
            return false;
        };
        // Before Linux 6.5 overlayfs has no fs_context of its own: the kernel's legacy
        // adapter accepts any key and fails only at create time, so a key that cannot exist
        // must be refused too for `lowerdir+` to mean anything.
        fsconfig_set_string(fs.as_fd(), "lowerdir+", "/").is_ok()
            && fsconfig_set_string(fs.as_fd(), "strata-probe-no-such-option", "x").is_err()
    })
}

/// Runs `f` on a short-lived thread whose working directory is `dir` (`unshare(CLONE_FS)` +
/// `chdir(dir)`), so that relative paths `f` hands the kernel resolve under `dir` without
/// changing the process's working directory.
fn in_dir(dir: &Path, f: impl FnOnce() -> io::Result<()> + Send) -> io::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: CLONE_FS only gives this short-lived thread its own cwd/root/umask;
            // no file descriptor table is unshared, which is the hazard the function warns of.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS)? };
            rustix::process::chdir(dir)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
    })
}

/// Mounts overlayfs at `target` with the new mount API, one `lowerdir+` per layer, resolving
/// relative paths in `spec` under `dir`. Read-only when `spec.upper` is `None`.
///
/// The kernel takes at most 255 bytes per `fsconfig` string, so layer paths are best passed
/// relative to the store root: absolute ones under a long root would not fit.
pub fn mount_overlay_in(dir: &Path, target: &Path, spec: &OverlaySpec) -> io::Result<()> {
    in_dir(dir, || mount_overlay_new_api(target, spec))
}

/// Mounts overlayfs on the directory `target` pins (an `O_PATH` descriptor) with the new mount
/// API: the mount is attached to exactly that directory, whatever its path leads to by now.
/// Paths in `spec` are best `/proc/self/fd/<n>` paths of pinned layer directories (see
/// [`crate::fsutil::fd_path`]), which are short and follow no name.
pub fn mount_overlay_at(target: BorrowedFd<'_>, spec: &OverlaySpec) -> io::Result<()> {
    let mnt = overlay_new_api(spec)?;
    move_mount(
        mnt.as_fd(),
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// Mounts overlayfs with classic `mount(2)` on the directory `target` pins, interpreting
/// relative paths in `spec` relative to `dir`.
pub fn mount_overlay_classic_at(
    dir: &Path,
    target: BorrowedFd<'_>,
    spec: &OverlaySpec,
) -> io::Result<()> {
    let target = crate::fsutil::fd_path(target);
    in_dir(dir, || mount_overlay_classic(&target, spec))
}

/// Bind-mounts the directory `src` pins onto the directory `target` pins, read-only from the
/// start (the bind is made detached, made read-only, then attached), so no name is resolved
/// and no writable window exists.
pub fn bind_readonly_at(src: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let tree = open_tree(
        src,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )?;
    set_readonly(tree.as_fd())?;
    move_mount(
        tree.as_fd(),
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH, MOUNT_ATTR_RDONLY)` (Linux 5.12+).
fn set_readonly(fd: BorrowedFd<'_>) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a static NUL-terminated empty string, `attr` is an initialised
    // `mount_attr` whose size is passed along; both outlive the call and are only read.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
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

/// Unmounts (lazily) the mount whose root `mounted` pins (a descriptor opened on a mount point
/// after the mount, so it pins the mounted root, not the directory below). A descriptor that
/// is no mount's root (nothing mounted) is not an error.
pub fn unmount_at(mounted: BorrowedFd<'_>) -> io::Result<()> {
    let path = crate::fsutil::fd_path(mounted);
    match sys_unmount(&path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Mounts overlayfs at `target` with classic `mount(2)`, interpreting relative paths in
/// `spec` relative to `dir`, so short relative paths fit more layers into the one page of
/// options `mount(2)` accepts.
pub fn mount_overlay_classic_in(dir: &Path, target: &Path, spec: &OverlaySpec) -> io::Result<()> {
    in_dir(dir, || mount_overlay_classic(target, spec))
}

/// Bytes of `mount(2)` overlay options a chain needs, for sizing the classic fallback.
pub fn classic_options_len(spec: &OverlaySpec) -> usize {
    let lowers: usize = spec.lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    let upper = spec
        .upper
        .as_ref()
        .map_or(0, |(u, w)| u.as_os_str().len() + w.as_os_str().len() + 20);
    let opts: usize = spec
        .options
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum();
    "lowerdir=".len() + lowers + upper + opts
}

fn mount_overlay_new_api(target: &Path, spec: &OverlaySpec) -> io::Result<()> {
    let mnt = overlay_new_api(spec)?;
    move_mount(
        mnt.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Creates a detached overlay mount from `spec` with `fsopen`/`fsconfig`/`fsmount`.
fn overlay_new_api(spec: &OverlaySpec) -> io::Result<OwnedFd> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    let set = |k: &str, v: &std::ffi::OsStr| -> io::Result<()> {
        fsconfig_set_string(fs.as_fd(), k, v).map_err(|e| {
            with_log(
                &fs,
                &format!("overlay option {k}={}", v.to_string_lossy()),
                e,
            )
        })
    };
    for lower in &spec.lowers {
        set("lowerdir+", lower.as_os_str())?;
    }
    if let Some((upper, work)) = &spec.upper {
        set("upperdir", upper.as_os_str())?;
        set("workdir", work.as_os_str())?;
    }
    for (k, v) in &spec.options {
        set(k, std::ffi::OsStr::new(v))?;
    }
    if let Some(label) = &spec.label {
        check_label(label)?;
        // A key of its own: nothing in the value can start another option.
        set("context", std::ffi::OsStr::new(label))?;
    }
    fsconfig_create(fs.as_fd()).map_err(|e| with_log(&fs, "creating overlay mount", e))?;
    let attrs = if spec.upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| with_log(&fs, "fsmount overlay", e))
}

/// Refuses a mount label that is not an SELinux context (see [`super::label`]).
fn check_label(label: &str) -> io::Result<()> {
    super::label::validate(label).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("mount label {label:?} is not an SELinux context: {why}"),
        )
    })
}

/// The classic `mount(2)` form; its option string must fit in one page, which limits depth.
fn mount_overlay_classic(target: &Path, spec: &OverlaySpec) -> io::Result<()> {
    let bad = |p: &Path| {
        p.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b':' | b',' | b'\\'))
    };
    let mut data = String::from("lowerdir=");
    for (i, l) in spec.lowers.iter().enumerate() {
        if bad(l) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "path {} cannot be passed in classic overlay options",
                    l.display()
                ),
            ));
        }
        if i > 0 {
            data.push(':');
        }
        data.push_str(&l.to_string_lossy());
    }
    if let Some((u, w)) = &spec.upper {
        if let Some(p) = [u, w].into_iter().find(|p| bad(p)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "path {} cannot be passed in classic overlay options",
                    p.display()
                ),
            ));
        }
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    for (k, v) in &spec.options {
        data.push_str(&format!(",{k}={v}"));
    }
    if let Some(label) = &spec.label {
        check_label(label)?;
        // Quoted (as Docker's FormatMountLabel does): a category list's commas stay inside;
        // the label grammar admits no quote that could close it early.
        data.push_str(&format!(",context=\"{label}\""));
    }
    let page = rustix::param::page_size();
    if data.len() >= page {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a chain of {} layers needs {} bytes of overlay options, more than a page ({page}); this kernel lacks lowerdir+ (Linux 6.8+)",
                spec.lowers.len(),
                data.len()
            ),
        ));
    }
    let cdata = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if spec.upper.is_none() {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    mount("overlay", target, "overlay", flags, Some(cdata.as_c_str()))?;
    Ok(())
}

/// Bind-mounts `src` at `target` read-only.
pub fn bind_readonly(src: &Path, target: &Path) -> io::Result<()> {
    mount_bind(src, target)?;
    if let Err(e) = mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "") {
        let _ = sys_unmount(target, UnmountFlags::DETACH);
        return Err(e.into());
    }
    Ok(())
}

/// Unmounts `target` lazily (`MNT_DETACH`), never following a symlink at `target`.
/// An absent mount (`EINVAL`) or mount point (`ENOENT`) is not an error.
pub fn unmount(target: &Path) -> io::Result<()> {
    match sys_unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether SELinux is enabled on this machine (mount labels are ignored otherwise, as in
/// Docker's `label.FormatMountLabel`).
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Bind-mounts `dir` onto itself, recursively (making it a mount point of its own while the
/// mounts below it stay visible).
pub fn bind_self(dir: &Path) -> io::Result<()> {
    rustix::mount::mount_bind_recursive(dir, dir)?;
    Ok(())
}

/// Sets the propagation of the mount at `dir` to private: mounts below it neither propagate
/// to peers nor receive theirs.
pub fn make_private(dir: &Path) -> io::Result<()> {
    rustix::mount::mount_change(dir, rustix::mount::MountPropagationFlags::PRIVATE)?;
    Ok(())
}

/// Mounts the block device `dev` (a filesystem of type `fstype`) at `target`, read-only when
/// `readonly`, with filesystem options `data` (comma-separated, may be empty).
pub fn mount_block(
    dev: &Path,
    target: &Path,
    fstype: &str,
    readonly: bool,
    data: &str,
) -> io::Result<()> {
    let flags = if readonly {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let cdata = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    mount(dev, target, fstype, flags, Some(cdata.as_c_str()))?;
    Ok(())
}

/// Mounts the block device `dev` without attaching it anywhere (`fsopen` + `fsmount`): the
/// returned descriptor is the root of a private mount that disappears, with its superblock,
/// when the descriptor and everything opened through it are closed. `options` are
/// `key=value` (or bare `key`) filesystem options.
pub fn mount_block_detached(
    dev: &Path,
    fstype: &str,
    readonly: bool,
    options: &[&str],
) -> io::Result<OwnedFd> {
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(fs.as_fd(), "source", dev)
        .map_err(|e| with_log(&fs, &format!("{fstype} source {}", dev.display()), e))?;
    if readonly {
        rustix::mount::fsconfig_set_flag(fs.as_fd(), "ro")
            .map_err(|e| with_log(&fs, "read-only flag", e))?;
    }
    for opt in options {
        let r = match opt.split_once('=') {
            Some((k, v)) => fsconfig_set_string(fs.as_fd(), k, v),
            None => rustix::mount::fsconfig_set_flag(fs.as_fd(), *opt),
        };
        r.map_err(|e| with_log(&fs, &format!("{fstype} option {opt}"), e))?;
    }
    fsconfig_create(fs.as_fd())
        .map_err(|e| with_log(&fs, &format!("creating a {fstype} mount"), e))?;
    let attrs = if readonly {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| with_log(&fs, &format!("fsmount {fstype}"), e))
}

/// Bind-mounts `src` at `target` (writable; not recursive).
pub fn bind(src: &Path, target: &Path) -> io::Result<()> {
    mount_bind(src, target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile label is refused before the kernel sees it, on both mount paths, and nothing
    /// is mounted.
    #[test]
    fn hostile_labels_are_refused_on_both_paths() {
        let t = tempfile::tempdir().unwrap();
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        let hostile = "system_u:object_r:container_file_t:s0\",lowerdir=/,upperdir=/tmp";
        let spec = OverlaySpec {
            lowers: vec![PathBuf::from("lower")],
            upper: Some((PathBuf::from("upper"), PathBuf::from("work"))),
            label: Some(hostile.to_string()),
            options: Vec::new(),
        };
        let merged = t.path().join("merged");
        for classic in [false, true] {
            let r = if classic {
                mount_overlay_classic_in(t.path(), &merged, &spec)
            } else {
                mount_overlay_in(t.path(), &merged, &spec)
            };
            let mounted = crate::sys::mountinfo::read()
                .unwrap()
                .iter()
                .any(|m| m.mount_point == merged);
            if mounted {
                let _ = unmount(&merged);
            }
            let e = r.expect_err("a hostile label must be refused");
            assert!(!mounted, "nothing may be mounted (classic: {classic})");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("not an SELinux context"), "{e}");
        }
    }
}
