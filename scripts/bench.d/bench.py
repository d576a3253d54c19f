"""Whole-process benchmark of strata against GNU tar, dockerd 20.10 and containerd 1.6.
Run through scripts/bench, which installs the tools and builds strata first."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cases  # noqa: E402
import daemons  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402

GROUPS = ["apply", "diff", "changes", "chain", "strace", "docker", "containerd"]


def _sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine(wdir):
    cpu = _sh("lscpu | sed -n 's/^Model name:[ \\t]*//p' | head -1")
    mem = int(_sh("awk '/MemTotal/ {print $2}' /proc/meminfo") or 0) // 1024 // 1024
    fs = _sh(f"findmnt -n -o FSTYPE,SOURCE,OPTIONS -T {wdir}")
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores (a virtual machine)",
        "RAM": f"{mem} GiB",
        "kernel": _sh("uname -sr"),
        "OS": _sh(". /etc/os-release && echo $PRETTY_NAME"),
        "filesystem (workload files)": f"{fs} ({wdir})",
        "filesystem (timed extractions)": "a fresh ext4 (12G sparse image on a loop device) per run",
    }


def versions(strata):
    return {
        "strata": _sh(f"git -C {os.path.dirname(strata)} log -1 --format='%h %s'") +
        " (release build)",
        "tar": _sh("tar --version | head -1"),
        "gzip": _sh("gzip --version | head -1"),
        "zstd": _sh("zstd --version"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one iteration instead of three")
    ap.add_argument("-n", "--iterations", type=int, default=3)
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(GROUPS)}")
    ap.add_argument("--strata", required=True, help="the release strata binary")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--scratch", required=True, help="work dir for this run (removed after)")
    ap.add_argument("--report-only", metavar="RESULTS_DIR",
                    help="measure nothing: rewrite the report and chart of an earlier run")
    ap.add_argument("--no-markdown", action="store_true",
                    help="do not regenerate BENCHMARKS.md and the committed chart")
    args = ap.parse_args()
    groups = args.only.split(",") if args.only else GROUPS
    if unknown := set(groups) - set(GROUPS):
        ap.error(f"unknown groups {unknown}")
    wdir = os.environ.get("STRATA_BENCH_DIR", "/var/tmp/strata-bench")
    if args.report_only:
        return write_reports(args, reload(args), os.path.abspath(args.report_only))
    meta = workloads.ensure(wdir)
    iters = 1 if args.quick else args.iterations

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    b = cases.Bench(args.strata, wdir, args.scratch, iters, meta)
    b.stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    b.stamp_dir = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    b.machine, b.versions = machine(wdir), versions(args.strata)
    try:
        for g in groups:
            print(f"bench: == {g} ({iters} iteration(s)) ==", flush=True)
            t0 = time.monotonic()
            if g == "apply":
                cases.apply_group(b, ["A", "A.gz", "A.zst", "B", "C"])
            elif g == "diff":
                cases.diff_group(b, ["A", "B"])
            elif g == "changes":
                cases.changes_group(b)
            elif g == "chain":
                cases.chain_group(b)
            elif g == "strace":
                cases.strace_group(b)
            elif g == "docker":
                daemons.docker_group(b)
            elif g == "containerd":
                daemons.containerd_group(b)
            print(f"bench: {g} took {time.monotonic() - t0:.0f} s", flush=True)
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e}); stopping what was started", flush=True)
        b.registry.stop_all()
        procs.unmount_under(args.scratch)
        raise SystemExit(130)
    finally:
        b.registry.stop_all()
        procs.unmount_under(args.scratch)
    write_reports(args, b, os.path.join(args.repo, "bench-results", b.stamp_dir))


def reload(args):
    """A Bench filled from an earlier run's results.json."""
    with open(os.path.join(args.report_only, "results.json")) as f:
        r = json.load(f)
    b = cases.Bench(args.strata, None, args.scratch, 0, r["meta"])
    b.cases, b.machine, b.versions, b.notes = r["cases"], r["machine"], r["versions"], r["notes"]
    b.stamp_dir = os.path.basename(os.path.abspath(args.report_only))
    b.stamp = r.get("stamp") or time.strftime(
        "%Y-%m-%d %H:%M UTC", time.strptime(b.stamp_dir, "%Y%m%dT%H%M%SZ"))
    b.iterations = r.get("iterations") or max(
        (len(c["samples"]) for c in b.cases.values() if c["group"] == "apply"), default=1)
    for k in ("strace", "syncfs"):
        if r.get(k):
            setattr(b, k, r[k])
    return b


def write_reports(args, b, out):
    """results.json, chart and BENCHMARKS.md in `out`; BENCHMARKS.md and the chart in the repo
    too unless --no-markdown."""
    os.makedirs(out, exist_ok=True)
    chart_ok = True
    try:
        report.chart(b, os.path.join(out, "chart.png"))
    except ImportError as e:
        chart_ok = False
        b.notes.append(f"no chart: {e} (install python3-matplotlib)")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"cases": b.cases, "meta": b.meta, "machine": b.machine, "stamp": b.stamp,
                   "iterations": b.iterations,
                   "versions": b.versions, "strace": getattr(b, "strace", None),
                   "syncfs": getattr(b, "syncfs", None), "notes": b.notes}, f, indent=1)
    md = report.markdown(b, "chart.png")
    with open(os.path.join(out, "BENCHMARKS.md"), "w") as f:
        f.write(md)
    if not args.no_markdown:
        chart_rel = "docs/bench/chart.png"
        if chart_ok:
            os.makedirs(os.path.join(args.repo, "docs/bench"), exist_ok=True)
            shutil.copy(os.path.join(out, "chart.png"), os.path.join(args.repo, chart_rel))
        text = report.markdown(b, chart_rel)
        # Hand-written profile findings are kept in their own file and appended.
        notes = os.path.join(args.repo, "docs/bench/notes.md")
        if os.path.exists(notes):
            with open(notes) as f:
                text += "\n" + f.read()
        with open(os.path.join(args.repo, "BENCHMARKS.md"), "w") as f:
            f.write(text)
    print("\n".join(l for l in md.splitlines() if l.startswith("|")))
    print(f"bench: results in {out}")


if __name__ == "__main__":
    main()
