"""The strata-vs-CLI contenders: apply vs tar -x, diff vs tar -c, changes native vs naive,
get/put latency by chain depth, remove and size latency, syscall counts and syncfs cost."""

import os
import re
import shutil
import time

import procs
from procs import Failed, drop_caches


def _rm(path):
    procs.unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


class Bench:
    """Shared state: paths, the strata binary, results (case id -> Case)."""

    def __init__(self, strata, wdir, scratch, iterations, meta):
        self.S, self.W, self.scratch = strata, wdir, scratch
        self.iterations, self.meta = iterations, meta
        self.cases = {}
        self.notes = []
        self.registry = procs.Registry(os.path.join(scratch, "pids"))

    def case(self, cid, group, workload, contender, baseline=None, work_bytes=0, entries=0,
             target=None):
        if cid not in self.cases:
            self.cases[cid] = {
                "id": cid, "group": group, "workload": workload, "contender": contender,
                "baseline": baseline, "bytes": work_bytes, "entries": entries,
                "samples": [], "skipped": None, "target": target,
            }
        return self.cases[cid]

    def record(self, cid, res):
        self.cases[cid]["samples"].append(
            {"wall": res.wall, "cpu": res.cpu, "rss_kib": res.rss_kib, **res.extra})

    def skip(self, cid, reason):
        c = self.cases[cid]
        if c["skipped"] is None:
            c["skipped"] = reason
            print(f"bench: SKIPPED {cid}: {reason}", flush=True)

    def strata(self, root, *args, opts=()):
        return [self.S, *opts, "--root", root, "--driver", "overlay", *args]

    def tmp(self, name):
        d = os.path.join(self.scratch, name)
        _rm(d)
        os.makedirs(d)
        return d

    def fresh_fs(self, name, size="12G"):
        """A new ext4 filesystem (sparse image on a loop device) mounted at scratch/name, so
        every timed extraction starts from the same state: on a long-used filesystem, ext4's
        inode allocator spends most of a file creation skipping recently deleted inodes
        (`recently_deleted`), which measures the machine's history, not the contender."""
        d = os.path.join(self.scratch, name)
        img = d + ".img"
        _rm(d)
        if os.path.exists(img):
            os.unlink(img)
        os.makedirs(d)
        procs.quiet(["truncate", "-s", size, img])
        procs.quiet(["mkfs.ext4", "-q", "-F", "-E",
                     "lazy_itable_init=0,lazy_journal_init=0,nodiscard", img])
        procs.quiet(["mount", "-o", "loop", img, d])
        return d

    def drop_fs(self, d):
        _rm(d)
        if os.path.exists(d + ".img"):
            os.unlink(d + ".img")


def _file(b, w):
    return os.path.join(b.W, {"A": "A.tar", "A.gz": "A.tar.gz", "A.zst": "A.tar.zst",
                              "B": "B.tar", "C": "C.tar"}[w])


def apply_group(b, workloads):
    """strata apply-diff vs tar -x of each workload, alternating which goes first; after each
    strata apply, the caller-seen latency of diff-size, exists and remove (warm caches)."""
    tar_flag = {"A": "-xf", "A.gz": "-xzf", "A.zst": "--zstd -xf", "B": "-xf", "C": "-xf"}
    for w in workloads:
        m = b.meta[w.split(".")[0]]
        kw = dict(work_bytes=m["tar_bytes"], entries=m["entries"])
        tar_id = f"apply {w}: tar {tar_flag[w]}"
        b.case(tar_id, "apply", w, f"tar {tar_flag[w]}", **kw)
        b.case(tar_id + " + syncfs", "apply", w, f"tar {tar_flag[w]} + sync -f", **kw)
        b.case(f"apply {w}: strata", "apply", w, "strata apply-diff (durable: one syncfs)",
               baseline=tar_id + " + syncfs", **kw)
        b.case(f"apply {w}: strata --no-sync", "apply", w, "strata apply-diff --no-sync",
               baseline=tar_id, **kw)
        if w in ("A", "B"):
            b.case(f"remove {w}: rm -rf", "latency", w, "rm -rf of tar's tree (warm)")
            for op in ("exists", "diff-size", "remove"):
                b.case(f"{op} {w}: strata", "latency", w,
                       "strata remove --background (warm)" if op == "remove" else
                       f"strata {op} (warm)",
                       baseline=f"remove {w}: rm -rf" if op == "remove" else
                       None if op == "exists" else f"exists {w}: strata")
    for i in range(b.iterations):
        for w in workloads:
            order = ["tar", "strata"] if i % 2 == 0 else ["strata", "tar"]
            order.insert(1, "nosync")
            for who in order:
                try:
                    if who == "tar":
                        _apply_tar(b, w, tar_flag[w])
                    elif who == "nosync":
                        _apply_strata(b, w, nosync=True)
                    else:
                        _apply_strata(b, w)
                except Failed as e:
                    b.skip(f"apply {w}: strata" if who == "strata" else
                           f"apply {w}: tar {tar_flag[w]}", f"failed: {e}")


