//! Writing a layer tar: the changes of a tree, as Docker's `ExportChanges` does.
//!
//! A naive-diff driver turns the output of [`super::changes::changes_dirs`] into the layer
//! blob with [`export_changes`]. The format is PAX as Docker writes it, but deterministic: the
//! same tree and change set always produce the same bytes (no wall-clock timestamps, sorted
//! entries and records), so a re-exported layer keeps its digest.
//!
//! # Format
//!
//! * Uncompressed PAX-format tar ending with the two zero blocks.
//! * Entries in path-byte order; names relative (`etc/passwd`, directories with a trailing
//!   `/`).
//! * Delete → an empty regular-file entry `<dir>/.wh.<name>` (mode 0, size 0, mtime 0).
//! * Add/Modify → the entry read from `root`: regular files with content, directories,
//!   symlinks (target verbatim), fifos, char/block devices (major/minor); sockets are
//!   skipped. A second path to an already-emitted inode (nlink > 1, not a directory) is
//!   written as a hard link to the first name (with the inode's mode, owner and mtime, no
//!   xattr records).
//! * Header fields: mode (permission bits incl. setuid/setgid/sticky), uid, gid, mtime
//!   truncated to whole seconds, uname/gname empty, atime/ctime absent. Names, link targets,
//!   sizes, ids or mtimes that do not fit the ustar fields (names are split into
//!   prefix/name when possible) use PAX records (`path`, `linkpath`, `size`, `uid`, `gid`,
//!   `mtime`), and the ustar field then holds a truncated name or zero. PAX records are
//!   sorted by key; the extended header is named `<dir>/PaxHeaders.0/<base>` like Go's.
//! * Extended attributes are exported as `SCHILY.xattr.<name>` PAX records, except
//!   `security.selinux` and `trusted.overlay.*`/`user.overlay.*` (storage-internal).
//! * Bytes written for a regular file equal the size in its header; a file that changed size
//!   while being read is an error, not a corrupt tar.
//!
//! # Safety
//!
//! The tree is never addressed by joined path strings: parent directories are opened one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY` (reusing the previous entry's open
//! parents), entries are `lstat`-ed with `AT_SYMLINK_NOFOLLOW`, and file content is read
//! through a descriptor opened with `O_NOFOLLOW` whose `fstat` must match the `lstat`. Large
//! files are streamed through a fixed buffer.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::FileType;
use tar::{EntryType, Header};

use super::fsmeta::{self, Xattr};
use super::walk::{self, DirCursor, Info};
use super::{ChangeKind, ChangeSet, Error};

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (uid, gid, devmajor, devminor): 7 digits.
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (size, mtime): 11 digits, 8 GiB - 1.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// Read buffer for file content.
const COPY_BUF: usize = 256 * 1024;

/// Writes a tar of `changes` read from the tree at `root`, one entry at a time in the set's
/// path-byte order (no full path list is ever built).
///
/// Output is buffered internally and flushed before returning. On error the stream is left
/// incomplete (no end-of-archive blocks), so it cannot be mistaken for a whole layer.
pub fn export_changes(
    root: BorrowedFd<'_>,
    changes: &ChangeSet,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut ex = Exporter {
        out: BufWriter::with_capacity(64 * 1024, out),
        cursor: DirCursor::new(root),
        links: HashMap::new(),
        buf: vec![0u8; COPY_BUF],
    };
    changes.try_for_each(|step| {
        ex.cursor.hint(step.kept);
        match step.kind {
            ChangeKind::Delete => ex.whiteout(step.comps),
            ChangeKind::Add | ChangeKind::Modify => ex.add(step.comps),
        }
    })?;
    ex.out
        .write_all(&[0u8; 2 * BLOCK])
        .and_then(|()| ex.out.flush())
        .map_err(|e| Error::io("writing the end of the layer tar", e))
}

