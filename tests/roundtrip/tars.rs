//! Random layer tars for the exact re-export property, crafted with the `tar` crate plus raw
//! blocks: ustar and GNU headers, PAX records (sub-second mtimes, xattrs, vendor keys, long
//! paths), GNU long names and long link names, hard links, symlinks, fifos, devices, GNU
//! sparse files, the same name twice, whiteouts of earlier entries, header quirks (uname and
//! gname, type bits in the mode field, space-terminated octal, v7 headers, base-256 ids),
//! non-zero padding after file content, PAX global headers, and odd endings (extra zero
//! blocks, a partial block, padding to a 10240-byte record, trailing garbage).
//!
//! Every generated tar is valid for strata: parents come before children, links and
//! whiteouts name live entries.

use proptest::prelude::*;
use tar::{EntryType, Header};

use crate::common::graph::random_content;
use crate::common::tars::pax_records;

const BLOCK: usize = 512;

/// Header flavour.
#[derive(Debug, Clone, Copy)]
pub enum Flavour {
    Gnu,
    Ustar,
    /// GNU header with uname/gname, file type bits in the mode and space-terminated octal.
    Quirky,
    /// Pre-POSIX (v7) header: no magic, no uname/gname.
    V7,
    /// GNU header with owner ids past the octal range (base-256 numbers).
    BigIds,
}

/// One step of building the tar.
#[derive(Debug, Clone)]
pub enum Item {
    Dir(usize, String),
    File(usize, String, Vec<u8>, Flavour),
    /// A file with PAX records: sub-second mtime, an xattr, a vendor key.
    PaxFile(usize, String, Vec<u8>, u32, Vec<u8>),
    /// A file whose long name goes in a PAX `path` record.
    PaxLongName(usize, usize, u64),
    /// A file with a name over 100 bytes (the `tar` crate writes a GNU long-name entry).
    GnuLongName(usize, usize),
    Symlink(usize, String, String),
    Hardlink(usize, String, usize),
    Fifo(usize, String),
    Device(usize, String, bool, u32, u32),
    /// GNU sparse file: real size, data chunk length, seed.
    Sparse(usize, String, u64, usize, u64),
    /// Writes the n-th live file again with new content.
    Again(usize, Vec<u8>),
    /// Whiteout of the n-th live non-directory.
    Whiteout(usize),
    /// A file whose padding after the content is not zeros.
    DirtyPadding(usize, String, Vec<u8>, u8),
    /// A PAX global header (`g`), which applies to no single entry.
    GlobalPax(Vec<u8>),
}

/// How the stream ends after the two zero blocks.
#[derive(Debug, Clone)]
pub enum Tail {
    Plain,
    ZeroBlocks(usize),
    Partial(usize),
    Record10240,
    Garbage(Vec<u8>),
}

fn name() -> impl Strategy<Value = String> {
    "[a-z]{1,8}"
}

fn item() -> impl Strategy<Value = Item> {
    let parent = 0usize..6;
    let data = prop::collection::vec(any::<u8>(), 0..700);
    let flavour = prop::sample::select(vec![
        Flavour::Gnu,
        Flavour::Ustar,
        Flavour::Quirky,
        Flavour::V7,
        Flavour::BigIds,
    ]);
    prop_oneof![
        4 => (parent.clone(), name()).prop_map(|(p, n)| Item::Dir(p, n)),
        8 => (parent.clone(), name(), data.clone(), flavour)
            .prop_map(|(p, n, d, f)| Item::File(p, n, d, f)),
        2 => (parent.clone(), name(), data.clone(), 0u32..1_000_000_000, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(p, n, d, ns, x)| Item::PaxFile(p, n, d, ns, x)),
        1 => (parent.clone(), 100usize..220, any::<u64>()).prop_map(|(p, l, s)| Item::PaxLongName(p, l, s)),
        1 => (parent.clone(), 101usize..250).prop_map(|(p, l)| Item::GnuLongName(p, l)),
        2 => (parent.clone(), name(), prop_oneof!["[a-z/.]{1,20}", "/[a-z]{1,10}", "[a-z]{120,200}"])
            .prop_map(|(p, n, t)| Item::Symlink(p, n, t)),
        2 => (parent.clone(), name(), 0usize..20).prop_map(|(p, n, t)| Item::Hardlink(p, n, t)),
        1 => (parent.clone(), name()).prop_map(|(p, n)| Item::Fifo(p, n)),
        1 => (parent.clone(), name(), any::<bool>(), 1u32..256, 0u32..5000)
            .prop_map(|(p, n, c, a, b)| Item::Device(p, n, c, a, b)),
        1 => (parent.clone(), name(), 0u64..(3 << 20), 1usize..3000, any::<u64>())
            .prop_map(|(p, n, r, l, s)| Item::Sparse(p, n, r, l, s)),
        1 => (0usize..20, data).prop_map(|(i, d)| Item::Again(i, d)),
        1 => (0usize..20).prop_map(Item::Whiteout),
        1 => (parent.clone(), name(), prop::collection::vec(any::<u8>(), 1..500), 1u8..=255)
            .prop_map(|(p, n, d, b)| Item::DirtyPadding(p, n, d, b)),
        1 => prop::collection::vec(any::<u8>(), 0..30).prop_map(Item::GlobalPax),
    ]
}

