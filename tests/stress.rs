//! 32 concurrent clients on one overlay store, on overlapping layers, for a bounded time.
//!
//! Half the clients run `strata` processes, half share one in-process [`Graph`]. Each picks
//! random operations — `create` (image or container layer, on a random parent), `remove`,
//! `get` (then lists the tree it was given), `put` (only of references it holds), `apply-diff`
//! of a small tar and `changes` — over a small namespace so that they collide. The only
//! failures allowed are the refusals the contract promises for such collisions (busy, mounted,
//! has children, not found, already exists); anything else fails the test.
//!
//! Afterwards: every reference the clients still hold is what `ls` reports, the kernel's mount
//! table has exactly one strata mount per mounted layer and none of anything else, every
//! reference can be put (no EBUSY), `cleanup` succeeds and leaves a consistent store (one
//! directory per record, no staging or `-removing` leftovers), and every layer can be removed.
//!
//! `STRATA_STRESS_SECS` (default 20) bounds the run; `STRATA_STRESS_SEED` replays one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::graph::SplitMix64;
use common::tars::{Meta, TarBuilder};
use common::{mounts_under, Store};
use strata::graph::{Graph, GraphConfig};
use strata::{CreateOpts, Driver};

const CLIENTS: usize = 32;
const DYNAMIC: usize = 12;
const BASES: [&str; 2] = ["base", "mid"];
/// References one client holds at most.
const MAX_HELD: u32 = 2;

