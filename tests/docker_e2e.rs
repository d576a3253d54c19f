//! dockerd 20.10 on strata, end to end, through the legacy graph-driver plugin protocol.
//!
//! For each backend (overlay, vfs) the test starts the built `strata` binary as a plugin with
//! a unique name, a dockerd on it (`--experimental --storage-driver NAME`), and a reference
//! dockerd on its built-in `vfs` driver, each with its own roots and socket, and then:
//! imports a busybox image, runs it, compares `docker diff` with the reference, commits,
//! checks `docker save` digests against the diff_ids, builds with RUN and COPY, restarts
//! dockerd and the plugin, and removes everything, checking that no layer and no mount is
//! left. Needs root and dockerd (Debian's docker.io; `bash scripts/setup` installs it).
//! Every process is stopped by PID at the end, also on failure, and the daemons' logs are
//! printed when a step fails.

mod docker;
#[path = "docker/lifecycle.rs"]
mod lifecycle;
#[path = "docker/serving.rs"]
mod serving;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use docker::{Dockerd, Plugin};
use sha2::{Digest, Sha256};

/// One backend's run: the plugin, the dockerd on it, the reference dockerd, their files.
struct Env {
    backend: String,
    name: String,
    dockerd_bin: PathBuf,
    docker_bin: PathBuf,
    strata: Option<Dockerd>,
    reference: Option<Dockerd>,
    plugin: Option<Plugin>,
    spec_file: Option<PathBuf>,
    logs: Vec<(String, PathBuf)>,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(backend: &str) -> Env {
        assert!(
            rustix::process::geteuid().is_root(),
            "the dockerd end-to-end test needs root (dockerd, mounts)"
        );
        let dockerd_bin = docker::find_program("dockerd", &["/usr/sbin/dockerd", "/usr/bin/dockerd"])
            .expect(
                "dockerd not found: install Debian's docker.io (20.10), e.g. `bash scripts/setup`, which CI runs",
            );
        // Debian's own client matches the daemon; any other docker CLI also works.
        let docker_bin =
            docker::find_program("docker", &["/usr/bin/docker"]).expect("docker CLI not found");
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // Unique per environment: tests run in parallel, each with its own plugin socket
        // (overlay's default location is one shared directory).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("strata-e2e-{}-{n}-{backend}", std::process::id());
        let plugin_log = dir.path().join("plugin.log");
        // overlay: the default socket location; vfs: a socket of our own plus a spec file,
        // the other discovery path dockerd has.
        let (socket, spec_file) = if backend == "overlay" {
            (None, None)
        } else {
            let sock = dir.path().join("plugin.sock");
            let spec = PathBuf::from(format!("/etc/docker/plugins/{name}.spec"));
            fs::create_dir_all("/etc/docker/plugins").unwrap();
            fs::write(&spec, format!("unix://{}\n", sock.display())).unwrap();
            (Some(sock), Some(spec))
        };
        let plugin = Plugin::new(&name, backend, socket, plugin_log.clone());
        let strata = Dockerd::new("strata", &dir.path().join("d-strata"), &name, true);
        let reference = Dockerd::new("reference", &dir.path().join("d-ref"), "vfs", false);
        let logs = vec![
            ("strata plugin".to_string(), plugin_log),
            ("dockerd on strata".to_string(), strata.log().to_path_buf()),
            (
                "reference dockerd".to_string(),
                reference.log().to_path_buf(),
            ),
        ];
        Env {
            backend: backend.to_string(),
            name,
            dockerd_bin,
            docker_bin,
            strata: Some(strata),
            reference: Some(reference),
            plugin: Some(plugin),
            spec_file,
            logs,
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn d(&self, reference: bool) -> &Dockerd {
        if reference {
            self.reference.as_ref().unwrap()
        } else {
            self.strata.as_ref().unwrap()
        }
    }

    /// `docker ARGS` against one daemon; panics with its output unless it succeeds.
    fn docker_at(&self, reference: bool, args: &[&str]) -> String {
        let d = self.d(reference);
        let (ok, out, err) = docker::run(
            Command::new(&self.docker_bin)
                .arg("-H")
                .arg(&d.host)
                .args(args)
                .env("DOCKER_CONFIG", self.path().join("docker-config"))
                .env("DOCKER_BUILDKIT", "0"),
            self.path(),
        );
        assert!(
            ok,
            "docker {args:?} on {} failed:\nstdout: {out}\nstderr: {err}",
            d.name
        );
        out
    }

    fn docker(&self, args: &[&str]) -> String {
        self.docker_at(false, args)
    }

    /// `docker run --rm --network none IMAGE sh -c SCRIPT` on one daemon; its output.
    fn run_at(&self, reference: bool, image: &str, script: &str) -> String {
        self.docker_at(
            reference,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                image,
                "sh",
                "-c",
                script,
            ],
        )
    }

    fn start_strata(&mut self) {
        self.plugin.as_mut().unwrap().start();
        self.start_dockerd();
    }

    fn start_dockerd(&mut self) {
        let d = self.strata.as_mut().unwrap();
        d.spawn(&self.dockerd_bin);
        d.wait_ready(&self.docker_bin, self.dir.path());
    }

    fn stop_strata(&mut self) {
        // dockerd first: at shutdown it calls the plugin's Cleanup.
        self.strata.as_mut().unwrap().stop();
        self.plugin.as_mut().unwrap().stop();
    }

    /// The store root the plugin uses (Init's Home).
    fn store_root(&self) -> PathBuf {
        self.d(false).data_root.join(&self.name)
    }

    fn strata_cli(&self, args: &[&str]) -> String {
        let (ok, out, err) = docker::run(
            Command::new(env!("CARGO_BIN_EXE_strata"))
                .arg("--root")
                .arg(self.store_root())
                .args(args),
            self.path(),
        );
        assert!(ok, "strata {args:?} failed: {err}");
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        // Daemons before the plugin they use; then whatever is still mounted in our roots.
        drop(self.strata.take());
        drop(self.reference.take());
        drop(self.plugin.take());
        docker::unmount_all_under(self.dir.path());
        if let Some(spec) = &self.spec_file {
            let _ = fs::remove_file(spec);
        }
        if failed {
            for (label, path) in &self.logs {
                docker::print_tail(label, path, 150);
            }
        }
    }
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The steps whose `docker diff` is compared with the reference driver: add, change and
/// delete files and directories.
const CHANGES: &str = "mkdir -p /data/sub && echo new > /data/sub/f && echo b >> /etc/conf \
                       && rm /bin/ls && rm -r /old && touch /tmp/t";

fn scenario(backend: &str) {
    let started = std::time::Instant::now();
    let mut env = Env::new(backend);
    let rootfs = docker::busybox_rootfs(env.path());
    let rootfs = rootfs.to_str().unwrap().to_string();
    env.reference
        .as_mut()
        .unwrap()
        .spawn(&env.dockerd_bin.clone());
    env.start_strata();
    {
        let (bin, dir) = (env.docker_bin.clone(), env.path().to_path_buf());
        env.reference.as_mut().unwrap().wait_ready(&bin, &dir);
    }

    // docker info shows the plugin and the backend behind it.
    let driver = env.docker(&["info", "--format", "{{.Driver}}"]);
    assert_eq!(driver.trim(), env.name);
    let status = env.docker(&["info", "--format", "{{json .DriverStatus}}"]);
    assert!(
        status.contains(&format!("[\"Driver\",\"{backend}\"]")),
        "{status}"
    );

    // The store stays usable from the command line while the plugin serves it.
    let status = env.strata_cli(&["status"]);
    assert!(status.contains(&format!("Driver: {backend}")), "{status}");

    // import + run, on both daemons.
    for r in [false, true] {
        env.docker_at(r, &["import", &rootfs, "bb:1"]);
        let out = env.run_at(r, "bb:1", "echo hello");
        assert_eq!(out, "hello\n");
        env.docker_at(
            r,
            &[
                "run",
                "--name",
                "changed",
                "--network",
                "none",
                "bb:1",
                "sh",
                "-c",
                CHANGES,
            ],
        );
    }
    let diff = env.docker(&["diff", "changed"]);
    let expected = env.docker_at(true, &["diff", "changed"]);
    assert_eq!(
        sorted_lines(&diff),
        sorted_lines(&expected),
        "docker diff on strata ({backend}) differs from dockerd's vfs"
    );
    assert!(
        diff.contains("D /bin/ls") && diff.contains("A /data/sub/f"),
        "{diff}"
    );
    env.reference.as_mut().unwrap().stop();

    // commit, and a container of the result sees the changes.
    env.docker(&["commit", "changed", "bb:2"]);
    let out = env.run_at(
        false,
        "bb:2",
        "cat /data/sub/f /etc/conf; test -e /bin/ls || echo no-ls; test -e /old || echo no-old",
    );
    assert_eq!(out, "new\na\nb\nno-ls\nno-old\n");

    // the legacy builder: COPY and RUN.
    let ctx = env.path().join("build");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f"), "filedata\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:2\nCOPY f /copied\nRUN echo ran > /ran && cat /copied && rm /etc/conf\n",
    )
    .unwrap();
    env.docker(&["build", "-t", "bb:3", ctx.to_str().unwrap()]);
    let out = env.run_at(
        false,
        "bb:3",
        "cat /ran /copied /data/sub/f; test -e /etc/conf || echo no-conf",
    );
    assert_eq!(out, "ran\nfiledata\nnew\nno-conf\n");

    // docker save: every layer tar's sha256 is its diff_id (files under Get's Dir are exact).
    check_save(&env, "bb:3");

    // A stopped container and the images survive a restart of dockerd and the plugin.
    env.docker(&[
        "create",
        "--name",
        "keep",
        "--network",
        "none",
        "bb:3",
        "cat",
        "/ran",
    ]);
    // dockerd alone first: the running plugin gets a second Init, and must serve the same
    // store although dockerd's shutdown detached the plugin's mounts with its data-root.
    env.strata.as_mut().unwrap().stop();
    env.start_dockerd();
    assert_eq!(env.run_at(false, "bb:3", "cat /ran"), "ran\n");
    assert!(
        docker::is_private_mount_point(&env.store_root()),
        "after the second Init the store root is not a private mount of its own"
    );
    env.stop_strata();
    let root = env.store_root();
    assert!(
        docker::mounts_under(&root).is_empty(),
        "mounts left after dockerd and the plugin stopped: {:?}",
        docker::mounts_under(&root)
    );
    env.start_strata();
    let images = env.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for tag in ["bb:1", "bb:2", "bb:3"] {
        assert!(
            images.lines().any(|l| l == tag),
            "{tag} missing after restart: {images}"
        );
    }
    let names = env.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(sorted_lines(&names), ["changed", "keep"], "{names}");
    assert_eq!(env.docker(&["start", "-a", "keep"]), "ran\n");
    assert_eq!(
        sorted_lines(&env.docker(&["diff", "changed"])),
        sorted_lines(&expected)
    );
    let out = env.run_at(false, "bb:2", "cat /data/sub/f");
    assert_eq!(out, "new\n");

    // Removing everything leaves no layer and no mount.
    let ids = env.docker(&["ps", "-aq"]);
    let mut args = vec!["rm", "-f"];
    args.extend(ids.split_whitespace());
    env.docker(&args);
    // Tags first: deleting a tagged image deletes its untagged parents (build steps).
    env.docker(&["rmi", "bb:3", "bb:2", "bb:1"]);
    let images = env.docker(&["images", "-aq"]);
    let ids: BTreeSet<&str> = images.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rmi", "-f"];
        args.extend(ids.iter().copied());
        env.docker(&args);
    }
    assert_eq!(env.docker(&["images", "-aq"]), "");
    assert_eq!(env.strata_cli(&["ls"]), "", "layers left in the store");
    let left: Vec<PathBuf> = docker::mounts_under(&root)
        .into_iter()
        .filter(|m| m != &root) // the plugin's private bind of its root
        .collect();
    assert!(left.is_empty(), "layer mounts left: {left:?}");
    env.stop_strata();
    let left = docker::mounts_under(env.path());
    assert!(left.is_empty(), "mounts left after stopping: {left:?}");
    eprintln!(
        "dockerd on strata ({}): passed in {:.1}s",
        env.backend,
        started.elapsed().as_secs_f64()
    );
}