fn tail() -> impl Strategy<Value = Tail> {
    prop_oneof![
        4 => Just(Tail::Plain),
        1 => (1usize..5).prop_map(Tail::ZeroBlocks),
        1 => (1usize..511).prop_map(Tail::Partial),
        1 => Just(Tail::Record10240),
        1 => prop::collection::vec(any::<u8>(), 1..100).prop_map(Tail::Garbage),
    ]
}

/// A random tar description: items and an ending.
pub fn spec() -> impl Strategy<Value = (Vec<Item>, Tail)> {
    (prop::collection::vec(item(), 1..20), tail())
}

fn header(kind: EntryType, flavour: Flavour, size: u64, mode: u32) -> Header {
    let mut h = match flavour {
        Flavour::Ustar => Header::new_ustar(),
        Flavour::V7 => Header::new_old(),
        _ => Header::new_gnu(),
    };
    h.set_entry_type(kind);
    h.set_mode(mode);
    let id = match flavour {
        Flavour::BigIds => 4_000_000_000,
        _ => 1000,
    };
    h.set_uid(id);
    h.set_gid(id);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    if let Flavour::Quirky = flavour {
        h.set_username("root").expect("uname");
        h.set_groupname("wheel").expect("gname");
    }
    h
}

/// Rewrites the mode field as `0100644 ` (type bits, space-terminated), then the checksum.
fn quirk(h: &mut Header) {
    let old = h.as_old_mut();
    old.mode.copy_from_slice(b"0100644 ");
    h.set_cksum();
}

/// Raw GNU sparse entry: one data chunk in the middle of a `real`-byte file.
/// `None` when the name does not fit the header.
fn gnu_sparse(name: &str, real: u64, len: usize, seed: u64) -> Option<Vec<u8>> {
    let len = (len as u64).min(real) as usize;
    let off = (real - len as u64) / 2;
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_path(name).ok()?;
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_size(len as u64);
    let gnu = h.as_gnu_mut().expect("GNU header");
    gnu.sparse[0].set_offset(off);
    gnu.sparse[0].set_length(len as u64);
    gnu.set_real_size(real);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&random_content(len, seed));
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    Some(out)
}

