//! Argument parsing and dispatch for the `strata` binary. Library errors are reported as one
//! line on stderr starting with `strata: `, exit status 1; usage errors exit with status 2.

mod output;
#[cfg(feature = "docker-plugin")]
mod serve;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use strata::graph::{ApplyParams, Graph, GraphConfig};
use strata::{CreateOpts, Driver};

/// A container layer store for Linux.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    /// Store root directory [default: /var/lib/strata; for `serve docker-plugin`: the Home
    /// that dockerd sends at Init].
    #[arg(long, env = "STRATA_ROOT", global = true)]
    root: Option<PathBuf>,
    /// Storage backend; a store remembers the one it was created with.
    /// [default: overlay where supported, else vfs]
    #[arg(long, env = "STRATA_DRIVER", value_parser = ["block", "overlay", "vfs"], global = true)]
    driver: Option<String>,
    /// Driver option, e.g. size=10G (repeatable).
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    opt: Vec<String>,
    /// Print status, metadata, ls and changes as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Apply layers in a confined helper process (read-only mount namespace except the
    /// layer being written).
    #[arg(long, env = "STRATA_CONFINED_APPLY", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    confined_apply: bool,
    /// Skip the one `syncfs` before an applied layer is committed (faster; a power cut may
    /// then leave a committed layer with empty files — for scratch stores and benchmarks).
    #[arg(long, env = "STRATA_NO_SYNC", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    no_sync: bool,
    /// Writer threads an apply uses for small files (0: write them on the applying thread).
    #[arg(
        long,
        env = "STRATA_WRITERS",
        global = true,
        default_value_t = 2,
        hide_short_help = true
    )]
    writers: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a layer (read-only image layer unless --rw).
    Create {
        /// New layer id.
        id: String,
        /// Parent layer.
        #[arg(long)]
        parent: Option<String>,
        /// Make a read-write (container) layer.
        #[arg(long)]
        rw: bool,
        /// Storage option for this layer, e.g. size=10G (repeatable).
        #[arg(short = 's', long = "storage-opt", value_name = "KEY=VALUE")]
        storage_opt: Vec<String>,
    },
    /// Remove a layer (refused while it has children or is mounted).
    Remove {
        /// Layer id.
        id: String,
        /// Return once the layer is gone from the store; a detached process deletes its
        /// files (space is freed shortly after).
        #[arg(long)]
        background: bool,
    },
    /// Mount a layer and print its path; valid until the matching put.
    Get {
        /// Layer id.
        id: String,
        /// SELinux mount label.
        #[arg(long)]
        mount_label: Option<String>,
    },
    /// Release one get reference; the last one unmounts.
    Put {
        /// Layer id.
        id: String,
    },
    /// Print true or false.
    Exists {
        /// Layer id.
        id: String,
    },
    /// Print "Key: Value" lines describing the driver.
    Status,
    /// Print a layer's backend metadata as a JSON object.
    Metadata {
        /// Layer id.
        id: String,
    },
    /// Release every mount and sweep leftovers of interrupted operations.
    Cleanup,
    /// Apply a layer tar (plain, gzip or zstd) from FILE or stdin; print the applied size.
    ApplyDiff {
        /// Layer id.
        id: String,
        /// Expected parent of the layer.
        #[arg(long)]
        parent: Option<String>,
        /// Digest of the uncompressed stream (the diffID), e.g. sha256:<hex>; checked
        /// before the layer is committed.
        #[arg(long)]
        digest: Option<String>,
        /// Largest uncompressed layer accepted, e.g. 20G [default: 1T].
        #[arg(long, value_name = "SIZE")]
        max_bytes: Option<String>,
        /// Most entries accepted [default: 10000000].
        #[arg(long, value_name = "N")]
        max_entries: Option<u64>,
        /// Tar file (default: stdin).
        file: Option<PathBuf>,
    },
    /// Write a tar of the layer's changes to stdout or FILE.
    Diff {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the layer's parent.
        #[arg(long)]
        parent: Option<String>,
        /// Output file.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the layer's changes ("A|C|D /path"), sorted.
    ///
    /// Paths are escaped, in text and --json output alike, so that no file name can forge a
    /// line or lose bytes: a backslash is printed as \\, newline, tab and carriage return as
    /// \n, \t and \r, and other control characters, invalid UTF-8 and invisible or
    /// text-reordering characters as \xNN per byte.
    Changes {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the layer's parent.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Print the bytes of added and modified files.
    DiffSize {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the layer's parent.
        #[arg(long)]
        parent: Option<String>,
    },
    /// List layers: id, parent, kind, size, mounted.
    Ls,
    /// Report the state of the store without changing anything: marker, database, layer
    /// directories, leftovers, quarantine, mounts. Exit 0 when clean, 1 with the findings.
    Check,
    /// Grow a writable layer to SIZE (block backend; offline: not mounted, no children).
    Resize {
        /// Layer id.
        id: String,
        /// New size, e.g. 30G; smaller than the current size is refused.
        size: String,
    },
    /// Serve the store to another program over a unix socket.
    #[cfg(feature = "docker-plugin")]
    #[command(subcommand)]
    Serve(serve::ServeCommand),
}

/// `strata check`: prints the report (text or JSON); an error (exit 1) when it has findings.
fn check(root: &std::path::Path, json: bool) -> Result<()> {
    let report = strata::store::check::check(root)?;
    let out = &mut io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(out, "root: {}", report.root.display())?;
        writeln!(
            out,
            "marker: {}",
            if report.marker { "present" } else { "missing" }
        )?;
        writeln!(
            out,
            "database: {}",
            if report.database_ok {
                "readable"
            } else {
                "unreadable"
            }
        )?;
        if let Some(d) = &report.driver {
            writeln!(out, "driver: {d}")?;
        }
        writeln!(out, "layers: {}", report.layers)?;
        for f in &report.findings {
            writeln!(out, "{}: {}", f.kind, f.detail)?;
        }
    }
    out.flush()?;
    if !report.is_clean() {
        bail!(
            "store {} has {} finding(s); see the report above",
            report.root.display(),
            report.findings.len()
        );
    }
    Ok(())
}

