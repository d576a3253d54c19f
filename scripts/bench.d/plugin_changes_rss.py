#!/usr/bin/env python3
"""Peak memory of the docker plugin answering GraphDriver.Changes for a layer of many files.

Starts `strata serve docker-plugin` on a socket in a temporary directory (its own store,
--root), creates a layer of N empty files through the plugin (Create, Get, files written
under Get's Dir, Put), then reads VmHWM of the plugin process from /proc/<pid>/status before
and after one Changes call (parent "": every file is an addition) whose answer is read and
discarded as it arrives. The plugin is stopped by PID and the directory removed.

    python3 scripts/bench.d/plugin_changes_rss.py --strata target/release/strata --files 1000000
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket, as dockerd's plugin client talks."""

    def __init__(self, path, timeout=3600):
        super().__init__("plugin.moby.localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def call(sock, method, body, stream=False):
    """POSTs a JSON body; returns the decoded answer, or the answer's byte count if stream."""
    conn = UnixConnection(sock)
    conn.request("POST", "/" + method, body=json.dumps(body) + "\n")
    resp = conn.getresponse()
    if stream:
        n = 0
        while True:
            chunk = resp.read(1 << 16)
            if not chunk:
                break
            n += len(chunk)
        status = resp.status
        conn.close()
        if status != 200:
            raise SystemExit(f"{method}: status {status}")
        return n
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"{method}: status {resp.status}: {data[:500]!r}")
    return json.loads(data) if data else {}


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise SystemExit("no VmHWM")


def make_files(root, n, per_dir=1000):
    """n empty files in directories of per_dir files each."""
    made = 0
    d = 0
    while made < n:
        sub = os.path.join(root, f"d{d}")
        os.mkdir(sub)
        for i in range(min(per_dir, n - made)):
            os.close(os.open(os.path.join(sub, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
        made += min(per_dir, n - made)
        d += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True, help="the strata binary")
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--backend", default="vfs", choices=["vfs", "overlay"])
    ap.add_argument("--scratch", default="/tmp", help="where the temporary directory goes")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="strata-changes-rss-", dir=args.scratch)
    sock = os.path.join(tmp, "p.sock")
    log = open(os.path.join(tmp, "plugin.log"), "wb")
    argv = [args.strata, "--root", os.path.join(tmp, "store"), "--driver", args.backend,
            "serve", "docker-plugin", "--name", "bench-changes", "--socket", sock]
    # The state file goes with the store (builds without --state have none).
    helptext = subprocess.run([args.strata, "serve", "docker-plugin", "--help"],
                              capture_output=True, text=True).stdout
    if "--state" in helptext:
        argv += ["--state", os.path.join(tmp, "state.json")]
    env = dict(os.environ, STRATA_LOG="warn")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the plugin did not start; see {log.name}")
            time.sleep(0.05)
        call(sock, "GraphDriver.Init", {"Home": "/ignored"})
        call(sock, "GraphDriver.Create", {"ID": "l"})
        d = call(sock, "GraphDriver.Get", {"ID": "l"})["Dir"]
        t0 = time.monotonic()
        make_files(d, args.files)
        call(sock, "GraphDriver.Put", {"ID": "l"})
        made = time.monotonic() - t0
        before = hwm_kib(proc.pid)
        t0 = time.monotonic()
        n = call(sock, "GraphDriver.Changes", {"ID": "l", "Parent": ""}, stream=True)
        took = time.monotonic() - t0
        after = hwm_kib(proc.pid)
        print(json.dumps({
            "files": args.files, "backend": args.backend, "answer_bytes": n,
            "hwm_before_changes_mib": round(before / 1024, 1),
            "hwm_after_changes_mib": round(after / 1024, 1),
            "changes_seconds": round(took, 2), "layer_seconds": round(made, 2),
        }))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        # Whatever the plugin left mounted goes before the directory.
        with open("/proc/self/mountinfo") as f:
            mounts = [l.split()[4] for l in f if l.split()[4].startswith(tmp)]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
