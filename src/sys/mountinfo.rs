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
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
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

/// Parses mountinfo text.
pub fn parse(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 6 || fields.len() < sep + 3 {
            continue;
        }
        let (Ok(id), Ok(parent)) = (fields[0].parse(), fields[1].parse()) else {
            continue;
        };
        out.push(MountEntry {
            id,
            parent,
            mount_point: unescape(fields[4]),
            options: fields[5].to_string(),
            fs_type: fields[sep + 1].to_string(),
            source: fields[sep + 2].to_string(),
        });
    }
    out
}

/// Reads this process's mount table.
pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
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
        let m = parse(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/a b/merged"));
        assert_eq!(m[1].fs_type, "overlay");
        assert_eq!(m[1].parent, 27);
        let under = mounts_under(&m, Path::new("/tmp/a b"));
        assert_eq!(under.len(), 1);
    }
}
