//! ext4 images with e2fsprogs: read-only layer images built from a tree (`mkfs.ext4 -d`),
//! blank writable sandboxes (formatted once per size into `cache/`, then copied sparse), the
//! sparse copy itself, checks and offline growth.
//!
//! Read-only images are as reproducible as e2fsprogs allows: the filesystem UUID and the
//! directory hash seed are derived from the layer id, every e2fsprogs time is pinned
//! (`E2FSPROGS_FAKE_TIME`, `SOURCE_DATE_EPOCH`; taken from the caller's `SOURCE_DATE_EPOCH`
//! when set, else 2000-01-01), and `mkfs -d` walks directories in sorted order. What still
//! varies is what the source tree itself carries that cannot be set (inode change times).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// Filesystem block size of every image.
const BLOCK: u64 = 4096;
/// Smallest writable sandbox.
pub const MIN_SANDBOX: u64 = 16 << 20;
/// Default sandbox size (LCOW's `lcow.sandboxsize`).
pub const DEFAULT_SANDBOX: u64 = 20 << 30;

/// The pinned time for e2fsprogs: `SOURCE_DATE_EPOCH` when set, else 2000-01-01.
pub fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(946_684_800)
}

/// A UUID (version 4 layout) derived from `purpose` and the layer id.
pub fn derived_uuid(purpose: &str, id: &str) -> [u8; 16] {
    let d = Sha256::digest(format!("strata-block:{purpose}:{id}").as_bytes());
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Runs an e2fsprogs tool with pinned times; an exit status outside `ok` is an error that
/// quotes its output.
fn run(tool: &str, args: &[&OsStr], ok: &[i32]) -> Result<String> {
    let t = epoch().to_string();
    let out = Command::new(tool)
        .args(args)
        .env("E2FSPROGS_FAKE_TIME", &t)
        .env("SOURCE_DATE_EPOCH", &t)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::io(
                format!("running {tool} (install e2fsprogs for the block backend)"),
                e,
            )
        })?;
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !ok.contains(&code) {
        return Err(Error::io(
            format!("{tool} {}", display_args(args)),
            io::Error::other(format!("exit status {code}: {stderr}")),
        ));
    }
    Ok(stderr)
}

fn display_args(args: &[&OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a tree needs in an ext4 image.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    /// Inodes (entries, root included).
    pub inodes: u64,
    /// 4 KiB blocks of data, directories, long symlinks and xattrs.
    pub blocks: u64,
}

/// Measures the tree under `dir` (fd-relative, no symlink followed).
pub fn measure(dir: BorrowedFd<'_>) -> io::Result<Usage> {
    let mut u = Usage {
        inodes: 1,
        blocks: 1,
    };
    measure_dir(dir, &mut u, 0)?;
    Ok(u)
}

fn measure_dir(dir: BorrowedFd<'_>, u: &mut Usage, depth: usize) -> io::Result<()> {
    if depth > 4096 {
        return Err(io::Error::other("directory tree too deep"));
    }
    let mut name_bytes = 0u64;
    let mut subdirs = Vec::new();
    for e in Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        name_bytes += 8 + (name.len() as u64).div_ceil(4) * 4;
        let st = rustix::fs::statat(dir, e.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
        u.inodes += 1;
        // Hard links are counted once per name: a harmless overestimate.
        let size = st.st_size.max(0) as u64;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                let allocated = (st.st_blocks.max(0) as u64) * 512;
                let data = size.min(allocated.max(BLOCK)).div_ceil(BLOCK);
                // Extent tree blocks for large or fragmented files.
                u.blocks += data + data / 256;
            }
            FileType::Symlink if size >= 60 => u.blocks += 1,
            FileType::Directory => subdirs.push(e.file_name().to_owned()),
            _ => {}
        }
    }
    u.blocks += 1 + name_bytes.div_ceil(BLOCK);
    // One xattr block per directory is a generous allowance for opaque markers.
    u.blocks += 1;
    for name in subdirs {
        let sub = rustix::fs::openat(
            dir,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        measure_dir(sub.as_fd(), u, depth + 1)?;
    }
    Ok(())
}

/// Image size for a tree: data plus inode tables and metadata, with headroom, rounded up
/// to 1 MiB.
pub fn image_size(u: Usage) -> u64 {
    let data = u.blocks * BLOCK;
    let inodes = (u.inodes + 64) * 256;
    let raw = data + data / 16 + inodes * 2 + (4 << 20);
    raw.div_ceil(1 << 20) * (1 << 20)
}

