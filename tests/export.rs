//! What `diff` writes: failures of the export reach the reader, sparse files are exported
//! sparsely and bounded, names and devices that apply would misread are refused, `changes`
//! agrees with `diff`, the exact-diff promise is visible in `metadata`, and the CLI's text
//! output cannot be forged by file names.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use common::graph::random_content;
use common::tars::{Meta, TarBuilder};
use common::tree::{mkdir_all, mknod, write_file};
use common::{assert_mentions, Store};
use strata::graph::{Graph, GraphConfig};
use strata::Driver;

backend_tests!(
    injected_export_faults_fail_the_cli,
    injected_export_faults_fail_the_library_stream,
    whiteout_named_files_are_refused_by_diff_and_changes,
    zero_zero_char_devices_are_not_exported_as_devices,
    changes_output_cannot_be_forged_by_names,
    metadata_tells_whether_the_exact_diff_holds,
    sparse_giant_is_refused_quickly,
    sparse_file_exports_small_and_round_trips,
    diff_into_a_device_or_fifo_writes_in_place,
);

/// A tar with a few files, large enough that an export fault fires after its first blocks.
fn some_tar(seed: u64) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("data", Meta::mode(0o755));
    for i in 0..4 {
        t.file(
            &format!("data/f{i}"),
            &random_content(3000, seed + i),
            Meta::mode(0o644),
        );
    }
    t.finish()
}

/// A store with an applied image layer `img` (exact diff) and a container layer `ctr` on it
/// with files written through `get` (naive diff).
fn layers_for_faults(s: &Store) {
    s.create("img", None);
    s.apply_diff("img", None, &some_tar(1));
    s.create_rw("ctr", Some("img"));
    let mnt = s.get("ctr");
    for i in 0..4 {
        write_file(
            &mnt,
            &format!("new{i}"),
            &random_content(3000, 50 + i),
            0o644,
        );
    }
    s.put("ctr");
}

/// `diff -o FILE` whose export fails or panics midway: exit 1 naming the layer, and neither
/// the file nor a temporary leftover; `diff` to stdout: exit 1 too (never a clean short tar).
fn injected_export_faults_fail_the_cli(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    layers_for_faults(&s);
    for layer in ["img", "ctr"] {
        for fault in ["export-error", "export-panic"] {
            let what = format!("{layer} with {fault}");
            let file = s.scratch().join(format!("{layer}-{fault}.tar"));
            let out = s.run_driver(
                Some(backend),
                &[("STRATA_FAILPOINT", fault)],
                ["diff", layer, "-o", file.to_str().unwrap()],
            );
            let err = out.expect_failure();
            assert!(err.contains(layer), "{what}: error names the layer: {err}");
            assert!(!file.exists(), "{what}: no file left behind");
            let leftovers: Vec<_> = fs::read_dir(s.scratch())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("strata-tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{what}: {leftovers:?}");

            let out = s.run_driver(
                Some(backend),
                &[("STRATA_FAILPOINT", fault)],
                ["diff", layer],
            );
            out.expect_failure();
            assert!(
                !out.stdout.is_empty(),
                "{what}: the fault fires midway, after part of the tar was written"
            );
        }
        // Without a fault the same diff succeeds.
        assert!(!s.diff(layer, None).is_empty());
    }
}

