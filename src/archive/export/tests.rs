//! Tests of the layer tar writer.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::header::{encode, pax_header_name, pax_record, split_ustar_path};
use super::*;
use crate::archive::changes::changes_dirs;
use crate::archive::walk::testutil::*;
use crate::archive::Change;
use tar::Header;

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
        extra: &[],
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

/// A file with holes becomes a PAX GNU sparse 1.0 entry carrying only its data; strata's
/// apply and GNU tar both restore it with its holes and full size (GNU tar needs the final
/// empty segment of a file that ends in a hole); a file without holes stays a plain entry.
#[test]
fn sparse_files_are_exported_as_gnu_sparse_1_0() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("holes")).unwrap();
    f.set_len(1 << 30).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&noise(10_000, 3), 300 << 20).unwrap();
    drop(f);
    fs::File::create(src.join("all-hole"))
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    file(&src, "dense", &noise(70_000, 4));
    let tar = export(&src, &all_added(&src));
    // 70 KB of dense file, 16 KiB of extents, headers.
    assert!(tar.len() < 128 << 10, "{} bytes", tar.len());

    let entries = read_tar(&tar);
    let holes = entries
        .iter()
        .find(|(n, _)| n == "GNUSparseFile.0/holes")
        .map(|(_, r)| r)
        .expect("sparse entry under the GNU name");
    let rec = |k: &str| String::from_utf8(holes.pax[k].clone()).unwrap();
    assert_eq!(rec("GNU.sparse.major"), "1");
    assert_eq!(rec("GNU.sparse.minor"), "0");
    assert_eq!(rec("GNU.sparse.name"), "holes");
    assert_eq!(rec("GNU.sparse.realsize"), (1u64 << 30).to_string());
    assert!(
        holes
            .data
            .starts_with(b"3\n0\n4096\n314572800\n12288\n1073741824\n0\n"),
        "{:?}",
        String::from_utf8_lossy(&holes.data[..64])
    );
    let dense = &entries.iter().find(|(n, _)| n == "dense").unwrap().1;
    assert!(dense.pax.is_empty() && dense.data == noise(70_000, 4));

    for how in ["strata", "gnu tar"] {
        let dst = tmp.path().join(how.replace(' ', "-"));
        fs::create_dir(&dst).unwrap();
        if how == "strata" {
            let opts = crate::archive::apply::ApplyOptions::default();
            crate::archive::apply::apply(dirfd(&dst).as_fd(), &mut tar.as_slice(), &opts).unwrap();
        } else {
            let tarball = tmp.path().join("layer.tar");
            fs::write(&tarball, &tar).unwrap();
            let out = std::process::Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(&dst)
                .output()
                .expect("GNU tar is installed");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for name in ["holes", "all-hole", "dense"] {
            let (a, b) = (src.join(name), dst.join(name));
            let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
            assert_eq!(ma.len(), mb.len(), "{how}: size of {name}");
            assert!(
                mb.blocks() <= ma.blocks() + 64,
                "{how}: {name} stays sparse"
            );
            let g = fs::File::open(&b).unwrap();
            for off in [0u64, 4096, 300 << 20, (300 << 20) + 9_999, ma.len() - 1] {
                if off >= ma.len() {
                    continue;
                }
                let (mut x, mut y) = ([0u8; 1], [0u8; 1]);
                fs::File::open(&a)
                    .unwrap()
                    .read_exact_at(&mut x, off)
                    .unwrap();
                g.read_exact_at(&mut y, off).unwrap();
                assert_eq!(x, y, "{how}: {name} at {off}");
            }
        }
        assert_eq!(fs::read(dst.join("dense")).unwrap(), noise(70_000, 4));
    }
}