/// State of one export.
struct Exporter<'w, 'r> {
    out: BufWriter<&'w mut dyn Write>,
    cursor: DirCursor<'r>,
    /// First emitted name of each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

impl Exporter<'_, '_> {
    fn whiteout(&mut self, comps: &[&[u8]]) -> Result<(), Error> {
        let Some((name, dirs)) = comps.split_last() else {
            return Ok(());
        };
        let mut wh = walk::join(dirs);
        if !wh.is_empty() {
            wh.push(b'/');
        }
        wh.extend_from_slice(b".wh.");
        wh.extend_from_slice(name);
        let hdr = Hdr {
            name: &wh,
            kind: EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &[],
        };
        write_header(&mut self.out, &hdr, &format!("/{}", walk::show(&wh)))
    }

    fn add(&mut self, comps: &[&[u8]]) -> Result<(), Error> {
        let Some((name, dirs)) = comps.split_last() else {
            return Ok(());
        };
        let rel = walk::join(comps);
        let shown = format!("/{}", walk::show(&rel));
        let dir = self
            .cursor
            .enter(dirs)
            .map_err(|e| Error::io(format!("opening the parent of {shown}"), e))?;
        let info = walk::lstat_at(dir, name).map_err(|e| Error::io(format!("lstat {shown}"), e))?;
        let ft = info.file_type();
        if ft == FileType::Socket {
            return Ok(());
        }
        let linked = ft != FileType::Directory && info.nlink > 1;
        if linked {
            if let Some(first) = self.links.get(&info.id()) {
                let hdr = Hdr {
                    kind: EntryType::Link,
                    link: first,
                    ..Hdr::new(&rel, &info)
                };
                return write_header(&mut self.out, &hdr, &shown);
            }
        }

        let xattr_err = |e| Error::io(format!("reading xattrs of {shown}"), e);
        match ft {
            FileType::Directory => {
                let mut dname = rel.clone();
                dname.push(b'/');
                let xattrs =
                    exported(fsmeta::read_at(dir, OsStr::from_bytes(name)).map_err(xattr_err)?);
                let hdr = Hdr {
                    kind: EntryType::Directory,
                    xattrs: &xattrs,
                    ..Hdr::new(&dname, &info)
                };
                write_header(&mut self.out, &hdr, &shown)?;
            }
            FileType::RegularFile => {
                let (fd, info) = walk::open_regular(dir, name, &info)
                    .map_err(|e| Error::io(format!("opening {shown}"), e))?;
                let xattrs = exported(fsmeta::read_fd(fd.as_fd()).map_err(xattr_err)?);
                let hdr = Hdr {
                    kind: EntryType::Regular,
                    size: info.size,
                    xattrs: &xattrs,
                    ..Hdr::new(&rel, &info)
                };
                write_header(&mut self.out, &hdr, &shown)?;
                let mut file = File::from(fd);
                copy_exact(&mut file, info.size, &mut self.out, &mut self.buf, &shown)?;
            }
            FileType::Symlink => {
                let target = walk::read_link(dir, name)
                    .map_err(|e| Error::io(format!("readlink {shown}"), e))?;
                let xattrs =
                    exported(fsmeta::read_at(dir, OsStr::from_bytes(name)).map_err(xattr_err)?);
                let hdr = Hdr {
                    kind: EntryType::Symlink,
                    link: &target,
                    xattrs: &xattrs,
                    ..Hdr::new(&rel, &info)
                };
                write_header(&mut self.out, &hdr, &shown)?;
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                let kind = match ft {
                    FileType::Fifo => EntryType::Fifo,
                    FileType::CharacterDevice => EntryType::Char,
                    _ => EntryType::Block,
                };
                let dev = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    (rustix::fs::major(info.rdev), rustix::fs::minor(info.rdev))
                };
                let xattrs =
                    exported(fsmeta::read_at(dir, OsStr::from_bytes(name)).map_err(xattr_err)?);
                let hdr = Hdr {
                    kind,
                    dev,
                    xattrs: &xattrs,
                    ..Hdr::new(&rel, &info)
                };
                write_header(&mut self.out, &hdr, &shown)?;
            }
            _ => {
                return Err(Error::io(
                    format!("exporting {shown}"),
                    io::Error::other(format!("unsupported file type (mode {:o})", info.mode)),
                ))
            }
        }
        if linked {
            self.links.insert(info.id(), rel);
        }
        Ok(())
    }
}

