//! dockerd on strata beyond the main scenario: the plugin crashing under a running dockerd,
//! and hard links to image files through `docker commit`.

use std::fs;
use std::path::PathBuf;

use crate::docker;
use crate::Env;

/// dockerd sends `Init` once. A plugin killed (SIGKILL, by PID) while dockerd and a
/// container run comes back on the same store by itself: new containers run, and the
/// running one is stopped and removed, without restarting dockerd.
#[test]
fn dockerd_keeps_working_after_the_plugin_restarts() {
    let mut env = Env::new("overlay");
    let rootfs = docker::busybox_rootfs(env.path());
    env.start_strata();
    env.docker(&["import", rootfs.to_str().unwrap(), "bb:1"]);
    env.docker(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "--network",
        "none",
        "bb:1",
        "sleep",
        "1000",
    ]);
    let plugin = env.plugin.as_mut().unwrap();
    plugin.kill();
    plugin.start();
    assert_eq!(env.run_at(false, "bb:1", "echo again"), "again\n");
    env.docker(&["stop", "-t", "1", "sleeper"]);
    env.docker(&["rm", "sleeper"]);
    env.docker(&["rmi", "bb:1"]);
    assert_eq!(env.strata_cli(&["ls"]), "", "layers left in the store");
    env.stop_strata();
    let left = docker::mounts_under(env.path());
    assert!(left.is_empty(), "mounts left after stopping: {left:?}");
}

/// A container hard-links an image file; after `docker commit`, a container of the new
/// image has one file with two names, as on overlay2 (`docker export` writes the second
/// name as a link to the first).
#[test]
fn commit_keeps_hard_links_to_image_files() {
    let mut env = Env::new("overlay");
    let rootfs = docker::busybox_rootfs(env.path());
    env.start_strata();
    env.docker(&["import", rootfs.to_str().unwrap(), "bb:1"]);
    env.docker(&[
        "run",
        "--name",
        "linker",
        "--network",
        "none",
        "bb:1",
        "sh",
        "-c",
        "mkdir -p /root && ln /bin/busybox /root/hard",
    ]);
    env.docker(&["commit", "linker", "bb:hl"]);
    env.docker(&[
        "create",
        "--name",
        "exported",
        "--network",
        "none",
        "bb:hl",
        "true",
    ]);
    let tar = env.path().join("export.tar");
    env.docker(&["export", "-o", tar.to_str().unwrap(), "exported"]);
    let mut names: Vec<(PathBuf, tar::EntryType, Option<PathBuf>)> = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        let link = e.link_name().unwrap().map(|l| l.into_owned());
        if path.ends_with("bin/busybox") || path.ends_with("root/hard") {
            names.push((path, e.header().entry_type(), link));
        }
    }
    assert_eq!(names.len(), 2, "{names:?}");
    let regular = names
        .iter()
        .filter(|n| n.1 == tar::EntryType::Regular)
        .count();
    let linked = names.iter().find(|n| n.1 == tar::EntryType::Link);
    assert!(
        regular == 1 && linked.is_some(),
        "busybox and its hard link came out as separate files: {names:?}"
    );
    let (_, _, target) = linked.unwrap();
    let other = names
        .iter()
        .find(|n| n.1 == tar::EntryType::Regular)
        .unwrap();
    assert_eq!(target.as_ref(), Some(&other.0), "{names:?}");
    env.docker(&["rm", "exported", "linker"]);
    env.docker(&["rmi", "bb:hl", "bb:1"]);
    env.stop_strata();
}
