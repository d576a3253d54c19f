//! Crafting layer tars with the `tar` crate: regular files, directories, symlinks, hard links,
//! fifos, devices, Docker whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`), extended
//! attributes as PAX `SCHILY.xattr.*` records, long names (GNU long-name or PAX `path`), and
//! raw names the `tar` crate would refuse (`../x`). Plus gzip/zstd wrapping.

use std::io::Write;

use tar::{EntryType, Header};

/// Default mtime of crafted entries (2020-09-13).
pub const MTIME: u64 = 1_600_000_000;

/// Metadata of a crafted entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Meta {
    /// `mode`, owner 0:0, mtime [`MTIME`].
    pub fn mode(mode: u32) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: MTIME,
        }
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Meta {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Meta {
        self.mtime = mtime;
        self
    }
}

/// Builds a tar in memory.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: EntryType, meta: Meta, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime);
    h.set_size(size);
    h
}

/// PAX extended-header records: `"<len> <key>=<value>\n"`, `len` counting itself.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let base = key.len() + value.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

impl TarBuilder {
    pub fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        TarBuilder { b }
    }

    /// Bytes written so far (entry boundaries, for truncation tests).
    pub fn len(&self) -> usize {
        self.b.get_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A directory entry (`path` without trailing slash; one is added).
    pub fn dir(&mut self, path: &str, meta: Meta) -> &mut Self {
        let mut h = header(EntryType::Directory, meta, 0);
        let name = format!("{}/", path.trim_end_matches('/'));
        self.b
            .append_data(&mut h, name, std::io::empty())
            .expect("tar dir");
        self
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, content: &[u8], meta: Meta) -> &mut Self {
        let mut h = header(EntryType::Regular, meta, content.len() as u64);
        self.b.append_data(&mut h, path, content).expect("tar file");
        self
    }

    /// A symbolic link `path -> target` (target verbatim, may be absolute or contain `..`).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = header(EntryType::Symlink, Meta::mode(0o777), 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    /// A hard link `path` to the earlier entry `target`. Give it the target's metadata, as
    /// real tar writers do: appliers (Docker's among them) apply a link header's owner, mode
    /// and times to the shared inode.
    pub fn hardlink(&mut self, path: &str, target: &str, meta: Meta) -> &mut Self {
        let mut h = header(EntryType::Link, meta, 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("tar hardlink");
        self
    }

    pub fn fifo(&mut self, path: &str, meta: Meta) -> &mut Self {
        let mut h = header(EntryType::Fifo, meta, 0);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("tar fifo");
        self
    }

    fn device(&mut self, kind: EntryType, path: &str, major: u32, minor: u32, meta: Meta) {
        let mut h = header(kind, meta, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("tar device");
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, meta: Meta) -> &mut Self {
        self.device(EntryType::Char, path, major, minor, meta);
        self
    }

    pub fn block_dev(&mut self, path: &str, major: u32, minor: u32, meta: Meta) -> &mut Self {
        self.device(EntryType::Block, path, major, minor, meta);
        self
    }

    /// Whiteout deleting `path` (`dir/.wh.name`).
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        let p = format!("{dir}.wh.{name}");
        self.file(&p, b"", Meta::mode(0o600))
    }

    /// Opaque marker for `dir` (`dir/.wh..wh..opq`).
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let p = format!("{}/.wh..wh..opq", dir.trim_end_matches('/'));
        self.file(&p, b"", Meta::mode(0o600))
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let data = pax_records(records);
        let mut h = header(EntryType::XHeader, Meta::mode(0o644), data.len() as u64);
        self.b
            .append_data(&mut h, "././@PaxHeader", &data[..])
            .expect("tar pax header");
        self
    }

    /// A regular file with extended attributes (PAX `SCHILY.xattr.<name>`).
    pub fn file_with_xattrs(
        &mut self,
        path: &str,
        content: &[u8],
        meta: Meta,
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let keys: Vec<String> = xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        let records: Vec<(&str, &[u8])> = keys
            .iter()
            .zip(xattrs)
            .map(|(k, (_, v))| (k.as_str(), *v))
            .collect();
        self.pax(&records);
        self.file(path, content, meta)
    }

    /// A regular file whose (long) name is carried by a PAX `path` record; the header holds a
    /// truncated placeholder.
    pub fn file_pax_path(&mut self, path: &str, content: &[u8], meta: Meta) -> &mut Self {
        self.pax(&[("path", path.as_bytes())]);
        let mut h = header(EntryType::Regular, meta, content.len() as u64);
        self.raw_name(&mut h, b"pax-placeholder-name");
        self.b.append(&h, content).expect("tar file");
        self
    }

    fn raw_name(&mut self, h: &mut Header, name: &[u8]) {
        assert!(name.len() < 100, "raw names must fit the header");
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        h.set_cksum();
    }

    /// A regular file with a name written verbatim into the header (no validation: for
    /// hostile names such as `../escape`).
    pub fn file_raw_name(&mut self, name: &[u8], content: &[u8], meta: Meta) -> &mut Self {
        let mut h = header(EntryType::Regular, meta, content.len() as u64);
        self.raw_name(&mut h, name);
        self.b.append(&h, content).expect("tar raw file");
        self
    }

    /// Appends raw bytes to the stream (for deliberately broken archives).
    pub fn raw_bytes(&mut self, data: &[u8]) -> &mut Self {
        self.b.get_mut().extend_from_slice(data);
        self
    }

    /// The archive with its end-of-archive blocks.
    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }

    /// The bytes so far, without end-of-archive blocks.
    pub fn unfinished(&self) -> Vec<u8> {
        self.b.get_ref().clone()
    }
}

/// gzip-compressed copy.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd-compressed copy.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// One entry of a parsed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: EntryType,
    pub size: u64,
    pub link: Option<String>,
}

/// Lists a tar (names as the reader reports them, after GNU/PAX long-name handling).
pub fn list_tar(data: &[u8]) -> Vec<TarEntry> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .expect("tar entries")
        .map(|e| {
            let e = e.expect("tar entry");
            TarEntry {
                path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                kind: e.header().entry_type(),
                size: e.header().size().unwrap(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
            }
        })
        .collect()
}

/// Normalises a tar entry name for comparisons: no leading `./` or `/`, no trailing `/`.
pub fn norm(name: &str) -> String {
    let n = name.trim_start_matches("./").trim_start_matches('/');
    n.trim_end_matches('/').to_string()
}
