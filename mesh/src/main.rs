use anyhow::{Context, Result};
use clap::Parser;
use mesh::config::{FileConfig, Flags, Settings};
use mesh::daemon::{self, Daemon};
use mesh::reload::{LogFilter, Reloader};
use tracing::{error, info};

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    // The file is kept: a reload compares the re-read one with it.
    let resolved = match &flags.config {
        Some(p) => FileConfig::load(p),
        None => Ok(FileConfig::default()),
    }
    .and_then(|file| Ok((Settings::merge(&flags, file.clone())?, file)));
    let (settings, file) = match resolved {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let set_log = mesh::reload::init_logging(&settings.log);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(flags, settings, file, set_log)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("meshd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags, settings: Settings, file: FileConfig, set_log: LogFilter) -> Result<()> {
    if flags.cleanup {
        let n = daemon::cleanup(&settings).await?;
        println!("removed {n} device(s)");
        return Ok(());
    }
    use tokio::signal::unix::{signal, SignalKind};
    // Before the (slow) start: a SIGHUP meanwhile waits instead of
    // killing meshd.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let socket = settings.api_socket.clone();
    let daemon = Daemon::start(settings).await?;
    // Serves metrics when configured; `systemctl reload` re-reads the file.
    let reloader = Reloader::start(flags, daemon.clone(), set_log, file).await;
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
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            r = &mut serve => break r.context("the API server")??,
            _ = tokio::signal::ctrl_c() => break info!("interrupted"),
            _ = term.recv() => break info!("terminated"),
            _ = hup.recv() => {
                info!("SIGHUP: reloading the config");
                reloader.reload().await;
            }
        }
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
