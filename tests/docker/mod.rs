//! Helpers for the dockerd end-to-end test: temporary roots, daemons that are stopped by PID
//! when they go out of scope (also when the test fails), and the docker CLI with timeouts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use strata::sys::{mount, mountinfo};

/// How long a docker command may take before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a daemon may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(45);

/// Finds a program in the usual places, then in `PATH`.
pub fn find_program(name: &str, preferred: &[&str]) -> Option<PathBuf> {
    preferred
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file())
}

/// A daemon this test started. Dropping it stops it: SIGTERM, a grace period, SIGKILL.
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it; returns whether SIGTERM was enough.
    pub fn stop(&mut self) -> bool {
        if !self.alive() {
            return true;
        }
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills the process whose PID is in `pidfile` if it is still running `comm` (dockerd's own
/// containerd, which would outlive a dockerd that had to be killed).
pub fn kill_pidfile(pidfile: &Path, comm: &str) {
    let Some(pid) = fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let running = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == comm)
        .unwrap_or(false);
    if let (true, Some(p)) = (running, Pid::from_raw(pid)) {
        eprintln!("killing leftover {comm} {pid}");
        let _ = kill_process(p, Signal::KILL);
    }
}

/// Runs a command to completion (with [`COMMAND_TIMEOUT`]); returns (success, stdout, stderr).
pub fn run(cmd: &mut Command, scratch: &Path) -> (bool, String, String) {
    let out_path = scratch.join(format!("cmd-{}.out", std::process::id()));
    let err_path = scratch.join(format!("cmd-{}.err", std::process::id()));
    let out = fs::File::create(&out_path).expect("stdout file");
    let err = fs::File::create(&err_path).expect("stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    (status.success(), stdout, stderr)
}

/// A dockerd with its own data-root, exec-root, socket and pidfile.
pub struct Dockerd {
    /// Label for messages.
    pub name: String,
    /// `unix://…` address for `docker -H`.
    pub host: String,
    /// Its `--data-root`.
    pub data_root: PathBuf,
    exec_root: PathBuf,
    socket: PathBuf,
    proc: Option<Proc>,
    args: Vec<String>,
    log: PathBuf,
}

impl Dockerd {
    /// A dockerd rooted in `dir` with `--storage-driver driver` (not started yet).
    pub fn new(name: &str, dir: &Path, driver: &str, experimental: bool) -> Dockerd {
        fs::create_dir_all(dir).unwrap();
        let config = dir.join("daemon.json");
        // Our own (empty) daemon.json: a host's /etc/docker/daemon.json must not add flags.
        fs::write(&config, "{}\n").unwrap();
        let socket = dir.join("docker.sock");
        let data_root = dir.join("data");
        let exec_root = dir.join("exec");
        // Unique per dockerd: tests start several at once.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = format!("strata-e2e-{}-{n}-{name}", std::process::id());
        let mut args: Vec<String> = vec![
            "--config-file".into(),
            config.display().to_string(),
            "--data-root".into(),
            data_root.display().to_string(),
            "--exec-root".into(),
            exec_root.display().to_string(),
            "--host".into(),
            format!("unix://{}", socket.display()),
            "--pidfile".into(),
            dir.join("docker.pid").display().to_string(),
            "--iptables=false".into(),
            "--ip-masq=false".into(),
            "--bridge=none".into(),
            "--storage-driver".into(),
            driver.into(),
            // Distinct namespaces in case a system containerd is shared.
            "--containerd-namespace".into(),
            ns.clone(),
            "--containerd-plugins-namespace".into(),
            format!("{ns}-plugins"),
        ];
        if experimental {
            args.push("--experimental".into());
        }
        Dockerd {
            name: name.to_string(),
            host: format!("unix://{}", socket.display()),
            data_root,
            exec_root,
            socket,
            proc: None,
            args,
            log: dir.join("dockerd.log"),
        }
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Starts it (without waiting).
    pub fn spawn(&mut self, dockerd: &Path) {
        let _ = fs::remove_file(&self.socket);
        let mut cmd = Command::new(dockerd);
        cmd.args(&self.args);
        self.proc = Some(Proc::spawn(
            &format!("dockerd {}", self.name),
            &mut cmd,
            &self.log,
        ));
    }

    /// Waits until it answers `docker version`.
    pub fn wait_ready(&mut self, docker: &Path, scratch: &Path) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let proc = self.proc.as_mut().expect("started");
            if !proc.alive() {
                panic!(
                    "dockerd {} exited during startup; see its log {}",
                    self.name,
                    self.log.display()
                );
            }
            if self.socket.exists() {
                let (ok, _, _) = run(
                    Command::new(docker).arg("-H").arg(&self.host).args([
                        "version",
                        "--format",
                        "{{.Server.Version}}",
                    ]),
                    scratch,
                );
                if ok {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "dockerd {} not ready after {START_TIMEOUT:?}; see its log {}",
                    self.name,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops it (SIGTERM, grace, SIGKILL) and whatever containerd it started.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
        kill_pidfile(
            &self.exec_root.join("containerd/containerd.pid"),
            "containerd",
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The strata plugin process.
pub struct Plugin {
    /// Its socket.
    pub socket: PathBuf,
    proc: Option<Proc>,
    cmd: Vec<String>,
    log: PathBuf,
}

impl Plugin {
    /// `strata --driver BACKEND serve docker-plugin --name NAME [--socket S]`, not started.
    pub fn new(name: &str, backend: &str, socket: Option<PathBuf>, log: PathBuf) -> Plugin {
        let mut cmd: Vec<String> = vec![
            "--driver".into(),
            backend.into(),
            "serve".into(),
            "docker-plugin".into(),
            "--name".into(),
            name.into(),
        ];
        if let Some(s) = &socket {
            cmd.push("--socket".into());
            cmd.push(s.display().to_string());
        }
        // Next to the log, not in /run: each test's plugin remembers its own Init.
        cmd.push("--state".into());
        cmd.push(log.with_extension("state.json").display().to_string());
        Plugin {
            socket: socket.unwrap_or_else(|| format!("/run/docker/plugins/{name}.sock").into()),
            proc: None,
            cmd,
            log,
        }
    }

    /// Starts it and waits until its socket accepts connections.
    pub fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.args(&self.cmd).env("STRATA_LOG", "debug");
        cmd.env_remove("STRATA_ROOT").env_remove("STRATA_DRIVER");
        let mut proc = Proc::spawn("strata plugin", &mut cmd, &self.log);
        let deadline = Instant::now() + START_TIMEOUT;
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if !proc.alive() || Instant::now() > deadline {
                panic!(
                    "the strata plugin did not come up on {}; see {}",
                    self.socket.display(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
    }

    /// Uses `root` as the store instead of Init's Home (`strata --root`).
    pub fn with_root(mut self, root: &Path) -> Plugin {
        self.cmd
            .splice(0..0, ["--root".to_string(), root.display().to_string()]);
        self
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Adds global options (before `serve`).
    pub fn with_globals(mut self, args: &[&str]) -> Plugin {
        self.cmd.splice(0..0, args.iter().map(|a| a.to_string()));
        self
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.alive())
    }

    /// Kills it with SIGKILL (by PID) and reaps it, as a crash would: no Cleanup, the
    /// socket file and the mounts stay.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            if let Some(pid) = Pid::from_raw(p.child.id() as i32) {
                let _ = kill_process(pid, Signal::KILL);
            }
            let _ = p.child.wait();
        }
    }

    /// Stops it; asserts that it stopped on SIGTERM and removed its socket.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert!(p.stop(), "the plugin needed SIGKILL to stop");
            assert!(
                !self.socket.exists(),
                "the plugin left its socket {} behind",
                self.socket.display()
            );
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
        let _ = fs::remove_file(&self.socket);
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mountinfo::mounts_under(&mountinfo::read().expect("mountinfo"), dir)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

/// Whether `dir` is a mount point of its own with private propagation (no `shared:` or
/// `master:` tag in its mountinfo line).
pub fn is_private_mount_point(dir: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_str().expect("UTF-8 path");
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        fields.len() > 6
            && fields[4] == dir
            && !fields[6..sep]
                .iter()
                .any(|f| f.starts_with("shared:") || f.starts_with("master:"))
    })
}

/// Unmounts whatever is left at or below `dir`.
pub fn unmount_all_under(dir: &Path) {
    for m in mounts_under(dir) {
        eprintln!("unmounting leftover {}", m.display());
        let _ = mount::unmount(&m);
    }
}

/// Prints the last lines of a log file to stderr.
pub fn print_tail(label: &str, path: &Path, lines: usize) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "---- {label}: last {} lines of {} ----",
        all.len() - from,
        path.display()
    );
    for l in &all[from..] {
        let _ = writeln!(err, "{l}");
    }
}

/// A busybox rootfs tar: `bin/busybox` (static) plus applet symlinks, and a few files the
/// test changes.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = find_program("busybox", &["/bin/busybox", "/usr/bin/busybox"]).expect(
        "no busybox: install busybox-static (bash scripts/setup does) to build the test image",
    );
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "ls", "rm", "mkdir", "touch", "test", "true", "sleep", "cp", "mv",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for d in ["etc", "old/deep", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/conf"), "a\n").unwrap();
    fs::write(root.join("old/deep/x"), "x\n").unwrap();
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .expect("running tar")
        .success();
    assert!(ok, "tar of the busybox rootfs failed");
    tar
}

/// Unmounts whatever is left below a directory when dropped.
pub struct UnmountGuard(pub PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        unmount_all_under(&self.0);
    }
}

/// One plugin call over its unix socket, with a plain HTTP/1 client (as dockerd's Go client
/// sends it: POST, Host plugin.moby.localhost, the v1.2 Accept header).
pub async fn http_post<B>(
    socket: &Path,
    path: &str,
    body: B,
) -> hyper::Response<hyper::body::Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the plugin");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("Host", "plugin.moby.localhost")
        .header("Accept", "application/vnd.docker.plugins.v1.2+json")
        .body(body)
        .expect("request");
    sender.send_request(req).await.expect("plugin call")
}

/// One plugin call, like [`http_post`], but a failure to connect or to get an answer (the
/// plugin died) is returned instead of panicking.
pub async fn try_http_post<B>(
    socket: &Path,
    path: &str,
    body: B,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("Host", "plugin.moby.localhost")
        .body(body)
        .map_err(|e| e.to_string())?;
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("no answer: {e}"))
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}
