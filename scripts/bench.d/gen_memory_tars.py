#!/usr/bin/env python3
"""Writes the layer tars of the apply memory benchmark.

  gen_memory_tars.py files OUT [COUNT]       COUNT empty files (default 1,000,000), 1,000
                                             per directory, directories first
  gen_memory_tars.py dirs OUT [COUNT]        COUNT empty directories (default 1,000,000),
                                             1,000 per parent
  gen_memory_tars.py deep OUT [DEPTH] [LEN]  DEPTH nested directories (default 2,500) with
                                             LEN-byte names (default 250), every level an
                                             entry with a file in it, as `strata diff`
                                             exports such a tree (PAX paths)
  gen_memory_tars.py chain OUT [DEPTH] [LEN] one file DEPTH directories deep (default
                                             100,000, names of LEN bytes, default 1): its
                                             parents are created implicitly

Measure with the release build, e.g.
  strata --root R --driver overlay create L
  /usr/bin/time -v strata --root R --driver overlay --no-sync apply-diff L OUT
and read "Maximum resident set size".
"""

import io
import sys
import tarfile

MTIME = 1_600_000_000


def info(name, kind, size=0):
    t = tarfile.TarInfo(name)
    t.type = kind
    t.size = size
    t.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    t.mtime = MTIME
    return t


def files(tar, count):
    per = 1000
    for d in range((count + per - 1) // per):
        tar.addfile(info(f"d{d:04}", tarfile.DIRTYPE))
        for i in range(min(per, count - d * per)):
            tar.addfile(info(f"d{d:04}/f{i:04}", tarfile.REGTYPE))


def dirs(tar, count):
    per = 1000
    for d in range((count + per - 1) // per):
        tar.addfile(info(f"p{d:04}", tarfile.DIRTYPE))
        for i in range(min(per, count - d * per)):
            tar.addfile(info(f"p{d:04}/d{i:04}", tarfile.DIRTYPE))


def deep(tar, depth, length):
    path = ""
    for level in range(depth):
        name = (f"{level:06}" + "n" * length)[:length]
        path = f"{path}/{name}" if path else name
        tar.addfile(info(path, tarfile.DIRTYPE))
        data = b"x"
        tar.addfile(info(f"{path}/f", tarfile.REGTYPE, len(data)), io.BytesIO(data))


def chain(tar, depth, length):
    path = "/".join(["d" * length] * depth)
    data = b"deep"
    tar.addfile(info(f"{path}/f", tarfile.REGTYPE, len(data)), io.BytesIO(data))


def main(argv):
    if len(argv) < 3 or argv[1] not in ("files", "dirs", "deep", "chain"):
        sys.exit(__doc__)
    shape, out = argv[1], argv[2]
    nums = [int(a) for a in argv[3:]]
    with open(out, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if shape == "files":
            files(tar, *(nums or [1_000_000]))
        elif shape == "dirs":
            dirs(tar, *(nums or [1_000_000]))
        elif shape == "deep":
            deep(tar, *(nums + [2500, 250][len(nums):]))
        else:
            chain(tar, *(nums + [100_000, 1][len(nums):]))


if __name__ == "__main__":
    main(sys.argv)