/// Drops the attributes that never leave the store: SELinux labels are host policy, overlay
/// attributes are the storage format itself (and dangerous in someone else's overlay).
///
/// Also dropped, with a warning: names containing `=`. A PAX record is split at its first
/// `=`, so such a name would be read back as a different attribute with a mangled value
/// (Go's reader, which Docker uses, has no escaping for it).
fn exported(mut xattrs: Vec<Xattr>) -> Vec<Xattr> {
    xattrs.retain(|(name, _)| {
        if name.contains(&b'=') {
            tracing::warn!(
                xattr = %String::from_utf8_lossy(name),
                "xattr name contains '=' and cannot be exported in a PAX record; skipped"
            );
            return false;
        }
        travels(name)
    });
    xattrs
}

/// Whether the exporter writes the extended attribute `name` into a layer tar (the rule of
/// [`exported`], without the warning); change detection compares exactly these.
pub(super) fn travels(name: &[u8]) -> bool {
    !name.contains(&b'=')
        && name != b"security.selinux"
        && !name.starts_with(b"trusted.overlay.")
        && !name.starts_with(b"user.overlay.")
}

/// Copies exactly `size` bytes of `src` to `out`, then the padding to a whole block. A file
/// that ends early or still has bytes after `size` is an error.
fn copy_exact(
    src: &mut impl Read,
    size: u64,
    out: &mut impl Write,
    buf: &mut [u8],
    shown: &str,
) -> Result<(), Error> {
    let read_err = |e| Error::io(format!("reading {shown}"), e);
    let write_err = |e| Error::io(format!("writing {shown} to the layer tar"), e);
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(read_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file shrank while being exported ({} of {size} bytes)",
                        size - left
                    ),
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        out.write_all(&buf[..n]).map_err(write_err)?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    loop {
        match src.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => {
                return Err(read_err(io::Error::other(format!(
                    "file grew while being exported (beyond {size} bytes)"
                ))))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        }
    }
    out.write_all(&[0u8; BLOCK][..padding(size)])
        .map_err(write_err)
}

/// Zero bytes needed after `len` bytes of data to reach a block boundary.
fn padding(len: u64) -> usize {
    // The remainder is < 512, so the cast is lossless.
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

/// Everything that goes into one entry's header block(s).
#[derive(Clone, Copy)]
struct Hdr<'a> {
    name: &'a [u8],
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link: &'a [u8],
    dev: (u32, u32),
    xattrs: &'a [Xattr],
}

impl<'a> Hdr<'a> {
    /// A size-0 entry named `name` with the owner, mode and mtime of `info`.
    fn new(name: &'a [u8], info: &Info) -> Self {
        Hdr {
            name,
            kind: EntryType::Regular,
            mode: info.perm(),
            uid: info.uid.into(),
            gid: info.gid.into(),
            mtime: info.mtime.sec,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &[],
        }
    }
}

fn write_header(out: &mut impl Write, hdr: &Hdr<'_>, shown: &str) -> Result<(), Error> {
    let blocks =
        encode(hdr).map_err(|e| Error::io(format!("encoding the header of {shown}"), e))?;
    out.write_all(&blocks)
        .map_err(|e| Error::io(format!("writing {shown} to the layer tar"), e))
}

