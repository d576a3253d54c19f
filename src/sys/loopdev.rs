//! Loop devices through their ioctls only (no `losetup`, no bindgen): a free device from
//! `/dev/loop-control` (`LOOP_CTL_GET_FREE`), configured in one step with `LOOP_CONFIGURE`
//! (backing fd, flags, size limit), inspected with `LOOP_GET_STATUS64`, grown with
//! `LOOP_SET_CAPACITY` and detached with `LOOP_CLR_FD`.
//!
//! Devices are normally attached with `LO_FLAGS_AUTOCLEAR`: the kernel detaches them when the
//! last opener goes away, i.e. when the filesystem mounted from them is torn down. So an
//! attached device is handed over to a mount while its [`LoopDevice`] (an open descriptor)
//! still lives; dropping the [`LoopDevice`] afterwards leaves the mount as the only user.
//! [`clear`] is the explicit path for devices that outlived their users (crashes, kernels
//! that defer the autoclear).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `LOOP_CLR_FD`: detach the backing file.
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
/// `LOOP_GET_STATUS64`: read a `loop_info64`.
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
/// `LOOP_SET_CAPACITY`: re-read the backing file's size.
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
/// `LOOP_CONFIGURE` (Linux 5.8+): set fd, flags and limits in one call.
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: number of a free (possibly new) device.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// The device is read-only.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// Detach automatically when the last opener closes the device.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// Length of `lo_file_name` and `lo_crypt_name`.
const LO_NAME_SIZE: usize = 64;
/// Length of `lo_encrypt_key`.
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// What `LOOP_GET_STATUS64` says about a bound device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopStatus {
    /// Device number of the filesystem holding the backing file.
    pub backing_dev: u64,
    /// Inode number of the backing file.
    pub backing_ino: u64,
    /// Size limit in bytes (0: the whole file).
    pub sizelimit: u64,
    /// `LO_FLAGS_*`.
    pub flags: u32,
    /// The backing file's name as recorded at attach time (truncated to 63 bytes).
    pub file_name: Vec<u8>,
}

/// An attached loop device, kept open. Dropping it closes the descriptor; with
/// [`LO_FLAGS_AUTOCLEAR`] the device detaches once nothing else (a mount) holds it.
#[derive(Debug)]
pub struct LoopDevice {
    fd: OwnedFd,
    number: u32,
}

impl LoopDevice {
    /// The device number (`N` of `/dev/loopN`).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> PathBuf {
        device_path(self.number)
    }

    /// The open device.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `/dev/loopN`.
pub fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

fn ioctl_arg(fd: BorrowedFd<'_>, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: the requests passed here (LOOP_CLR_FD, LOOP_SET_CAPACITY, LOOP_CTL_GET_FREE)
    // take an integer argument (ignored by these) and no pointer; `fd` is open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_device(number: u32, writable: bool, exclusive: bool) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_CLOEXEC;
    if exclusive {
        flags |= libc::O_EXCL;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(flags)
        .open(device_path(number))?;
    Ok(f.into())
}

/// Attaches `backing` (already open with the right access mode) to a free loop device.
///
/// `flags` are `LO_FLAGS_*` (normally [`LO_FLAGS_AUTOCLEAR`], plus [`LO_FLAGS_READ_ONLY`]
/// for read-only images); `sizelimit` bounds the device to the first bytes of the file (0:
/// all of it). A device another process configures between `LOOP_CTL_GET_FREE` and
/// `LOOP_CONFIGURE` (`EBUSY`) is skipped and another one asked for.
pub fn attach(backing: &File, name: &[u8], flags: u32, sizelimit: u64) -> io::Result<LoopDevice> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let mut last = None;
    for _ in 0..64 {
        let number = ioctl_arg(control.as_fd(), LOOP_CTL_GET_FREE, 0)? as u32;
        let dev = match open_device(number, flags & LO_FLAGS_READ_ONLY == 0, false) {
            Ok(d) => d,
            // The node may appear a moment after the device is created.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 4096,
            info: LoopInfo64::zeroed(),
            reserved: [0; 8],
        };
        config.info.lo_flags = flags;
        config.info.lo_sizelimit = sizelimit;
        let n = name.len().min(LO_NAME_SIZE - 1);
        config.info.lo_file_name[..n].copy_from_slice(&name[..n]);
        // SAFETY: `config` is a fully initialised `struct loop_config` (layout checked by the
        // size assertions above) that outlives the call; the kernel only reads it. `dev` and
        // the backing fd are open for the duration of the call.
        let rc = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE as _,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(LoopDevice { fd: dev, number });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
        last = Some(err);
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)))
}

/// `LOOP_GET_STATUS64` of an open loop device; `None` when it is not bound (`ENXIO`).
pub fn status(dev: BorrowedFd<'_>) -> io::Result<Option<LoopStatus>> {
    let mut info = LoopInfo64::zeroed();
    // SAFETY: `info` is a writable, correctly sized `struct loop_info64` that outlives the
    // call; the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_GET_STATUS64 as _,
            &mut info as *mut LoopInfo64,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(err);
    }
    let name_len = info
        .lo_file_name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(LO_NAME_SIZE);
    Ok(Some(LoopStatus {
        backing_dev: info.lo_device,
        backing_ino: info.lo_inode,
        sizelimit: info.lo_sizelimit,
        flags: info.lo_flags,
        file_name: info.lo_file_name[..name_len].to_vec(),
    }))
}

