#!/usr/bin/env python3
"""Trees for the change-detection memory measurements, and the measurement itself.

Cases (each made in a container layer `c` on an empty image layer `base`, through the
layer's own mount, in a fresh store):

files  1,000,000 empty files, 1,000 per directory in 1,000 directories.
nest   2,500 nested directories with 250-byte names and one file at the bottom (a full
       path there is 625 KB, so a list of every full path is ~780 MB).

Usage (as root):
    gen_memory_trees.py STRATA WORKDIR --driver overlay|vfs --case files|nest [--keep]
        builds the store in WORKDIR/<driver>-<case> (reused if it is already complete)
    ... --measure STRATA2 [STRATA3 ...]
        then runs `changes c` and `diff c` of every given binary under /usr/bin/time -v
        and prints its peak RSS (output goes to /dev/null)

Every directory is made relative to an open directory descriptor, so the 2,500-level tree
never needs a path longer than one name.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

NAME = "n" * 250


def strata(binary, root, driver, *args):
    cmd = [binary, "--root", root, "--driver", driver, *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def gen_files(top):
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for d in range(1000):
        dname = f"d{d:03}"
        os.mkdir(dname, dir_fd=fd)
        dfd = os.open(dname, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        for f in range(1000):
            os.close(os.open(f"f{f:03}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd))
        os.close(dfd)
    os.close(fd)


def gen_nest(top):
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(2500):
        os.mkdir(NAME, dir_fd=fd)
        nfd = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)


def build(binary, root, driver, case):
    done = os.path.join(root, ".gen-complete")
    if os.path.exists(done):
        return
    if os.path.exists(root):
        subprocess.run(["rm", "-rf", root], check=True)
    strata(binary, root, driver, "create", "base")
    strata(binary, root, driver, "create", "--rw", "c", "--parent", "base")
    mnt = strata(binary, root, driver, "get", "c")
    try:
        (gen_files if case == "files" else gen_nest)(mnt)
    finally:
        strata(binary, root, driver, "put", "c")
    open(done, "w").close()


def peak_rss(binary, root, driver, *args):
    cmd = ["/usr/bin/time", "-v", binary, "--root", root, "--driver", driver, *args]
    with open(os.devnull, "wb") as null:
        r = subprocess.run(cmd, stdout=null, stderr=subprocess.PIPE, text=True)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    t = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", r.stderr)
    kib = int(m.group(1)) if m else -1
    return r.returncode, kib, t.group(1) if t else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("strata")
    ap.add_argument("workdir")
    ap.add_argument("--driver", required=True, choices=["overlay", "vfs"])
    ap.add_argument("--case", required=True, choices=["files", "nest"])
    ap.add_argument("--measure", nargs="*", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the store afterwards")
    a = ap.parse_args()
    root = os.path.join(a.workdir, f"{a.driver}-{a.case}")
    build(a.strata, root, a.driver, a.case)
    for binary in a.measure or []:
        for op in (["changes", "c"], ["diff", "c"]):
            code, kib, wall = peak_rss(binary, root, a.driver, *op)
            print(f"{a.driver} {a.case} {op[0]:8} {binary}: exit {code}, "
                  f"peak RSS {kib / 1024:.1f} MiB, {wall}", flush=True)
    if not a.keep:
        subprocess.run(["rm", "-rf", root], check=True)


if __name__ == "__main__":
    sys.exit(main())
