use anyhow::{Context, Result};
use clap::Parser;
use mesh::config::{Flags, Settings};
use mesh::daemon::{self, Daemon};
use tracing::{error, info};

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    let settings = match Settings::resolve(&flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(flags, settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("meshd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags, settings: Settings) -> Result<()> {
    if flags.cleanup {
        let n = daemon::cleanup(&settings).await?;
        println!("removed {n} device(s)");
        return Ok(());
    }
    let socket = settings.api_socket.clone();
    let metrics_listen = settings.metrics_listen;
    let daemon = Daemon::start(settings).await?;
    if let Some(addr) = metrics_listen {
        let d = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = mesh::server::serve_metrics(d, addr).await {
                error!("metrics listener: {e:#}");
            }
        });
    }
    // The API first: the Docker plugin reaches meshd through it.
    let listener = mesh::server::bind_private_socket(&socket)?;
    let mut serve = tokio::spawn(mesh::server::serve(daemon.clone(), listener));
    if let Some(docker) = daemon.settings.docker.clone() {
        let plugin = mesh_docker::Settings {
            plugin_socket: docker.plugin_socket,
            docker_host: docker.docker_host,
            state_dir: daemon.settings.state_dir.clone(),
        };
        if let Err(e) = mesh_docker::spawn(mesh::api::Client::new(&socket), plugin).await {
            serve.abort();
            let _ = std::fs::remove_file(&socket);
            return Err(e.into());
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = &mut serve => r.context("the API server")??,
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("terminated"),
    }
    serve.abort();
    // Devices and attachments stay: containers keep their interfaces while
    // meshd restarts. `meshd --cleanup` removes them.
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    if let Some(docker) = &daemon.settings.docker {
        let _ = std::fs::remove_file(&docker.plugin_socket);
    }
    Ok(())
}