/// `docker save IMAGE`, then checks that each layer tar hashes to the config's diff_id.
fn check_save(env: &Env, image: &str) {
    let tar = env.path().join("save.tar");
    env.docker(&["save", "-o", tar.to_str().unwrap(), image]);
    let out = env.path().join("save");
    fs::create_dir_all(&out).unwrap();
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&out)
        .arg("-xf")
        .arg(&tar)
        .status()
        .unwrap()
        .success();
    assert!(ok, "extracting the saved image failed");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let m = &manifest[0];
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join(m["Config"].as_str().expect("Config"))).unwrap())
            .unwrap();
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let layers: Vec<String> = m["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| {
            let bytes = fs::read(out.join(l.as_str().unwrap())).unwrap();
            let hex: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("sha256:{hex}")
        })
        .collect();
    assert_eq!(
        diff_ids.len(),
        4,
        "bb:3 has 4 layers: import, commit, COPY, RUN"
    );
    assert_eq!(
        layers, diff_ids,
        "saved layers do not hash to the image's diff_ids"
    );
}

#[test]
fn dockerd_on_strata_overlay() {
    scenario("overlay");
}

#[test]
fn dockerd_on_strata_vfs() {
    scenario("vfs");
}

/// A layer far larger than any buffer goes through ApplyDiff and comes back through Diff
/// while the plugin's memory stays small: both bodies stream.
#[test]
fn plugin_streams_large_layers_in_bounded_memory() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;

    const SIZE: u64 = 512 << 20;
    const CHUNK: usize = 1 << 20;
    assert!(
        rustix::process::geteuid().is_root(),
        "the plugin test needs root (mounts)"
    );
    let dir = tempfile::Builder::new()
        .prefix("strata-plugin-")
        .tempdir_in("/tmp")
        .unwrap();
    let _unmount = docker::UnmountGuard(dir.path().to_path_buf());
    let socket = dir.path().join("plugin.sock");
    let mut plugin = Plugin::new(
        "strata-mem",
        "vfs",
        Some(socket.clone()),
        dir.path().join("plugin.log"),
    )
    .with_root(&dir.path().join("store"));
    plugin.start();
    let pid = plugin.pid().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let streamed = rt.block_on(async {
        let call = |path: &'static str, body: &'static str| {
            let socket = socket.clone();
            async move {
                let r = docker::http_post(&socket, path, Full::new(Bytes::from(body))).await;
                assert_eq!(r.status(), 200, "{path}");
            }
        };
        call("/GraphDriver.Init", "{\"Home\":\"/nonexistent/ignored\"}\n").await;
        call("/GraphDriver.Create", "{\"ID\":\"big\"}\n").await;
        let mut header = tar::Header::new_gnu();
        header.set_path("big").unwrap();
        header.set_size(SIZE);
        header.set_mode(0o644);
        header.set_cksum();
        let head = Bytes::copy_from_slice(header.as_bytes());
        let zeros = Bytes::from(vec![0u8; CHUNK]);
        let chunks = (SIZE / CHUNK as u64) as usize;
        let frames = std::iter::once(head)
            .chain(std::iter::repeat_n(zeros, chunks))
            .chain(std::iter::once(Bytes::from(vec![0u8; 1024])))
            .map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let r = docker::http_post(&socket, "/GraphDriver.ApplyDiff?id=big&parent=", body).await;
        assert_eq!(r.status(), 200);
        let answer = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(answer, Bytes::from(format!("{{\"Size\":{SIZE}}}")));
        let r = docker::http_post(
            &socket,
            "/GraphDriver.Diff",
            Full::new(Bytes::from("{\"ID\":\"big\"}\n")),
        )
        .await;
        assert_eq!(r.status(), 200);
        let mut body = r.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                n += data.len() as u64;
            }
        }
        n
    });
    assert!(streamed > SIZE, "Diff streamed only {streamed} bytes");
    let peak = peak_rss_mib(pid);
    plugin.stop();
    eprintln!(
        "plugin peak RSS while moving 2 x {} MiB: {peak} MiB",
        SIZE >> 20
    );
    assert!(peak < 64, "the plugin's peak RSS was {peak} MiB");
}

fn peak_rss_mib(pid: u32) -> u64 {
    docker::peak_rss(pid) >> 20
}
