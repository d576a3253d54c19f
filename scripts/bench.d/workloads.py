"""Deterministic benchmark workloads, generated once and cached in the bench directory.

A  rootfs-like layer: files from a fixed list of system directories, walked in sorted order,
   each directory up to a byte budget (~500 MB, ~15k entries in all); padded with generated
   files if the machine has less. Plain tar, gzip and zstd.
B  100,000 files of 1 KiB in 1,000 directories.
C  3 files of 300 MB of incompressible pseudo-random bytes.
D  500 small layers (one directory and one 1 KiB file each) for 128- and 500-layer chains.
E  B as the base, plus a top layer with 10 changes (5 modified, 3 added, 2 deleted) and an
   empty top layer (no change).
IMG  a one-layer docker-archive image (docker save format) of A for docker load / ctr import.

Every workload's sizes and entry counts go into meta.json next to the files.
"""

import hashlib
import io
import json
import os
import random
import stat as s
import subprocess
import tarfile

# Bump when a generator changes: cached files of another version are regenerated.
VERSION = 2
MTIME = 1600000000
MiB = 1 << 20

# (directory relative to /, byte budget in MiB) for workload A.
A_SOURCES = [
    ("usr/bin", 100),
    ("usr/sbin", 20),
    ("usr/lib", 220),
    ("usr/share", 100),
    ("usr/include", 60),
]
A_BYTES = 500 * MiB
B_DIRS, B_FILES, B_SIZE = 1000, 100, 1024
C_FILES, C_SIZE = 3, 300 * 1000 * 1000
D_LAYERS = 500
IMAGE_TAG = "strata-bench/a:latest"


def log(msg):
    print(f"bench: {msg}", flush=True)


class PseudoRandom(io.RawIOBase):
    """A file object of `size` deterministic, incompressible bytes."""

    def __init__(self, seed, size):
        self.rng = random.Random(seed)
        self.left = size

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left
        n = min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


def _info(name, kind=tarfile.REGTYPE, size=0, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mode, ti.mtime = kind, size, mode, MTIME
    ti.uid = ti.gid = 0
    return ti


def _dir(name):
    return _info(name, tarfile.DIRTYPE, mode=0o755)


def _block(seed, size):
    return (hashlib.sha256(seed.encode()).digest() * (size // 32 + 1))[:size]


def _select_a():
    """Relative paths for A (sorted walk, per-directory budgets) and their byte total."""
    paths, total = [], 0
    for top, budget_mib in A_SOURCES:
        budget, used = budget_mib * MiB, 0
        if not os.path.isdir("/" + top):
            continue
        parts = top.split("/")
        for i in range(1, len(parts)):
            p = "/".join(parts[:i])
            if p not in paths:
                paths.append(p)
        for root, dirs, files in os.walk("/" + top):
            dirs.sort()
            paths.append(root[1:])
            # Symlinks to directories are listed among dirs but not walked.
            paths.extend(os.path.join(root, n)[1:] for n in dirs
                         if os.path.islink(os.path.join(root, n)))
            for f in sorted(files):
                p = os.path.join(root, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if s.S_ISREG(st.st_mode):
                    if used + st.st_size > budget:
                        continue
                    used += st.st_size
                elif not s.S_ISLNK(st.st_mode):
                    continue  # no sockets, fifos or devices
                paths.append(p[1:])
            if used >= budget - 64 * 1024:
                break
        total += used
    return paths, total


def _make_a(d):
    paths, total = _select_a()
    lst = os.path.join(d, "A.list")
    with open(lst, "w") as f:
        f.write("\n".join(paths) + "\n")
    common = ["--numeric-owner", "--owner=0", "--group=0", f"--mtime=@{MTIME}"]
    subprocess.run(
        ["tar", "-C", "/", "--no-recursion", *common, "-cf", f"{d}/A.tar.tmp",
         "--verbatim-files-from", "-T", lst],
        check=True,
    )
    if total < A_BYTES:
        # Not enough system files on this machine: pad with generated ones.
        pad = A_BYTES - total
        log(f"A: padding {pad >> 20} MiB of generated files")
        with tarfile.open(f"{d}/A.tar.tmp", "a", format=tarfile.GNU_FORMAT) as t:
            t.addfile(_dir("pad"))
            i = 0
            while pad > 0:
                n = min(pad, 64 * 1024)
                t.addfile(_info(f"pad/f{i:06}", size=n), PseudoRandom(f"pad{i}", n))
                pad -= n
                i += 1
    os.rename(f"{d}/A.tar.tmp", f"{d}/A.tar")


def _make_b(d):
    with tarfile.open(f"{d}/B.tar.tmp", "w", format=tarfile.GNU_FORMAT) as t:
        for i in range(B_DIRS):
            t.addfile(_dir(f"d{i:04}"))
            for j in range(B_FILES):
                data = _block(f"{i}/{j}", B_SIZE)
                t.addfile(_info(f"d{i:04}/f{j:03}", size=len(data)), io.BytesIO(data))
    os.rename(f"{d}/B.tar.tmp", f"{d}/B.tar")


def _make_c(d):
    with tarfile.open(f"{d}/C.tar.tmp", "w", format=tarfile.GNU_FORMAT) as t:
        t.addfile(_dir("big"))
        for i in range(C_FILES):
            t.addfile(_info(f"big/blob{i}", size=C_SIZE), PseudoRandom(f"blob{i}", C_SIZE))
    os.rename(f"{d}/C.tar.tmp", f"{d}/C.tar")


def _make_d(d):
    os.makedirs(f"{d}/D", exist_ok=True)
    for i in range(D_LAYERS):
        with tarfile.open(f"{d}/D/{i:03}.tar", "w", format=tarfile.GNU_FORMAT) as t:
            t.addfile(_dir(f"l{i:03}"))
            data = _block(f"layer{i}", 1024)
            t.addfile(_info(f"l{i:03}/f", size=len(data)), io.BytesIO(data))
    with open(f"{d}/D/done", "w") as f:
        f.write("ok\n")


def _make_e(d):
    with tarfile.open(f"{d}/E-top10.tar", "w", format=tarfile.GNU_FORMAT) as t:
        t.addfile(_dir("d0000"))
        for j in range(5):  # modified
            data = _block(f"changed{j}", B_SIZE)
            t.addfile(_info(f"d0000/f{j:03}", size=len(data)), io.BytesIO(data))
        for j in range(3):  # added
            data = _block(f"added{j}", B_SIZE)
            t.addfile(_info(f"d0000/new{j}", size=len(data)), io.BytesIO(data))
        t.addfile(_dir("d0001"))
        for j in range(2):  # deleted
            t.addfile(_info(f"d0001/.wh.f{j:03}"))
    with tarfile.open(f"{d}/E-top0.tar", "w", format=tarfile.GNU_FORMAT):
        pass


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _make_image(d):
    """docker save layout: manifest.json, <config digest>.json, <layer>/layer.tar."""
    diff_id = _sha256(f"{d}/A.tar")
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "created": "2020-09-13T12:26:40Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "strata bench workload A"}],
    }, sort_keys=True).encode()
    cfg = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{
        "Config": f"{cfg}.json", "RepoTags": [IMAGE_TAG], "Layers": [f"{diff_id}/layer.tar"],
    }]).encode()
    with tarfile.open(f"{d}/A-image.tar.tmp", "w", format=tarfile.GNU_FORMAT) as t:
        t.addfile(_dir(diff_id))
        with open(f"{d}/A.tar", "rb") as f:
            t.addfile(_info(f"{diff_id}/layer.tar", size=os.path.getsize(f"{d}/A.tar")), f)
        t.addfile(_info(f"{cfg}.json", size=len(config)), io.BytesIO(config))
        t.addfile(_info("manifest.json", size=len(manifest)), io.BytesIO(manifest))
    os.rename(f"{d}/A-image.tar.tmp", f"{d}/A-image.tar")


