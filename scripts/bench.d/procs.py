"""Running and measuring processes: timed commands (wall, CPU, peak RSS from wait4), daemons
started with their own temp dirs and stopped by PID, process-tree sampling for daemons, and
cleanup of everything started (PIDs recorded in a file the bash entry's trap also reads)."""

import os
import signal
import subprocess
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Failed(Exception):
    """A command failed; carries its stderr tail."""


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Result:
    def __init__(self, wall, cpu, rss_kib, extra=None):
        self.wall, self.cpu, self.rss_kib = wall, cpu, rss_kib
        self.extra = extra or {}


def run(argv, scratch, stdout=subprocess.DEVNULL, env=None, check=True, timeout=900):
    """Runs argv to completion; returns (Result, stderr text). Peak RSS is the largest of the
    process and its reaped descendants (wait4's ru_maxrss); CPU is user + system of all."""
    err_path = os.path.join(scratch, "cmd.stderr")
    with open(err_path, "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=env)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                raise Failed(f"{argv[0]} timed out after {timeout} s")
            time.sleep(0.002)
        wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(err_path, errors="replace") as f:
        stderr = f.read()
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(map(str, argv))} exited {p.returncode}: {stderr.strip()[-600:]}")
    return Result(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss), stderr


def quiet(argv, check=True, **kw):
    """An untimed helper command; returns stdout ("" if it timed out and check is off)."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    except subprocess.TimeoutExpired:
        if check:
            raise Failed(f"{' '.join(map(str, argv))} timed out")
        return ""
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(map(str, argv))} exited {p.returncode}: {p.stderr.strip()[-600:]}")
    return p.stdout


class Registry:
    """Records the PIDs of started daemons in a file (one "pid comm" a line), so that the
    bash entry's trap can stop leftovers even if Python dies."""

    def __init__(self, path):
        self.path = path
        self.procs = []

    def add(self, proc):
        self.procs.append(proc)
        self._write()

    def remove(self, proc):
        if proc in self.procs:
            self.procs.remove(proc)
        self._write()

    def _write(self):
        with open(self.path, "w") as f:
            for p in self.procs:
                f.write(f"{p.pid} {p.comm}\n")

    def stop_all(self):
        for p in reversed(list(self.procs)):
            p.stop()


class Daemon:
    """A background process in its own session (Ctrl-C reaches only the harness), logging to
    `log`, stopped by PID: SIGTERM, a grace period, SIGKILL."""

    def __init__(self, registry, name, argv, log, env=None):
        self.registry, self.name = registry, name
        self.comm = os.path.basename(argv[0])[:15]
        self.logf = open(log, "ab")
        self.log = log
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=self.logf, env=env, start_new_session=True)
        self.pid = self.p.pid
        registry.add(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, grace=45):
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                print(f"bench: {self.name} did not stop on SIGTERM; killing it", flush=True)
                self.p.kill()
                self.p.wait()
        self.logf.close()
        self.registry.remove(self)


def kill_pidfile(path, comm):
    """Kills the process in `path` if it still runs `comm` (a dockerd's own containerd)."""
    try:
        pid = int(open(path).read().strip())
        if open(f"/proc/{pid}/comm").read().strip() == comm:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def mounts_under(d):
    d = os.path.realpath(d)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split(" ")[4].replace("\\040", " ")
            if mp == d or mp.startswith(d + "/"):
                out.append(mp)
    return sorted(set(out), key=lambda m: -m.count("/"))


def unmount_under(d):
    for m in mounts_under(d):
        if subprocess.run(["umount", m], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True)


def descendants(roots):
    """PIDs of `roots` and all their descendants."""
    parent = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    s = f.read()
                parent[int(e)] = int(s[s.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                pass
    out, frontier = set(), [r for r in roots if r in parent]
    while frontier:
        p = frontier.pop()
        if p in out:
            continue
        out.add(p)
        frontier.extend(c for c, pp in parent.items() if pp == p)
    return out


def cpu_seconds(pid):
    """utime + stime + reaped children's, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return sum(int(x) for x in fields[11:15]) / TICK
    except OSError:
        return 0.0


class TreeSampler:
    """Peak summed RSS of some daemons' process trees, sampled every 50 ms, plus their CPU."""

    def __init__(self, roots):
        self.roots = roots
        self.peak = 0
        self.cpu0 = sum(cpu_seconds(p) for p in roots)
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stop_ev.is_set():
            total = 0
            for p in descendants(self.roots):
                try:
                    with open(f"/proc/{p}/statm") as f:
                        total += int(f.read().split()[1]) * PAGE
                except (OSError, ValueError, IndexError):
                    pass
            self.peak = max(self.peak, total)
            self.stop_ev.wait(0.05)

    def finish(self):
        self.stop_ev.set()
        self.t.join()
        return self.peak // 1024, sum(cpu_seconds(p) for p in self.roots) - self.cpu0
