//! overlay benchmarks, in-process through the library (run by `scripts/bench-overlay`, which
//! also times the CLI equivalents and prints a table).
//!
//! * `get/mount/<depth>`: `get` of a layer nobody holds (it mounts), at chain depth 1, 128 and
//!   500; `put/unmount/<depth>`: the `put` that releases it; `get/mounted/<depth>`: `get` of a
//!   layer that is already held (a reference count bump).
//! * `changes/<base>+<n>/{native,naive}`: `changes` of a layer with `n` changes on a base of
//!   100,000 files, read from `diff/` (native) or by comparing the mounted trees
//!   (`native_diff=false`).
//!
//! Fixtures are built once and kept under `$STRATA_BENCH_DIR/overlay` (default
//! `/var/tmp/strata-bench/overlay`); a `<name>.ready` file marks a complete one. Needs root.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strata::graph::{Graph, GraphConfig};
use strata::{CreateOpts, Driver};

/// Bump when a fixture's recipe changes, so cached ones are rebuilt.
const FIXTURE_VERSION: &str = "1";
const DEPTHS: [usize; 3] = [1, 128, 500];
const BASE_DIRS: usize = 100;
const FILES_PER_DIR: usize = 1000;

fn bench_dir() -> PathBuf {
    std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/strata-bench"))
        .join("overlay")
}

fn open(root: &Path, native: bool) -> Graph {
    let mut config = GraphConfig::new(root);
    config.driver = Some("overlay".into());
    config.durable = false;
    if !native {
        config.options.push("native_diff=false".into());
    }
    Graph::open(config).unwrap_or_else(|e| panic!("opening {}: {e}", root.display()))
}

/// The store `name` under the bench directory, built by `build` unless a complete one is
/// cached. Leaves nothing mounted.
fn fixture(name: &str, build: impl FnOnce(&Graph)) -> PathBuf {
    let dir = bench_dir();
    let root = dir.join(name);
    let marker = dir.join(format!("{name}.ready"));
    if std::fs::read_to_string(&marker).is_ok_and(|v| v == FIXTURE_VERSION) {
        return root;
    }
    if root.exists() {
        // Unmount whatever an interrupted build left before deleting it.
        open(&root, true)
            .cleanup()
            .expect("cleanup of a stale fixture");
        std::fs::remove_dir_all(&root).expect("deleting a stale fixture");
    }
    std::fs::create_dir_all(&dir).expect("creating the bench directory");
    let started = Instant::now();
    let g = open(&root, true);
    build(&g);
    g.cleanup().expect("cleanup after building a fixture");
    std::fs::write(&marker, FIXTURE_VERSION).expect("writing the fixture marker");
    eprintln!(
        "built fixture {} in {:?}",
        root.display(),
        started.elapsed()
    );
    root
}

fn layer(i: usize) -> String {
    format!("layer-{i:03}")
}

/// A 500-layer chain, each layer adding one file through its own get/put.
fn chain_fixture() -> PathBuf {
    fixture("chain", |g| {
        for i in 0..DEPTHS[2] {
            let parent = (i > 0).then(|| layer(i - 1));
            g.create(&layer(i), parent.as_deref(), &CreateOpts::default())
                .expect("create");
            let root = g.get(&layer(i), "").expect("get");
            std::fs::write(root.join(layer(i)), format!("layer {i}\n")).expect("write");
            g.put(&layer(i)).expect("put");
        }
    })
}

/// `base` with 100,000 files; `top10` on it with 10 changes made through its mount (4
/// modified, 4 added, 2 deleted); `top0` on it with none.
fn changes_fixture() -> PathBuf {
    fixture("changes", |g| {
        let o = CreateOpts::default();
        g.create("base", None, &o).expect("create base");
        let root = g.get("base", "").expect("get base");
        for d in 0..BASE_DIRS {
            let dir = root.join(format!("d{d:03}"));
            std::fs::create_dir(&dir).expect("mkdir");
            for f in 0..FILES_PER_DIR {
                std::fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}\n")).expect("write");
            }
        }
        g.put("base").expect("put base");
        g.create_rw("top0", Some("base"), &o).expect("create top0");
        g.create_rw("top10", Some("base"), &o)
            .expect("create top10");
        let root = g.get("top10", "").expect("get top10");
        for d in [3, 30, 60, 90] {
            std::fs::write(root.join(format!("d{d:03}/f0500")), b"modified\n").expect("modify");
        }
        std::fs::create_dir(root.join("new")).expect("mkdir new");
        for n in 0..2 {
            std::fs::write(root.join(format!("new/n{n}")), b"added\n").expect("add");
            std::fs::write(root.join(format!("d050/added{n}")), b"added\n").expect("add");
        }
        std::fs::remove_file(root.join("d010/f0001")).expect("delete");
        std::fs::remove_file(root.join("d099/f0999")).expect("delete");
        g.put("top10").expect("put top10");
    })
}

/// Times `op` alone, running `before` and `after` around each call untimed.
fn timed(
    n: u64,
    mut before: impl FnMut(),
    mut op: impl FnMut(),
    mut after: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        before();
        let t = Instant::now();
        op();
        total += t.elapsed();
        after();
    }
    total
}

fn get_put(c: &mut Criterion) {
    let root = chain_fixture();
    let g = open(&root, true);
    let mut group = c.benchmark_group("get");
    for depth in DEPTHS {
        let id = layer(depth - 1);
        let get = || {
            std::hint::black_box(g.get(&id, "").expect("get"));
        };
        let put = || g.put(&id).expect("put");
        group.bench_function(BenchmarkId::new("mount", depth), |b| {
            b.iter_custom(|n| timed(n, || {}, get, put))
        });
        group.bench_function(BenchmarkId::new("unmount", depth), |b| {
            b.iter_custom(|n| timed(n, get, put, || {}))
        });
        get();
        group.bench_function(BenchmarkId::new("mounted", depth), |b| {
            b.iter_custom(|n| timed(n, || {}, get, put))
        });
        put();
    }
    group.finish();
    g.cleanup().expect("cleanup");
}

fn changes(c: &mut Criterion) {
    let root = changes_fixture();
    let mut group = c.benchmark_group("changes");
    group.sample_size(10);
    for native in [true, false] {
        let g = open(&root, native);
        let how = if native { "native" } else { "naive" };
        let ten = g.changes("top10", None).expect("changes top10");
        assert!(
            ten.len() >= 10 && ten.len() < 20,
            "top10 has {} changes: {ten:?}",
            ten.len()
        );
        assert!(g.changes("top0", None).expect("changes top0").is_empty());
        for (name, id) in [("100k+10", "top10"), ("100k+0", "top0")] {
            group.bench_function(BenchmarkId::new(name, how), |b| {
                b.iter(|| std::hint::black_box(g.changes(id, None).expect("changes")))
            });
        }
        g.cleanup().expect("cleanup");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = get_put, changes
}
criterion_main!(benches);