/// `LOOP_SET_CAPACITY`: makes the device pick up a new size of its backing file.
pub fn set_capacity(dev: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_arg(dev, LOOP_SET_CAPACITY, 0).map(|_| ())
}

/// `LOOP_CLR_FD`: detaches the backing file. When others still hold the device open the
/// kernel turns this into autoclear (detach on last close).
pub fn clear(dev: BorrowedFd<'_>) -> io::Result<()> {
    match ioctl_arg(dev, LOOP_CLR_FD, 0) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A bound loop device as listed in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundDevice {
    /// `N` of `/dev/loopN`.
    pub number: u32,
    /// The backing file's path (`/sys/block/loopN/loop/backing_file`), without the
    /// ` (deleted)` suffix.
    pub backing: PathBuf,
    /// Whether the backing file has been deleted.
    pub deleted: bool,
}

/// Every bound loop device, from `/sys/block/loop*/loop/backing_file` (which holds the full
/// path, unlike `lo_file_name`).
pub fn list_bound() -> io::Result<Vec<BoundDevice>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("loop"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("loop/backing_file")) else {
            continue; // not bound
        };
        let mut raw = raw.as_slice();
        if raw.last() == Some(&b'\n') {
            raw = &raw[..raw.len() - 1];
        }
        let (raw, deleted) = match raw.strip_suffix(b" (deleted)") {
            Some(r) => (r, true),
            None => (raw, false),
        };
        out.push(BoundDevice {
            number: n,
            backing: PathBuf::from(std::ffi::OsStr::from_bytes(raw)),
            deleted,
        });
    }
    out.sort_by_key(|d| d.number);
    Ok(out)
}

/// Opens `/dev/loopN` exclusively (`O_EXCL`), which succeeds only when no filesystem or
/// other exclusive user holds it; `None` when it is in use (`EBUSY`) or gone.
pub fn open_unused(number: u32) -> io::Result<Option<OwnedFd>> {
    match open_device(number, false, true) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOENT)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Detaches loop device `number` if nothing uses it and `still_ours` accepts what
/// `LOOP_GET_STATUS64` says about it (so a device re-bound meanwhile is left alone).
/// Returns whether it was detached.
pub fn detach_if_unused(number: u32, still_ours: impl Fn(&LoopStatus) -> bool) -> io::Result<bool> {
    let Some(fd) = open_unused(number)? else {
        return Ok(false);
    };
    let Some(st) = status(fd.as_fd())? else {
        return Ok(false);
    };
    if !still_ours(&st) {
        return Ok(false);
    }
    clear(fd.as_fd())?;
    Ok(true)
}

/// Identity `(st_dev, st_ino)` of a file as `LOOP_GET_STATUS64` reports it.
pub fn file_identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path)?;
    Ok((md.dev(), md.ino()))
}

/// The test kit's skip helper (one format, counted by `scripts/test`).
#[cfg(test)]
#[path = "../../tests/common/skip.rs"]
mod test_skip;

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_skip as skip;

    /// Whether loop devices can be used here; when not, the test is skipped.
    fn root_with_loop() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            skip::skip("root", "needs root (loop devices)");
            return false;
        }
        if !Path::new("/dev/loop-control").exists() {
            skip::skip("loop", "no /dev/loop-control");
            return false;
        }
        true
    }

    #[test]
    fn attach_status_capacity_clear() {
        if !root_with_loop() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(1 << 20).unwrap();
        let dev = attach(
            &f,
            path.as_os_str().as_encoded_bytes(),
            LO_FLAGS_AUTOCLEAR,
            0,
        )
        .unwrap();
        let st = status(dev.fd()).unwrap().expect("bound");
        assert_eq!(
            (st.backing_dev, st.backing_ino),
            file_identity(&path).unwrap()
        );
        assert_eq!(st.flags & LO_FLAGS_AUTOCLEAR, LO_FLAGS_AUTOCLEAR);
        let name = path.as_os_str().as_encoded_bytes();
        assert_eq!(st.file_name, &name[..name.len().min(63)]);
        let size = |d: &LoopDevice| {
            std::fs::read_to_string(format!("/sys/block/loop{}/size", d.number()))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(size(&dev), 2048);
        f.set_len(2 << 20).unwrap();
        set_capacity(dev.fd()).unwrap();
        assert_eq!(size(&dev), 4096);
        let listed = list_bound().unwrap();
        assert!(
            listed
                .iter()
                .any(|b| b.number == dev.number() && b.backing == path),
            "{listed:?}"
        );
        // We still hold the device open, so the kernel defers the detach to our close.
        let n = dev.number();
        clear(dev.fd()).unwrap();
        drop(dev);
        let gone = (0..100).any(|_| {
            let bound = list_bound()
                .unwrap()
                .iter()
                .any(|b| b.number == n && b.backing == path);
            if bound {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            !bound
        });
        assert!(gone, "loop{n} still bound to {}", path.display());
    }
}
