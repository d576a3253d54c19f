//! XFS project quotas, the raw calls: a directory's project id (`FS_IOC_FSGETXATTR` /
//! `FS_IOC_FSSETXATTR` on `struct fsxattr`) and a project's block limit and usage (`quotactl`
//! `Q_XSETQLIM` / `Q_XGETQUOTA` on `struct fs_disk_quota`, `Q_XGETQSTATV` for whether project
//! quotas are accounted and enforced). The structures are the kernel's UAPI layouts
//! (`linux/fs.h`, `linux/dqblk_xfs.h`), defined here by hand.
//!
//! `quotactl` addresses a filesystem by its block device. [`QuotaDev::open`] prefers
//! `quotactl_fd(2)` (Linux 5.14+) on a directory of the filesystem, which needs no device
//! node; on older kernels it makes a private block-device node of the filesystem's `st_dev`
//! (as Docker's overlay2 does with `backingFsBlockDev`) and uses classic `quotactl(2)`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `struct fsxattr` (`linux/fs.h`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    fsx_xflags: u32,
    fsx_extsize: u32,
    fsx_nextents: u32,
    fsx_projid: u32,
    fsx_cowextsize: u32,
    fsx_pad: [u8; 8],
}

/// `_IOR('X', 31, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
/// `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
/// New entries of the directory take its project id.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// `struct fs_disk_quota` (`linux/dqblk_xfs.h`); block counts are 512-byte basic blocks.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsDiskQuota {
    d_version: i8,
    d_flags: i8,
    d_fieldmask: u16,
    d_id: u32,
    d_blk_hardlimit: u64,
    d_blk_softlimit: u64,
    d_ino_hardlimit: u64,
    d_ino_softlimit: u64,
    d_bcount: u64,
    d_icount: u64,
    d_itimer: i32,
    d_btimer: i32,
    d_iwarns: u16,
    d_bwarns: u16,
    d_itimer_hi: i8,
    d_btimer_hi: i8,
    d_rtbtimer_hi: i8,
    d_padding2: i8,
    d_rtb_hardlimit: u64,
    d_rtb_softlimit: u64,
    d_rtbcount: u64,
    d_rtbtimer: i32,
    d_rtbwarns: u16,
    d_padding3: i16,
    d_padding4: [u8; 8],
}

/// `struct fs_qfilestatv`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsQfilestatv {
    qfs_ino: u64,
    qfs_nblks: u64,
    qfs_nextents: u32,
    qfs_pad: u32,
}

/// `struct fs_quota_statv`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsQuotaStatv {
    qs_version: i8,
    qs_pad1: u8,
    qs_flags: u16,
    qs_incoredqs: u32,
    qs_uquota: FsQfilestatv,
    qs_gquota: FsQfilestatv,
    qs_pquota: FsQfilestatv,
    qs_btimelimit: i32,
    qs_itimelimit: i32,
    qs_rtbtimelimit: i32,
    qs_bwarnlimit: u16,
    qs_iwarnlimit: u16,
    qs_rtbwarnlimit: u16,
    qs_pad3: u16,
    qs_pad4: u32,
    qs_pad2: [u64; 7],
}

const _: () = assert!(std::mem::size_of::<FsXattr>() == 28);
const _: () = assert!(std::mem::size_of::<FsDiskQuota>() == 112);
const _: () = assert!(std::mem::size_of::<FsQuotaStatv>() == 160);

const fn xqm_cmd(n: i32) -> i32 {
    ((b'X' as i32) << 8) + n
}
const Q_XGETQUOTA: i32 = xqm_cmd(3);
const Q_XSETQLIM: i32 = xqm_cmd(4);
const Q_XGETQSTATV: i32 = xqm_cmd(8);
const XFS_PROJ_QUOTA: i32 = 2;
const FS_DQUOT_VERSION: i8 = 1;
const FS_PROJ_QUOTA: i8 = 2;
const FS_DQ_BSOFT: u16 = 1 << 2;
const FS_DQ_BHARD: u16 = 1 << 3;
const FS_QSTATV_VERSION1: i8 = 1;
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;

fn fsxattr(dir: BorrowedFd<'_>) -> io::Result<FsXattr> {
    let mut fa = FsXattr::default();
    // SAFETY: `dir` is an open descriptor for the call; FS_IOC_FSGETXATTR writes exactly one
    // `struct fsxattr`, which `fa` is (repr(C), size checked at compile time).
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR, &mut fa as *mut FsXattr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fa)
}

/// The project id of the file or directory `dir`, and whether it passes it on to new entries
/// (`FS_XFLAG_PROJINHERIT`).
pub fn project_id(dir: BorrowedFd<'_>) -> io::Result<(u32, bool)> {
    let fa = fsxattr(dir)?;
    Ok((fa.fsx_projid, fa.fsx_xflags & FS_XFLAG_PROJINHERIT != 0))
}

/// Gives the directory `dir` project id `projid` and makes new entries inherit it, keeping its
/// other attribute flags. Entries that already exist below it keep theirs.
pub fn set_project_id(dir: BorrowedFd<'_>, projid: u32) -> io::Result<()> {
    let mut fa = fsxattr(dir)?;
    fa.fsx_projid = projid;
    fa.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: `dir` is an open descriptor for the call; FS_IOC_FSSETXATTR reads one
    // `struct fsxattr` from `fa`, which lives across the call and is not retained.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSSETXATTR, &fa as *const FsXattr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether project quotas are accounted and enforced on a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// Usage is counted per project.
    pub accounting: bool,
    /// Limits are enforced (`pquota`/`prjquota`, not `pqnoenforce`).
    pub enforced: bool,
}

