//! What a node is started with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::PeerObserver;
use crate::link::LinkTimers;
use crate::state::Quota;
use crate::{Identity, MeshSecret};

pub struct Config {
    pub identity: Identity,
    /// Used unless `state_dir` holds a `secret` file from an earlier run (or
    /// an earlier `join`), which wins so a restarted host stays in its mesh.
    pub secret: MeshSecret,
    pub listen: SocketAddr,
    pub name: String,
    /// Free-form, gossiped with the member record (e.g. `data_port`).
    pub meta: BTreeMap<String, String>,
    /// Extra addresses to advertise (`host:port`), e.g. a public name when
    /// listening on 0.0.0.0. The listen address is advertised when specific.
    pub advertise: Vec<String>,
    pub state_dir: Option<PathBuf>,
    /// Data-plane rekey period; capped at 120 s.
    pub rekey_interval: Duration,
    pub heartbeat_interval: Duration,
    pub dead_after: Duration,
    pub anti_entropy_interval: Duration,
    /// What each writer may hold in a channel ([`Quota::DEFAULT`]).
    pub channel_quota: Quota,
    /// Per channel name, a quota other than `channel_quota`.
    pub channel_quotas: BTreeMap<String, Quota>,
    pub observer: Arc<dyn PeerObserver>,
    /// The TCP fallback (`crate::tcp`): listen on TCP at the QUIC port
    /// (and on `tcp_extra_ports`, advertised to peers), and dial it when
    /// QUIC fails.
    pub tcp_fallback: bool,
    pub tcp_extra_ports: Vec<u16>,
    /// How often expiring channels forget tombstones past their horizon
    /// (`node/expiry.rs`); local work, nothing is sent.
    pub expiry_interval: Duration,
}

/// Member metadata key advertising the extra TCP fallback ports
/// (comma-separated).
pub const TCP_PORTS_META: &str = "tcp_ports";

impl Config {
    pub const DEFAULT_REKEY_INTERVAL: Duration = Duration::from_secs(110);
    pub const MAX_REKEY_INTERVAL: Duration = Duration::from_secs(120);
    /// Only a connection's dialer sends heartbeats; every 2 s keeps an idle
    /// link at one packet and one ACK per 2 s (docs/scale.md: with 49 peers
    /// that is ~1.5 KB/s per host) while `dead_after` still finds a dead
    /// peer in 5 s.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
    pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(5);
    pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(3);
    pub const DEFAULT_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

    pub fn new(
        identity: Identity,
        secret: MeshSecret,
        listen: SocketAddr,
        observer: Arc<dyn PeerObserver>,
    ) -> Config {
        let name = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| identity.peer_id().to_string());
        Config {
            identity,
            secret,
            listen,
            name,
            meta: BTreeMap::new(),
            advertise: Vec::new(),
            state_dir: None,
            rekey_interval: Self::DEFAULT_REKEY_INTERVAL,
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            dead_after: Self::DEFAULT_DEAD_AFTER,
            anti_entropy_interval: Self::DEFAULT_ANTI_ENTROPY_INTERVAL,
            channel_quota: Quota::DEFAULT,
            channel_quotas: BTreeMap::new(),
            observer,
            tcp_fallback: true,
            tcp_extra_ports: Vec::new(),
            expiry_interval: Self::DEFAULT_EXPIRY_INTERVAL,
        }
    }

    /// The rekey period a config asks for, clamped like at start.
    pub fn clamp_rekey(rekey: Duration) -> Duration {
        rekey
            .min(Config::MAX_REKEY_INTERVAL)
            .max(Duration::from_millis(1))
    }

    /// The per-link timers, clamped to workable values.
    pub(super) fn link_timers(&self) -> LinkTimers {
        LinkTimers {
            heartbeat: self.heartbeat_interval.max(Duration::from_millis(10)),
            dead_after: self.dead_after.max(self.heartbeat_interval * 2),
            rekey: Config::clamp_rekey(self.rekey_interval),
        }
    }
}

impl super::Inner {
    pub(super) fn rekey_interval(&self) -> Duration {
        Duration::from_millis(self.rekey_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The timers a new link starts with: the current rekey period.
    pub(super) fn link_timers(&self) -> LinkTimers {
        LinkTimers {
            rekey: self.rekey_interval(),
            ..self.link_timers
        }
    }
}

impl super::Node {
    /// Changes the data-plane rekey period (a reload of the config): new
    /// links start with it, running ones (direct and relayed) take it at
    /// their next tick, and an exchange falls due within it.
    pub fn set_rekey_interval(&self, rekey: Duration) {
        let rekey = Config::clamp_rekey(rekey);
        let inner = &self.inner;
        inner.rekey_ms.store(
            rekey.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        super::lock(&inner.relay).set_rekey(rekey, std::time::Instant::now());
    }

    /// The data-plane rekey period in force.
    pub fn rekey_interval(&self) -> Duration {
        self.inner.rekey_interval()
    }
}
