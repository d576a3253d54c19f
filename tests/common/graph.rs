//! The graphtest helpers (moby `daemon/graphdriver/graphtest/testutil*.go`), over the CLI.
//! Each helper brackets its work with `get` … `put`, as graphtest does. Files are written with
//! mode 0755 unless stated.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::tree::{self, chmod, chown, mkdir_all, read_file, write_file};
use super::{Change, ChangeKind, Store};

/// splitmix64: a fixed, portable PRNG.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish value in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }
}

/// `n` deterministic pseudo-random bytes for `seed` (graphtest's `randomContent`, with
/// splitmix64 instead of Go's math/rand).
pub fn random_content(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    SplitMix64::new(seed).fill(&mut v);
    v
}

/// A 64-hex-character layer id derived from `seed` (dockerd's id shape).
pub fn layer_id(seed: u64) -> String {
    let mut r = SplitMix64::new(seed ^ 0x5EED_1D5E_ED1D_5EED);
    (0..4).map(|_| format!("{:016x}", r.next_u64())).collect()
}

/// graphtest `addFile`: writes `rel` (mode 0755) in the layer.
pub fn add_file(s: &Store, id: &str, rel: &str, content: &[u8]) {
    s.with_layer(id, |root| write_file(root, rel, content, 0o755));
}

/// graphtest `checkFile`.
pub fn check_file(s: &Store, id: &str, rel: &str, content: &[u8]) {
    let got = s.with_layer(id, |root| read_file(root, rel));
    assert!(
        got == content,
        "{id}: {rel} has {} bytes (fnv {:016x}), expected {} bytes (fnv {:016x})",
        got.len(),
        tree::fnv64(&got),
        content.len(),
        tree::fnv64(content)
    );
}

/// graphtest `addDirectory` (MkdirAll, 0755).
pub fn add_directory(s: &Store, id: &str, rel: &str) {
    s.with_layer(id, |root| mkdir_all(root, rel, 0o755));
}

/// graphtest `removeAll`.
pub fn remove_all(s: &Store, id: &str, rels: &[&str]) {
    s.with_layer(id, |root| {
        for rel in rels {
            tree::remove_all(root, rel);
        }
    });
}

/// graphtest `checkFileRemoved`: ENOENT expected.
pub fn check_file_removed(s: &Store, id: &str, rel: &str) {
    s.with_layer(id, |root| tree::assert_absent(root, rel));
}

/// graphtest `addFiles`: `file-a` (64 B, seed), `dir-b/file-b` (128 B, seed+1), `file-c`
/// (16 384 B, seed+2).
pub fn add_files(s: &Store, id: &str, seed: u64) {
    s.with_layer(id, |root| {
        write_file(root, "file-a", &random_content(64, seed), 0o755);
        mkdir_all(root, "dir-b", 0o755);
        write_file(root, "dir-b/file-b", &random_content(128, seed + 1), 0o755);
        write_file(root, "file-c", &random_content(16384, seed + 2), 0o755);
    });
}

/// graphtest `checkFiles` counterpart of [`add_files`].
pub fn check_files(s: &Store, id: &str, seed: u64) {
    s.with_layer(id, |root| {
        assert_eq!(read_file(root, "file-a"), random_content(64, seed));
        assert_eq!(
            read_file(root, "dir-b/file-b"),
            random_content(128, seed + 1)
        );
        assert_eq!(read_file(root, "file-c"), random_content(16384, seed + 2));
    });
}

fn many_files_layout(count: usize) -> Vec<(String, usize)> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < count {
        let mut j = 0;
        while i + j < count && j < 100 {
            v.push((format!("directory-{i}/file-{}", i + j), i + j));
            j += 1;
        }
        i += 100;
    }
    v
}

/// graphtest `addManyFiles`: `directory-<i>/file-<i+j>`, 64 B of `random_content(64,
/// seed+i+j)` each.
pub fn add_many_files(s: &Store, id: &str, count: usize, seed: u64) {
    s.with_layer(id, |root| {
        for (rel, k) in many_files_layout(count) {
            write_file(root, &rel, &random_content(64, seed + k as u64), 0o755);
        }
    });
}

/// graphtest `checkManyFiles`.
pub fn check_many_files(s: &Store, id: &str, count: usize, seed: u64) {
    s.with_layer(id, |root| {
        for (rel, k) in many_files_layout(count) {
            let got = read_file(root, &rel);
            assert!(
                got == random_content(64, seed + k as u64),
                "{id}: {rel} does not hold the content for seed {}",
                seed + k as u64
            );
        }
    });
}

