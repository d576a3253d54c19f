//! Writes the seed corpus of the `apply` fuzz target: small hostile layer tars aimed at the
//! parent layer the harness builds (`evil -> /`, `up -> ../../..`, `abs -> <victim>`, `upv ->
//! ../../../../victim`, `d/`, `o/`, loops). Covers traversal, symlink and hard-link escapes,
//! whiteouts and opaque markers (also through symlinks), PAX records, GNU and PAX long names,
//! GNU sparse files, devices, xattrs, replacements, broken and compressed streams.
//!
//! `cargo run --example seeds -- fuzz/seeds/apply` (from `fuzz/`: `-- seeds/apply`).

#[path = "../../tests/common/tars.rs"]
#[allow(dead_code)]
mod tars;

use std::path::PathBuf;

use tars::{gzip, zstd, Meta, TarBuilder};

const BLOCK: usize = 512;

/// One header + payload + padding, with name and link name written verbatim (the `tar` crate
/// refuses `..` and absolute names).
fn raw(kind: u8, name: &[u8], link: &[u8], data: &[u8], mode: u32) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    raw(b'0', name.as_bytes(), b"", data, 0o644)
}

fn symlink(name: &str, target: &str) -> Vec<u8> {
    raw(b'2', name.as_bytes(), target.as_bytes(), b"", 0o777)
}

fn hardlink(name: &str, target: &str) -> Vec<u8> {
    raw(b'1', name.as_bytes(), target.as_bytes(), b"", 0o644)
}

fn dir(name: &str) -> Vec<u8> {
    raw(b'5', name.as_bytes(), b"", b"", 0o755)
}

/// A stream of raw entries and the two end blocks.
fn stream(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = entries.concat();
    out.extend_from_slice(&[0; 2 * BLOCK]);
    out
}

/// A GNU sparse entry ('S'): `chunks` of (offset, bytes) in a file of `real` bytes.
fn gnu_sparse(name: &str, real: u64, chunks: &[(u64, &[u8])]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path(name).expect("sparse name");
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    let stored: usize = chunks.iter().map(|(_, d)| d.len()).sum();
    h.set_size(stored as u64);
    let gnu = h.as_gnu_mut().expect("GNU header");
    for (slot, (off, data)) in gnu.sparse.iter_mut().zip(chunks) {
        slot.set_offset(*off);
        slot.set_length(data.len() as u64);
    }
    gnu.set_real_size(real);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    for (_, d) in chunks {
        out.extend_from_slice(d);
    }
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    out
}

/// Seeds named `<group>` (all entries: an apply stops at the first refused one) and
/// `<group>-<i>` (entry `i` alone, so every rule is reached by some seed).
fn group(v: &mut Vec<(String, Vec<u8>)>, name: &str, entries: &[Vec<u8>]) {
    v.push((name.to_string(), stream(entries)));
    for (i, e) in entries.iter().enumerate() {
        v.push((format!("{name}-{i}"), stream(std::slice::from_ref(e))));
    }
}

type Build = fn(&mut TarBuilder);

