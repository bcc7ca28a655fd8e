//! `systemctl reload meshd` (SIGHUP): meshd re-reads meshd.toml.
//!
//! One table, [`KEYS`], says for every key of the file whether a running
//! meshd takes a new value (live) or only a restart does. A reload parses
//! and checks the whole file first: a bad one (syntax, unknown key, bad
//! value) changes nothing and its error names the file and line. Then it
//! compares the settings in force with the new ones, key by key: live
//! keys are applied through the handles their parts own (log filter,
//! DNS forwarders, metrics and console listeners, gossip's rekey timer,
//! the edge's floating-IP permits), the others are logged as needing a
//! restart and listed in `meshctl status` until meshd restarts. As at
//! start-up, a flag on the command line wins over the file: a key it sets
//! does not change on reload (logged).

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::api::ReloadStatus;
use crate::config::{FileConfig, Flags, Settings};
use crate::daemon::Daemon;

/// One key of meshd.toml: its name, whether it changes live, its value in
/// resolved settings (compared as text) and whether a flag sets it.
pub struct Key {
    pub name: &'static str,
    pub live: bool,
    value: fn(&Settings) -> String,
    by_flag: fn(&Flags) -> bool,
}

const LIVE: bool = true;
const RESTART: bool = false;

macro_rules! key {
    ($name:literal, $live:expr, |$s:ident| $value:expr, |$f:ident| $flag:expr) => {
        Key {
            name: $name,
            live: $live,
            value: |$s: &Settings| format!("{:?}", $value),
            by_flag: |$f: &Flags| $flag,
        }
    };
}

/// Every key of meshd.toml (a test holds it to packaging/meshd.toml).
/// Restart-only keys shape what was built at start: sockets bound, the
/// identity, interface names, the data plane's threads and ciphers
/// offered in handshakes, the networks landed, gossip's quotas.
pub static KEYS: &[Key] = &[
    key!("state_dir", RESTART, |s| s.state_dir, |f| f
        .state_dir
        .is_some()),
    key!("listen", RESTART, |s| s.listen, |f| f.listen.is_some()),
    key!("data_port", RESTART, |s| s.data_port, |f| f
        .data_port
        .is_some()),
    key!("api_socket", RESTART, |s| s.api_socket, |f| f
        .api_socket
        .is_some()),
    key!("name", RESTART, |s| s.name, |f| f.name.is_some()),
    key!("log", LIVE, |s| s.log, |f| f.log.is_some()),
    key!("link_prefix", RESTART, |s| s.link_prefix, |f| f
        .link_prefix
        .is_some()),
    key!("dns_upstreams", LIVE, |s| s.dns_upstreams, |f| !f
        .dns_upstreams
        .is_empty()),
    key!("metrics_listen", LIVE, |s| s.metrics_listen, |f| f
        .metrics_listen
        .is_some()),
    key!("console_listen", LIVE, |s| s.console_listen, |f| f
        .console_listen
        .is_some()),
    key!("cipher", RESTART, |s| s.cipher, |f| f.cipher.is_some()),
    key!("dp_workers", RESTART, |s| s.dp_workers, |f| f
        .dp_workers
        .is_some()),
    key!("rekey_interval", LIVE, |s| s.rekey_interval, |f| f
        .rekey_interval
        .is_some()),
    key!("docker_plugin", RESTART, |s| s.docker.is_some(), |f| f
        .docker_plugin),
    key!(
        "docker_plugin_socket",
        RESTART,
        |s| s.docker.as_ref().map(|d| &d.plugin_socket),
        |f| f.docker_plugin_socket.is_some()
    ),
    key!(
        "docker_host",
        RESTART,
        |s| s.docker.as_ref().map(|d| &d.docker_host),
        |f| f.docker_host.is_some()
    ),
    key!("max_networks", RESTART, |s| s.max_networks, |f| f
        .max_networks
        .is_some()),
    key!("global_ipv6", RESTART, |s| s.global_ipv6, |f| !f
        .global_ipv6
        .is_empty()),
    key!("fip_pools", LIVE, |s| s.fip_pools, |f| !f
        .fip_pools
        .is_empty()),
    key!(
        "channel_quota_entries",
        RESTART,
        |s| s.channel_quota.entries,
        |f| f.channel_quota_entries.is_some()
    ),
    key!(
        "channel_quota_bytes",
        RESTART,
        |s| s.channel_quota.bytes,
        |f| f.channel_quota_bytes.is_some()
    ),
    key!("wg_port", RESTART, |s| s.wg_port, |f| f.wg_port.is_some()),
    key!("tcp_fallback", RESTART, |s| s.tcp_fallback, |f| f
        .tcp_fallback
        .is_some()),
    key!("tcp_extra_port", RESTART, |s| s.tcp_extra_port, |f| f
        .tcp_extra_port
        .is_some()),
    key!("wg_endpoint", RESTART, |s| s.wg_endpoint, |f| f
        .wg_endpoint
        .is_some()),
];