/// Through the library: the stream returned by `diff` fails on read when the export thread
/// fails or panics midway, for the exact (tar-split) and the naive (tree) export.
fn injected_export_faults_fail_the_library_stream(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    // Layer ids unique to this test: faults are armed per layer id in this process.
    let (img, ctr) = (format!("lib-img-{backend}"), format!("lib-ctr-{backend}"));
    let mut config = GraphConfig::new(s.root());
    config.driver = Some(backend.to_string());
    config.durable = false;
    let graph = Graph::open(config).unwrap();
    graph.create(&img, None, &Default::default()).unwrap();
    graph
        .apply_diff(&img, None, &mut some_tar(2).as_slice())
        .unwrap();
    graph
        .create_rw(&ctr, Some(&img), &Default::default())
        .unwrap();
    let mnt = graph.get(&ctr, "").unwrap();
    for i in 0..4 {
        write_file(
            &mnt,
            &format!("new{i}"),
            &random_content(3000, 60 + i),
            0o644,
        );
    }
    graph.put(&ctr).unwrap();

    for layer in [&img, &ctr] {
        for fault in ["export-error", "export-panic"] {
            strata::failpoint::arm(fault, layer);
            let mut stream = graph.diff(layer, None).unwrap();
            let mut got = Vec::new();
            let result = stream.read_to_end(&mut got);
            strata::failpoint::disarm(layer);
            let err = result.expect_err("a failed export must not end like a whole tar");
            assert!(
                err.to_string().contains(layer.as_str()),
                "{layer} {fault}: {err}"
            );
            assert!(
                !got.is_empty(),
                "{layer} {fault}: part of the tar came first"
            );
            drop(stream);
        }
        let mut whole = Vec::new();
        graph
            .diff(layer, None)
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        assert!(
            whole.len() > 4 * 3000,
            "{layer}: the unfaulted export is whole"
        );
    }
    // Every mount taken by the exports was released.
    for l in graph.list().unwrap() {
        assert_eq!(l.refs, 0, "{}: mount references left", l.id);
    }
}

/// `diff` of `layer` against its parent: the tar, or the refusal (stderr) — never anything
/// else (a crash, a timeout).
fn diff_or_refusal(s: &Store, layer: &str) -> Result<Vec<u8>, String> {
    let out = s.run(["diff", layer]);
    if out.code == Some(0) {
        Ok(out.stdout)
    } else {
        Err(out.expect_failure())
    }
}

/// A base layer with `/etc/passwd` and `/srv/keep`, and a container layer on it.
fn base_with_passwd(s: &Store, ctr: &str) {
    if !s.exists("base") {
        let mut t = TarBuilder::new();
        t.dir("etc", Meta::mode(0o755));
        t.file("etc/passwd", b"root:x:0:0\n", Meta::mode(0o644));
        t.dir("srv", Meta::mode(0o755));
        t.file("srv/keep", b"keep", Meta::mode(0o644));
        s.create("base", None);
        s.apply_diff("base", None, &t.finish());
    }
    s.create_rw(ctr, Some("base"));
}

/// A container that creates files whose names apply reads as whiteouts (`etc/.wh.passwd`,
/// `srv/.wh..wh..opq`, a directory `.wh.dir/`): `diff` refuses naming the path and why, and
/// `changes` refuses the same way instead of listing an addition the layer would turn into a
/// deletion. Without such a name the same layer exports fine.
fn whiteout_named_files_are_refused_by_diff_and_changes(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let cases: [(&str, &[&str], &str); 3] = [
        ("wh-file", &["etc/.wh.passwd"], "/etc/.wh.passwd"),
        ("wh-opq", &["srv/.wh..wh..opq"], "/srv/.wh..wh..opq"),
        ("wh-dir", &[".wh.dir/inner"], "/.wh.dir"),
    ];
    for (ctr, files, shown) in cases {
        base_with_passwd(&s, ctr);
        let mnt = s.get(ctr);
        for f in files {
            if let Some((dir, _)) = f.rsplit_once('/') {
                mkdir_all(&mnt, dir, 0o755);
            }
            write_file(&mnt, f, b"", 0o644);
        }
        write_file(&mnt, "ordinary", b"fine", 0o644);
        s.put(ctr);

        let err = diff_or_refusal(&s, ctr).expect_err("a .wh. name must not be exported");
        assert_mentions(&err, shown, "diff error names the path");
        assert_mentions(&err, ctr, "diff error names the layer");
        assert_mentions(&err, "whiteout", "diff error says why");
        let changes_err = s.fail(["changes", ctr]);
        assert_mentions(&changes_err, shown, "changes error names the path");
        assert_mentions(&changes_err, "whiteout", "changes error says why");
        assert_eq!(
            err.lines().last(),
            changes_err.lines().last(),
            "changes and diff refuse with the same message"
        );

        // Without the whiteout-named entry the layer exports, and applying it elsewhere
        // deletes nothing.
        let top = files[0].split('/').next().unwrap();
        let top = if top.starts_with(".wh.") {
            top
        } else {
            files[0]
        };
        s.with_layer(ctr, |mnt| common::tree::remove_all(mnt, top));
        let tar = diff_or_refusal(&s, ctr).expect("exportable once the name is gone");
        let copy = format!("{ctr}-copy");
        s.create(&copy, Some("base"));
        s.apply_diff(&copy, Some("base"), &tar);
        let snap = s.snapshot(&copy);
        assert!(
            snap.contains_key("/etc/passwd"),
            "{ctr}: /etc/passwd survives"
        );
        assert!(snap.contains_key("/srv/keep"), "{ctr}: /srv/keep survives");
        assert!(
            snap.contains_key("/ordinary"),
            "{ctr}: the ordinary file is there"
        );
    }
}