/// A project's limit and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProjectQuota {
    /// Hard block limit in bytes (0: none).
    pub limit: u64,
    /// Bytes of disk blocks owned by the project.
    pub used: u64,
    /// Inodes owned by the project.
    pub inodes: u64,
}

/// Whether the kernel has `quotactl_fd(2)`: called on an invalid descriptor it fails with
/// `EBADF`, where an older kernel says `ENOSYS`.
fn has_quotactl_fd() -> bool {
    let cmd = libc::QCMD(Q_XGETQSTATV, XFS_PROJ_QUOTA);
    // SAFETY: the descriptor is invalid, so the kernel rejects the call before touching the
    // (null) address.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            -1 as libc::c_int,
            cmd as libc::c_uint,
            0 as libc::c_int,
            std::ptr::null_mut::<libc::c_char>(),
        )
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// How `quotactl` reaches one filesystem.
#[derive(Debug)]
pub enum QuotaDev {
    /// `quotactl_fd(2)` on a directory of the filesystem.
    Fd(OwnedFd),
    /// Classic `quotactl(2)` on a block-device node of the filesystem's device.
    Node(PathBuf),
}

impl QuotaDev {
    /// Addresses the filesystem holding the directory `dir`; `node` is where a device node is
    /// made if the kernel has no `quotactl_fd` (a path in a directory only strata writes).
    pub fn open(dir: &Path, node: &Path) -> io::Result<QuotaDev> {
        let fd = crate::fsutil::open_dir(dir)?;
        if has_quotactl_fd() {
            return Ok(QuotaDev::Fd(fd));
        }
        let st = rustix::fs::fstat(&fd)?;
        let _ = std::fs::remove_file(node);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            node,
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            st.st_dev,
        )?;
        Ok(QuotaDev::Node(node.to_path_buf()))
    }

    fn quotactl(&self, cmd: i32, id: u32, addr: *mut libc::c_char) -> io::Result<()> {
        let cmd = libc::QCMD(cmd, XFS_PROJ_QUOTA);
        let rc = match self {
            // SAFETY: `fd` is open for the call; `addr` points to the structure `cmd` reads or
            // writes (the callers pass the matching repr(C) type), valid across the call.
            QuotaDev::Fd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_quotactl_fd,
                    fd.as_fd().as_raw_fd(),
                    cmd as libc::c_uint,
                    id as libc::c_int,
                    addr,
                )
            },
            QuotaDev::Node(path) => {
                let c = CString::new(path.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                // SAFETY: `c` is a NUL-terminated path that outlives the call; `addr` as above.
                (unsafe { libc::quotactl(cmd, c.as_ptr(), id as libc::c_int, addr) })
                    as libc::c_long
            }
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether project quotas are on (`Q_XGETQSTATV`). `ENOSYS` means no quota of any type
    /// is on (or the filesystem has no quota support at all).
    pub fn get_state(&self) -> io::Result<QuotaState> {
        let mut st = FsQuotaStatv {
            qs_version: FS_QSTATV_VERSION1,
            ..FsQuotaStatv::default()
        };
        self.quotactl(
            Q_XGETQSTATV,
            0,
            &mut st as *mut FsQuotaStatv as *mut libc::c_char,
        )?;
        Ok(QuotaState {
            accounting: st.qs_flags & FS_QUOTA_PDQ_ACCT != 0,
            enforced: st.qs_flags & FS_QUOTA_PDQ_ENFD != 0,
        })
    }

    /// Sets project `projid`'s hard and soft block limit to `bytes` (rounded up to 512-byte
    /// blocks; 0 removes the limit).
    pub fn set_limit(&self, projid: u32, bytes: u64) -> io::Result<()> {
        let blocks = bytes.div_ceil(512);
        let mut d = FsDiskQuota {
            d_version: FS_DQUOT_VERSION,
            d_flags: FS_PROJ_QUOTA,
            d_fieldmask: FS_DQ_BSOFT | FS_DQ_BHARD,
            d_id: projid,
            d_blk_hardlimit: blocks,
            d_blk_softlimit: blocks,
            ..FsDiskQuota::default()
        };
        self.quotactl(
            Q_XSETQLIM,
            projid,
            &mut d as *mut FsDiskQuota as *mut libc::c_char,
        )
    }

    /// Project `projid`'s limit and usage; all zero for a project the filesystem has no record
    /// of.
    pub fn get(&self, projid: u32) -> io::Result<ProjectQuota> {
        let mut d = FsDiskQuota::default();
        match self.quotactl(
            Q_XGETQUOTA,
            projid,
            &mut d as *mut FsDiskQuota as *mut libc::c_char,
        ) {
            Ok(()) => Ok(ProjectQuota {
                limit: d.d_blk_hardlimit * 512,
                used: d.d_bcount * 512,
                inodes: d.d_icount,
            }),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(ProjectQuota::default()),
            Err(e) => Err(e),
        }
    }
}