/// The keys whose value differs between `old` and `new`.
pub fn changed(old: &Settings, new: &Settings) -> Vec<&'static Key> {
    KEYS.iter()
        .filter(|k| (k.value)(old) != (k.value)(new))
        .collect()
}

/// What a reload does, decided before anything is touched.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Live keys with a new value: applied now.
    pub apply: Vec<&'static str>,
    /// Restart-only keys whose value differs from the one meshd started
    /// with (earlier reloads included).
    pub needs_restart: Vec<&'static str>,
    /// Keys the file changed that a command-line flag sets: unchanged.
    pub overridden: Vec<&'static str>,
}

/// The plan from the settings meshd started with, those in force, the
/// new ones, and the old and new files (for keys a flag overrides).
pub fn plan(
    flags: &Flags,
    started: &Settings,
    current: &Settings,
    new: &Settings,
    old_file: &FileConfig,
    new_file: &FileConfig,
) -> Plan {
    let apply = changed(current, new)
        .into_iter()
        .filter(|k| k.live)
        .map(|k| k.name)
        .collect();
    let needs_restart = changed(started, new)
        .into_iter()
        .filter(|k| !k.live)
        .map(|k| k.name)
        .collect();
    // The file's own values, as if no flag were given.
    let bare = |file: &FileConfig| {
        use clap::Parser;
        Settings::merge(&Flags::parse_from(["meshd"]), file.clone()).ok()
    };
    let overridden = match (bare(old_file), bare(new_file)) {
        (Some(old), Some(new)) => changed(&old, &new)
            .into_iter()
            .filter(|k| (k.by_flag)(flags))
            .map(|k| k.name)
            .collect(),
        _ => Vec::new(),
    };
    Plan {
        apply,
        needs_restart,
        overridden,
    }
}

/// Reads and checks the file at `path` and resolves it under `flags`:
/// the new settings, or an error naming the file and, where it can, the
/// line. Nothing changes here.
pub fn read(path: &Path, flags: &Flags) -> Result<(FileConfig, Settings), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = FileConfig::parse(&text).map_err(|e| toml_error(path, &text, &e))?;
    let settings = Settings::merge(flags, file.clone())
        .map_err(|e| value_error(path, &text, &e.to_string()))?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log) {
        let msg = format!("log {:?} is not a log filter: {e}", settings.log);
        return Err(value_error(path, &text, &msg));
    }
    Ok((file, settings))
}

/// `FILE line L, column C: what` from a TOML error's span.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    // One line, for the log and `meshctl status`.
    let message = e.message().trim().replace('\n', ", ");
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{} line {line}, column {column}: {message}", path.display())
        }
        None => format!("{}: {message}", path.display()),
    }
}

/// A value the checks after parsing refused; the message starts with the
/// key's name (as the ones of [`Settings::merge`] do), whose line the
/// error gets.
fn value_error(path: &Path, text: &str, message: &str) -> String {
    let bare = message.trim_start_matches("--");
    let key = KEYS
        .iter()
        .filter(|k| bare.starts_with(k.name))
        .max_by_key(|k| k.name.len());
    let spans: Option<std::collections::BTreeMap<String, toml::Spanned<toml::Value>>> =
        toml::from_str(text).ok();
    let line = key.zip(spans).and_then(|(k, spans)| {
        spans
            .get(k.name)
            .map(|v| line_column(text, v.span().start).0)
    });
    match line {
        Some(line) => format!("{} line {line}: {message}", path.display()),
        None => format!("{}: {message}", path.display()),
    }
}

