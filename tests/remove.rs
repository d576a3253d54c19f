//! Removal through the library: with `background_remove`, `remove` returns once the layer is
//! gone from the store, the id is free at once, and the files are deleted by a thread that
//! holds the directory's flock until they are gone (so another process's sweep skips it).

use std::fs;
use std::path::Path;

use strata::graph::{Graph, GraphConfig};
use strata::{CreateOpts, Driver};

fn open(root: &Path, background: bool) -> Graph {
    let mut c = GraphConfig::new(root);
    c.driver = Some("vfs".into());
    c.background_remove = background;
    Graph::open(c).expect("open store")
}

fn fill(g: &Graph, id: &str, files: usize) {
    let dir = g.get(id, "").expect("get");
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 50));
        fs::create_dir_all(&sub).expect("mkdir");
        fs::write(sub.join(format!("f{i}")), b"data").expect("write");
    }
    g.put(id).expect("put");
}

fn staging_entries(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("staging"))
        .expect("read staging")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn background_remove_frees_the_id_at_once_and_deletes_later() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let g = open(&root, true);
    g.create("a", None, &CreateOpts::default()).expect("create");
    fill(&g, "a", 5000);
    g.remove("a").expect("remove");
    assert!(!g.exists("a").expect("exists"));
    assert!(
        !root.join("layers/a").exists(),
        "layer dir must be gone from layers/"
    );
    // The id can be used again while the old files may still be being deleted.
    g.create("a", None, &CreateOpts::default())
        .expect("create again");
    fill(&g, "a", 10);
    g.remove("a").expect("remove again");
    g.wait_removals();
    assert_eq!(staging_entries(&root), Vec::<String>::new());
    assert!(fs::read_dir(root.join("layers"))
        .expect("layers")
        .next()
        .is_none());
}

#[test]
fn a_sweep_skips_a_deletion_in_progress_and_takes_an_abandoned_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let g = open(&root, false);
    g.create("a", None, &CreateOpts::default()).expect("create");
    fill(&g, "a", 10);
    // Simulate a deleter: the removed layer sits in staging/ under a flock...
    let dir = root.join("staging/removed-a-test");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("f"), b"x").expect("write");
    let fd = fs::File::open(&dir).expect("open");
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    drop(g);
    let g = open(&root, false);
    assert!(dir.exists(), "a locked deletion must not be swept");
    // ...and once its holder is gone, the next open finishes it.
    drop(fd);
    drop(g);
    let _g = open(&root, false);
    assert!(!dir.exists(), "an abandoned deletion must be swept");
}

#[test]
fn cli_background_remove_hands_the_deletion_to_a_detached_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let strata = env!("CARGO_BIN_EXE_strata");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(strata)
            .arg("--root")
            .arg(&root)
            .args(["--driver", "vfs"])
            .args(args)
            .output()
            .expect("run strata");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    run(&["create", "a"]);
    let dir = std::path::PathBuf::from(run(&["get", "a"]));
    for i in 0..2000 {
        fs::write(dir.join(format!("f{i}")), b"data").expect("write");
    }
    run(&["put", "a"]);
    run(&["remove", "--background", "a"]);
    assert_eq!(run(&["exists", "a"]), "false");
    run(&["create", "a"]);
    // The deleter finishes on its own; nothing is left for a sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !staging_entries(&root).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "deleter did not finish: {:?}",
            staging_entries(&root)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(run(&["exists", "a"]), "true");
}
