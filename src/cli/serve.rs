//! `strata serve …`: run a server over a unix socket until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use strata::serve::docker::{DockerPlugin, PluginConfig};

/// What to serve.
#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// dockerd's graph-driver plugin (v1 protocol; dockerd 20.10 with --experimental).
    ///
    /// The store is opened at GraphDriver.Init, at the Home dockerd sends
    /// (<data-root>/NAME) unless --root or STRATA_ROOT is given. Start it before dockerd, then
    /// run `dockerd --experimental --storage-driver NAME`.
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
    /// Apply layers inside the server process instead of a confined helper process (saves a
    /// process start per layer; a parser fault could then take the server down).
    #[arg(long)]
    in_process_apply: bool,
}

/// Runs the server named by `cmd` until a signal stops it.
pub fn run(
    cmd: &ServeCommand,
    root: Option<PathBuf>,
    driver: &Option<String>,
    options: &[String],
) -> Result<()> {
    let ServeCommand::DockerPlugin(args) = cmd;
    let name = &args.name;
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        bail!("invalid plugin name {name:?}: use letters, digits, '-', '_' or '.'");
    }
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/run/docker/plugins/{name}.sock")));
    let store = match &root {
        Some(r) => r.display().to_string(),
        None => "the Home that dockerd sends at Init".to_string(),
    };
    let plugin = DockerPlugin::new(PluginConfig {
        name: name.clone(),
        root,
        driver: driver.clone(),
        options: options.to_vec(),
        apply_helper: if args.in_process_apply {
            None
        } else {
            Some(
                std::env::current_exe()
                    .context("locating the strata binary for confined applies")?,
            )
        },
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-serve")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (listener, file) = strata::serve::bind_unix(&socket)?;
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