def _apply_tar(b, w, flag):
    fs = b.fresh_fs("tar-x")
    out = os.path.join(fs, "out")
    os.makedirs(out)
    drop_caches()
    res, _ = procs.run(["tar", "-C", out, *flag.split(), _file(b, w)], b.scratch)
    b.record(f"apply {w}: tar {flag}", res)
    s, _ = procs.run(["sync", "-f", out], b.scratch)
    synced = procs.Result(res.wall + s.wall, res.cpu + s.cpu, res.rss_kib)
    b.record(f"apply {w}: tar {flag} + syncfs", synced)
    if w in ("A", "B"):
        res, _ = procs.run(["rm", "-rf", out], b.scratch)
        b.record(f"remove {w}: rm -rf", res)
    b.drop_fs(fs)


def _apply_strata(b, w, nosync=False):
    fs = b.fresh_fs("strata-x")
    root = os.path.join(fs, "root")
    procs.quiet(b.strata(root, "create", "L"))
    drop_caches()
    opts = ("--no-sync",) if nosync else ()
    res, _ = procs.run(b.strata(root, "apply-diff", "L", _file(b, w), opts=opts), b.scratch)
    b.record(f"apply {w}: strata --no-sync" if nosync else f"apply {w}: strata", res)
    if w in ("A", "B") and not nosync:
        for op in ("exists", "diff-size", "remove"):
            # remove --background: the caller waits for the layer to leave the store, and a
            # detached process deletes the files (as the Docker plugin does on a thread).
            args = ("remove", "--background", "L") if op == "remove" else (op, "L")
            r, _ = procs.run(b.strata(root, *args), b.scratch)
            b.record(f"{op} {w}: strata", r)
        staging = os.path.join(root, "staging")
        for _ in range(6000):  # untimed: let the deleter finish before the next run
            if not os.listdir(staging):
                break
            time.sleep(0.05)
    b.drop_fs(fs)


def diff_group(b, workloads):
    """strata diff (tar-split of an applied layer) vs tar -c of the same tree, to a file."""
    prepared = {}
    for w in workloads:
        m = b.meta[w]
        kw = dict(work_bytes=m["tar_bytes"], entries=m["entries"])
        b.case(f"diff {w}: tar -c", "diff", w, "tar -cf", **kw)
        b.case(f"diff {w}: strata", "diff", w, "strata diff", baseline=f"diff {w}: tar -c", **kw)
        try:
            tree = b.tmp(f"diff-tree-{w}")
            procs.quiet(["tar", "-C", tree, "-xf", _file(b, w)])
            root = b.tmp(f"diff-store-{w}")
            procs.quiet(b.strata(root, "create", "L"))
            procs.quiet(b.strata(root, "apply-diff", "L", _file(b, w)))
            prepared[w] = (tree, root)
        except Failed as e:
            b.skip(f"diff {w}: strata", f"setup failed: {e}")
    out = os.path.join(b.scratch, "diff-out.tar")
    for i in range(b.iterations):
        for w, (tree, root) in prepared.items():
            order = ["tar", "strata"] if i % 2 == 0 else ["strata", "tar"]
            for who in order:
                drop_caches()
                try:
                    if who == "tar":
                        res, _ = procs.run(["tar", "-C", tree, "-cf", out, "."], b.scratch)
                        b.record(f"diff {w}: tar -c", res)
                    else:
                        res, _ = procs.run(b.strata(root, "diff", "L", "-o", out), b.scratch)
                        b.record(f"diff {w}: strata", res)
                except Failed as e:
                    b.skip(f"diff {w}: {'tar -c' if who == 'tar' else 'strata'}", str(e))
                if os.path.exists(out):
                    os.remove(out)
    for tree, root in prepared.values():
        _rm(tree)
        _rm(root)


def changes_group(b):
    """strata changes on E (100,000-file base, top with 0 and 10 changes): native vs naive."""
    n = b.meta["E"]["entries"]
    for top in ("top0", "top10"):
        b.case(f"changes E {top}: naive", "changes", f"E {top}", "strata changes native_diff=false",
               entries=n)
        b.case(f"changes E {top}: native", "changes", f"E {top}", "strata changes (native)",
               baseline=f"changes E {top}: naive", entries=n)
        b.case(f"changes E {top}: native, warm", "changes", f"E {top}",
               "strata changes (native, warm caches)", baseline=f"changes E {top}: naive",
               entries=n)
    root = b.tmp("changes-store")
    try:
        procs.quiet(b.strata(root, "create", "base"))
        procs.quiet(b.strata(root, "apply-diff", "base", _file(b, "B")))
        for top in ("top0", "top10"):
            procs.quiet(b.strata(root, "create", top, "--parent", "base"))
            procs.quiet(b.strata(root, "apply-diff", top, os.path.join(b.W, f"E-{top}.tar")))
            native = procs.quiet(b.strata(root, "changes", top))
            naive = procs.quiet(b.strata(root, "changes", top, opts=("-o", "native_diff=false")))
            if native != naive:
                b.notes.append(f"changes E {top}: native and naive outputs differ "
                               f"({len(native.splitlines())} vs {len(naive.splitlines())} lines)")
            b.cases[f"changes E {top}: native"]["lines"] = len(native.splitlines())
    except Failed as e:
        for top in ("top0", "top10"):
            b.skip(f"changes E {top}: native", f"setup failed: {e}")
            b.skip(f"changes E {top}: naive", f"setup failed: {e}")
        _rm(root)
        return
    for i in range(b.iterations):
        for top in ("top0", "top10"):
            order = ["native", "naive"] if i % 2 == 0 else ["naive", "native"]
            for who in order:
                opts = ("-o", "native_diff=false") if who == "naive" else ()
                drop_caches()
                try:
                    res, _ = procs.run(b.strata(root, "changes", top, opts=opts), b.scratch)
                    b.record(f"changes E {top}: {who}", res)
                    if who == "native":
                        res, _ = procs.run(b.strata(root, "changes", top), b.scratch)
                        b.record(f"changes E {top}: native, warm", res)
                except Failed as e:
                    b.skip(f"changes E {top}: {who}", str(e))
    procs.quiet(b.strata(root, "cleanup"), check=False)
    _rm(root)