/// Encodes the header block of `h`, preceded by a PAX extended header when a value does not
/// fit the ustar fields or there are xattrs to record.
fn encode(h: &Hdr<'_>) -> io::Result<Vec<u8>> {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut header = Header::new_ustar();
    header.set_entry_type(h.kind);
    header.set_mode(h.mode & 0o7777);

    let mut num = |key: &str, value: u64, max: u64| -> u64 {
        if value <= max {
            value
        } else {
            pax.push((key.as_bytes().to_vec(), value.to_string().into_bytes()));
            0
        }
    };
    header.set_uid(num("uid", h.uid, MAX_OCTAL_8));
    header.set_gid(num("gid", h.gid, MAX_OCTAL_8));
    header.set_size(num("size", h.size, MAX_OCTAL_12));
    match u64::try_from(h.mtime) {
        Ok(t) if t <= MAX_OCTAL_12 => header.set_mtime(t),
        _ => pax.push((b"mtime".to_vec(), h.mtime.to_string().into_bytes())),
    }
    let (major, minor) = (u64::from(h.dev.0), u64::from(h.dev.1));
    if major > MAX_OCTAL_8 || minor > MAX_OCTAL_8 {
        return Err(io::Error::other(format!(
            "device number {major}:{minor} does not fit a tar header"
        )));
    }
    header.set_device_major(h.dev.0)?;
    header.set_device_minor(h.dev.1)?;

    let ustar = header
        .as_ustar_mut()
        .ok_or_else(|| io::Error::other("not a ustar header"))?;
    match split_ustar_path(h.name) {
        Some((prefix, name)) => {
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..name.len()].copy_from_slice(name);
        }
        None if h.name.len() <= ustar.name.len() => {
            ustar.name[..h.name.len()].copy_from_slice(h.name);
        }
        None => {
            let n = ustar.name.len();
            ustar.name.copy_from_slice(&h.name[..n]);
            pax.push((b"path".to_vec(), h.name.to_vec()));
        }
    }
    if h.link.len() <= ustar.linkname.len() {
        ustar.linkname[..h.link.len()].copy_from_slice(h.link);
    } else {
        let n = ustar.linkname.len();
        ustar.linkname.copy_from_slice(&h.link[..n]);
        pax.push((b"linkpath".to_vec(), h.link.to_vec()));
    }
    for (name, value) in h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax.push((key, value.clone()));
    }
    header.set_cksum();

    let mut out = Vec::with_capacity(3 * BLOCK);
    if !pax.is_empty() {
        pax.sort();
        let mut data = Vec::new();
        for (key, value) in &pax {
            pax_record(&mut data, key, value);
        }
        let mut xh = Header::new_ustar();
        xh.set_entry_type(EntryType::XHeader);
        xh.set_mode(0);
        xh.set_uid(0);
        xh.set_gid(0);
        xh.set_size(data.len() as u64);
        xh.set_device_major(0)?;
        xh.set_device_minor(0)?;
        let xname = pax_header_name(h.name);
        let xu = xh
            .as_ustar_mut()
            .ok_or_else(|| io::Error::other("not a ustar header"))?;
        xu.name[..xname.len()].copy_from_slice(&xname);
        xh.set_cksum();
        out.extend_from_slice(xh.as_bytes());
        out.extend_from_slice(&data);
        out.resize(out.len() + padding(data.len() as u64), 0);
    }
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// Appends one PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record
/// including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let digits = |n: usize| n.to_string().len();
    let mut len = body + digits(body);
    while len != body + digits(len) {
        len = body + digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits a name longer than 100 bytes into ustar `prefix` (≤ 155) and `name` (≤ 100) at a
/// `/`, as Go's `splitUSTARPath` does; `None` if it fits `name` alone or cannot be split.
fn split_ustar_path(name: &[u8]) -> Option<(&[u8], &[u8])> {
    const NAME: usize = 100;
    const PREFIX: usize = 155;
    let mut len = name.len();
    if len <= NAME {
        return None;
    } else if len > PREFIX + 1 {
        len = PREFIX + 1;
    } else if name[len - 1] == b'/' {
        len -= 1;
    }
    let i = name[..len].iter().rposition(|b| *b == b'/')?;
    let suffix = name.len() - i - 1;
    if i == 0 || suffix == 0 || suffix > NAME || i > PREFIX {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// The name of the extended header for `name`: `<dir>/PaxHeaders.0/<base>`, ASCII only,
/// at most 100 bytes (Go's convention; readers ignore it).
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|b| *b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut out: Vec<u8> = [dir, b"PaxHeaders.0/", base].concat();
    out.retain(|b| b.is_ascii() && *b != 0);
    out.truncate(100);
    while out.last() == Some(&b'/') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::archive::changes::changes_dirs;
    use crate::archive::walk::testutil::*;
    use crate::archive::Change;

    /// One entry as the `tar` crate reads it back.
    #[derive(Debug, Default)]
    struct Read {
        kind: Option<EntryType>,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        size: u64,
        link: Option<Vec<u8>>,
        dev: (u32, u32),
        pax: BTreeMap<String, Vec<u8>>,
        data: Vec<u8>,
    }

    fn read_tar(bytes: &[u8]) -> Vec<(String, Read)> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let h = entry.header();
            let mut r = Read {
                kind: Some(h.entry_type()),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                size: entry.size(),
                link: entry.link_name_bytes().map(|l| l.into_owned()),
                dev: (
                    h.device_major().unwrap().unwrap_or(0),
                    h.device_minor().unwrap().unwrap_or(0),
                ),
                ..Read::default()
            };
            if let Some(pax) = entry.pax_extensions().unwrap() {
                for ext in pax {
                    let ext = ext.unwrap();
                    r.pax
                        .insert(ext.key().unwrap().to_string(), ext.value_bytes().to_vec());
                }
            }
            std::io::Read::read_to_end(&mut entry, &mut r.data).unwrap();
            out.push((name, r));
        }
        out
    }

    fn export(root: &Path, changes: &[Change]) -> Vec<u8> {
        let fd = dirfd(root);
        let mut out = Vec::new();
        let set = ChangeSet::from_changes(changes).unwrap();
        export_changes(fd.as_fd(), &set, &mut out).unwrap();
        out
    }

    fn all_added(root: &Path) -> Vec<Change> {
        changes_dirs(dirfd(root).as_fd(), None)
            .unwrap()
            .iter()
            .collect()
    }

    fn delete(path: &str) -> Change {
        Change {
            path: PathBuf::from(path),
            kind: ChangeKind::Delete,
        }
    }

    /// A tree with one of everything.
    fn build(root: &Path) {
        use rustix::fs::FileType as F;
        file(root, "etc/passwd", b"root:x:0:0\n");
        let passwd = root.join("etc/passwd");
        lchown(&passwd, 1000, 1001);
        chmod(&passwd, 0o644);
        set_mtime(&passwd, 1_600_000_000, 999_999_999);
        fs::hard_link(&passwd, root.join("etc/zlink")).unwrap();
        file(root, "bin/su", b"su");
        chmod(&root.join("bin/su"), 0o4755);
        fs::create_dir(root.join("tmp")).unwrap();
        chmod(&root.join("tmp"), 0o1777);
        std::os::unix::fs::symlink("etc/passwd", root.join("lnk")).unwrap();
        fs::create_dir(root.join("dev")).unwrap();
        mknod(&root.join("dev/null"), F::CharacterDevice, 0o666, 1, 3);
        mknod(&root.join("dev/sda"), F::BlockDevice, 0o660, 8, 1);
        mknod(&root.join("fifo"), F::Fifo, 0o640, 0, 0);
        mknod(&root.join("sock"), F::Socket, 0o755, 0, 0);
        file(root, "x", b"attrs");
        let x = root.join("x");
        set_xattr(&x, "user.foo", b"bar");
        set_xattr(&x, "trusted.overlay.opaque", b"y");
        set_xattr(&x, "user.overlay.redirect", b"/z");
        set_xattr(&x, "security.capability", &cap_value());
        set_xattr(&x, "user.a=b", b"c");
        // Not settable everywhere (an active LSM may refuse an invalid label).
        let _ = rustix::fs::lsetxattr(
            &x,
            "security.selinux",
            b"system_u:object_r:foo_t:s0",
            rustix::fs::XattrFlags::empty(),
        );
        file(root, &"n".repeat(120), b"long name");
        file(
            root,
            &format!("{}/{}", "p".repeat(60), "q".repeat(60)),
            b"split",
        );
        std::os::unix::fs::symlink("t".repeat(150), root.join("longlink")).unwrap();
        file(root, "big", &noise(5 << 20, 42));
        file(root, "biguid", b"id");
        lchown(&root.join("biguid"), 3_000_000, 4_000_000);
    }

    #[test]
    fn round_trip_through_the_tar_reader() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        build(root);
        let mut changes = all_added(root);
        changes.push(delete("/etc/shadow"));
        changes.push(delete("/gone"));
        let bytes = export(root, &changes);

        assert_eq!(bytes.len() % BLOCK, 0);
        assert!(bytes[bytes.len() - 2 * BLOCK..].iter().all(|b| *b == 0));
        let entries = read_tar(&bytes);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        // In the order of the changes' paths: a whiteout stands where the deleted path was.
        let change_path = |n: &str| n.trim_end_matches('/').replace(".wh.", "");
        let mut sorted = names.clone();
        sorted.sort_by_key(|n| change_path(n));
        assert_eq!(names, sorted, "entries in path order");
        assert!(!names.contains(&"sock"), "sockets are skipped");
        let get = |name: &str| -> &Read {
            &entries
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing from {names:?}"))
                .1
        };

        let etc = get("etc/");
        assert_eq!(etc.kind, Some(EntryType::Directory));
        assert_eq!(etc.size, 0);

        let passwd = get("etc/passwd");
        assert_eq!(passwd.kind, Some(EntryType::Regular));
        assert_eq!((passwd.mode, passwd.uid, passwd.gid), (0o644, 1000, 1001));
        assert_eq!(passwd.mtime, 1_600_000_000, "mtime truncated to seconds");
        assert_eq!(passwd.data, b"root:x:0:0\n");

        let link = get("etc/zlink");
        assert_eq!(link.kind, Some(EntryType::Link));
        assert_eq!(link.link.as_deref(), Some(&b"etc/passwd"[..]));
        assert_eq!(link.size, 0);

        assert_eq!(get("bin/su").mode, 0o4755);
        assert_eq!(get("tmp/").mode, 0o1777);

        let lnk = get("lnk");
        assert_eq!(lnk.kind, Some(EntryType::Symlink));
        assert_eq!(lnk.link.as_deref(), Some(&b"etc/passwd"[..]));

        let null = get("dev/null");
        assert_eq!(
            (null.kind, null.dev, null.mode),
            (Some(EntryType::Char), (1, 3), 0o666)
        );
        let sda = get("dev/sda");
        assert_eq!((sda.kind, sda.dev), (Some(EntryType::Block), (8, 1)));
        assert_eq!(get("fifo").kind, Some(EntryType::Fifo));

        let x = get("x");
        assert_eq!(
            x.pax.get("SCHILY.xattr.user.foo").map(Vec::as_slice),
            Some(&b"bar"[..])
        );
        assert_eq!(
            x.pax.get("SCHILY.xattr.security.capability"),
            Some(&cap_value())
        );
        for hidden in [
            "trusted.overlay.opaque",
            "user.overlay.redirect",
            "security.selinux",
        ] {
            assert!(
                !x.pax.contains_key(&format!("SCHILY.xattr.{hidden}")),
                "{hidden}"
            );
        }
        assert_eq!(x.data, b"attrs");

        let long = "n".repeat(120);
        let l = get(&long);
        assert_eq!(l.pax.get("path"), Some(&long.as_bytes().to_vec()));
        assert_eq!(l.data, b"long name");

        let split = format!("{}/{}", "p".repeat(60), "q".repeat(60));
        let s = get(&split);
        assert!(s.pax.is_empty(), "a splittable name needs no PAX record");
        assert_eq!(s.data, b"split");

        let ll = get("longlink");
        assert_eq!(ll.link.as_deref(), Some("t".repeat(150).as_bytes()));
        assert!(ll.pax.contains_key("linkpath"));

        let big = get("big");
        assert_eq!(big.size, 5 << 20);
        assert!(big.data == noise(5 << 20, 42), "5 MiB content intact");

        let id = get("biguid");
        assert_eq!(id.pax.get("uid"), Some(&b"3000000".to_vec()));
        assert_eq!(id.pax.get("gid"), Some(&b"4000000".to_vec()));
        // The reader applies the PAX ids over the (zeroed) ustar fields.
        assert_eq!((id.uid, id.gid), (3_000_000, 4_000_000));

        for wh in ["etc/.wh.shadow", ".wh.gone"] {
            let w = get(wh);
            assert_eq!(w.kind, Some(EntryType::Regular));
            assert_eq!((w.mode, w.size, w.mtime, w.uid, w.gid), (0, 0, 0, 0, 0));
        }
    }

    #[test]
    fn output_is_deterministic() {
        let tmp = tempfile::tempdir().unwrap();
        build(tmp.path());
        let mut changes = all_added(tmp.path());
        changes.push(delete("/d/e"));
        let a = export(tmp.path(), &changes);
        changes.reverse();
        changes.push(changes[0].clone());
        let b = export(tmp.path(), &changes);
        assert!(a == b, "same tree and changes, same bytes");
    }

    #[test]
    fn gnu_tar_agrees() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        build(&root);
        let bytes = export(&root, &all_added(&root));
        let tarball = tmp.path().join("layer.tar");
        fs::write(&tarball, &bytes).unwrap();
        let Ok(out) = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&tarball)
            .output()
        else {
            return; // no tar binary: nothing to compare against
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8(out.stdout).unwrap();
        assert!(listed.lines().any(|l| l == "n".repeat(120)));
        assert!(listed.lines().any(|l| l == "etc/"));
        assert_eq!(listed.lines().count(), read_tar(&bytes).len());
    }

    #[test]
    fn escaping_paths_are_rejected() {
        for bad in ["/../etc/passwd", "/a/./b", "/"] {
            let changes = [Change {
                path: bad.into(),
                kind: ChangeKind::Add,
            }];
            assert!(ChangeSet::from_changes(&changes).is_err(), "{bad}");
        }
    }

    #[test]
    fn parent_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        file(&outside, "secret", b"s");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("l")).unwrap();
        let fd = dirfd(&root);
        let changes = [Change {
            path: "/l/secret".into(),
            kind: ChangeKind::Add,
        }];
        let set = ChangeSet::from_changes(&changes).unwrap();
        assert!(export_changes(fd.as_fd(), &set, &mut Vec::new()).is_err());
    }

    fn hdr(name: &[u8]) -> Hdr<'_> {
        Hdr {
            name,
            kind: EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &[],
        }
    }

    /// Parses `encode` output: (PAX data if any, main header).
    fn decode(blocks: &[u8]) -> (Option<Vec<u8>>, &Header) {
        let first = Header::from_byte_slice(&blocks[..BLOCK]);
        if first.entry_type() != EntryType::XHeader {
            assert_eq!(blocks.len(), BLOCK);
            return (None, first);
        }
        let len = first.size().unwrap() as usize;
        let data = blocks[BLOCK..BLOCK + len].to_vec();
        let main = &blocks[BLOCK + len + padding(len as u64)..];
        assert_eq!(main.len(), BLOCK);
        (Some(data), Header::from_byte_slice(main))
    }

    #[test]
    fn values_beyond_ustar_use_pax_records() {
        let h = Hdr {
            size: 10 << 30,
            mtime: -5,
            ..hdr(b"huge")
        };
        let blocks = encode(&h).unwrap();
        let (pax, main) = decode(&blocks);
        let pax = String::from_utf8(pax.unwrap()).unwrap();
        assert_eq!(pax, "12 mtime=-5\n20 size=10737418240\n");
        assert_eq!(main.entry_size().unwrap(), 0);
        assert_eq!(main.mtime().unwrap(), 0);
        assert_eq!(&main.path_bytes()[..], b"huge");
        assert!(main.as_ustar().is_some());

        let first = Header::from_byte_slice(&blocks[..BLOCK]);
        assert_eq!(&first.path_bytes()[..], b"PaxHeaders.0/huge");

        let h = Hdr {
            uid: 3_000_000,
            gid: u64::from(u32::MAX),
            ..hdr(b"ids")
        };
        let blocks = encode(&h).unwrap();
        let (pax, main) = decode(&blocks);
        assert_eq!(
            pax.unwrap(),
            b"18 gid=4294967295\n15 uid=3000000\n".to_vec()
        );
        assert_eq!((main.uid().unwrap(), main.gid().unwrap()), (0, 0));

        // Largest values that still fit need no PAX.
        let h = Hdr {
            size: MAX_OCTAL_12,
            uid: MAX_OCTAL_8,
            mtime: MAX_OCTAL_12 as i64,
            ..hdr(b"fits")
        };
        let blocks = encode(&h).unwrap();
        let (pax, main) = decode(&blocks);
        assert!(pax.is_none());
        assert_eq!(main.entry_size().unwrap(), MAX_OCTAL_12);
        assert_eq!(main.uid().unwrap(), MAX_OCTAL_8);
    }

    #[test]
    fn ustar_name_split() {
        let dir = format!("{}/{}/", "d".repeat(60), "e".repeat(60));
        // A directory name: the trailing '/' stays with the name part.
        let blocks = encode(&hdr(dir.as_bytes())).unwrap();
        let (pax, main) = decode(&blocks);
        assert!(pax.is_none());
        assert_eq!(&main.path_bytes()[..], dir.as_bytes());
        // No '/' to split at within the limits: PAX path, truncated ustar name.
        let name = "n".repeat(101);
        let blocks = encode(&hdr(name.as_bytes())).unwrap();
        let (pax, main) = decode(&blocks);
        assert_eq!(pax.unwrap(), format!("111 path={name}\n").into_bytes());
        assert_eq!(main.path_bytes().len(), 100);
        assert_eq!(
            split_ustar_path(format!("/{}", "x".repeat(100)).as_bytes()),
            None
        );
        assert_eq!(split_ustar_path(b"short"), None);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for vlen in 0..300 {
            let mut rec = Vec::new();
            pax_record(&mut rec, b"k", &vec![b'v'; vlen]);
            let sp = rec.iter().position(|b| *b == b' ').unwrap();
            let n: usize = std::str::from_utf8(&rec[..sp]).unwrap().parse().unwrap();
            assert_eq!(n, rec.len(), "value length {vlen}");
        }
    }

    #[test]
    fn pax_header_names() {
        assert_eq!(pax_header_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name(b"a/b/"), b"a/PaxHeaders.0/b");
        assert_eq!(pax_header_name(b"top"), b"PaxHeaders.0/top");
        assert!(pax_header_name("é".repeat(80).as_bytes()).is_ascii());
        assert!(pax_header_name("x".repeat(300).as_bytes()).len() <= 100);
    }

    #[test]
    fn size_changes_while_reading_are_errors() {
        let mut buf = vec![0u8; 4];
        let mut out = Vec::new();
        let shrunk = copy_exact(&mut &b"12345"[..], 10, &mut out, &mut buf, "/f");
        assert!(shrunk.unwrap_err().to_string().contains("shrank"));
        let grown = copy_exact(&mut &b"12345"[..], 3, &mut Vec::new(), &mut buf, "/f");
        assert!(grown.unwrap_err().to_string().contains("grew"));
        let mut out = Vec::new();
        copy_exact(&mut &b"12345"[..], 5, &mut out, &mut buf, "/f").unwrap();
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[..5], b"12345");
    }
}
