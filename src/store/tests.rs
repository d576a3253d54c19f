//! Store lifecycle and crash-recovery tests: each simulates the on-disk state a process
//! killed at a given step leaves behind, then reopens the store.

use std::fs;
use std::path::Path;

use super::*;

fn open(root: &Path) -> Store {
    Store::open(root, Some("vfs"), || "vfs".into()).unwrap()
}

fn new_layer(store: &Store, id: &str, parent: Option<&str>) -> LayerRecord {
    let staging = store.stage(id).unwrap();
    fs::write(staging.path().join("content"), id).unwrap();
    let rec = LayerRecord::new(id, parent, LayerKind::Ro, "vfs");
    store.lock().unwrap().commit_new(staging, &rec).unwrap();
    rec
}

#[test]
fn create_commits_record_and_directory_together() {
    let t = tempfile::tempdir().unwrap();
    let store = open(t.path());
    new_layer(&store, "a", None);
    assert_eq!(
        fs::read_to_string(store.layer_dir("a").join("content")).unwrap(),
        "a"
    );
    assert!(store.db().get("a").unwrap().is_some());
    assert_eq!(fs::read_dir(t.path().join("staging")).unwrap().count(), 0);
    // Duplicate ids and missing parents are refused under the lock, leaving nothing behind.
    let staging = store.stage("dup").unwrap();
    let err = store
        .lock()
        .unwrap()
        .commit_new(staging, &LayerRecord::new("a", None, LayerKind::Ro, "vfs"));
    assert!(matches!(err, Err(Error::AlreadyExists(_))));
    let staging = store.stage("orphan").unwrap();
    let err = store.lock().unwrap().commit_new(
        staging,
        &LayerRecord::new("b", Some("nope"), LayerKind::Ro, "vfs"),
    );
    assert!(matches!(err, Err(Error::ParentNotFound { .. })));
    assert_eq!(fs::read_dir(t.path().join("staging")).unwrap().count(), 0);
    assert!(!store.layer_dir("b").exists());
    assert_eq!(store.db().children("a").unwrap(), Vec::<String>::new());
    new_layer(&store, "b", Some("a"));
    assert_eq!(store.db().children("a").unwrap(), vec!["b".to_string()]);
    assert_eq!(
        store
            .chain("b")
            .unwrap()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["b", "a"]
    );
}

#[test]
fn remove_then_crash_before_commit_is_finished_at_open() {
    let t = tempfile::tempdir().unwrap();
    {
        let store = open(t.path());
        new_layer(&store, "a", None);
        // The process died right after renaming the directory for removal.
        fs::rename(store.layer_dir("a"), store.layers_dir().join("a-removing")).unwrap();
    }
    let store = open(t.path());
    assert!(
        store.db().get("a").unwrap().is_none(),
        "the interrupted removal is finished"
    );
    assert!(!store.layers_dir().join("a-removing").exists());
}

