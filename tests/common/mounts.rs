//! The mount table as the tests see it, and detaching what a test left mounted.

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// A mount point listed in `/proc/self/mountinfo`.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub options: String,
}

/// Decodes mountinfo's octal escapes (`\040` for a space...).
fn unescape_mountinfo(b: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Every mount of this process's mount namespace (read as bytes: a mount point need not be
/// UTF-8).
pub fn mounts() -> Vec<MountEntry> {
    let text = fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    text.split(|b| *b == b'\n')
        .filter_map(|line| {
            let sep = line.windows(3).position(|w| w == b" - ")?;
            let (left, right) = (&line[..sep], &line[sep + 3..]);
            let fields: Vec<&[u8]> = left.split(|b| *b == b' ').collect();
            let right: Vec<&[u8]> = right.split(|b| *b == b' ').collect();
            Some(MountEntry {
                mount_point: unescape_mountinfo(fields.get(4)?),
                fstype: lossy(right.first()?),
                options: right.get(2).map(|o| lossy(o)).unwrap_or_default(),
            })
        })
        .collect()
}

/// Mount points equal to `dir` or below it.
pub fn mounts_under(dir: &Path) -> Vec<MountEntry> {
    mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect()
}

/// Detaches (`MNT_DETACH`) every mount at or below `dir`, deepest first, repeating for stacked
/// mounts. Returns what it could not unmount.
pub fn detach_mounts_under(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..16 {
        let mut points: Vec<PathBuf> = mounts_under(dir)
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        if points.is_empty() {
            return Vec::new();
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in &points {
            if let Ok(c) = CString::new(p.as_os_str().as_bytes()) {
                // SAFETY: umount2 with a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
    mounts_under(dir)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}