/// graphtest `changeManyFiles`: per directory one Modify of the directory, then per file
/// `j % 3`: 0 rewrite (Modify), 1 add `file-<seed>-<i+j>` (Add), 2 delete (Delete). Returns
/// the expected changes.
pub fn change_many_files(s: &Store, id: &str, count: usize, seed: u64) -> Vec<Change> {
    s.with_layer(id, |root| {
        let mut changes = Vec::new();
        let mut i = 0;
        while i < count {
            let dir = format!("directory-{i}");
            mkdir_all(root, &dir, 0o755);
            let mut j = 0;
            while i + j < count && j < 100 {
                if j == 0 {
                    changes.push((format!("/{dir}"), ChangeKind::Modify));
                }
                let k = i + j;
                match j % 3 {
                    0 => {
                        let rel = format!("{dir}/file-{k}");
                        write_file(root, &rel, &random_content(64, seed + k as u64), 0o755);
                        changes.push((format!("/{rel}"), ChangeKind::Modify));
                    }
                    1 => {
                        let rel = format!("{dir}/file-{seed}-{k}");
                        write_file(root, &rel, &random_content(64, seed + k as u64), 0o755);
                        changes.push((format!("/{rel}"), ChangeKind::Add));
                    }
                    _ => {
                        let rel = format!("{dir}/file-{k}");
                        fs::remove_file(root.join(&rel)).unwrap();
                        changes.push((format!("/{rel}"), ChangeKind::Delete));
                    }
                }
                j += 1;
            }
            i += 100;
        }
        changes
    })
}

/// graphtest `addLayerFiles`: `top-id` = layer, `layer-<i>/layer-id` = layer,
/// `layer-<i>/parent-id` = parent.
pub fn add_layer_files(root: &Path, layer: &str, parent: &str, i: usize) {
    write_file(root, "top-id", layer.as_bytes(), 0o755);
    mkdir_all(root, &format!("layer-{i}"), 0o755);
    write_file(
        root,
        &format!("layer-{i}/layer-id"),
        layer.as_bytes(),
        0o755,
    );
    write_file(
        root,
        &format!("layer-{i}/parent-id"),
        parent.as_bytes(),
        0o755,
    );
}

/// graphtest `addManyLayers`: a chain of `count` image layers on `base`, each created with
/// `create --parent <previous>` and then written through `get`. Returns the top layer id.
pub fn add_many_layers(s: &Store, base: &str, count: usize, seed: u64) -> String {
    let mut last = base.to_string();
    for i in 1..=count {
        let next = layer_id(seed.wrapping_mul(1000).wrapping_add(i as u64));
        s.create(&next, Some(&last));
        s.with_layer(&next, |root| add_layer_files(root, &next, &last, i));
        last = next;
    }
    last
}

/// graphtest `checkManyLayers`: from `top-id` down through every `layer-<i>`; additionally
/// the last parent must be `base`.
pub fn check_many_layers(s: &Store, top: &str, count: usize, base: &str) {
    s.with_layer(top, |root| {
        let mut expected = String::from_utf8(read_file(root, "top-id")).unwrap();
        assert_eq!(expected, top, "top-id read through the top layer");
        for i in (1..=count).rev() {
            let this = String::from_utf8(read_file(root, &format!("layer-{i}/layer-id"))).unwrap();
            assert_eq!(this, expected, "layer-{i}/layer-id");
            expected = String::from_utf8(read_file(root, &format!("layer-{i}/parent-id"))).unwrap();
        }
        assert_eq!(expected, base, "layer-1/parent-id must be the base layer");
    });
}

/// graphtest `createBase`: `create --rw NAME`; directory `a subdir` mode 01705 owned 1:2 and
/// file `a file` = `Some data` mode 04222 (modes set with chmod, not via umask).
pub fn create_base(s: &Store, name: &str) {
    s.create_rw(name, None);
    s.with_layer(name, |root| {
        let subdir = root.join("a subdir");
        fs::create_dir(&subdir).unwrap();
        chown(&subdir, 1, 2);
        chmod(&subdir, 0o1705);
        let file = root.join("a file");
        fs::write(&file, b"Some data").unwrap();
        chmod(&file, 0o4222);
    });
}

/// graphtest `verifyBase`: exactly those two entries, with those modes and owners.
pub fn verify_base(s: &Store, name: &str) {
    s.with_layer(name, |root| {
        assert_eq!(
            tree::read_dir_names(root),
            vec!["a file".to_string(), "a subdir".to_string()],
            "{name}: base entries"
        );
        verify_file(root, "a subdir", true, 0o1705, 1, 2);
        verify_file(root, "a file", false, 0o4222, 0, 0);
        assert_eq!(read_file(root, "a file"), b"Some data");
    });
}

/// graphtest `verifyFile`: type, permission bits incl. setuid/setgid/sticky, uid, gid.
pub fn verify_file(root: &Path, rel: &str, dir: bool, mode: u32, uid: u32, gid: u32) {
    let path = root.join(rel);
    let md = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(md.is_dir(), dir, "{rel}: is_dir");
    if !dir {
        assert!(md.is_file(), "{rel}: regular file expected");
    }
    assert_eq!(
        md.mode() & 0o7777,
        mode,
        "{rel}: mode {:o}",
        md.mode() & 0o7777
    );
    assert_eq!(md.uid(), uid, "{rel}: uid");
    assert_eq!(md.gid(), gid, "{rel}: gid");
}

/// Whether an I/O result failed with `errno`.
pub fn is_errno<T>(r: &io::Result<T>, errno: i32) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(errno))
}
