//! Size limits on vfs and overlay (issue 7, item 4): graphtest's SetQuota over an XFS loop
//! image mounted with `pquota` (made by the test), and the refusal of `size` where project
//! quotas are unavailable (XFS without `pquota`, the test's own temp filesystem).
//!
//! Every image is mounted by an [`Image`] guard that unmounts it (lazily if it must) and
//! detaches its loop device on drop, also when the test panics; each test then checks that
//! no loop device is backed by a file under its temp dir. A kernel without XFS quota support
//! (`CONFIG_XFS_QUOTA`, no `/proc/fs/xfs/xqmstat`) cannot run SetQuota: the test skips with
//! the key `xfs-quota` (a failure under `STRATA_TEST_NO_SKIP=1` unless
//! `STRATA_TEST_ALLOW_SKIP` names that key).

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tars::{Meta, TarBuilder};
use common::Store;

const MIB: usize = 1 << 20;

/// A filesystem image in its own temp dir, loop-mounted at `mnt` through mount(8).
struct Image {
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    img: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Loop devices whose backing file lies under `dir`.
fn loops_backed_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(backing.trim().trim_end_matches(" (deleted)")).starts_with(dir) {
                found.push(format!("/dev/{name}"));
            }
        }
    }
    found
}

impl Image {
    /// A 1 GiB image made by `mkfs` (`mkfs.xfs -q` or `mkfs.ext4 -q`), mounted with
    /// `-o loop[,options]`. The error says why it could not be mounted.
    fn mount(mkfs: &str, options: &str) -> Result<Image, String> {
        let tmp = tempfile::Builder::new()
            .prefix("strata-quota-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().canonicalize().map_err(|e| e.to_string())?;
        let mut image = Image {
            img: dir.join("fs.img"),
            mnt: dir.join("mnt"),
            dir,
            tmp: Some(tmp),
            mounted: false,
        };
        fs::File::create(&image.img)
            .and_then(|f| f.set_len(1 << 30))
            .map_err(|e| e.to_string())?;
        fs::create_dir(&image.mnt).map_err(|e| e.to_string())?;
        run(Command::new(mkfs).arg("-q").arg(&image.img))?;
        let opts = if options.is_empty() {
            "loop".to_string()
        } else {
            format!("loop,{options}")
        };
        run(Command::new("mount")
            .args(["-o", &opts])
            .arg(&image.img)
            .arg(&image.mnt))?;
        image.mounted = true;
        Ok(image)
    }

    /// XFS with project quotas, or `None` (after saying why) on a kernel without XFS quota
    /// support.
    fn xfs_pquota() -> Option<Image> {
        match Image::mount("mkfs.xfs", "pquota") {
            Ok(i) => Some(i),
            Err(e) if !Path::new("/proc/fs/xfs/xqmstat").exists() => {
                eprintln!("mounting XFS with pquota: {e}");
                common::skip(
                    "xfs-quota",
                    "this kernel has no XFS quota support (CONFIG_XFS_QUOTA: no \
                     /proc/fs/xfs/xqmstat, and an XFS image does not mount with pquota)",
                );
                None
            }
            Err(e) => panic!("mounting an XFS image with pquota: {e}"),
        }
    }

    /// The temp dir holding the image (loop devices backed under it are leaks).
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Unmounts, detaches the loop device and deletes the image.
    fn close(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if self.mounted {
            if run(Command::new("umount").arg(&self.mnt)).is_err() {
                if let Err(e) = run(Command::new("umount").arg("-l").arg(&self.mnt)) {
                    eprintln!("warning: {e}");
                }
            }
            self.mounted = false;
        }
        for dev in loops_backed_under(&self.dir) {
            if let Err(e) = run(Command::new("losetup").arg("-d").arg(&dev)) {
                eprintln!("warning: {e}");
            }
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.close();
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Writes `mib` MiB to `path` and syncs it.
fn write_mib(path: &Path, mib: usize) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    let chunk = vec![0x5au8; MIB];
    for _ in 0..mib {
        f.write_all(&chunk)?;
    }
    f.sync_all()
}

fn assert_quota_error(r: std::io::Result<()>, what: &str) {
    let e = match r {
        Ok(()) => panic!("{what}: succeeded beyond the layer's size limit"),
        Err(e) => e,
    };
    assert!(
        matches!(e.raw_os_error(), Some(libc::EDQUOT) | Some(libc::ENOSPC)),
        "{what}: expected EDQUOT or ENOSPC, got {e}"
    );
}

fn status_line(s: &Store, key: &str) -> String {
    let text = s.ok(["status"]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
        .unwrap_or_else(|| panic!("status has no {key:?} line: {text}"))
}

fn assert_refusal(err: &str, fs: &str, backend: &str) {
    for needle in ["size", fs, "pquota", "block", backend] {
        assert!(
            err.contains(needle),
            "refusal does not mention {needle:?}: {err}"
        );
    }
}

/// graphtest's SetQuota, over XFS with pquota.
fn set_quota(backend: &str) {
    let Some(xfs) = Image::xfs_pquota() else {
        return;
    };
    let leak_dir = xfs.dir();
    let victim = xfs.mnt.join("victim");
    fs::write(&victim, b"not the store's").unwrap();
    // An absolute name replaces the store's temp dir: the root lies on the image.
    let Some(s) = Store::new_with_root_name(backend, &xfs.mnt.join("root").to_string_lossy())
    else {
        return;
    };
    let host_victim = s.scratch().join("host-victim");
    fs::write(&host_victim, b"host").unwrap();
    assert!(
        status_line(&s, "Supports Quota").starts_with("true"),
        "status must report quotas on XFS with pquota"
    );
    let outside_before = common::dir_names(&xfs.mnt);

    s.create("base", None);
    let p = s.get("base");
    write_mib(&p.join("base-file"), 1).unwrap();
    s.put("base");

    s.ok([
        "create", "limited", "--rw", "--parent", "base", "-s", "size=50M",
    ]);
    let meta = s.ok(["metadata", "limited"]);
    assert!(
        meta.contains("52428800"),
        "metadata shows the limit: {meta}"
    );
    let p = s.get("limited");
    write_mib(&p.join("a"), 25).expect("25 MiB fit in a 50M layer");
    assert_quota_error(write_mib(&p.join("b"), 50), "a further 50 MiB");
    assert_eq!(fs::read(p.join("base-file")).unwrap().len(), MIB);
    s.put("limited");

    // Nothing landed outside the store; the victims are untouched.
    assert_eq!(common::dir_names(&xfs.mnt), outside_before);
    assert_eq!(fs::read(&victim).unwrap(), b"not the store's");
    assert_eq!(fs::read(&host_victim).unwrap(), b"host");

    // A sibling without size is not limited.
    s.create_rw("free", Some("base"));
    let p = s.get("free");
    write_mib(&p.join("big"), 75).expect("a layer without size is unlimited");
    s.put("free");

    // The limit survives an apply (the staged copy is charged to the same project).
    s.ok([
        "create", "applied", "--rw", "--parent", "base", "-s", "size=50M",
    ]);
    let mut t = TarBuilder::new();
    t.file("ten", &vec![7u8; 10 * MIB], Meta::mode(0o644));
    s.apply_diff("applied", None, &t.finish());
    let p = s.get("applied");
    assert_eq!(fs::read(p.join("ten")).unwrap().len(), 10 * MIB);
    assert_quota_error(
        write_mib(&p.join("more"), 45),
        "45 MiB after a 10 MiB apply",
    );
    s.put("applied");

    // The driver default applies to read-write layers.
    s.ok([
        "-o", "size=20M", "create", "dflt", "--rw", "--parent", "base",
    ]);
    let p = s.get("dflt");
    assert_quota_error(write_mib(&p.join("x"), 30), "30 MiB under -o size=20M");
    s.put("dflt");

    // Read-only layers take no size (Docker's overlay2: "only supported for ReadWrite
    // Layers"); the driver default does not apply to them either.
    let err = s.fail(["create", "ro-sized", "--parent", "base", "-s", "size=50M"]);
    assert!(err.contains("read-write"), "{err}");
    s.ok(["-o", "size=20M", "create", "ro-default", "--parent", "base"]);
    let p = s.get("ro-default");
    write_mib(&p.join("x"), 30).expect("the default size is for read-write layers only");
    s.put("ro-default");

    // Removed layers' ids are released by cleanup.
    for id in ["limited", "applied", "dflt"] {
        s.remove(id);
    }
    s.ok(["cleanup"]);
    let projects = s.root().join("quota/projects");
    assert!(
        common::dir_names(&projects).is_empty(),
        "ids of removed layers are released: {:?}",
        common::dir_names(&projects)
    );
    drop(s);
    xfs.close();
    assert_eq!(loops_backed_under(&leak_dir), Vec::<String>::new());
}

/// XFS without pquota: size is refused, naming xfs and the mount option.
fn refuses_size_on_xfs_without_pquota(backend: &str) {
    let xfs = Image::mount("mkfs.xfs", "").unwrap_or_else(|e| panic!("mounting XFS: {e}"));
    let leak_dir = xfs.dir();
    let Some(s) = Store::new_with_root_name(backend, &xfs.mnt.join("root").to_string_lossy())
    else {
        return;
    };
    s.create("base", None);
    assert!(status_line(&s, "Supports Quota").starts_with("false"));
    let before = s.state();
    let err = s.fail(["create", "c", "--rw", "--parent", "base", "-s", "size=50M"]);
    assert_refusal(&err, "xfs", backend);
    assert!(err.contains("size=50M"), "names the option as given: {err}");
    let err = s.fail(["-o", "size=50M", "create", "c", "--rw", "--parent", "base"]);
    assert_refusal(&err, "xfs", backend);
    s.assert_state(&before, "after refused sizes");
    s.create_rw("c", Some("base"));
    drop(s);
    xfs.close();
    assert_eq!(loops_backed_under(&leak_dir), Vec::<String>::new());
}

/// The test's own temp filesystem (ext4 on Debian): size is refused, naming it.
fn refuses_size_on_temp_fs(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("base", None);
    if status_line(&s, "Supports Quota").starts_with("true") {
        common::skip(
            "temp-fs-quota",
            "the temp dir's filesystem has project quotas, so size is not refused there",
        );
        return;
    }
    let (fs_name, _) = strata::backend::backing_fs(s.root()).unwrap();
    let err = s.fail(["create", "c", "--rw", "-s", "size=10M"]);
    assert_refusal(&err, &fs_name, backend);
    assert!(!s.exists("c"));
}

backend_tests!(
    set_quota,
    refuses_size_on_xfs_without_pquota,
    refuses_size_on_temp_fs
);

/// The raw calls on XFS (no quotas needed): a project id set on a directory reads back, is
/// inherited by new entries, and XFS refuses to move another project's directory into the
/// tree (`EXDEV`) — which is why strata tags its staging copies before moving them in.
#[test]
fn project_ids_on_xfs() {
    use std::os::fd::AsFd;
    use strata::sys::quota::{project_id, set_project_id};
    if !common::require_root("mounts an XFS image") {
        return;
    }
    let xfs = Image::mount("mkfs.xfs", "").unwrap_or_else(|e| panic!("mounting XFS: {e}"));
    let leak_dir = xfs.dir();
    let open = |p: &Path| strata::fsutil::open_dir(p).unwrap();
    let tree = xfs.mnt.join("tree");
    fs::create_dir(&tree).unwrap();
    assert_eq!(project_id(open(&tree).as_fd()).unwrap(), (0, false));
    set_project_id(open(&tree).as_fd(), 4242).unwrap();
    assert_eq!(project_id(open(&tree).as_fd()).unwrap(), (4242, true));
    fs::create_dir(tree.join("sub")).unwrap();
    assert_eq!(
        project_id(open(&tree.join("sub")).as_fd()).unwrap(),
        (4242, true)
    );
    fs::write(tree.join("f"), b"x").unwrap();
    let f = fs::File::open(tree.join("f")).unwrap();
    assert_eq!(project_id(f.as_fd()).unwrap().0, 4242);
    drop(f);

    let foreign = xfs.mnt.join("foreign");
    fs::create_dir(&foreign).unwrap();
    let e = fs::rename(&foreign, tree.join("moved")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{e}");
    set_project_id(open(&foreign).as_fd(), 4242).unwrap();
    fs::rename(&foreign, tree.join("moved")).unwrap();
    xfs.close();
    assert_eq!(loops_backed_under(&leak_dir), Vec::<String>::new());
}