def _count(path):
    """Entry counts of a (plain) tar: entries, regular files, dirs, other, payload bytes."""
    c = {"entries": 0, "files": 0, "dirs": 0, "other": 0, "payload_bytes": 0}
    with tarfile.open(path, "r:") as t:
        for m in t:
            c["entries"] += 1
            if m.isreg():
                c["files"] += 1
                c["payload_bytes"] += m.size
            elif m.isdir():
                c["dirs"] += 1
            else:
                c["other"] += 1
    c["tar_bytes"] = os.path.getsize(path)
    return c


def ensure(d):
    """Generates whatever is missing in `d`; returns the metadata of all workloads."""
    os.makedirs(d, exist_ok=True)
    meta_path = os.path.join(d, "meta.json")
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    if meta.get("version") != VERSION:
        log(f"workload generator version changed; regenerating in {d}")
        for n in ["A.tar", "A.tar.gz", "A.tar.zst", "B.tar", "C.tar", "E-top10.tar",
                  "E-top0.tar", "A-image.tar", "D/done"]:
            if os.path.exists(os.path.join(d, n)):
                os.remove(os.path.join(d, n))
        meta = {"version": VERSION}
    steps = [
        ("A.tar", _make_a),
        ("A.tar.gz", lambda d: subprocess.run(
            f"gzip -6 -c {d}/A.tar > {d}/A.tar.gz.tmp && mv {d}/A.tar.gz.tmp {d}/A.tar.gz",
            shell=True, check=True)),
        ("A.tar.zst", lambda d: subprocess.run(
            ["zstd", "-q", "-3", "-T2", "-f", f"{d}/A.tar", "-o", f"{d}/A.tar.zst"], check=True)),
        ("B.tar", _make_b),
        ("C.tar", _make_c),
        ("D/done", _make_d),
        ("E-top10.tar", _make_e),
        ("A-image.tar", _make_image),
    ]
    for name, make in steps:
        if not os.path.exists(os.path.join(d, name)):
            log(f"generating {name} (once; cached in {d})")
            make(d)
    for w in ["A", "B", "C"]:
        if w not in meta:
            meta[w] = _count(f"{d}/{w}.tar")
    meta["A"]["gzip_bytes"] = os.path.getsize(f"{d}/A.tar.gz")
    meta["A"]["zstd_bytes"] = os.path.getsize(f"{d}/A.tar.zst")
    meta["A"]["sources"] = [f"/{p} (first {b} MiB, sorted)" for p, b in A_SOURCES]
    meta["D"] = {"layers": D_LAYERS, "entries_per_layer": 2}
    meta["E"] = {"base": "B", "top_changes": 10, "entries": meta["B"]["entries"]}
    meta["IMG"] = {"tar_bytes": os.path.getsize(f"{d}/A-image.tar"), "tag": IMAGE_TAG}
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return meta