fn run_for() -> Duration {
    let secs = std::env::var("STRATA_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

fn seed() -> u64 {
    match std::env::var("STRATA_STRESS_SEED") {
        Ok(v) => v.parse().expect("STRATA_STRESS_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

fn small_tar(tag: u64) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("etc", Meta::mode(0o755));
    t.file(
        &format!("etc/f{}", tag % 7),
        format!("{tag}").as_bytes(),
        Meta::mode(0o644),
    );
    t.file("top", format!("top {tag}").as_bytes(), Meta::mode(0o644));
    t.finish()
}

/// The refusals a colliding workload may see, by CLI message or library error.
const ALLOWED_MESSAGES: [&str; 6] = [
    "is busy",
    "is mounted",
    "child layer(s)",
    "does not exist",
    "already exists",
    "could not be prepared",
];

fn allowed_lib(e: &strata::Error) -> bool {
    use strata::Error::*;
    matches!(
        e,
        Busy { .. }
            | Mounted { .. }
            | HasChildren { .. }
            | NotFound(_)
            | ParentNotFound { .. }
            | AlreadyExists(_)
    )
}

/// How a client talks to the store.
enum Client<'a> {
    Cli(&'a Store),
    Lib(Graph),
}

/// An operation's outcome: the path for `get`, nothing else; `Err` holds a refusal that is
/// allowed (`Ok(false)`) or an unexpected error (`Err`).
type Outcome = Result<Option<PathBuf>, (bool, String)>;

impl Client<'_> {
    fn name(&self) -> &'static str {
        match self {
            Client::Cli(_) => "cli",
            Client::Lib(_) => "lib",
        }
    }

    fn cli(s: &Store, args: &[&str], input: Option<&[u8]>) -> Outcome {
        let out = match input {
            Some(i) => s.run_stdin(args, i),
            None => s.run(args),
        };
        if out.code == Some(0) && !out.timed_out {
            return Ok((args[0] == "get").then(|| PathBuf::from(out.trimmed())));
        }
        let allowed = out.code == Some(1)
            && out
                .stderr
                .lines()
                .filter(|l| l.starts_with("strata: "))
                .any(|l| ALLOWED_MESSAGES.iter().any(|m| l.contains(m)));
        Err((allowed, out.describe()))
    }

    fn lib<T>(what: String, r: strata::Result<T>) -> Result<T, (bool, String)> {
        r.map_err(|e| (allowed_lib(&e), format!("{what}: {e} ({e:?})")))
    }

    fn create(&self, id: &str, parent: &str, rw: bool) -> Outcome {
        match self {
            Client::Cli(s) => {
                let mut args = vec!["create", id, "--parent", parent];
                if rw {
                    args.push("--rw");
                }
                Self::cli(s, &args, None)
            }
            Client::Lib(g) => {
                let o = CreateOpts::default();
                let r = if rw {
                    g.create_rw(id, Some(parent), &o)
                } else {
                    g.create(id, Some(parent), &o)
                };
                Self::lib(format!("create {id} on {parent}"), r).map(|()| None)
            }
        }
    }

    fn remove(&self, id: &str) -> Outcome {
        match self {
            Client::Cli(s) => Self::cli(s, &["remove", id], None),
            Client::Lib(g) => Self::lib(format!("remove {id}"), g.remove(id)).map(|()| None),
        }
    }

    fn get(&self, id: &str) -> Outcome {
        match self {
            Client::Cli(s) => Self::cli(s, &["get", id], None),
            Client::Lib(g) => Self::lib(format!("get {id}"), g.get(id, "")).map(Some),
        }
    }

    fn put(&self, id: &str) -> Outcome {
        match self {
            Client::Cli(s) => Self::cli(s, &["put", id], None),
            Client::Lib(g) => Self::lib(format!("put {id}"), g.put(id)).map(|()| None),
        }
    }

    fn apply(&self, id: &str, tar: &[u8]) -> Outcome {
        match self {
            Client::Cli(s) => Self::cli(s, &["apply-diff", id], Some(tar)),
            Client::Lib(g) => Self::lib(
                format!("apply-diff {id}"),
                g.apply_diff(id, None, &mut &tar[..]),
            )
            .map(|_| None),
        }
    }

    fn changes(&self, id: &str) -> Outcome {
        match self {
            Client::Cli(s) => Self::cli(s, &["changes", id], None),
            Client::Lib(g) => Self::lib(format!("changes {id}"), g.changes(id, None)).map(|_| None),
        }
    }
}

/// What one client did.
#[derive(Default)]
struct Tally {
    ops: usize,
    refused: usize,
    unexpected: Vec<String>,
    /// Successful operations by kind.
    done: BTreeMap<&'static str, usize>,
    /// References this client still holds.
    held: BTreeMap<String, u32>,
}

fn client(c: &Client, n: usize, seed: u64, until: Instant) -> Tally {
    let mut rng = SplitMix64::new(seed ^ (n as u64).wrapping_mul(0x9E37_79B9));
    let mut t = Tally::default();
    let dynamic = |rng: &mut SplitMix64| format!("s{:02}", rng.range(0, DYNAMIC as u64));
    while Instant::now() < until {
        let held_total: u32 = t.held.values().sum();
        let pick = rng.range(0, 100);
        let (what, outcome) = if held_total > 0 && (pick < 25 || held_total >= MAX_HELD) {
            let ids: Vec<String> = t.held.keys().cloned().collect();
            let id = ids[rng.range(0, ids.len() as u64) as usize].clone();
            let o = c.put(&id);
            if o.is_ok() {
                let e = t.held.get_mut(&id).unwrap();
                *e -= 1;
                if *e == 0 {
                    t.held.remove(&id);
                }
            } else {
                // A reference we hold must always be releasable.
                let msg = o.as_ref().err().map(|e| e.1.clone()).unwrap_or_default();
                t.unexpected.push(format!(
                    "{} client {n}: put of a held reference: {msg}",
                    c.name()
                ));
                t.ops += 1;
                continue;
            }
            ("put", o)
        } else if pick < 45 {
            let id = dynamic(&mut rng);
            let parent = if rng.range(0, 3) == 0 {
                BASES[rng.range(0, 2) as usize].to_string()
            } else {
                dynamic(&mut rng)
            };
            let rw = rng.range(0, 2) == 0;
            ("create", c.create(&id, &parent, rw))
        } else if pick < 60 {
            let id = dynamic(&mut rng);
            ("remove", c.remove(&id))
        } else if pick < 80 {
            let id = if rng.range(0, 4) == 0 {
                BASES[rng.range(0, 2) as usize].to_string()
            } else {
                dynamic(&mut rng)
            };
            let o = c.get(&id);
            if let Ok(Some(path)) = &o {
                *t.held.entry(id.clone()).or_default() += 1;
                if let Err(e) = std::fs::read_dir(path) {
                    t.unexpected.push(format!(
                        "{} client {n}: get {id} gave {} which cannot be listed: {e}",
                        c.name(),
                        path.display()
                    ));
                }
            }
            ("get", o)
        } else if pick < 92 {
            let id = dynamic(&mut rng);
            let tar = small_tar(rng.next_u64());
            ("apply-diff", c.apply(&id, &tar))
        } else {
            let id = dynamic(&mut rng);
            ("changes", c.changes(&id))
        };
        t.ops += 1;
        match outcome {
            Ok(_) => *t.done.entry(what).or_default() += 1,
            Err((true, _)) => t.refused += 1,
            Err((false, msg)) => t
                .unexpected
                .push(format!("{} client {n}: {what}: {msg}", c.name())),
        }
    }
    t
}

/// Mount points under the store root, with how often each is mounted.
fn strata_mounts(root: &Path) -> BTreeMap<PathBuf, usize> {
    let mut m = BTreeMap::new();
    for e in mounts_under(root) {
        *m.entry(e.mount_point).or_default() += 1;
    }
    m
}

#[test]
fn concurrent_clients_leave_a_consistent_store() {
    let Some(s) = Store::new("overlay") else {
        return;
    };
    s.create("base", None);
    s.apply_diff("base", None, &small_tar(1));
    s.create("mid", Some("base"));
    s.apply_diff("mid", None, &small_tar(2));

    let mut config = GraphConfig::new(s.root());
    config.driver = Some("overlay".into());
    config.durable = false;
    let graph = Graph::open(config).expect("open the store in-process");

    let seed = seed();
    let secs = run_for();
    eprintln!(
        "STRATA_STRESS_SEED={seed} STRATA_STRESS_SECS={}",
        secs.as_secs()
    );
    let until = Instant::now() + secs;
    let tallies: Mutex<Vec<Tally>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for n in 0..CLIENTS {
            let c = if n % 2 == 0 {
                Client::Cli(&s)
            } else {
                Client::Lib(graph.clone())
            };
            let tallies = &tallies;
            scope.spawn(move || {
                let t = client(&c, n, seed, until);
                tallies.lock().unwrap().push(t);
            });
        }
    });
    let tallies = tallies.into_inner().unwrap();
    let ops: usize = tallies.iter().map(|t| t.ops).sum();
    let refused: usize = tallies.iter().map(|t| t.refused).sum();
    eprintln!("{ops} operations by {CLIENTS} clients, {refused} refused as allowed");
    let unexpected: Vec<&String> = tallies.iter().flat_map(|t| &t.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "{} unexpected errors (seed {seed}), the first ones:\n{}",
        unexpected.len(),
        unexpected
            .iter()
            .take(8)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &tallies {
        for (k, n) in &t.done {
            *done.entry(k).or_default() += n;
        }
    }
    eprintln!("succeeded: {done:?}");
    for kind in ["create", "remove", "get", "put", "apply-diff", "changes"] {
        assert!(
            done.get(kind).is_some_and(|n| *n > 0),
            "no {kind} succeeded, so the run proves little: {done:?}"
        );
    }

    // References held by the clients are exactly what the store reports.
    let mut held: BTreeMap<String, u32> = BTreeMap::new();
    for t in &tallies {
        for (id, n) in &t.held {
            *held.entry(id.clone()).or_default() += n;
        }
    }
    let ls = s.ls();
    let refs: BTreeMap<String, u32> = ls
        .iter()
        .filter(|e| e.mounted != "0")
        .map(|e| (e.id.clone(), e.mounted.parse().expect("refs column")))
        .collect();
    assert_eq!(
        refs, held,
        "ls reference counts vs references the clients hold"
    );

    // One mount per mounted layer that needs one, nothing else.
    let mounts = strata_mounts(s.root());
    let has_children: BTreeSet<&str> = ls.iter().filter_map(|e| e.parent.as_deref()).collect();
    for (point, n) in &mounts {
        assert_eq!(*n, 1, "{} is mounted {n} times", point.display());
        let id = point
            .strip_prefix(s.layers_dir())
            .ok()
            .and_then(|p| p.parent())
            .and_then(|p| p.to_str())
            .unwrap_or_else(|| panic!("a mount that is no layer's: {}", point.display()));
        assert_eq!(
            point,
            &s.layers_dir().join(id).join("merged"),
            "stray mount under the store"
        );
        assert!(
            held.contains_key(id),
            "layer {id} is mounted but nobody holds it"
        );
    }
    // A held layer with a parent is an overlay mount; a parentless one is a read-only bind
    // mount if it had children when it was mounted, else its diff/ itself.
    for e in ls.iter().filter(|e| held.contains_key(&e.id)) {
        let p = s.layers_dir().join(&e.id).join("merged");
        if e.parent.is_some() {
            assert!(
                mounts.contains_key(&p),
                "layer {} is held but not mounted",
                e.id
            );
        } else if !has_children.contains(e.id.as_str()) {
            assert!(
                !mounts.contains_key(&p),
                "childless base layer {} is mounted",
                e.id
            );
        }
    }

    // Every held reference can be released (no EBUSY), then nothing is mounted.
    drop(graph);
    for (id, n) in &held {
        for _ in 0..*n {
            s.put(id);
        }
    }
    assert!(
        mounts_under(s.root()).is_empty(),
        "mounts left after every reference was put: {:?}",
        mounts_under(s.root())
    );
    s.ok(["cleanup"]);
    s.assert_clean_layout();
    for e in s.ls() {
        assert!(
            !e.is_mounted(),
            "{} still has references after cleanup",
            e.id
        );
        let merged = s.layers_dir().join(&e.id).join("merged");
        if merged.exists() {
            assert!(
                common::dir_names(&merged).is_empty(),
                "{} is not empty",
                merged.display()
            );
        }
    }

    // Every layer can be removed, leaves first.
    loop {
        let ls = s.ls();
        if ls.is_empty() {
            break;
        }
        let parents: BTreeSet<String> = ls.iter().filter_map(|e| e.parent.clone()).collect();
        for e in ls.iter().filter(|e| !parents.contains(&e.id)) {
            s.remove(&e.id);
        }
    }
    s.ok(["cleanup"]);
    s.assert_clean_layout();
    assert!(s.layer_dir_names().is_empty());
}
