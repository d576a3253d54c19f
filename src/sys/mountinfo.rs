//! Reading the kernel's mount table (`/proc/self/mountinfo`).
//!
//! The table is bytes, not text: a mount point can be any byte string (a container or another
//! program may mount on a non-UTF-8 name), with space, tab, newline and backslash escaped as
//! `\040`, `\011`, `\012` and `\134`. Paths are therefore kept as bytes, and a line that does
//! not parse is skipped rather than failing the whole table: strata only ever looks for its
//! own mounts in it.

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
    pub fs_type: OsString,
    /// Mount source (octal escapes decoded).
    pub source: OsString,
    /// Per-mount options, e.g. `rw,relatime`.
    pub options: OsString,
}

/// Decodes the `\ooo` escapes the kernel uses for space, tab, newline and backslash.
fn unescape(field: &[u8]) -> Vec<u8> {
    let b = field;
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1] <= b'3'
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
    out
}

/// Parses one line; `None` if it is not a well-formed mountinfo line.
fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|c| *c == b' ').collect();
    if fields.len() < 10 {
        return None;
    }
    // Optional fields (field 7 onwards) end with a lone "-".
    let sep = 6 + fields[6..].iter().position(|f| *f == b"-")?;
    if fields.len() < sep + 4 {
        return None;
    }
    let number = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u64>().ok();
    let mount_point = unescape(fields[4]);
    if mount_point.first() != Some(&b'/') {
        return None;
    }
    Some(MountEntry {
        id: number(fields[0])?,
        parent: number(fields[1])?,
        mount_point: PathBuf::from(OsString::from_vec(mount_point)),
        options: OsString::from_vec(unescape(fields[5])),
        fs_type: OsString::from_vec(unescape(fields[sep + 1])),
        source: OsString::from_vec(unescape(fields[sep + 2])),
    })
}

/// Parses mountinfo bytes, skipping lines that do not parse.
pub fn parse(table: &[u8]) -> Vec<MountEntry> {
    table
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|line| {
            let entry = parse_line(line);
            if entry.is_none() {
                tracing::debug!(line = %String::from_utf8_lossy(line), "skipping a mountinfo line that does not parse");
            }
            entry
        })
        .collect()
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
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn parses_and_unescapes() {
        let t = b"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                 90 27 0:50 / /tmp/a\\040b/merged rw,relatime shared:5 - overlay overlay rw,lowerdir=x\n";
        let m = parse(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/a b/merged"));
        assert_eq!(m[1].fs_type, "overlay");
        assert_eq!(m[1].parent, 27);
        let under = mounts_under(&m, Path::new("/tmp/a b"));
        assert_eq!(under.len(), 1);
    }

    #[test]
    fn non_utf8_mount_points_are_kept_as_bytes() {
        let mut t = b"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n".to_vec();
        t.extend_from_slice(b"91 27 0:51 / /tmp/\xff\xfe rw - tmpfs tmp\xff rw\n");
        t.extend_from_slice(b"92 27 0:52 / /srv/store/layers/x/merged rw - overlay overlay rw\n");
        let m = parse(&t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point.as_os_str().as_bytes(), b"/tmp/\xff\xfe");
        assert_eq!(m[1].source.as_bytes(), b"tmp\xff");
        let under = mounts_under(&m, Path::new("/srv/store/layers"));
        assert_eq!(under.len(), 1);
        assert_eq!(under[0].id, 92);
    }

    #[test]
    fn decodes_every_kernel_escape() {
        let t = b"93 27 0:53 / /tmp/a\\040b\\011c\\012d\\134e rw - tmpfs tmpfs rw\n";
        let m = parse(t);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].mount_point.as_os_str().as_bytes(),
            b"/tmp/a b\tc\nd\\e"
        );
        // Not an escape: kept as is.
        let t = b"94 27 0:54 / /tmp/x\\9y\\04 rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse(t)[0].mount_point.as_os_str().as_bytes(),
            b"/tmp/x\\9y\\04"
        );
    }

    #[test]
    fn skips_lines_that_do_not_parse_and_keeps_going() {
        let t = b"garbage\n\
                  x 1 0:1 / /a rw - tmpfs t rw\n\
                  95 27 0:55 / /no-separator rw shared:1 tmpfs t rw\n\
                  96 27 0:56 / relative rw - tmpfs t rw\n\
                  \n\
                  97 27 0:57 / /ok rw shared:1 master:2 - tmpfs t rw\n";
        let m = parse(t);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, 97);
        assert_eq!(m[0].mount_point, PathBuf::from("/ok"));
    }
}
