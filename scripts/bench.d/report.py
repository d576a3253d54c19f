"""Statistics, the speed targets with PASS/MISS, the Markdown report and the chart."""

import statistics

MiB = 1 << 20


def stats(c):
    s = c["samples"]
    if not s:
        return None
    walls = [x["wall"] for x in s]
    med = statistics.median(walls)
    return {
        "n": len(s), "median": med, "min": min(walls), "max": max(walls),
        "cpu": statistics.median(x["cpu"] for x in s),
        "rss_mib": max(x["rss_kib"] for x in s) / 1024,
        "mbps": c["bytes"] / 1e6 / med if c["bytes"] and med > 0 else None,
        "fps": c["entries"] / med if c["entries"] and med > 0 else None,
    }


def _med(cases, cid):
    c = cases.get(cid)
    st = stats(c) if c else None
    return st["median"] if st else None


def ratio(cases, cid):
    c = cases[cid]
    if not c["baseline"]:
        return None
    a, b = _med(cases, cid), _med(cases, c["baseline"])
    return a / b if a is not None and b else None


def targets(b):
    """(target text, measured text, verdict) for every speed target."""
    cs, out = b.cases, []

    def rel(name, cid, base, limit, fmt="{:.2f} ×"):
        a, z = _med(cs, cid), _med(cs, base)
        if a is None or not z:
            out.append((name, f"≤ {limit} ×", "not measured", "n/a"))
            return
        r = a / z
        out.append((name, f"≤ {limit} ×", fmt.format(r) + f" ({a:.2f} s / {z:.2f} s)",
                    "PASS" if r <= limit else "MISS"))

    def absolute(name, value, limit, unit, scale=1.0, detail=""):
        if value is None:
            out.append((name, f"≤ {limit} {unit}", "not measured", "n/a"))
            return
        v = value * scale
        out.append((name, f"≤ {limit} {unit}", f"{v:.3g} {unit}{detail}",
                    "PASS" if v <= limit else "MISS"))

    # tar does not sync, so the ratios compare strata without its syncfs; the durable apply is
    # held to "plain + 1 s" below and compared with tar + sync -f in the table.
    rel("apply A plain (--no-sync) vs tar -xf", "apply A: strata --no-sync", "apply A: tar -xf",
        0.65)
    rel("apply A gzip (--no-sync) vs tar -xzf", "apply A.gz: strata --no-sync",
        "apply A.gz: tar -xzf", 0.5)
    rel("apply A gzip (durable) vs dockerd overlay2 docker load", "apply A.gz: strata",
        "docker load A: dockerd overlay2", 0.25)
    rel("apply B (--no-sync) vs tar -xf", "apply B: strata --no-sync", "apply B: tar -xf", 0.7)
    rel("(info) apply A durable vs tar -xf + sync -f", "apply A: strata",
        "apply A: tar -xf + syncfs", 1.0)
    rel("(info) apply B durable vs tar -xf + sync -f", "apply B: strata",
        "apply B: tar -xf + syncfs", 1.0)
    a_ctr = _med(cs, "ctr import A: containerd overlayfs")
    if a_ctr and _med(cs, "apply A: strata"):
        out.append(("(info) apply A plain vs containerd `ctr images import`", "–",
                    f"{_med(cs, 'apply A: strata') / a_ctr:.2f} ×", "info"))
    rel("(info) docker load: strata plugin vs overlay2", "docker load A: dockerd + strata plugin",
        "docker load A: dockerd overlay2", 1.0)
    rel("apply A zstd vs strata's plain apply", "apply A.zst: strata --no-sync",
        "apply A: strata --no-sync", 1.1)
    dur, nos = _med(cs, "apply A: strata"), _med(cs, "apply A: strata --no-sync")
    absolute("durable apply A minus --no-sync apply A", dur - nos if dur and nos else None, 1,
             "s", detail=f" ({dur:.2f} s vs {nos:.2f} s)" if dur and nos else "")
    sf = getattr(b, "syncfs", None)
    absolute("durable apply: time in its syncfs on A", sf["seconds"] if sf else None, 1, "s",
             detail=f" ({sf['calls']} syncfs call)" if sf else "")
    st = getattr(b, "strace", None)
    absolute("syscalls per entry, apply A", st["per_entry"] if st else None, 4.5, "",
             detail=f" ({st['calls']} calls / {st['entries']} entries; "
             f"{st['per_entry_no_futex']:.2f} without futex)" if st else "")
    a = stats(cs["apply A: strata"]) if "apply A: strata" in cs else None
    gb = b.meta["A"]["tar_bytes"] / 1e9
    absolute("CPU per GB, apply A plain", a["cpu"] / gb if a else None, 1.2, "CPU-s/GB")
    for top in ("top0", "top10"):
        nat, nai = _med(cs, f"changes E {top}: native"), _med(cs, f"changes E {top}: naive")
        label = "no change" if top == "top0" else "10 changes"
        absolute(f"changes on E, {label}", nat, 50, "ms", 1000,
                 f" ({nai / nat:.0f} × faster than naive)" if nat and nai else "")
        if nat and nai:
            out.append((f"changes on E, {label}: speed-up over naive", "≥ 40 ×",
                        f"{nai / nat:.1f} ×", "PASS" if nai / nat >= 40 else "MISS"))
    for w in ("A", "B"):
        absolute(f"remove as seen by the caller (layer {w})", _med(cs, f"remove {w}: strata"),
                 50, "ms", 1000)
    ds, ex = _med(cs, "diff-size B: strata"), _med(cs, "exists B: strata")
    absolute("size from accounting (diff-size B, net of `exists`)",
             ds - ex if ds is not None and ex is not None else None, 1, "ms", 1000,
             f" (raw {ds * 1000:.1f} ms, exists {ex * 1000:.1f} ms)" if ds and ex else "")
    g, e = _med(cs, "get D depth 500"), _med(cs, "exists D")
    absolute("get at depth 500 (net of `exists`)", g - e if g and e else None, 6, "ms", 1000,
             f" (raw {g * 1000:.1f} ms, exists {e * 1000:.1f} ms)" if g and e else "")
    peaks = [(stats(c)["rss_mib"], c["workload"]) for c in cs.values()
             if c["group"] == "apply" and c["contender"].startswith("strata") and c["samples"]]
    if peaks:
        p = max(peaks)
        absolute("peak RSS of strata apply-diff (any workload)", p[0], 64, "MiB",
                 detail=f" (on {p[1]})")
    return out