/// Builds the tar: each item in order, skipping those that would make it invalid.
pub fn build(items: &[Item], tail: &Tail) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = |p: &usize, n: &str| match p % (dirs.len() + 1) {
            0 => format!("{n}{i}"),
            k => format!("{}/{n}{i}", dirs[k - 1]),
        };
        match item {
            Item::Dir(p, n) => {
                let path = path(p, n);
                let mut h = header(EntryType::Directory, Flavour::Gnu, 0, 0o755);
                b.append_data(&mut h, format!("{path}/"), &[][..])
                    .expect("dir");
                dirs.push(path);
            }
            Item::File(p, n, d, f) => {
                let path = path(p, n);
                let mut h = header(EntryType::Regular, *f, d.len() as u64, 0o644);
                if matches!(f, Flavour::Quirky) && h.set_path(&path).is_ok() {
                    quirk(&mut h);
                    b.append(&h, &d[..]).expect("file");
                } else {
                    // Long paths: the crate writes a GNU long-name entry.
                    b.append_data(&mut h, &path, &d[..]).expect("file");
                }
                files.push(path);
            }
            Item::PaxFile(p, n, d, ns, x) => {
                let path = path(p, n);
                let mtime = format!("1600000000.{ns:09}");
                let records = pax_records(&[
                    ("mtime", mtime.as_bytes()),
                    ("SCHILY.xattr.user.roundtrip", x),
                    ("VENDOR.custom", b"kept verbatim"),
                ]);
                let mut h = header(
                    EntryType::XHeader,
                    Flavour::Ustar,
                    records.len() as u64,
                    0o644,
                );
                b.append_data(&mut h, "PaxHeaders.0/x", &records[..])
                    .expect("pax");
                let mut h = header(EntryType::Regular, Flavour::Ustar, d.len() as u64, 0o600);
                b.append_data(&mut h, &path, &d[..]).expect("file");
                files.push(path);
            }
            Item::PaxLongName(p, len, seed) => {
                let path = path(p, &format!("{}{seed}", "p".repeat(*len)));
                let records = pax_records(&[("path", path.as_bytes())]);
                let mut h = header(
                    EntryType::XHeader,
                    Flavour::Ustar,
                    records.len() as u64,
                    0o644,
                );
                b.append_data(&mut h, "PaxHeaders.0/long", &records[..])
                    .expect("pax");
                let data = seed.to_le_bytes();
                let mut h = header(EntryType::Regular, Flavour::Ustar, data.len() as u64, 0o644);
                h.set_path("truncated-placeholder").expect("path");
                h.set_cksum();
                b.append(&h, &data[..]).expect("file");
                files.push(path);
            }
            Item::GnuLongName(p, len) => {
                let path = path(p, &"g".repeat(*len));
                let mut h = header(EntryType::Regular, Flavour::Gnu, 3, 0o644);
                b.append_data(&mut h, &path, &b"gnu"[..])
                    .expect("long name");
                files.push(path);
            }
            Item::Symlink(p, n, t) => {
                let path = path(p, n);
                let mut h = header(EntryType::Symlink, Flavour::Gnu, 0, 0o777);
                b.append_link(&mut h, &path, t).expect("symlink");
                others.push(path);
            }
            Item::Hardlink(p, n, t) if !files.is_empty() => {
                let path = path(p, n);
                let target = files[t % files.len()].clone();
                let mut h = header(EntryType::Link, Flavour::Gnu, 0, 0o644);
                b.append_link(&mut h, &path, &target).expect("hardlink");
                files.push(path);
            }
            Item::Fifo(p, n) => {
                let path = path(p, n);
                let mut h = header(EntryType::Fifo, Flavour::Ustar, 0, 0o600);
                b.append_data(&mut h, &path, &[][..]).expect("fifo");
                others.push(path);
            }
            Item::Device(p, n, chr, major, minor) => {
                let path = path(p, n);
                let kind = if *chr {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                let mut h = header(kind, Flavour::Ustar, 0, 0o660);
                h.set_device_major(*major).expect("major");
                h.set_device_minor(*minor).expect("minor");
                b.append_data(&mut h, &path, &[][..]).expect("device");
                others.push(path);
            }
            Item::Sparse(p, n, real, len, seed) => {
                let path = path(p, n);
                if let Some(entry) = gnu_sparse(&path, *real, *len, *seed) {
                    b.get_mut().extend(entry);
                    files.push(path);
                }
            }
            Item::Again(k, d) if !files.is_empty() => {
                let path = files[k % files.len()].clone();
                let mut h = header(EntryType::Regular, Flavour::Gnu, d.len() as u64, 0o640);
                b.append_data(&mut h, &path, &d[..]).expect("again");
            }
            Item::Whiteout(k) if !files.is_empty() || !others.is_empty() => {
                let all: Vec<&String> = files.iter().chain(&others).collect();
                let victim = all[k % all.len()].clone();
                let (dir, base) = match victim.rsplit_once('/') {
                    Some((d, n)) => (format!("{d}/"), n.to_string()),
                    None => (String::new(), victim.clone()),
                };
                let mut h = header(EntryType::Regular, Flavour::Gnu, 0, 0o600);
                b.append_data(&mut h, format!("{dir}.wh.{base}"), &[][..])
                    .expect("whiteout");
                files.retain(|f| *f != victim);
                others.retain(|f| *f != victim);
            }
            Item::DirtyPadding(p, n, d, byte) => {
                let path = path(p, n);
                let mut h = header(EntryType::Regular, Flavour::Ustar, d.len() as u64, 0o644);
                if h.set_path(&path).is_ok() {
                    h.set_cksum();
                    let raw = b.get_mut();
                    raw.extend_from_slice(h.as_bytes());
                    raw.extend_from_slice(d);
                    let padded = raw.len().next_multiple_of(BLOCK);
                    raw.resize(padded, *byte);
                    files.push(path);
                }
            }
            Item::GlobalPax(v) => {
                let records = pax_records(&[("comment", v)]);
                let mut h = header(
                    EntryType::XGlobalHeader,
                    Flavour::Ustar,
                    records.len() as u64,
                    0o644,
                );
                b.append_data(&mut h, "GlobalHead.0", &records[..])
                    .expect("global pax");
            }
            Item::Hardlink(..) | Item::Again(..) | Item::Whiteout(_) => {}
        }
    }
    let mut out = b.into_inner().expect("finish tar");
    match tail {
        Tail::Plain => {}
        Tail::ZeroBlocks(n) => out.resize(out.len() + n * BLOCK, 0),
        Tail::Partial(n) => out.resize(out.len() + n, 0),
        Tail::Record10240 => out.resize(out.len().next_multiple_of(10240), 0),
        Tail::Garbage(g) => out.extend_from_slice(g),
    }
    out
}
