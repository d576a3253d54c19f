use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

/// Builds tars entry by entry.
struct T(tar::Builder<Vec<u8>>);

impl T {
    fn new() -> T {
        T(tar::Builder::new(Vec::new()))
    }

    fn raw(
        &mut self,
        name: &str,
        ty: tar::EntryType,
        mode: u32,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if let Some(l) = link {
            h.set_link_name_literal(l).unwrap();
        }
        // Bypass the builder's path checks so hostile names can be written verbatim.
        let nb = name.as_bytes();
        if nb.len() <= 100 {
            h.as_old_mut().name[..nb.len()].copy_from_slice(nb);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
        } else {
            self.0.append_data(&mut h, name, data).unwrap();
        }
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name, tar::EntryType::Regular, 0o644, None, data)
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Directory, 0o755, None, b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Symlink, 0o777, Some(target), b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Link, 0o644, Some(target), b"")
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.0
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// A layer directory with a victim directory beside it.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    victim: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("layer");
        let victim = tmp.path().join("victim");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("hello"), b"victim bytes 8d1f").unwrap();
        Env {
            _tmp: tmp,
            root,
            victim,
        }
    }

    fn apply(&self, tar: &[u8]) -> Result<ApplyStats, Error> {
        self.apply_with(&self.root, tar, &ApplyOptions::default())
    }

    fn apply_with(
        &self,
        root: &Path,
        tar: &[u8],
        opts: &ApplyOptions,
    ) -> Result<ApplyStats, Error> {
        let fd = fsutil::open_dir(root).unwrap();
        let mut input: &[u8] = tar;
        apply(fd.as_fd(), &mut input, opts)
    }

    fn victim_intact(&self) {
        let names: Vec<_> = fs::read_dir(&self.victim)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("hello")],
            "victim dir gained or lost entries"
        );
        let md = fs::metadata(self.victim.join("hello")).unwrap();
        assert_eq!(
            fs::read(self.victim.join("hello")).unwrap(),
            b"victim bytes 8d1f"
        );
        assert_eq!(md.mode() & 0o7777, 0o644);
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn rule(r: Result<ApplyStats, Error>) -> Rule {
    r.unwrap_err().rule().expect("an entry error")
}

