//! `strata serve …`: run a server over a unix socket until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use strata::serve::docker::{DockerPlugin, PluginConfig};

/// What to serve.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// dockerd's graph-driver plugin (v1 protocol; dockerd 20.10 with --experimental).
    ///
    /// The store is opened at GraphDriver.Init, at the Home dockerd sends
    /// (<data-root>/NAME) unless --root or STRATA_ROOT is given; Init's arguments are
    /// remembered in the --state file, so that a restarted plugin serves the same store at
    /// once. Start it before dockerd, then run `dockerd --experimental --storage-driver NAME`.
    /// Of the global options, --root, --driver, -o, --no-sync, --writers and
    /// --confined-apply (the default here) apply; --json is refused.
    DockerPlugin(DockerPluginArgs),
}

/// Options of `serve docker-plugin`.
#[derive(Args, Debug)]
pub struct DockerPluginArgs {
    /// Plugin name: what dockerd's --storage-driver names.
    #[arg(long, default_value = "strata")]
    name: String,
    /// Socket to listen on [default: /run/docker/plugins/NAME.sock, where dockerd looks].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// File that remembers Init's arguments across restarts of the plugin
    /// [default: /run/strata/NAME.json].
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
    /// Seconds a request body (a layer being applied) may stop arriving before the request
    /// fails; the apply is then rolled back.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout: u64,
    /// Apply layers inside the server process instead of a confined helper process (saves a
    /// process start per layer; a parser fault could then take the server down).
    #[arg(long)]
    in_process_apply: bool,
}

/// The global options a server takes over.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `--root` / `STRATA_ROOT`, if given.
    pub root: Option<PathBuf>,
    /// `--driver`.
    pub driver: Option<String>,
    /// `-o KEY=VALUE`.
    pub options: Vec<String>,
    /// `--no-sync`.
    pub no_sync: bool,
    /// `--writers`.
    pub writers: usize,
}

/// Refuses the global options that have no meaning for the server `cmd`: the message for a
/// usage error.
pub fn check_globals(cmd: &ServeCommand, json: bool, confined_apply: bool) -> Result<(), String> {
    let ServeCommand::DockerPlugin(args) = cmd;
    if json {
        return Err("--json does not apply to `serve docker-plugin` (it prints nothing)".into());
    }
    if confined_apply && args.in_process_apply {
        return Err("--confined-apply and --in-process-apply contradict each other".into());
    }
    Ok(())
}

/// The plugin's configuration from the command line.
fn plugin_config(args: &DockerPluginArgs, globals: Globals) -> Result<PluginConfig> {
    let name = &args.name;
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        bail!("invalid plugin name {name:?}: use letters, digits, '-', '_' or '.'");
    }
    Ok(PluginConfig {
        name: name.clone(),
        root: globals.root,
        driver: globals.driver,
        options: globals.options,
        apply_helper: if args.in_process_apply {
            None
        } else {
            Some(
                std::env::current_exe()
                    .context("locating the strata binary for confined applies")?,
            )
        },
        no_sync: globals.no_sync,
        writers: Some(globals.writers),
        state_file: Some(
            args.state
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("/run/strata/{name}.json"))),
        ),
        body_timeout: Some(Duration::from_secs(args.body_timeout)),
    })
}

/// Stack of the runtime's threads: walks are iterative, this is a margin.
const THREAD_STACK: usize = 8 << 20;

/// Runs the server named by `cmd` until a signal stops it.
pub fn run(cmd: &ServeCommand, globals: Globals) -> Result<()> {
    let ServeCommand::DockerPlugin(args) = cmd;
    let name = args.name.clone();
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/run/docker/plugins/{name}.sock")));
    let store = match &globals.root {
        Some(r) => r.display().to_string(),
        None => "the Home that dockerd sends at Init".to_string(),
    };
    let plugin = DockerPlugin::new(plugin_config(args, globals)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-serve")
        .thread_stack_size(THREAD_STACK)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (listener, file) = strata::serve::bind_unix(&socket)?;
        // A plugin restarted while dockerd runs gets no second Init: reopen the last one's
        // store before the first connection is served.
        let p = plugin.clone();
        match tokio::task::spawn_blocking(move || p.restore()).await {
            Ok(Ok(true)) => eprintln!("strata: reopened the store of the last Init"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => eprintln!(
                "strata: could not reopen the store of the last Init ({e}); waiting for Init"
            ),
            Err(e) => eprintln!("strata: reopening the last store failed: {e}"),
        }
        eprintln!(
            "strata: serving graph-driver plugin {name:?} on {} (store: {store})",
            socket.display()
        );
        let on_signal = file.clone();
        let shutdown = async move {
            strata::serve::shutdown_signal().await;
            // A second signal does not wait for requests in flight: the store's staging rolls
            // an interrupted apply back at the next open.
            tokio::spawn(async move {
                strata::serve::shutdown_signal().await;
                eprintln!("strata: second signal, exiting without waiting for requests");
                on_signal.remove();
                std::process::exit(1);
            });
        };
        let result = plugin.serve(listener, shutdown).await;
        file.remove();
        result.with_context(|| format!("serving {}", socket.display()))
    })?;
    eprintln!("strata: plugin {name:?} stopped");
    Ok(())
}