DEPTHS = (1, 128, 500)
REPS = 5


def chain_group(b):
    """get/put latency by chain depth on D (warm caches; REPS runs per iteration)."""
    for d in DEPTHS:
        for op in ("get", "put"):
            b.case(f"{op} D depth {d}", "chain", f"D depth {d}", f"strata {op} (warm)",
                   baseline="exists D")
    b.case("exists D", "chain", "D", "strata exists (process start + store open)")
    root = b.tmp("chain-store")
    try:
        parent = None
        for i in range(max(DEPTHS)):
            lid = f"c{i:03}"
            procs.quiet(b.strata(root, "create", lid, *(["--parent", parent] if parent else [])))
            procs.quiet(b.strata(root, "apply-diff", lid, os.path.join(b.W, "D", f"{i:03}.tar")))
            parent = lid
    except Failed as e:
        for d in DEPTHS:
            b.skip(f"get D depth {d}", f"building the chain failed: {e}")
            b.skip(f"put D depth {d}", f"building the chain failed: {e}")
        _rm(root)
        return
    for _ in range(b.iterations):
        for _ in range(REPS):
            res, _ = procs.run(b.strata(root, "exists", "c000"), b.scratch)
            b.record("exists D", res)
            for d in DEPTHS:
                lid = f"c{d - 1:03}"
                try:
                    res, _ = procs.run(b.strata(root, "get", lid), b.scratch)
                    b.record(f"get D depth {d}", res)
                    res, _ = procs.run(b.strata(root, "put", lid), b.scratch)
                    b.record(f"put D depth {d}", res)
                except Failed as e:
                    b.skip(f"get D depth {d}", str(e))
                    procs.quiet(b.strata(root, "put", lid), check=False)
    procs.quiet(b.strata(root, "cleanup"), check=False)
    _rm(root)


def strace_group(b):
    """One untimed strace -f -c run of strata apply-diff on A: syscalls per entry; and one
    run tracing only syncfs (seccomp-bpf, so the rest runs at full speed) for its cost."""
    entries = b.meta["A"]["entries"]
    out = os.path.join(b.scratch, "strace.out")
    root = b.tmp("strace-store")
    try:
        procs.quiet(b.strata(root, "create", "L"))
        drop_caches()
        procs.quiet(["strace", "-f", "-c", "-o", out, *b.strata(root, "apply-diff", "L",
                                                                 _file(b, "A"))])
        text = open(out).read()
        tot = [ln for ln in text.splitlines() if ln.strip().endswith("total")]
        calls = int(tot[-1].split()[3]) if tot else None
        per = {}
        for ln in text.splitlines():
            f = ln.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                per[f[-1]] = int(f[3])
        futex = per.get("futex", 0)
        b.strace = {"calls": calls, "entries": entries, "per_entry": calls / entries,
                    "futex": futex, "per_entry_no_futex": (calls - futex) / entries,
                    "top": sorted(per.items(), key=lambda kv: -kv[1])[:8], "raw": text}
        _rm(root)
        root = b.tmp("strace-store")
        procs.quiet(b.strata(root, "create", "L"))
        drop_caches()
        procs.quiet(["strace", "-f", "--seccomp-bpf", "-e", "trace=syncfs", "-T", "-o", out,
                     *b.strata(root, "apply-diff", "L", _file(b, "A"))])
        # "syncfs(6) = 0 <0.12>", or split into "syncfs(6 <unfinished ...>" and
        # "<... syncfs resumed>) = 0 <0.12>" when another thread's call comes between.
        times = [float(x) for x in re.findall(r"(?m)^\d+ +(?:syncfs\([^<]*|<\.\.\. syncfs "
                                              r"resumed>.*)<([0-9.]+)>$", open(out).read())]
        b.syncfs = {"calls": len(times), "seconds": sum(times)}
    except (Failed, OSError, ValueError, IndexError) as e:
        b.notes.append(f"strace runs failed: {e}")
    _rm(root)