#[test]
fn applies_every_type_with_metadata() {
    let e = Env::new();
    let mut t = T::new();
    t.dir("d/")
        .file("d/f", b"content")
        .raw("d/suid", tar::EntryType::Regular, 0o4755, None, b"x");
    t.symlink("d/ln", "../nowhere").hardlink("d/hl", "d/f");
    t.raw("fifo", tar::EntryType::Fifo, 0o600, None, b"");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_uid(7);
    h.set_gid(8);
    h.set_size(0);
    t.0.append_data(&mut h, "null", &b""[..]).unwrap();
    t.pax(&[
        ("SCHILY.xattr.user.note", b"hi"),
        ("SCHILY.xattr.security.selinux", b"system_u:x"),
    ]);
    t.file("x", b"");
    let stats = e.apply(&t.bytes()).unwrap();
    assert_eq!(stats.size, 8);
    assert_eq!(fs::read(e.p("d/f")).unwrap(), b"content");
    assert_eq!(fs::metadata(e.p("d/suid")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::read_link(e.p("d/ln")).unwrap(), Path::new("../nowhere"));
    assert_eq!(
        fs::metadata(e.p("d/hl")).unwrap().ino(),
        fs::metadata(e.p("d/f")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(e.p("d")).unwrap().mtime(),
        1_600_000_000,
        "directory times are set last"
    );
    let null = fs::symlink_metadata(e.p("null")).unwrap();
    assert_eq!(
        (null.rdev(), null.uid(), null.gid(), null.mode() & 0o777),
        (rustix::fs::makedev(1, 3), 7, 8, 0o666)
    );
    let fd = fsutil::open_dir(&e.root).unwrap();
    let x = fsmeta::read_at(fd.as_fd(), OsStr::new("x")).unwrap();
    assert_eq!(
        x,
        vec![(b"user.note".to_vec(), b"hi".to_vec())],
        "security.selinux is dropped"
    );
}

#[test]
fn replaces_unless_both_are_directories() {
    let e = Env::new();
    fs::create_dir_all(e.p("a/keep")).unwrap();
    fs::write(e.p("f"), b"old").unwrap();
    fs::create_dir_all(e.p("d/sub")).unwrap();
    let mut t = T::new();
    t.dir("a/").file("f", b"new").file("d", b"now a file");
    e.apply(&t.bytes()).unwrap();
    assert!(e.p("a/keep").is_dir(), "directories merge");
    assert_eq!(fs::read(e.p("f")).unwrap(), b"new");
    assert_eq!(fs::read(e.p("d")).unwrap(), b"now a file");
}

#[test]
fn whiteouts_and_opaque_directories() {
    let e = Env::new();
    fs::create_dir_all(e.p("etc/sub")).unwrap();
    fs::write(e.p("etc/gone"), b"").unwrap();
    fs::write(e.p("etc/sub/x"), b"").unwrap();
    fs::create_dir_all(e.p("opq/old")).unwrap();
    fs::write(e.p("opq/stale"), b"").unwrap();
    let mut t = T::new();
    t.file("etc/.wh.gone", b"")
        .file("etc/.wh.sub", b"")
        .file("opq/before", b"1");
    t.file("opq/.wh..wh..opq", b"")
        .file("opq/after", b"2")
        .file(".wh..wh.plnk", b"");
    e.apply(&t.bytes()).unwrap();
    assert!(!e.p("etc/gone").exists() && !e.p("etc/sub").exists());
    let mut names: Vec<_> = fs::read_dir(e.p("opq"))
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["after", "before"],
        "an opaque marker keeps what this layer wrote"
    );
    assert!(!e.p(".wh..wh.plnk").exists());
}

#[test]
fn malformed_whiteouts_are_rejected() {
    for name in [".wh.", "a/.wh..", "a/.wh..."] {
        let e = Env::new();
        assert_eq!(
            rule(e.apply(&T::new().file(name, b"").bytes())),
            Rule::Whiteout,
            "{name}"
        );
    }
    // A whiteout with data is applied (its payload skipped), not refused.
    let e = Env::new();
    e.apply(
        &T::new()
            .file("a/x", b"x")
            .file("a/.wh.x", b"payload")
            .bytes(),
    )
    .unwrap();
    assert!(!e.p("a/x").exists());
}

#[test]
fn names_that_escape_are_rejected() {
    for name in [
        "../escape",
        "/../escape",
        "a/../../escape",
        "../victim/hello",
    ] {
        let e = Env::new();
        assert_eq!(
            rule(e.apply(&T::new().file(name, b"pwned").bytes())),
            Rule::Escape,
            "{name}"
        );
        e.victim_intact();
    }
    let e = Env::new();
    e.apply(
        &T::new()
            .file("/abs/ok", b"in root")
            .file("a..b", b"fine")
            .bytes(),
    )
    .unwrap();
    assert_eq!(fs::read(e.p("abs/ok")).unwrap(), b"in root");
}

#[test]
fn symlinks_resolve_in_root() {
    let e = Env::new();
    let victim = e.victim.to_str().unwrap().to_string();
    let mut t = T::new();
    t.symlink("abs", &victim).file("abs/hello", b"pwned");
    t.symlink("up", "../../../../..")
        .file("up/victim/hello", b"pwned");
    t.symlink("hop1", "hop2")
        .symlink("hop2", "/")
        .file("hop1/tmp-landed", b"ok");
    e.apply(&t.bytes()).unwrap();
    e.victim_intact();
    assert_eq!(
        fs::read(e.root.join(victim.trim_start_matches('/')).join("hello")).unwrap(),
        b"pwned"
    );
    assert_eq!(fs::read(e.p("victim/hello")).unwrap(), b"pwned");
    assert_eq!(fs::read(e.p("tmp-landed")).unwrap(), b"ok");
}

#[test]
fn symlink_loops_and_files_as_parents_are_rejected() {
    let e = Env::new();
    assert_eq!(
        rule(
            e.apply(
                &T::new()
                    .symlink("l1", "l2")
                    .symlink("l2", "l1")
                    .file("l1/x", b"")
                    .bytes()
            )
        ),
        Rule::Escape
    );
    let e = Env::new();
    assert_eq!(
        rule(e.apply(&T::new().file("f", b"").file("f/x", b"").bytes())),
        Rule::NotDirectory
    );
}

#[test]
fn hardlinks_stay_in_root() {
    let e = Env::new();
    let outside = format!("{}/hello", e.victim.display());
    // An absolute target is in-root: the victim's path does not exist inside the layer.
    assert_eq!(
        rule(e.apply(&T::new().hardlink("h", &outside).bytes())),
        Rule::Hardlink
    );
    assert_eq!(
        rule(e.apply(&T::new().hardlink("h", "../victim/hello").bytes())),
        Rule::Escape
    );
    let victim = e.victim.to_str().unwrap().to_string();
    assert_eq!(
        rule(
            e.apply(
                &T::new()
                    .symlink("s", &victim)
                    .hardlink("h", "s/hello")
                    .bytes()
            )
        ),
        Rule::Hardlink
    );
    e.victim_intact();
    assert_eq!(
        rule(e.apply(&T::new().dir("d/").hardlink("h", "d").bytes())),
        Rule::Hardlink
    );
    assert_eq!(
        rule(e.apply(&T::new().file("self", b"").hardlink("self", "self").bytes())),
        Rule::Hardlink
    );
}

#[test]
fn hardlink_to_symlink_never_chmods_the_target() {
    // CVE-2021-32760: a hard link to a symlink, then a mode change through it.
    let e = Env::new();
    let victim = format!("{}/hello", e.victim.display());
    let mut t = T::new();
    t.symlink("s", &victim)
        .raw("h", tar::EntryType::Link, 0o777, Some("s"), b"");
    e.apply(&t.bytes()).unwrap();
    e.victim_intact();
    assert!(fs::symlink_metadata(e.p("h"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn root_keeps_its_type() {
    let e = Env::new();
    assert_eq!(
        rule(e.apply(&T::new().symlink(".", "/").bytes())),
        Rule::RootType
    );
    assert_eq!(
        rule(e.apply(&T::new().file("./", b"").bytes())),
        Rule::RootType
    );
    e.apply(
        &T::new()
            .raw("./", tar::EntryType::Directory, 0o711, None, b"")
            .bytes(),
    )
    .unwrap();
    assert_eq!(fs::metadata(&e.root).unwrap().mode() & 0o7777, 0o711);
}

#[test]
fn xattr_and_device_rules() {
    let e = Env::new();
    assert_eq!(
        rule(
            e.apply(
                &T::new()
                    .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
                    .dir("d/")
                    .bytes()
            )
        ),
        Rule::Xattr
    );
    assert_eq!(
        rule(
            e.apply(
                &T::new()
                    .pax(&[("SCHILY.xattr.user.overlay.redirect", b"/x")])
                    .file("f", b"")
                    .bytes()
            )
        ),
        Rule::Xattr
    );
    let dev = |maj: u32, min: u32| {
        let mut t = T::new();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Char);
        h.set_device_major(maj).unwrap();
        h.set_device_minor(min).unwrap();
        h.set_size(0);
        t.0.append_data(&mut h, "dev", &b""[..]).unwrap();
        t.bytes()
    };
    assert_eq!(rule(e.apply(&dev(0, 0))), Rule::Device);
    assert_eq!(rule(e.apply(&dev(4096, 0))), Rule::Device);
    assert_eq!(rule(e.apply(&dev(1, 1 << 20))), Rule::Device);
}

#[test]
fn compressed_input_and_trailing_garbage() {
    let e = Env::new();
    let plain = T::new().file("f", b"zz").bytes();
    let gz = {
        use std::io::Write;
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        w.write_all(&plain).unwrap();
        w.finish().unwrap()
    };
    assert_eq!(
        e.apply(&gz).unwrap().compression,
        Some(compress::Compression::Gzip)
    );
    let zs = zstd::encode_all(plain.as_slice(), 3).unwrap();
    assert_eq!(
        e.apply(&zs).unwrap().compression,
        Some(compress::Compression::Zstd)
    );
    let mut junk = plain.clone();
    junk.extend_from_slice(b"trailing bytes are read and ignored");
    e.apply(&junk).unwrap();
    assert!(e
        .apply(b"this is not a tar at all, not even close............")
        .is_err());
}

/// An overlay layout: lower directories and an empty diff.
fn overlay_env() -> (Env, PathBuf, PathBuf) {
    let e = Env::new();
    let lower = e._tmp.path().join("lower");
    let diff = e._tmp.path().join("diff");
    fs::create_dir_all(lower.join("usr/bin")).unwrap();
    fs::set_permissions(lower.join("usr"), fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::symlink("usr/bin", lower.join("bin")).unwrap();
    fs::write(lower.join("usr/bin/sh"), b"#!shell").unwrap();
    fs::create_dir_all(lower.join("etc/conf.d")).unwrap();
    fs::write(lower.join("etc/conf.d/a"), b"").unwrap();
    fs::write(lower.join("etc/passwd"), b"root").unwrap();
    fs::create_dir(&diff).unwrap();
    (e, lower, diff)
}

fn overlay_opts(lower: &Path) -> ApplyOptions {
    ApplyOptions {
        format: Format::Overlay,
        lowers: vec![lower.to_path_buf()],
        ..ApplyOptions::default()
    }
}

fn is_whiteout_at(p: &Path) -> bool {
    let md = fs::symlink_metadata(p).unwrap();
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() && md.rdev() == 0
}

#[test]
fn overlay_follows_lower_symlinks_and_copies_up() {
    let (e, lower, diff) = overlay_env();
    let mut t = T::new();
    t.file("bin/tool", b"new tool")
        .hardlink("bin/sh2", "usr/bin/sh");
    e.apply_with(&diff, &t.bytes(), &overlay_opts(&lower))
        .unwrap();
    assert!(
        !diff.join("bin").exists(),
        "the lower symlink must not be hidden by a new directory"
    );
    assert_eq!(fs::read(diff.join("usr/bin/tool")).unwrap(), b"new tool");
    assert_eq!(
        fs::metadata(diff.join("usr")).unwrap().mode() & 0o7777,
        0o751,
        "copied-up directories keep metadata"
    );
    assert_eq!(
        fs::read(diff.join("usr/bin/sh")).unwrap(),
        b"#!shell",
        "hard-link target copied up"
    );
    assert_eq!(
        fs::metadata(diff.join("usr/bin/sh2")).unwrap().ino(),
        fs::metadata(diff.join("usr/bin/sh")).unwrap().ino()
    );
}

#[test]
fn overlay_whiteouts_and_opaque() {
    let (e, lower, diff) = overlay_env();
    let mut t = T::new();
    t.file("etc/.wh.passwd", b"").file("etc/.wh.nothere", b"");
    t.dir("etc/conf.d/")
        .file("etc/conf.d/.wh..wh..opq", b"")
        .file("etc/conf.d/b", b"");
    e.apply_with(&diff, &t.bytes(), &overlay_opts(&lower))
        .unwrap();
    assert!(is_whiteout_at(&diff.join("etc/passwd")));
    assert!(
        !diff.join("etc/nothere").exists(),
        "no whiteout where nothing is hidden"
    );
    let fd = fsutil::open_dir(&diff.join("etc/conf.d")).unwrap();
    assert!(tree::is_opaque(fd.as_fd()));
    assert!(diff.join("etc/conf.d/b").exists());
}

#[test]
fn overlay_recreated_directory_hides_lower_content() {
    let (e, lower, diff) = overlay_env();
    let mut t = T::new();
    t.file("etc/.wh.conf.d", b"")
        .dir("etc/conf.d/")
        .file("etc/conf.d/new", b"");
    e.apply_with(&diff, &t.bytes(), &overlay_opts(&lower))
        .unwrap();
    let fd = fsutil::open_dir(&diff.join("etc/conf.d")).unwrap();
    assert!(
        tree::is_opaque(fd.as_fd()),
        "a directory re-created over a deleted lower directory is opaque"
    );
    // A directory replacing a file this layer wrote over a lower directory: opaque as well.
    let (e, lower, diff) = overlay_env();
    let mut t = T::new();
    t.file("etc/conf.d", b"file").dir("etc/conf.d/");
    e.apply_with(&diff, &t.bytes(), &overlay_opts(&lower))
        .unwrap();
    let fd = fsutil::open_dir(&diff.join("etc/conf.d")).unwrap();
    assert!(tree::is_opaque(fd.as_fd()));
}

#[test]
fn overlay_escapes_through_lower_symlinks_stay_in_root() {
    let (e, lower, diff) = overlay_env();
    std::os::unix::fs::symlink(&e.victim, lower.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", lower.join("up")).unwrap();
    let mut t = T::new();
    t.file("evil/hello", b"pwned")
        .file("up/victim/hello", b"pwned");
    e.apply_with(&diff, &t.bytes(), &overlay_opts(&lower))
        .unwrap();
    e.victim_intact();
    let landed = diff.join(e.victim.strip_prefix("/").unwrap()).join("hello");
    assert_eq!(fs::read(landed).unwrap(), b"pwned");
    assert_eq!(fs::read(diff.join("victim/hello")).unwrap(), b"pwned");
}

/// Applies `tar` recording a tar-split beside `root`, then reassembles it.
fn roundtrip(root: &Path, meta: &Path, tar: &[u8], opts: &ApplyOptions) -> Vec<u8> {
    fs::create_dir_all(meta).unwrap();
    let opts = ApplyOptions {
        record_into: Some(meta.to_path_buf()),
        ..opts.clone()
    };
    let fd = fsutil::open_dir(root).unwrap();
    let mut input: &[u8] = tar;
    apply(fd.as_fd(), &mut input, &opts).unwrap();
    let mut out = Vec::new();
    super::super::tarsplit::reassemble(meta, fd.as_fd(), &mut out).unwrap();
    out
}

#[test]
fn exact_reexport_of_ordinary_and_pathological_tars() {
    let e = Env::new();
    let long = format!(
        "deep/{}/file-with-a-long-name-{}",
        "d".repeat(120),
        "x".repeat(60)
    );
    let mut t = T::new();
    t.dir("a/")
        .file("a/one", b"first version")
        .file("a/one", b"second, longer version");
    t.file("gone", b"added then whited out")
        .file(".wh.gone", b"");
    t.dir("tree/")
        .file("tree/inner", b"inside a dir that gets replaced")
        .file("tree", b"now a file");
    t.file("orig", b"linked")
        .hardlink("link", "orig")
        .file("orig", b"replaced; link keeps old bytes");
    t.file(&long, b"long name via GNU");
    t.pax(&[
        ("path", b"pax/named/entry"),
        ("mtime", b"1700000000.123456789"),
        ("SCHILY.xattr.user.a", b"1"),
    ]);
    t.file("ignored-name", b"pax payload");
    t.pax(&[(
        "MSWINDOWS.rawsd",
        b"AQAEgBQAAAAkAAAAAAAAADAAAAABAgAAAAAABSAAAAAgAgAA",
    )]);
    t.file("vendor-records", b"kept verbatim");
    let mut tar = t.bytes();
    tar.extend_from_slice(&[0u8; 5 * 512]);
    tar.extend_from_slice(b"trailing junk after the archive");
    let meta = e._tmp.path().join("meta");
    assert_eq!(
        roundtrip(&e.root, &meta, &tar, &ApplyOptions::default()),
        tar
    );
    assert_eq!(fs::read(e.p("link")).unwrap(), b"linked");
    // gzip input re-exports as the uncompressed stream (the diffID).
    let e2 = Env::new();
    let gz = {
        use std::io::Write;
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        w.write_all(&tar).unwrap();
        w.finish().unwrap()
    };
    assert_eq!(
        roundtrip(
            &e2.root,
            &e2._tmp.path().join("m"),
            &gz,
            &ApplyOptions::default()
        ),
        tar
    );
}

#[test]
fn exact_reexport_in_overlay_format() {
    let (e, lower, diff) = overlay_env();
    let mut t = T::new();
    t.file("bin/tool", b"through the lower symlink")
        .file("etc/.wh.passwd", b"");
    t.dir("etc/conf.d/")
        .file("etc/conf.d/.wh..wh..opq", b"")
        .file("etc/conf.d/n", b"new");
    let tar = t.bytes();
    let meta = e._tmp.path().join("meta");
    assert_eq!(roundtrip(&diff, &meta, &tar, &overlay_opts(&lower)), tar);
}

#[test]
fn exact_reexport_of_a_windows_layer() {
    // Files/, Hives/, MSWINDOWS.* records, type-only modes, backslash junction targets.
    let e = Env::new();
    let mut t = T::new();
    t.pax(&[
        ("MSWINDOWS.fileattr", b"16"),
        ("MSWINDOWS.rawsd", b"AQAUhA=="),
    ]);
    t.raw("Files", tar::EntryType::Directory, 0, None, b"");
    t.raw("Hives", tar::EntryType::Directory, 0, None, b"");
    t.pax(&[
        ("MSWINDOWS.fileattr", b"32"),
        ("LIBARCHIVE.creationtime", b"1600000000.5"),
    ]);
    t.raw(
        "Files/Windows/System32/cmd.exe",
        tar::EntryType::Regular,
        0,
        None,
        b"MZ binary",
    );
    t.raw(
        "Files/Windows/System32/cmd.exe:Zone.Identifier",
        tar::EntryType::Regular,
        0,
        None,
        b"[ZoneTransfer]",
    );
    t.pax(&[("MSWINDOWS.mountpoint", b"1")]);
    t.raw(
        "Files/Documents and Settings",
        tar::EntryType::Symlink,
        0,
        Some("C:\\Users"),
        b"",
    );
    t.raw(
        "Files/Windows/System32/cmd2.exe",
        tar::EntryType::Link,
        0o644,
        Some("Files/Windows/System32/cmd.exe"),
        b"",
    );
    t.raw(
        "Hives/System_Delta",
        tar::EntryType::Regular,
        0,
        None,
        b"regf",
    );
    t.raw("Files/.wh.oldfile", tar::EntryType::Regular, 0, None, b"");
    let tar = t.bytes();
    let meta = e._tmp.path().join("meta");
    assert_eq!(
        roundtrip(&e.root, &meta, &tar, &ApplyOptions::default()),
        tar
    );
}

/// Sparse archives written by GNU tar in every format Docker's reader accepts.
#[test]
fn sparse_files_from_gnu_tar_in_every_format() {
    use std::os::unix::fs::FileExt;
    let src = tempfile::tempdir().unwrap();
    let f = fs::File::create(src.path().join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(&[7u8; 5000], 10 << 20).unwrap();
    f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    drop(f);
    fs::write(src.path().join("plain"), b"not sparse").unwrap();
    let want = fs::read(src.path().join("sparse")).unwrap();
    for format in ["gnu", "pax:0.0", "pax:0.1", "pax:1.0"] {
        let mut cmd = std::process::Command::new("tar");
        cmd.arg("-C")
            .arg(src.path())
            .arg("--sparse")
            .arg("-cf")
            .arg("-");
        match format.split_once(':') {
            Some((fmt, ver)) => cmd
                .arg(format!("--format={fmt}"))
                .arg(format!("--sparse-version={ver}")),
            None => cmd.arg(format!("--format={format}")),
        };
        let tar = cmd.arg("sparse").arg("plain").output().unwrap();
        assert!(
            tar.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&tar.stderr)
        );
        let e = Env::new();
        let meta = e._tmp.path().join("meta");
        let out = roundtrip(&e.root, &meta, &tar.stdout, &ApplyOptions::default());
        assert!(out == tar.stdout, "{format}: exact re-export differs");
        let got = fs::read(e.p("sparse")).unwrap();
        assert!(got == want, "{format}: sparse content differs");
        let blocks = fs::metadata(e.p("sparse")).unwrap().blocks();
        assert!(
            blocks < 1024,
            "{format}: holes were filled ({blocks} blocks)"
        );
        assert_eq!(fs::read(e.p("plain")).unwrap(), b"not sparse");
        let fd = fsutil::open_dir(&e.root).unwrap();
        let mut input: &[u8] = &tar.stdout;
        let stats = apply(fd.as_fd(), &mut input, &ApplyOptions::default());
        assert_eq!(
            stats.unwrap().size,
            (64 << 20) + 10,
            "{format}: size counts logical bytes"
        );
    }
}

#[test]
fn sparse_maps_that_lie_are_rejected() {
    // A PAX 0.1 map claiming more data than the entry carries.
    let e = Env::new();
    let mut t = T::new();
    t.pax(&[
        ("GNU.sparse.major", b"0"),
        ("GNU.sparse.minor", b"1"),
        ("GNU.sparse.size", b"100"),
        ("GNU.sparse.map", b"0,10,50,10"),
    ]);
    t.file("s", b"only five");
    assert_eq!(rule(e.apply(&t.bytes())), Rule::Format);
    // Overlapping segments.
    let mut t = T::new();
    t.pax(&[
        ("GNU.sparse.size", b"100"),
        ("GNU.sparse.map", b"0,10,5,10"),
    ]);
    t.file("s", &[1u8; 20]);
    assert_eq!(rule(e.apply(&t.bytes())), Rule::Format);
}

#[path = "tests_edge.rs"]
mod edge;