/// A container can mknod a `0:0` character device (on vfs it is a plain node in the layer).
/// Apply rejects such an entry (it is overlayfs' deletion marker), so `diff` must refuse it
/// naming the path — or, where the backend never shows it as a node, write something apply
/// accepts. Other devices round-trip.
fn zero_zero_char_devices_are_not_exported_as_devices(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_with_passwd(&s, "ctr");
    let mnt = s.get("ctr");
    mkdir_all(&mnt, "dev", 0o755);
    mknod(&mnt, "dev/null", libc::S_IFCHR | 0o666, 1, 3);
    let sneaky =
        std::ffi::CString::new(mnt.join("dev/sneaky").into_os_string().into_vec()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod does not keep it.
    let rc = unsafe { libc::mknod(sneaky.as_ptr(), libc::S_IFCHR | 0o600, 0) };
    let made = rc == 0;
    if !made {
        // overlayfs refuses to create its own deletion marker through the mount.
        assert_eq!(
            backend,
            "overlay",
            "mknod 0:0: {}",
            std::io::Error::last_os_error()
        );
    }
    s.put("ctr");
    match diff_or_refusal(&s, "ctr") {
        Err(err) => {
            assert_mentions(&err, "/dev/sneaky", "error names the device");
            assert_mentions(&err, "0:0", "error says why");
        }
        Ok(tar) => {
            assert!(!made, "the layer holds a 0:0 node: it must be refused");
            s.create("ctr-copy", Some("base"));
            s.apply_diff("ctr-copy", Some("base"), &tar);
        }
    }
    s.with_layer("ctr", |mnt| fs::remove_file(mnt.join("dev/sneaky")).ok());
    let tar = diff_or_refusal(&s, "ctr").expect("exportable without the 0:0 device");
    s.create("ctr-copy2", Some("base"));
    s.apply_diff("ctr-copy2", Some("base"), &tar);
    let snap = s.snapshot("ctr-copy2");
    assert_eq!(
        snap["/dev/null"].kind,
        common::tree::Kind::CharDev(libc::makedev(1, 3))
    );
}

/// Undoes the CLI's path escaping (`\\`, `\n`, `\t`, `\r`, `\xNN`).
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next().expect("dangling backslash") {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = [it.next().unwrap(), it.next().unwrap()];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            }
            other => panic!("unknown escape \\{}", other as char),
        }
    }
    out
}

/// A directory named `x\nD /etc` must not make `changes` print a `D /etc/passwd` line;
/// control characters, backslashes and invalid UTF-8 are escaped in text output, and `--json`
/// carries the same escaped form, which gives back every byte of the name.
fn changes_output_cannot_be_forged_by_names(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_with_passwd(&s, "ctr");
    let names: [&[u8]; 3] = [b"x\nD /etc", b"tab\there\\back", b"bad\xffutf8\r"];
    s.with_layer("ctr", |mnt| {
        for n in names {
            let dir = mnt.join(std::ffi::OsStr::from_bytes(n));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("passwd"), b"x").unwrap();
        }
    });
    let out = s.run(["changes", "ctr"]);
    out.expect_code(0);
    let text = String::from_utf8(out.stdout.clone()).expect("text output is valid UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("D ")),
        "nothing was deleted: {lines:?}"
    );
    assert!(lines.contains(&"A /x\\nD /etc/passwd"), "{lines:?}");
    assert!(lines.contains(&"A /tab\\there\\\\back"), "{lines:?}");
    assert!(lines.contains(&"A /bad\\xffutf8\\r"), "{lines:?}");
    // `/x\nD ` and `/x\nD /etc`, two more directories, three files.
    assert_eq!(lines.len(), 7, "{lines:?}");

    let json = s.ok(["--json", "changes", "ctr"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let paths: Vec<Vec<u8>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| unescape(c["Path"].as_str().unwrap()))
        .collect();
    for n in names {
        let mut want = b"/".to_vec();
        want.extend_from_slice(n);
        assert!(
            paths.contains(&want),
            "{:?} lost in {json}",
            String::from_utf8_lossy(n)
        );
        want.extend_from_slice(b"/passwd");
        assert!(paths.contains(&want), "{json}");
    }
}