/// 1-based line and column of byte `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Sets the log filter in force (a `tracing_subscriber` reload handle).
pub type LogFilter = Box<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// Installs the global subscriber with `filter` (`info` if it is not one)
/// and returns the handle a reload changes the filter with.
pub fn init_logging(filter: &str) -> LogFilter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let initial = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("meshd: log {filter:?} is not a log filter ({e}); using info");
        EnvFilter::new("info")
    });
    let (layer, handle) = tracing_subscriber::reload::Layer::new(initial);
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .init();
    Box::new(move |f| {
        handle.reload(EnvFilter::try_new(f)?)?;
        Ok(())
    })
}

/// What is in force now, and the metrics and console listeners serving.
struct InForce {
    settings: Settings,
    file: FileConfig,
    metrics: Option<JoinHandle<()>>,
    console: Option<JoinHandle<()>>,
    reloads: u64,
}

/// Re-reads meshd.toml on demand and applies it to a running daemon.
pub struct Reloader {
    flags: Flags,
    daemon: Arc<Daemon>,
    set_log: LogFilter,
    state: tokio::sync::Mutex<InForce>,
}

impl Reloader {
    /// Starts the metrics and console listeners (when configured) and
    /// keeps what a reload compares against. `file` is the file meshd
    /// started with.
    pub async fn start(
        flags: Flags,
        daemon: Arc<Daemon>,
        set_log: LogFilter,
        file: FileConfig,
    ) -> Reloader {
        let mut settings = daemon.settings.clone();
        let metrics = match settings.metrics_listen {
            Some(addr) => match bind_metrics(&daemon, addr).await {
                Ok(task) => Some(task),
                Err(e) => {
                    error!("metrics listener: {e:#}");
                    settings.metrics_listen = None;
                    None
                }
            },
            None => None,
        };
        let console = match settings.console_listen {
            Some(addr) => match crate::console::bind(&daemon, addr).await {
                Ok(task) => Some(task),
                Err(e) => {
                    error!("console listener: {e:#}");
                    settings.console_listen = None;
                    None
                }
            },
            None => None,
        };
        Reloader {
            flags,
            daemon,
            set_log,
            state: tokio::sync::Mutex::new(InForce {
                settings,
                file,
                metrics,
                console,
                reloads: 0,
            }),
        }
    }

    /// One reload: logs what it did and records it for `meshctl status`.
    pub async fn reload(&self) {
        let mut st = self.state.lock().await;
        st.reloads += 1;
        let mut status = ReloadStatus {
            at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            count: st.reloads,
            ..ReloadStatus::default()
        };
        let pending = self.daemon.reloads().get().map(|r| r.needs_restart);
        let Some(path) = self.flags.config.clone() else {
            let e = "meshd was started without --config: there is no file to re-read";
            error!("reload refused: {e}");
            status.error = Some(e.into());
            status.needs_restart = pending.unwrap_or_default();
            return self.daemon.reloads().set(status);
        };
        status.file = path.display().to_string();
        let (file, new) = match read(&path, &self.flags) {
            Ok(read) => read,
            Err(e) => {
                error!("reload refused, nothing changed: {e}");
                status.error = Some(e);
                status.needs_restart = pending.unwrap_or_default();
                return self.daemon.reloads().set(status);
            }
        };
        let p = plan(
            &self.flags,
            &self.daemon.settings,
            &st.settings,
            &new,
            &st.file,
            &file,
        );
        let file_name = path.display();
        for key in &p.overridden {
            warn!("{key} changed in {file_name}: not applied, a command-line flag sets it");
        }
        for key in &p.needs_restart {
            warn!("{key} changed in {file_name}: needs a restart");
        }
        let mut errors = Vec::new();
        let mut in_force = new.clone();
        for key in &p.apply {
            match self.apply(key, &new, &mut st).await {
                Ok(()) => {
                    let now = KEYS
                        .iter()
                        .find(|k| k.name == *key)
                        .map(|k| (k.value)(&new));
                    info!(
                        "{key} changed in {file_name}: applied, now {}",
                        now.unwrap_or_default()
                    );
                    status.applied.push(key.to_string());
                }
                Err(e) => {
                    error!("{key} changed in {file_name}: not applied: {e:#}");
                    errors.push(format!("{key}: {e:#}"));
                    // The value in force stays, so the next reload retries.
                    let running = match *key {
                        "metrics_listen" => st.metrics.is_some(),
                        "console_listen" => st.console.is_some(),
                        _ => true,
                    };
                    revert(key, &mut in_force, &st.settings, running);
                }
            }
        }
        if p.apply.is_empty() && p.needs_restart.is_empty() {
            info!("reloaded {file_name}: nothing to change");
        }
        st.settings = in_force;
        st.file = file;
        status.ok = errors.is_empty();
        status.error = (!errors.is_empty()).then(|| errors.join("; "));
        status.needs_restart = p.needs_restart.iter().map(|k| k.to_string()).collect();
        status.overridden = p.overridden.iter().map(|k| k.to_string()).collect();
        self.daemon.reloads().set(status);
    }