/// Treats an empty `--parent ""` like an absent one, as the plugin protocol does.
fn parent(p: &Option<String>) -> Option<&str> {
    p.as_deref().filter(|s| !s.is_empty())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Runs the CLI; returns the exit status.
pub fn main() -> i32 {
    init_logging();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    #[cfg(feature = "docker-plugin")]
    if let Command::Serve(cmd) = &cli.command {
        if let Err(msg) = serve::check_globals(cmd, cli.json, cli.confined_apply) {
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, msg)
                .exit();
        }
    }
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            let mut msg = format!("{e}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("strata: {msg}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    #[cfg(feature = "docker-plugin")]
    if let Command::Serve(cmd) = &cli.command {
        return serve::run(
            cmd,
            serve::Globals {
                root: cli.root.clone(),
                driver: cli.driver.clone(),
                options: cli.opt.clone(),
                no_sync: cli.no_sync,
                writers: cli.writers,
            },
        );
    }
    let root = cli
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/strata"));
    if let Command::Check = &cli.command {
        return check(&root, cli.json);
    }
    let mut config = GraphConfig::new(&root);
    // Commands that only read open the store without writing, locking or syncing anything.
    config.read_only = matches!(
        cli.command,
        Command::Exists { .. } | Command::Ls | Command::Status | Command::Metadata { .. }
    );
    config.driver = cli.driver.clone();
    config.options = cli.opt.clone();
    config.durable = !cli.no_sync;
    config.writers = cli.writers;
    if let Command::Remove {
        background: true, ..
    } = cli.command
    {
        config.remove_helper = Some(std::env::current_exe().context("locating the strata binary")?);
    }
    if cli.confined_apply {
        config.apply_helper = Some(std::env::current_exe().context("locating the strata binary")?);
    }
    let graph = Graph::open(config)?;
    let out = &mut io::stdout().lock();
    match &cli.command {
        Command::Create {
            id,
            parent: p,
            rw,
            storage_opt,
        } => {
            let mut opts = CreateOpts::default();
            for kv in storage_opt {
                let (k, v) = strata::options::split_kv(kv)?;
                opts.storage_opt.insert(k, v);
            }
            if *rw {
                graph.create_rw(id, parent(p), &opts)?
            } else {
                graph.create(id, parent(p), &opts)?
            }
        }
        Command::Remove { id, .. } => graph.remove(id)?,
        Command::Get { id, mount_label } => {
            let path = graph.get(id, mount_label.as_deref().unwrap_or(""))?;
            output::path_line(out, &path)?;
        }
        Command::Put { id } => graph.put(id)?,
        Command::Exists { id } => writeln!(out, "{}", graph.exists(id)?)?,
        Command::Status => output::status(out, &graph.status()?, cli.json)?,
        Command::Metadata { id } => output::metadata(out, &graph.metadata(id)?)?,
        Command::Cleanup => graph.cleanup()?,
        Command::ApplyDiff {
            id,
            parent: p,
            digest,
            max_bytes,
            max_entries,
            file,
        } => {
            let mut limits = strata::archive::tarstream::Limits::default();
            if let Some(b) = max_bytes {
                limits.max_bytes = strata::units::ram_in_bytes(b)?;
            }
            if let Some(n) = max_entries {
                limits.max_entries = *n;
            }
            let params = ApplyParams {
                limits: Some(limits),
                digest: digest.clone(),
            };
            let size = match file {
                Some(f) => {
                    let mut fh = std::fs::File::open(f)
                        .with_context(|| format!("opening {}", f.display()))?;
                    graph.apply_diff_with(id, parent(p), &mut fh, &params)?
                }
                None => graph.apply_diff_with(id, parent(p), &mut io::stdin(), &params)?,
            };
            writeln!(out, "{size}")?;
        }
        Command::Diff {
            id,
            parent: p,
            output: file,
        } => {
            if file.is_none() && io::stdout().is_terminal() {
                bail!("refusing to write a tar to a terminal; redirect stdout or use -o FILE");
            }
            let mut stream = graph.diff(id, parent(p))?;
            match file {
                Some(f) => output::to_file(&mut stream, f)?,
                None => {
                    io::copy(&mut stream, out).context("writing the diff")?;
                }
            }
        }
        Command::Changes { id, parent: p } => {
            output::changes(out, &graph.changes(id, parent(p))?, cli.json)?
        }
        Command::DiffSize { id, parent: p } => {
            writeln!(out, "{}", graph.diff_size(id, parent(p))?)?
        }
        Command::Ls => output::ls(out, &graph.list()?, cli.json)?,
        Command::Resize { id, size } => graph.resize(id, strata::units::ram_in_bytes(size)?)?,
        Command::Check => unreachable!("check is dispatched before the store is opened"),
        #[cfg(feature = "docker-plugin")]
        Command::Serve(_) => unreachable!("servers are dispatched before the store is opened"),
    }
    out.flush()?;
    Ok(())
}