/// `metadata`'s `ExactDiff`.
fn exact_diff(s: &Store, layer: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&s.ok(["metadata", layer])).unwrap();
    v["ExactDiff"]
        .as_str()
        .unwrap_or_else(|| panic!("no ExactDiff in {v}"))
        .to_string()
}

/// `metadata` shows whether `diff` will reproduce the applied tar: `true` after one apply onto
/// a fresh layer, `false (<reason>)` once the layer was served writable, applied twice or never
/// applied; the tree-comparing fallback of an applied layer logs a warning naming it.
fn metadata_tells_whether_the_exact_diff_holds(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let tar = some_tar(7);
    s.create("img", None);
    assert_eq!(exact_diff(&s, "img"), "false (never applied)");
    s.apply_diff("img", None, &tar);
    assert_eq!(exact_diff(&s, "img"), "true");
    let out = s.run(["diff", "img"]);
    out.expect_code(0);
    assert_eq!(out.stdout, tar, "the promise holds");
    assert!(!out.stderr.contains("WARN"), "{}", out.stderr);

    // A read-only get (the layer has a child) keeps the record valid.
    s.create("child", Some("img"));
    s.get("img");
    s.put("img");
    assert_eq!(exact_diff(&s, "img"), "true");
    s.remove("child");

    // A writable get ends it, visibly.
    s.get("img");
    s.put("img");
    let state = exact_diff(&s, "img");
    assert!(state.starts_with("false (served writable"), "{state}");
    let out = s.run(["diff", "img"]);
    out.expect_code(0);
    assert!(
        out.stderr.contains("WARN") && out.stderr.contains("img"),
        "the fallback warns naming the layer: {}",
        out.stderr
    );

    s.create("twice", None);
    s.apply_diff("twice", None, &tar);
    s.apply_diff("twice", None, &some_tar(8));
    assert_eq!(exact_diff(&s, "twice"), "false (applied more than once)");
    s.create_rw("ctr", Some("img"));
    assert_eq!(exact_diff(&s, "ctr"), "false (never applied)");
}

/// Mounts a tmpfs (whose files may be up to 8 EiB - 1 long, unlike ext4's 16 TiB) where the
/// store's root will be; the store's drop detaches it.
fn root_on_tmpfs(s: &Store) {
    fs::create_dir_all(s.root()).unwrap();
    let out = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64m,mode=0700",
            "strata-export-test",
        ])
        .arg(s.root())
        .output()
        .expect("running mount");
    assert!(
        out.status.success(),
        "mounting a tmpfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `truncate -s 8E` (the largest size Linux allows, 8 EiB - 1) in a container: `diff` refuses
/// within seconds — it would otherwise stream zeros for centuries — naming the layer, the
/// path and the limit apply enforces (1 TiB by default, sparse files counted at their size).
fn sparse_giant_is_refused_quickly(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    root_on_tmpfs(&s);
    base_with_passwd(&s, "ctr");
    s.with_layer("ctr", |mnt| {
        let f = fs::File::create(mnt.join("giant")).unwrap();
        f.set_len(i64::MAX as u64).unwrap();
    });
    let started = std::time::Instant::now();
    let file = s.scratch().join("giant.tar");
    let err = s.fail(["diff", "ctr", "-o", file.to_str().unwrap()]);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(60),
        "refused only after {took:?}"
    );
    assert_mentions(&err, "ctr", "names the layer");
    assert_mentions(&err, "/giant", "names the path");
    assert_mentions(&err, &(1u64 << 40).to_string(), "names the limit");
    assert!(!file.exists(), "no tar left behind");
    // A file just over the limit is refused too; one at it is not refused for its size.
    s.with_layer("ctr", |mnt| {
        fs::File::create(mnt.join("giant"))
            .unwrap()
            .set_len((1 << 40) + 1)
            .unwrap()
    });
    assert_mentions(&s.fail(["diff", "ctr"]), "/giant", "just over the limit");
}