    /// Applies one live key's value in `new`.
    async fn apply(&self, key: &str, new: &Settings, st: &mut InForce) -> Result<()> {
        let d = &self.daemon;
        match key {
            "log" => (self.set_log)(&new.log)?,
            "dns_upstreams" => d.set_dns_upstreams(new.dns_upstreams.clone()),
            "rekey_interval" => d.set_rekey_interval(new.rekey_interval),
            "fip_pools" => d.set_fip_pools(new.fip_pools.clone()),
            "metrics_listen" => {
                let old = st.settings.metrics_listen;
                rebind(&mut st.metrics, old, new.metrics_listen, |a| {
                    bind_metrics(d, a)
                })
                .await?
            }
            "console_listen" => {
                let old = st.settings.console_listen;
                let bind = |a| crate::console::bind(d, a);
                rebind(&mut st.console, old, new.console_listen, bind).await?
            }
            other => anyhow::bail!("{other} has no live handle (a bug: see reload::KEYS)"),
        }
        Ok(())
    }
}

/// Moves a listener from `old` to `new` (none: stops it). The new address
/// is bound before the old one closes, so a bad one changes nothing; only
/// the same port forces the old one to go first (and come back if the new
/// one fails).
async fn rebind<F, Fut>(
    task: &mut Option<JoinHandle<()>>,
    old: Option<SocketAddr>,
    new: Option<SocketAddr>,
    bind: F,
) -> Result<()>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<JoinHandle<()>>>,
{
    let Some(addr) = new else {
        stop(task.take()).await;
        return Ok(());
    };
    match bind(addr).await {
        Ok(t) => stop(task.replace(t)).await,
        Err(e) if old.is_some_and(|o| o.port() == addr.port()) => {
            stop(task.take()).await;
            match bind(addr).await {
                Ok(t) => *task = Some(t),
                Err(again) => {
                    let mut err = again.context(e.to_string());
                    if let Some(old) = old {
                        match bind(old).await {
                            Ok(t) => *task = Some(t),
                            Err(lost) => {
                                err = err.context(format!(
                                    "and the old listener {old} could not be opened again \
                                     ({lost:#}): none is serving"
                                ))
                            }
                        }
                    }
                    return Err(err);
                }
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Ends a listener task and waits until its socket is closed.
async fn stop(task: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
}

/// Puts `key` of `into` back to its value in `from` (a live change
/// failed). A listener's old address is in force only if its listener
/// still serves (`running`): a failed move on the same port may have lost
/// it.
fn revert(key: &str, into: &mut Settings, from: &Settings, running: bool) {
    match key {
        "log" => into.log = from.log.clone(),
        "dns_upstreams" => into.dns_upstreams = from.dns_upstreams.clone(),
        "rekey_interval" => into.rekey_interval = from.rekey_interval,
        "fip_pools" => into.fip_pools = from.fip_pools.clone(),
        "metrics_listen" => into.metrics_listen = from.metrics_listen.filter(|_| running),
        "console_listen" => into.console_listen = from.console_listen.filter(|_| running),
        _ => {}
    }
}

async fn bind_metrics(daemon: &Arc<Daemon>, addr: SocketAddr) -> Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    info!(%addr, "serving metrics");
    let d = daemon.clone();
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::server::serve_metrics_on(d, listener).await {
            error!("metrics listener {addr}: {e:#}");
        }
    }))
}

#[cfg(test)]
mod tests;
