//! Reading the kernel's mount table (`/proc/self/mountinfo`).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount id.
    pub id: u64,
    /// Parent mount id.
    pub parent: u64,
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `overlay`.
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-mount options, e.g. `rw,relatime`.
    pub options: String,
}

/// Decodes the `\ooo` escapes the kernel uses for space, tab, newline and backslash.
fn unescape(b: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Parses mountinfo bytes. Paths are bytes, not text: any mount in the namespace may have a
/// name that is not UTF-8 (mount points are decoded exactly; the other fields lossily).
pub fn parse(text: &[u8]) -> Vec<MountEntry> {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if fields.len() < 6 || fields.len() < sep + 3 {
            continue;
        }
        let (Some(id), Some(parent)) = (number(fields[0]), number(fields[1])) else {
            continue;
        };
        out.push(MountEntry {
            id,
            parent,
            mount_point: unescape(fields[4]),
            options: lossy(fields[5]),
            fs_type: lossy(fields[sep + 1]),
            source: lossy(fields[sep + 2]),
        });
    }
    out
}

/// Reads this process's mount table.
pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read("/proc/self/mountinfo")?))
}

/// Mounts whose mount point is `dir` or lies beneath it, deepest first (the order in which
/// they can be unmounted).
pub fn mounts_under(table: &[MountEntry], dir: &Path) -> Vec<MountEntry> {
    let mut v: Vec<MountEntry> = table
        .iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .cloned()
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let t = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                 90 27 0:50 / /tmp/a\\040b/merged rw,relatime shared:5 - overlay overlay rw,lowerdir=x\n";
        let m = parse(t.as_bytes());
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/a b/merged"));
        assert_eq!(m[1].fs_type, "overlay");
        assert_eq!(m[1].parent, 27);
        let under = mounts_under(&m, Path::new("/tmp/a b"));
        assert_eq!(under.len(), 1);
    }

    #[test]
    fn a_mount_point_that_is_not_utf8_is_read_exactly() {
        let t = b"27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                  91 27 0:51 / /tmp/bad-\xff\\040x rw - tmpfs n\xffne rw\n";
        let m = parse(t);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[1].mount_point.as_os_str().as_encoded_bytes(),
            b"/tmp/bad-\xff x"
        );
        assert_eq!(m[1].source, "n\u{fffd}ne");
    }
}