/// Root-directory attributes `mkfs -d` does not copy, applied afterwards with `debugfs`.
struct RootMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    atime: (i64, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn root_meta(tree: &Path) -> Result<RootMeta> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(tree).ctx(|| format!("stat {}", tree.display()))?;
    let mut xattrs = Vec::new();
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(tree, &mut buf).ctx(|| "listing root xattrs".into())?;
    for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = OsStr::from_bytes(name);
        let mut val = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(tree, cname, &mut val)
            .ctx(|| format!("reading root xattr {}", cname.to_string_lossy()))?;
        val.truncate(len);
        xattrs.push((name.to_vec(), val));
    }
    Ok(RootMeta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec() as u32),
        atime: (md.atime(), md.atime_nsec() as u32),
        xattrs,
    })
}

/// Builds the read-only layer image `image` from `tree`: ext4 without journal, the tree at
/// the root (root attributes and xattrs included, no `lost+found` unless the tree has one),
/// marked with the `read-only` feature; with `vhd`, a fixed-VHD footer follows. `scratch`
/// is an empty directory for temporary files. Returns the filesystem size.
pub fn build_layer_image(
    id: &str,
    tree: &Path,
    image: &Path,
    scratch: &Path,
    vhd: bool,
) -> Result<u64> {
    let fd = crate::fsutil::open_dir(tree).ctx(|| format!("opening {}", tree.display()))?;
    let usage = measure(fd.as_fd()).ctx(|| format!("measuring {}", tree.display()))?;
    let uuid = uuid_string(&derived_uuid("fs", id));
    let seed = uuid_string(&derived_uuid("hash", id));
    let inodes = (usage.inodes + 32).to_string();
    let opts = format!("root_owner=0:0,hash_seed={seed},nodiscard,lazy_itable_init=0");
    let mut size = image_size(usage);
    let mut attempt = 0;
    loop {
        let _ = std::fs::remove_file(image);
        let size_arg = format!("{}k", size / 1024);
        let flags = [
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-I",
            "256",
            "-m",
            "0",
            "-N",
            &inodes,
            "-U",
            &uuid,
            "-O",
            "^has_journal,^resize_inode,sparse_super2",
            "-E",
            &opts,
            "-d",
        ];
        let args: Vec<&OsStr> = flags
            .iter()
            .map(OsStr::new)
            .chain([tree.as_os_str(), image.as_os_str(), OsStr::new(&size_arg)])
            .collect();
        match run("mkfs.ext4", &args, &[0]) {
            Ok(_) => break,
            Err(e) if attempt < 4 => {
                tracing::debug!(layer = id, size, error = %e, "image too small, retrying larger");
                attempt += 1;
                size *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    fix_root(tree, image, scratch)?;
    run(
        "tune2fs",
        &[OsStr::new("-O"), OsStr::new("read-only"), image.as_os_str()],
        &[0],
    )?;
    if vhd {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(image)
            .ctx(|| format!("opening {}", image.display()))?;
        super::vhd::append(&f, derived_uuid("vhd", id), epoch())
            .ctx(|| format!("appending a VHD footer to {}", image.display()))?;
    }
    Ok(size)
}

/// Applies the tree root's attributes to the image root and removes `lost+found` (unless the
/// tree has its own) with one `debugfs -w` script.
fn fix_root(tree: &Path, image: &Path, scratch: &Path) -> Result<()> {
    let meta = root_meta(tree)?;
    let mut script = String::new();
    if std::fs::symlink_metadata(tree.join("lost+found")).is_err() {
        script.push_str("rmdir lost+found\n");
    }
    script.push_str(&format!(
        "sif / mode 0{:o}\nsif / uid {}\nsif / gid {}\n",
        0o40000 | meta.mode,
        meta.uid,
        meta.gid
    ));
    for (field, (sec, nsec)) in [("mtime", meta.mtime), ("atime", meta.atime)] {
        script.push_str(&format!(
            "sif / {field} @{sec}\nsif / {field}_extra {}\n",
            (nsec as u64) << 2
        ));
    }
    for (i, (name, value)) in meta.xattrs.iter().enumerate() {
        let name = String::from_utf8(name.clone()).map_err(|_| Error::Invalid {
            id: tree.display().to_string(),
            reason: "the layer root has an xattr whose name is not UTF-8".into(),
        })?;
        if name.contains(char::is_whitespace) {
            return Err(Error::Invalid {
                id: tree.display().to_string(),
                reason: format!(
                    "the layer root has an xattr with whitespace in its name: {name:?}"
                ),
            });
        }
        let vfile = scratch.join(format!("xattr-{i}"));
        std::fs::write(&vfile, value).ctx(|| format!("writing {}", vfile.display()))?;
        script.push_str(&format!("ea_set -f {} / {name}\n", vfile.display()));
    }
    let sfile = scratch.join("debugfs.script");
    std::fs::write(&sfile, &script).ctx(|| format!("writing {}", sfile.display()))?;
    let stderr = run(
        "debugfs",
        &[
            OsStr::new("-w"),
            OsStr::new("-f"),
            sfile.as_os_str(),
            image.as_os_str(),
        ],
        &[0],
    )?;
    // debugfs exits 0 even when a command fails; its errors are the lines after the banner.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !errors.is_empty() {
        return Err(Error::io(
            format!("setting the root of {}", image.display()),
            io::Error::other(errors.join("; ")),
        ));
    }
    Ok(())
}

/// Formats a blank sandbox of `size` bytes at `image`: ext4 without journal (as LCOW's),
/// holding empty `upper/` (0755) and `work/` (0700), inode tables left for lazy init so the
/// file stays sparse. `skel` is an empty scratch directory.
pub fn format_sandbox(image: &Path, size: u64, skel: &Path) -> Result<()> {
    super::super::mkdir_mode(&skel.join("upper"), 0o755)?;
    super::super::mkdir_mode(&skel.join("work"), 0o700)?;
    let _ = std::fs::remove_file(image);
    let size_arg = format!("{}k", size / 1024);
    let args: Vec<&OsStr> = [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        "4096",
        "-m",
        "0",
        "-O",
        "^has_journal,^resize_inode,sparse_super2",
        "-E",
        "root_owner=0:0,lazy_itable_init=1,nodiscard",
        "-d",
    ]
    .iter()
    .map(OsStr::new)
    .chain([skel.as_os_str(), image.as_os_str(), OsStr::new(&size_arg)])
    .collect();
    run("mkfs.ext4", &args, &[0])?;
    Ok(())
}

/// Whether the ext4 superblock of `image` is marked not cleanly unmounted or with errors
/// (`s_state` without `EXT2_VALID_FS`, or with `EXT2_ERROR_FS`).
pub fn needs_check(image: &Path) -> Result<bool> {
    let f = File::open(image).ctx(|| format!("opening {}", image.display()))?;
    let mut state = [0u8; 2];
    f.read_exact_at(&mut state, 1024 + 58)
        .ctx(|| format!("reading the superblock of {}", image.display()))?;
    let state = u16::from_le_bytes(state);
    Ok(state & 1 == 0 || state & 2 != 0)
}

/// `e2fsck -f -p`: checks and repairs what is safe to repair automatically.
pub fn check_and_repair(image: &Path) -> Result<()> {
    // 0: clean, 1: errors corrected.
    run(
        "e2fsck",
        &[OsStr::new("-f"), OsStr::new("-p"), image.as_os_str()],
        &[0, 1],
    )
    .map(|_| ())
}

/// Grows the filesystem in `image` to the file's current size (`resize2fs`, offline).
pub fn grow_fs(image: &Path) -> Result<()> {
    run("resize2fs", &[image.as_os_str()], &[0]).map(|_| ())
}

/// Copies `src` to the new file `dst` keeping it sparse: a reflink (`FICLONE`) where the
/// filesystem shares blocks, else the data segments found with `SEEK_DATA`/`SEEK_HOLE`, each
/// with `copy_file_range`, and the length set with `ftruncate`.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<()> {
    let s = File::open(src).ctx(|| format!("opening {}", src.display()))?;
    let d = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(dst)
        .ctx(|| format!("creating {}", dst.display()))?;
    let what = || format!("copying {} to {}", src.display(), dst.display());
    if rustix::fs::ioctl_ficlone(&d, &s).is_ok() {
        return Ok(());
    }
    let len = s.metadata().ctx(what)?.len();
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&s, rustix::fs::SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(e) => return Err(Error::io(what(), e)),
        };
        let hole = rustix::fs::seek(&s, rustix::fs::SeekFrom::Hole(data)).ctx(what)?;
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = (hole - off_in).min(1 << 30) as usize;
            let n =
                rustix::fs::copy_file_range(&s, Some(&mut off_in), &d, Some(&mut off_out), want)
                    .ctx(what)?;
            if n == 0 {
                return Err(Error::io(what(), io::Error::other("source shrank")));
            }
        }
        pos = hole;
    }
    d.set_len(len).ctx(what)?;
    Ok(())
}

/// Path of the cached blank sandbox of `size` bytes under `cache`.
pub fn template_path(cache: &Path, size: u64) -> PathBuf {
    cache.join(format!("sandbox-{size}.img"))
}