fn seeds() -> Vec<(String, Vec<u8>)> {
    let m = Meta::mode(0o644);
    let mut v = Vec::new();
    group(
        &mut v,
        "traversal",
        &[
            file("../escape", b"out\n"),
            file("../../../../victim/marker", b"overwritten\n"),
            file("/abs-root-file", b"in\n"),
            file("a/../../x", b"x\n"),
            file("./././../y", b"y\n"),
            dir("../newdir/"),
        ],
    );
    group(
        &mut v,
        "write-through-parent-symlinks",
        &[
            file("evil/tmp/pwned", b"p\n"),
            file("abs/marker", b"overwritten\n"),
            file("abs/new", b"new\n"),
            file("upv/marker", b"overwritten\n"),
            file("up/layers/pwned", b"p\n"),
            file("d/upv/dir/secret", b"s\n"),
            file("d/abs/suid", b"s\n"),
            file("loop/x", b"x\n"),
            file("ping/x", b"x\n"),
            dir("abs/newdir/"),
        ],
    );
    group(
        &mut v,
        "own-symlinks-then-through",
        &[
            symlink("s", "/"),
            file("s/etc/passwd", b"root::0:0\n"),
            symlink("t", "../../../../victim"),
            file("t/marker", b"overwritten\n"),
            symlink("u", "abs"),
            file("u/marker", b"overwritten\n"),
            symlink("w", "d/../../.."),
            file("w/x", b"x\n"),
            symlink("absmarker", "/d/f"),
            file("absmarker", b"replaced\n"),
        ],
    );
    group(
        &mut v,
        "hardlink-escapes",
        &[
            hardlink("h1", "../../../../victim/marker"),
            hardlink("h2", "abs/marker"),
            hardlink("h3", "absmarker"),
            hardlink("h4", "evil/etc/passwd"),
            hardlink("h5", "upm"),
            hardlink("h6", "d/f"),
            hardlink("h7", "d/abs/marker"),
            hardlink("h8", "/upv/marker"),
            hardlink("h9", "h9"),
            hardlink("d", "d/f"),
        ],
    );
    group(
        &mut v,
        "whiteouts",
        &[
            file(".wh.evil", b""),
            file("d/.wh.f", b""),
            file("abs/.wh.marker", b""),
            file("evil/.wh.tmp", b""),
            file("upv/.wh.marker", b""),
            file("up/.wh.meta.redb", b""),
            file(".wh.", b""),
            file(".wh..wh.plnk", b""),
            file("d/.wh.nonexistent", b""),
            file("o/.wh.x", b"data in a whiteout"),
        ],
    );
    group(
        &mut v,
        "opaque",
        &[
            file("abs/.wh..wh..opq", b""),
            file("evil/.wh..wh..opq", b""),
            file("upv/.wh..wh..opq", b""),
            file("o/new", b"n\n"),
            file("o/.wh..wh..opq", b""),
            file(".wh..wh..opq", b""),
        ],
    );
    let pax: [(&str, Build); 6] = [
        ("pax-path-traversal", |t| {
            t.pax(&[("path", b"../../../../victim/marker")]).file(
                "placeholder",
                b"overwritten\n",
                Meta::mode(0o644),
            );
        }),
        ("pax-linkpath", |t| {
            t.file("placeholder", b"p\n", Meta::mode(0o644))
                .pax(&[("linkpath", b"../../../../victim/marker")])
                .hardlink("paxlink", "placeholder", Meta::mode(0o644));
        }),
        ("pax-times-ids", |t| {
            t.pax(&[("mtime", b"1600000000.123456789"), ("uid", b"4294967295")])
                .file("subsec", b"t\n", Meta::mode(0o644));
        }),
        ("pax-size", |t| {
            t.pax(&[("size", b"3")])
                .file("paxsize", b"abc", Meta::mode(0o644));
        }),
        ("pax-path-through-symlink", |t| {
            t.pax(&[("path", b"abs/paxfile")])
                .file("placeholder2", b"p\n", Meta::mode(0o644));
        }),
        ("pax-vendor", |t| {
            t.pax(&[
                ("comment", b"vendor record"),
                ("MSWINDOWS.rawsd", b"AQAEgA=="),
            ])
            .file("vendor", b"v\n", Meta::mode(0o644));
        }),
    ];
    for (name, build) in pax {
        let mut t = TarBuilder::new();
        build(&mut t);
        v.push((name.to_string(), t.finish()));
    }
    let long = format!("{}/f", "n".repeat(150));
    let deep = format!("{}/file", vec!["dd"; 60].join("/"));
    let mut t = TarBuilder::new();
    t.file(&long, b"gnu long name\n", m)
        .file_pax_path(&format!("{}/g", "p".repeat(200)), b"pax path\n", m)
        .file(&deep, b"deep\n", m)
        .symlink("longlink", &format!("{}/target", "l".repeat(180)))
        .hardlink("longhard", &long, m);
    v.push((String::from("long-names"), t.finish()));
    let mut sparse = gnu_sparse(
        "sparse",
        1 << 20,
        &[(0, b"head"), (65536, &[7u8; 600]), ((1 << 20) - 4, b"tail")],
    );
    sparse.extend(gnu_sparse("abs/sparse", 4096, &[(0, b"x")]));
    sparse.extend_from_slice(&[0; 2 * BLOCK]);
    v.push(("sparse".into(), sparse));
    let singles: [(&str, Build); 11] = [
        ("dev-null", |t| {
            t.char_dev("null", 1, 3, Meta::mode(0o666));
        }),
        ("dev-block", |t| {
            t.block_dev("sda", 8, 0, Meta::mode(0o660));
        }),
        ("dev-whiteout-disguise", |t| {
            t.char_dev("wh", 0, 0, Meta::mode(0o644));
        }),
        ("dev-bigmajor", |t| {
            t.char_dev("big", 4096, 0, Meta::mode(0o644));
        }),
        ("dev-fifo", |t| {
            t.fifo("fifo", Meta::mode(0o600))
                .fifo("abs/fifo", Meta::mode(0o600));
        }),
        ("xattr-user-trusted", |t| {
            let m = Meta::mode(0o644);
            t.file_with_xattrs("x1", b"x\n", m, &[("user.a", b"1"), ("trusted.b", b"2")]);
        }),
        ("xattr-overlay-opaque", |t| {
            let m = Meta::mode(0o644);
            t.file_with_xattrs("x2", b"x\n", m, &[("trusted.overlay.opaque", b"y")]);
        }),
        ("xattr-selinux", |t| {
            let m = Meta::mode(0o644);
            t.file_with_xattrs("x3", b"x\n", m, &[("security.selinux", b"system_u")]);
        }),
        ("xattr-user-overlay", |t| {
            let m = Meta::mode(0o644);
            t.file_with_xattrs("x4", b"x\n", m, &[("user.overlay.redirect", b"/abs")]);
        }),
        ("xattr-through-symlink", |t| {
            let m = Meta::mode(0o644);
            t.file_with_xattrs("abs/x5", b"x\n", m, &[("user.a", b"1")]);
        }),
        ("setuid-owners", |t| {
            t.file("suid", b"s\n", Meta::mode(0o4755).owner(1000, 2000))
                .dir("sticky", Meta::mode(0o1777))
                .file("sgid", b"g\n", Meta::mode(0o2711).owner(65534, 65534));
        }),
    ];
    for (name, build) in singles {
        let mut t = TarBuilder::new();
        build(&mut t);
        v.push((name.to_string(), t.finish()));
    }
    let mut t = TarBuilder::new();
    t.dir("x", Meta::mode(0o755))
        .file("x/y", b"y\n", m)
        .file("x", b"now a file\n", m)
        .file("d/f", b"hardlinked in the parent\n", Meta::mode(0o4755))
        .file("d", b"replaces the parent's directory\n", m)
        .file("dup", b"first\n", m)
        .file("dup", b"second\n", m)
        .file("gone", b"g\n", m)
        .whiteout("gone")
        .dir(".", Meta::mode(0o700).owner(1000, 1000));
    let replacements = t.finish();
    let mut bad = stream(&[file("a", b"a\n")]);
    bad.extend_from_slice(b"trailing garbage after the end blocks");
    v.push(("trailing-garbage".into(), bad));
    let mut big = raw(b'0', b"big", b"", b"", 0o644);
    big[124..136].copy_from_slice(b"77777777777\0");
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&big[..BLOCK]);
    h.set_cksum();
    let mut truncated = h.as_bytes().to_vec();
    truncated.extend_from_slice(b"only a little data");
    v.push(("truncated".into(), truncated));
    group(
        &mut v,
        "root-entries",
        &[file(".", b"root\n"), file("", b""), dir("./")],
    );
    let mut one_end = file("a", b"a\n");
    one_end.extend_from_slice(&[0; BLOCK]);
    v.push(("one-end-block".into(), one_end));
    v.push(("no-end-blocks".into(), file("a", b"a\n")));
    v.push(("empty".into(), Vec::new()));
    v.push((
        "gzip".into(),
        gzip(&stream(&[symlink("s", "/"), file("s/x", b"x\n")])),
    ));
    v.push(("zstd".into(), zstd(&replacements)));
    v.push(("replacements".into(), replacements));
    v
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "seeds/apply".into()),
    );
    std::fs::create_dir_all(&out).expect("create seed directory");
    for (name, data) in seeds() {
        let path = out.join(format!("{name}.tar"));
        std::fs::write(&path, &data).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        println!("{} ({} bytes)", path.display(), data.len());
    }
}
