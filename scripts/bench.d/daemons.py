"""docker load through dockerd 20.10 (built-in overlay2 vs the strata plugin) and
`ctr images import` through containerd 1.6 (overlayfs snapshotter), each daemon started for
one timed run in its own temp dirs and socket, stopped by PID, its mounts undone."""

import os
import shutil
import time

import procs
from cases import _rm
from procs import Daemon, Failed, drop_caches
from workloads import IMAGE_TAG


def _find(name, preferred):
    for p in preferred + [os.path.join(d, name) for d in os.environ.get("PATH", "").split(":")]:
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _wait(what, ok, alive, timeout=120):
    deadline = time.monotonic() + timeout
    while not ok():
        if not alive():
            raise Failed(f"{what} exited during startup")
        if time.monotonic() > deadline:
            raise Failed(f"{what} not ready after {timeout} s")
        time.sleep(0.2)


def docker_group(b):
    img = os.path.join(b.W, "A-image.tar")
    m = b.meta["A"]
    kw = dict(work_bytes=m["tar_bytes"], entries=m["entries"])
    base = "docker load A: dockerd overlay2"
    b.case(base, "docker", "A image", "dockerd 20.10 overlay2: docker load", **kw)
    b.case("docker load A: dockerd + strata plugin", "docker", "A image",
           "dockerd 20.10 + strata plugin: docker load", baseline=base, **kw)
    dockerd = _find("dockerd", ["/usr/sbin/dockerd", "/usr/bin/dockerd"])
    docker = _find("docker", ["/usr/bin/docker"])
    if not dockerd or not docker:
        reason = "dockerd/docker not installed (apt docker.io)"
        b.skip(base, reason)
        b.skip("docker load A: dockerd + strata plugin", reason)
        return
    b.versions["dockerd"] = procs.quiet([dockerd, "--version"]).strip()
    for i in range(b.iterations):
        order = [False, True] if i % 2 == 0 else [True, False]
        for plugin in order:
            cid = "docker load A: dockerd + strata plugin" if plugin else base
            if b.cases[cid]["skipped"]:
                continue
            try:
                b.record(cid, _docker_load(b, dockerd, docker, img, plugin, i))
            except Failed as e:
                b.skip(cid, str(e))


def _docker_load(b, dockerd, docker, img, plugin, i):
    d = b.tmp(f"dockerd-{'strata' if plugin else 'overlay2'}")
    name = f"strata-bench-{os.getpid()}"
    started = []
    try:
        pd = None
        if plugin:
            pd = Daemon(b.registry, "strata plugin",
                        [b.S, "--driver", "overlay", "serve", "docker-plugin", "--name", name],
                        os.path.join(d, "plugin.log"))
            started.append(pd)
            sock = f"/run/docker/plugins/{name}.sock"
            _wait("the strata plugin", lambda: os.path.exists(sock), pd.alive)
        with open(os.path.join(d, "daemon.json"), "w") as f:
            f.write("{}\n")
        host = f"unix://{d}/docker.sock"
        argv = [dockerd, "--config-file", f"{d}/daemon.json", "--data-root", f"{d}/data",
                "--exec-root", f"{d}/exec", "--host", host, "--pidfile", f"{d}/docker.pid",
                "--iptables=false", "--ip-masq=false", "--bridge=none",
                "--containerd-namespace", f"{name}-{i}", "--containerd-plugins-namespace",
                f"{name}-{i}-plugins", "--storage-driver", name if plugin else "overlay2"]
        if plugin:
            argv.append("--experimental")
        dd = Daemon(b.registry, "dockerd", argv, os.path.join(d, "dockerd.log"))
        started.append(dd)
        env = dict(os.environ, DOCKER_CONFIG=f"{d}/cfg")

        def ready():
            return os.path.exists(f"{d}/docker.sock") and not procs.quiet(
                [docker, "-H", host, "version"], check=False, env=env, timeout=30) == ""
        _wait("dockerd", ready, dd.alive)
        drop_caches()
        sampler = procs.TreeSampler([p.pid for p in started])
        res, _ = procs.run([docker, "-H", host, "load", "-q", "-i", img], b.scratch, env=env)
        rss, cpu = sampler.finish()
        info = procs.quiet([docker, "-H", host, "info", "--format", "{{.Driver}}"], env=env)
        if info.strip() != (name if plugin else "overlay2"):
            raise Failed(f"dockerd runs storage driver {info.strip()!r}")
        procs.quiet([docker, "-H", host, "image", "inspect", IMAGE_TAG], env=env)
        return procs.Result(res.wall, res.cpu + cpu, rss)
    finally:
        for p in reversed(started):  # dockerd first: it calls the plugin's Cleanup
            p.stop()
        procs.kill_pidfile(f"{d}/exec/containerd/containerd.pid", "containerd")
        _rm(d)


def containerd_group(b):
    img = os.path.join(b.W, "A-image.tar")
    m = b.meta["A"]
    cid = "ctr import A: containerd overlayfs"
    b.case(cid, "containerd", "A image", "containerd 1.6 overlayfs: ctr images import",
           work_bytes=m["tar_bytes"], entries=m["entries"])
    containerd = _find("containerd", ["/usr/bin/containerd", "/usr/sbin/containerd"])
    ctr = _find("ctr", ["/usr/bin/ctr"])
    if not containerd or not ctr:
        b.skip(cid, "containerd/ctr not installed (apt containerd)")
        return
    b.versions["containerd"] = procs.quiet([containerd, "--version"]).strip()
    for _ in range(b.iterations):
        try:
            b.record(cid, _ctr_import(b, containerd, ctr, img))
        except Failed as e:
            b.skip(cid, str(e))
            return


def _ctr_import(b, containerd, ctr, img):
    d = b.tmp("containerd")
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{d}/c.sock"\n[ttrpc]\n  address = "{d}/c.ttrpc.sock"\n')
    c = None
    try:
        c = Daemon(b.registry, "containerd",
                   [containerd, "--config", cfg, "--root", f"{d}/root", "--state", f"{d}/state",
                    "--address", f"{d}/c.sock"], os.path.join(d, "containerd.log"))
        addr = ["--address", f"{d}/c.sock", "-n", "bench"]
        _wait("containerd", lambda: os.path.exists(f"{d}/c.sock") and procs.quiet(
            [ctr, *addr, "version"], check=False, timeout=30) != "", c.alive)
        drop_caches()
        sampler = procs.TreeSampler([c.pid])
        res, _ = procs.run([ctr, *addr, "images", "import", "--snapshotter", "overlayfs", img],
                           b.scratch)
        rss, cpu = sampler.finish()
        snaps = procs.quiet([ctr, *addr, "snapshots", "--snapshotter", "overlayfs", "ls"])
        if len(snaps.strip().splitlines()) < 2:
            raise Failed("ctr import did not unpack a snapshot")
        return procs.Result(res.wall, res.cpu + cpu, rss)
    finally:
        if c:
            c.stop()
        _rm(d)
        shutil.rmtree(d, ignore_errors=True)