/// A 10 GiB file with a few data extents exports as a small sparse tar, which `apply-diff`
/// onto the layer's parent restores identically: content, apparent size, and still sparse.
fn sparse_file_exports_small_and_round_trips(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_with_passwd(&s, "ctr");
    const SIZE: u64 = 10 << 30;
    let extents: [(u64, usize); 4] = [
        (0, 4096),
        (1 << 30, 65536),
        ((5 << 30) + 123, 1000),
        (SIZE - 100, 100),
    ];
    let mnt = s.get("ctr");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(mnt.join("sparse")).unwrap();
        f.set_len(SIZE).unwrap();
        for (i, (off, len)) in extents.iter().enumerate() {
            f.write_all_at(&random_content(*len, 900 + i as u64), *off)
                .unwrap();
        }
        // Ends in a hole.
        let g = fs::File::create(mnt.join("tail-hole")).unwrap();
        g.set_len(SIZE).unwrap();
        g.write_all_at(b"head", 0).unwrap();
    }
    write_file(&mnt, "plain", &random_content(5000, 77), 0o644);
    s.put("ctr");

    let tar = diff_or_refusal(&s, "ctr").expect("a 10 GiB sparse file is exportable");
    assert!(tar.len() < 1 << 20, "the tar is {} bytes", tar.len());
    s.create("copy", Some("base"));
    s.apply_diff("copy", Some("base"), &tar);
    let copy = s.get("copy");
    {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let f = fs::File::open(copy.join("sparse")).unwrap();
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), SIZE, "apparent size");
        assert!(
            meta.blocks() * 512 < 64 << 20,
            "still sparse: {} blocks",
            meta.blocks()
        );
        for (i, (off, len)) in extents.iter().enumerate() {
            let mut got = vec![0u8; *len];
            f.read_exact_at(&mut got, *off).unwrap();
            assert!(got == random_content(*len, 900 + i as u64), "extent {i}");
            // The bytes around each extent are zeros.
            let mut around = [1u8; 16];
            if *off >= 16 {
                f.read_exact_at(&mut around, off - 16).unwrap();
                assert_eq!(around, [0u8; 16], "before extent {i}");
            }
        }
        let g = fs::File::open(copy.join("tail-hole")).unwrap();
        assert_eq!(g.metadata().unwrap().len(), SIZE);
        let mut head = [0u8; 8];
        g.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"head\0\0\0\0");
        assert_eq!(
            fs::read(copy.join("plain")).unwrap(),
            random_content(5000, 77)
        );
    }
    s.put("copy");
    // Files without holes are written as before: in full, under their own name.
    let plain = common::tars::list_tar(&tar)
        .into_iter()
        .find(|e| common::tars::norm(&e.path) == "plain")
        .expect("plain is a regular entry");
    assert_eq!(plain.size, 5000);
}

/// `diff -o` into something that is not a regular file (`/dev/null`, a fifo) writes into it;
/// the temporary-file-and-rename that protects regular files must never replace a device.
fn diff_into_a_device_or_fifo_writes_in_place(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    layers_for_faults(&s);
    let null = s.scratch().join("null");
    mknod(s.scratch(), "null", libc::S_IFCHR | 0o666, 1, 3);
    s.ok(["diff", "img", "-o", null.to_str().unwrap()]);
    let md = fs::symlink_metadata(&null).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&md.file_type()),
        "the device node is still a device after diff -o"
    );

    let fifo = s.scratch().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    s.ok(["diff", "img", "-o", fifo.to_str().unwrap()]);
    let got = reader.join().unwrap();
    assert_eq!(
        got,
        s.diff("img", None),
        "the fifo's reader got the whole tar"
    );
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(&fifo).unwrap().file_type()
    ));
}