#[test]
fn orphans_and_dead_staging_are_swept_but_live_staging_is_not() {
    let t = tempfile::tempdir().unwrap();
    let store = open(t.path());
    new_layer(&store, "keep", None);
    fs::create_dir_all(store.layers_dir().join("ghost/fs")).unwrap();
    fs::create_dir_all(store.layers_dir().join("old-removing/x")).unwrap();
    fs::create_dir_all(t.path().join("staging/dead-123/deep")).unwrap();
    let live = store.stage("live").unwrap();
    let report = store.lock().unwrap().recover().unwrap();
    assert_eq!((report.orphans, report.removing, report.staging), (1, 1, 1));
    assert!(
        live.path().exists(),
        "a staging dir whose owner is alive must survive"
    );
    assert!(store.layer_dir("keep").exists());
    let names: Vec<_> = fs::read_dir(store.layers_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
    // The orphan was moved aside whole, not deleted.
    let quarantined: Vec<_> = fs::read_dir(t.path().join(QUARANTINE))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(quarantined[0].join("fs").is_dir());
}

fn open_ro(root: &Path) -> Result<Store> {
    Store::open_with(
        root,
        OpenRequest {
            read_only: true,
            ..OpenRequest::plain(None, || "vfs".into())
        },
    )
}

#[test]
fn read_only_open_refuses_every_change() {
    let t = tempfile::tempdir().unwrap();
    drop(open(t.path()));
    let lock_before = fs::read(t.path().join("lock")).unwrap();
    let store = open_ro(t.path()).unwrap();
    assert!(store.is_read_only());
    assert!(
        store.lock().is_err(),
        "a read-only store must not be locked"
    );
    let err = store
        .db()
        .write(|w| w.set_meta("x", "y"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(store.db().meta("driver").unwrap().as_deref(), Some("vfs"));
    assert_eq!(fs::read(t.path().join("lock")).unwrap(), lock_before);
}

#[test]
fn marked_store_with_an_empty_database_is_refused_and_kept() {
    let t = tempfile::tempdir().unwrap();
    {
        let store = open(t.path());
        new_layer(&store, "a", None);
    }
    fs::write(t.path().join(DB_FILE), b"").unwrap();
    for read_only in [false, true] {
        let err = if read_only {
            open_ro(t.path()).err().unwrap()
        } else {
            Store::open(t.path(), None, || "vfs".into()).err().unwrap()
        };
        let msg = err.to_string();
        assert!(msg.contains("empty") && msg.contains("backup"), "{msg}");
    }
    assert_eq!(
        fs::read_to_string(t.path().join("layers/a/content")).unwrap(),
        "a"
    );
    assert!(!t.path().join(QUARANTINE).exists());
}

#[test]
fn creation_records_driver_options_and_refuses_others() {
    let t = tempfile::tempdir().unwrap();
    let with = |opts: &[(&str, &str)]| {
        let given: BTreeMap<String, String> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Store::open_with(
            t.path(),
            OpenRequest {
                options: Box::new(move |_| Ok(given)),
                ..OpenRequest::plain(Some("vfs"), || "vfs".into())
            },
        )
    };
    drop(with(&[("size", "1024")]).unwrap());
    let store = with(&[]).unwrap();
    assert_eq!(
        store.options().get("size").map(String::as_str),
        Some("1024")
    );
    drop(store);
    let err = with(&[("size", "2048")]).err().unwrap().to_string();
    assert!(
        err.contains("size=1024") && err.contains("size=2048"),
        "{err}"
    );
}

#[test]
fn interrupted_apply_rolls_forward_or_back() {
    let t = tempfile::tempdir().unwrap();
    {
        let store = open(t.path());
        let mut fwd = new_layer(&store, "fwd", None);
        let mut back = new_layer(&store, "back", None);
        // Died after the exchange: the directory carries the pending generation.
        write_applied_marker(&store.layer_dir("fwd"), 1).unwrap();
        fwd.pending = Some(PendingApply {
            generation: 1,
            size: 640,
            exact: true,
        });
        // Died before the exchange: the directory still has the old generation (none).
        back.pending = Some(PendingApply {
            generation: 1,
            size: 99,
            exact: true,
        });
        store
            .db()
            .write(|w| {
                w.put(&fwd)?;
                w.put(&back)
            })
            .unwrap();
    }
    let store = open(t.path());
    let fwd = store.record("fwd").unwrap();
    assert_eq!(
        (fwd.generation, fwd.size, fwd.pending, fwd.exact),
        (1, Some(640), None, true)
    );
    let back = store.record("back").unwrap();
    assert_eq!(
        (back.generation, back.size, back.pending, back.exact),
        (0, None, None, false)
    );
}

#[test]
fn stale_mount_references_are_reset() {
    let t = tempfile::tempdir().unwrap();
    {
        let store = open(t.path());
        let mut rec = new_layer(&store, "m", None);
        // Recorded as mounted, but nothing is mounted there (the mount died with a reboot or
        // was unmounted behind strata's back).
        rec.refs = 2;
        rec.mount = Some(MountState {
            path: store.layer_dir("m").join("merged"),
            mounted: true,
            readonly: false,
        });
        store.db().write(|w| w.put(&rec)).unwrap();
    }
    let store = open(t.path());
    let rec = store.record("m").unwrap();
    assert_eq!((rec.refs, rec.mount), (0, None));
}

#[test]
fn store_remembers_its_driver() {
    let t = tempfile::tempdir().unwrap();
    drop(open(t.path()));
    let err = Store::open(t.path(), Some("overlay"), || "overlay".into())
        .err()
        .unwrap();
    assert!(err.to_string().contains("\"vfs\""), "{err}");
    let store = Store::open(t.path(), None, || "overlay".into()).unwrap();
    assert_eq!(store.driver(), "vfs");
    let md = fs::metadata(t.path()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
        0o700
    );
}

#[test]
fn lock_timeout_names_the_holder() {
    let t = tempfile::tempdir().unwrap();
    let mut store = open(t.path());
    store.set_lock_timeout(Duration::from_millis(50));
    let _held = StoreLock::acquire(
        &t.path().join("lock"),
        Duration::from_secs(1),
        "pid 4242 (strata apply-diff x)",
    )
    .unwrap();
    let err = store.lock().err().unwrap().to_string();
    assert!(err.contains("pid 4242 (strata apply-diff x)"), "{err}");
}