def _f(x, fmt):
    return fmt.format(x) if x is not None else "–"


def results_table(b):
    rows = ["| group | workload | contender | n | median s | min–max s | ratio vs baseline "
            "| MB/s | files/s | CPU s | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cid, c in b.cases.items():
        st = stats(c)
        if c["skipped"] and not st:
            rows.append(f"| {c['group']} | {c['workload']} | {c['contender']} | 0 | skipped: "
                        f"{c['skipped']} | | | | | | |")
            continue
        if not st:
            continue
        r = ratio(b.cases, cid)
        base = b.cases[c["baseline"]]["contender"] if c["baseline"] else ""
        rows.append(
            f"| {c['group']} | {c['workload']} | {c['contender']} | {st['n']} | "
            f"{st['median']:.3f} | {st['min']:.3f}–{st['max']:.3f} | "
            f"{_f(r, '{:.3g} ×') + (' ' + base if r is not None else '')} | "
            f"{_f(st['mbps'], '{:.0f}')} | {_f(st['fps'], '{:.0f}')} | {st['cpu']:.2f} | "
            f"{st['rss_mib']:.1f} |")
    return "\n".join(rows)


def chart(b, path):
    """Ratios vs baseline (log scale, targets marked) and get/put latency by depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limits = {"apply A: strata --no-sync": 0.65, "apply A.gz: strata --no-sync": 0.5,
              "apply B: strata --no-sync": 0.7,
              "changes E top0: native": 1 / 40, "changes E top10: native": 1 / 40}
    items = [(cid, ratio(b.cases, cid)) for cid in b.cases]
    # Latency rows are absolute targets (their baseline is process start): not charted here;
    # get/put by depth get the second panel.
    items = [(cid, r) for cid, r in items
             if r is not None and b.cases[cid]["group"] not in ("latency", "chain")]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 9), height_ratios=[3, 1.3])
    ys = range(len(items))
    ax1.barh(list(ys), [r for _, r in items],
             color=["tab:green" if r <= limits.get(cid, 1) else "tab:red" for cid, r in items])
    for y, (cid, r) in zip(ys, items):
        if cid in limits:
            ax1.plot([limits[cid]] * 2, [y - 0.4, y + 0.4], color="black", lw=2)
        ax1.text(r, y, f" {r:.2f}", va="center", fontsize=8)
    ax1.set_yticks(list(ys), [f"{cid}\n(vs {b.cases[b.cases[cid]['baseline']]['contender']})"
                              for cid, _ in items], fontsize=7)
    ax1.set_xscale("log")
    ax1.axvline(1, color="gray", ls="--")
    ax1.invert_yaxis()
    ax1.set_xlabel("median time / baseline median (lower is better; black tick = target)")
    ax1.set_title(f"strata vs baselines, one alternating run ({b.stamp})", fontsize=10)
    from cases import DEPTHS

    for op in ("get", "put"):
        pts = [(d, _med(b.cases, f"{op} D depth {d}")) for d in DEPTHS]
        pts = [(d, m * 1000) for d, m in pts if m is not None]
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"strata {op}")
    e = _med(b.cases, "exists D")
    if e:
        ax2.axhline(e * 1000, color="gray", ls="--", label="strata exists (process start)")
    ax2.set_xlabel("chain depth (layers)")
    ax2.set_ylabel("ms (whole process)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def markdown(b, chart_rel):
    m = b.meta
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `scripts/bench{' --quick' if b.iterations == 1 else ''}` on {b.stamp} "
        f"(raw results: `bench-results/{b.stamp_dir}/`, gitignored). Regenerate with "
        "`sudo scripts/bench` (`--quick` for one iteration). Every contender runs in the same "
        f"run, alternating per iteration ({b.iterations} iteration(s)), page cache dropped "
        "before each timed run (latency rows: warm caches, as a caller sees them). The "
        "machine is a virtual machine whose disk and CPU are shared, so absolute times are noisy; the ratios within "
        "one run are what count.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in b.machine.items()]
    lines += [f"- {k}: {v}" for k, v in b.versions.items()]
    lines += [
        "", "## Workloads", "",
        "| workload | what | entries | files | tar bytes | compressed |",
        "|---|---|---|---|---|---|",
        f"| A | {', '.join(m['A']['sources'])} | {m['A']['entries']} | {m['A']['files']} | "
        f"{m['A']['tar_bytes'] / MiB:.0f} MiB | gzip -6 {m['A']['gzip_bytes'] / MiB:.0f} MiB, "
        f"zstd -3 {m['A']['zstd_bytes'] / MiB:.0f} MiB |",
        f"| B | 100,000 × 1 KiB in 1,000 dirs | {m['B']['entries']} | {m['B']['files']} | "
        f"{m['B']['tar_bytes'] / MiB:.0f} MiB | |",
        f"| C | 3 × 300 MB incompressible | {m['C']['entries']} | {m['C']['files']} | "
        f"{m['C']['tar_bytes'] / MiB:.0f} MiB | |",
        f"| D | chains of 1, 128, 500 layers, 2 entries each | {m['D']['layers'] * 2} | "
        f"{m['D']['layers']} | | |",
        "| E | B as base + top layer with 0 / 10 changes (5 C, 3 A, 2 D) | 100,000 + 10 | | | |",
        f"| image | docker-archive of A (one layer), for docker load / ctr import | | | "
        f"{m['IMG']['tar_bytes'] / MiB:.0f} MiB | |",
        "", "## Targets", "",
        "| target | limit | measured | verdict |", "|---|---|---|---|",
    ]
    lines += [f"| {a} | {l} | {v} | **{d}** |" for a, l, v, d in targets(b)]
    lines += ["", "## Results", "", results_table(b), "", f"![chart]({chart_rel})", ""]
    st = getattr(b, "strace", None)
    if st:
        lines += ["## Syscalls of strata apply-diff on A (`strace -f -c`)", "",
                  f"{st['calls']} calls for {st['entries']} entries = "
                  f"{st['per_entry']:.2f} per entry ({st['per_entry_no_futex']:.2f} without the "
                  f"{st['futex']} futex calls of the writer threads' hand-offs). Most frequent: " +
                  ", ".join(f"{n} {c}" for n, c in st["top"]) + ".", ""]
    skipped = [(cid, c["skipped"]) for cid, c in b.cases.items() if c["skipped"]]
    if skipped or b.notes:
        lines += ["## Skipped contenders and notes", ""]
        lines += [f"- {cid}: skipped — {why}" for cid, why in skipped]
        lines += [f"- {n}" for n in b.notes]
        lines.append("")
    return "\n".join(lines)
