//! Daemon settings: a TOML file, overridden by command-line flags.

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/mesh";
pub use mesh_api::{DEFAULT_CONTROL_PORT, DEFAULT_SOCKET as DEFAULT_API_SOCKET};
/// Interface names this daemon creates start with this, so cleanup can find
/// them: `<prefix>b…` bridges, `<prefix>t…` TAPs, `<prefix>v…` veth host ends.
pub const DEFAULT_LINK_PREFIX: &str = "ms";
/// WireGuard's usual port: the gateway's unless `wg_port` says otherwise.
pub const DEFAULT_WG_PORT: u16 = 51820;
/// Where dockerd looks for the socket of a network plugin named `mesh`.
pub const DEFAULT_DOCKER_PLUGIN_SOCKET: &str = "/run/docker/plugins/mesh.sock";
/// dockerd's API socket, asked for container names and labels.
pub const DEFAULT_DOCKER_HOST: &str = "/run/docker.sock";

/// `meshd` command line. Every flag may also come from the config file;
/// flags win.
#[derive(Debug, Parser)]
#[command(
    name = "meshd",
    version,
    about = "mesh daemon: encrypted L2 overlay for containers"
)]
pub struct Flags {
    /// TOML config file.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Directory for identity, mesh secret, members, networks, attachments.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// UDP address of the control plane (QUIC). The data plane uses the next
    /// port up unless --data-port says otherwise.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// UDP port of the data plane (sealed Ethernet frames).
    #[arg(long)]
    pub data_port: Option<u16>,
    /// Unix socket of the local API (root-only).
    #[arg(long)]
    pub api_socket: Option<PathBuf>,
    /// Name of this host in the mesh (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Log filter, e.g. `info` or `mesh=debug,gossip=debug`.
    #[arg(long)]
    pub log: Option<String>,
    /// Prefix of the interface names meshd creates (1-4 lowercase letters).
    #[arg(long)]
    pub link_prefix: Option<String>,
    /// Upstream DNS server for names outside the mesh (repeatable); none by
    /// default: meshd contacts nothing it was not told to.
    #[arg(long = "dns-upstream")]
    pub dns_upstreams: Vec<SocketAddr>,
    /// Also serve `GET /metrics` (Prometheus) over TCP on this address
    /// (off by default; the API socket always serves it).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the read-only web console on this address (off by default).
    /// A loopback address needs no login; any other needs the token
    /// `meshctl console token` prints.
    #[arg(long)]
    pub console_listen: Option<SocketAddr>,
    /// Data-plane AEAD policy: `auto` (AES-256-GCM with peers that also have
    /// AES hardware, else ChaCha20-Poly1305) or `chacha20-poly1305` (never
    /// offer AES-GCM).
    #[arg(long)]
    pub cipher: Option<CipherPolicy>,
    /// Data-plane worker threads per direction (default: one per core).
    #[arg(long)]
    pub dp_workers: Option<usize>,
    /// Seconds between data-plane key rotations with each peer (1–120;
    /// default 110).
    #[arg(long, value_name = "SECS")]
    pub rekey_interval: Option<u64>,
    /// Serve Docker's network and IPAM plugin protocol (`docker network
    /// create -d mesh --ipam-driver mesh …`).
    #[arg(long)]
    pub docker_plugin: bool,
    /// Socket of the Docker plugin (dockerd finds `mesh` by this file name).
    #[arg(long, value_name = "PATH")]
    pub docker_plugin_socket: Option<PathBuf>,
    /// dockerd's API socket, asked for the names and labels of containers
    /// that join a mesh network.
    #[arg(long, value_name = "PATH")]
    pub docker_host: Option<PathBuf>,
    /// Remove every bridge, TAP and veth this daemon created on the host, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// The most networks this host carries (default 256); the mesh may
    /// define more, this host refuses the newest beyond it.
    #[arg(long, value_name = "N")]
    pub max_networks: Option<usize>,
    /// A global IPv6 prefix networks may take their prefixes from
    /// (repeatable); without one, a network's IPv6 prefix must be a ULA.
    #[arg(long = "global-ipv6", value_name = "PREFIX")]
    pub global_ipv6: Vec<ipnet::Ipv6Net>,
    /// A range of the LAN this host may answer floating IPs in
    /// (repeatable); without one, the subnets of its underlay interfaces.
    #[arg(long = "fip-pool", value_name = "CIDR")]
    pub fip_pools: Vec<ipnet::Ipv4Net>,
    /// Replicated records (live and deleted) one writer may hold in one
    /// channel here (default 16384); writes past it are refused.
    #[arg(long, value_name = "N")]
    pub channel_quota_entries: Option<usize>,
    /// Encoded bytes one writer may hold in one channel here (default
    /// 4194304).
    #[arg(long, value_name = "BYTES")]
    pub channel_quota_bytes: Option<usize>,
    /// UDP port of the WireGuard gateway (default 51820; 0 turns it off).
    #[arg(long, value_name = "PORT")]
    pub wg_port: Option<u16>,
    /// `host:port` WireGuard clients dial (default: this host's mesh
    /// address and wg_port), e.g. a public address forwarded here.
    #[arg(long, value_name = "HOST:PORT")]
    pub wg_endpoint: Option<String>,
    /// Listen on TCP at the control port and fall back to TLS over TCP
    /// with peers no UDP path reaches (default true).
    #[arg(long, value_name = "BOOL")]
    pub tcp_fallback: Option<bool>,
    /// A second TCP port for the fallback (e.g. 443), advertised to peers.
    #[arg(long, value_name = "PORT")]
    pub tcp_extra_port: Option<u16>,
}

/// The config file. Unknown keys are an error, so a typo is not ignored.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_port: Option<u16>,
    pub api_socket: Option<PathBuf>,
    pub name: Option<String>,
    pub log: Option<String>,
    pub link_prefix: Option<String>,
    #[serde(default)]
    pub dns_upstreams: Vec<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub console_listen: Option<SocketAddr>,
    pub cipher: Option<CipherPolicy>,
    pub dp_workers: Option<usize>,
    pub rekey_interval: Option<u64>,
    pub docker_plugin: Option<bool>,
    pub docker_plugin_socket: Option<PathBuf>,
    pub docker_host: Option<PathBuf>,
    pub max_networks: Option<usize>,
    #[serde(default)]
    pub global_ipv6: Vec<ipnet::Ipv6Net>,
    #[serde(default)]
    pub fip_pools: Vec<ipnet::Ipv4Net>,
    pub channel_quota_entries: Option<usize>,
    pub channel_quota_bytes: Option<usize>,
    pub wg_port: Option<u16>,
    pub wg_endpoint: Option<String>,
    pub tcp_fallback: Option<bool>,
    pub tcp_extra_port: Option<u16>,
}

/// Which data-plane ciphers this host offers its peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CipherPolicy {
    /// Offer AES-256-GCM when this CPU runs it fast, and ChaCha20-Poly1305.
    #[default]
    Auto,
    /// Offer only the portable ChaCha20-Poly1305.
    #[value(name = "chacha20-poly1305")]
    #[serde(rename = "chacha20-poly1305")]
    Chacha20Poly1305,
}

impl CipherPolicy {
    /// The offer advertised to peers under this policy on this CPU.
    pub fn offer(self) -> gossip::CipherOffer {
        match self {
            CipherPolicy::Chacha20Poly1305 => gossip::CipherOffer::PORTABLE,
            CipherPolicy::Auto => {
                let fast: Vec<gossip::Cipher> = dataplane::Cipher::fast_here()
                    .into_iter()
                    .map(gossip_cipher)
                    .collect();
                gossip::CipherOffer::new(&fast)
            }
        }
    }
}

fn gossip_cipher(cipher: dataplane::Cipher) -> gossip::Cipher {
    match cipher {
        dataplane::Cipher::ChaCha20Poly1305 => gossip::Cipher::ChaCha20Poly1305,
        dataplane::Cipher::Aes256Gcm => gossip::Cipher::Aes256Gcm,
    }
}

/// Settings after merging file and flags, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub data_port: u16,
    pub api_socket: PathBuf,
    pub name: String,
    pub log: String,
    pub link_prefix: String,
    pub dns_upstreams: Vec<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    /// The web console's listener, when it is on.
    pub console_listen: Option<SocketAddr>,
    pub cipher: CipherPolicy,
    /// Data-plane workers per direction; `None`: one per core.
    pub dp_workers: Option<usize>,
    /// Data-plane rekey period with each peer.
    pub rekey_interval: std::time::Duration,
    /// The Docker plugin, when it is on.
    pub docker: Option<DockerSettings>,
    /// The most networks this host carries.
    pub max_networks: usize,
    /// Global IPv6 prefixes networks may use here (else only ULAs).
    pub global_ipv6: Vec<ipnet::Ipv6Net>,
    /// Where this host answers floating IPs; empty: its underlay subnets.
    pub fip_pools: Vec<ipnet::Ipv4Net>,
    /// What one writer may hold in one replicated channel.
    pub channel_quota: gossip::Quota,
    /// UDP port of the WireGuard gateway; 0: no gateway here.
    pub wg_port: u16,
    /// What WireGuard clients dial, if not this host's address.
    pub wg_endpoint: Option<String>,
    /// TLS over TCP with peers no UDP path reaches.
    pub tcp_fallback: bool,
    /// A second TCP port of the fallback.
    pub tcp_extra_port: Option<u16>,
}

/// Where the Docker plugin listens and where it asks dockerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    pub plugin_socket: PathBuf,
    pub docker_host: PathBuf,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// TOML errors carry line and column, which we keep in the message.
    pub fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }
}

impl Settings {
    pub fn resolve(flags: &Flags) -> Result<Settings> {
        let file = match &flags.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Settings::merge(flags, file)
    }

    /// The settings from `flags` over `file` over the defaults (also what a
    /// reload re-runs on the re-read file).
    pub fn merge(flags: &Flags, file: FileConfig) -> Result<Settings> {
        let listen = flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], DEFAULT_CONTROL_PORT)));
        let data_port = match flags.data_port.or(file.data_port) {
            Some(p) => p,
            None if listen.port() == 0 => 0,
            None => listen.port().checked_add(1).context(
                "--listen port 65535 leaves no port for the data plane; set --data-port",
            )?,
        };
        let link_prefix = flags
            .link_prefix
            .clone()
            .or(file.link_prefix)
            .unwrap_or_else(|| DEFAULT_LINK_PREFIX.to_string());
        if link_prefix.is_empty()
            || link_prefix.len() > 4
            || !link_prefix.chars().all(|c| c.is_ascii_lowercase())
        {
            bail!("link_prefix {link_prefix:?} must be 1-4 lowercase letters");
        }
        let name = match flags.name.clone().or(file.name) {
            Some(n) => n,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "mesh-host".to_string()),
        };
        let docker =
            (flags.docker_plugin || file.docker_plugin.unwrap_or(false)).then(|| DockerSettings {
                plugin_socket: flags
                    .docker_plugin_socket
                    .clone()
                    .or(file.docker_plugin_socket)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_PLUGIN_SOCKET)),
                docker_host: flags
                    .docker_host
                    .clone()
                    .or(file.docker_host)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_HOST)),
            });
        let max_networks = flags
            .max_networks
            .or(file.max_networks)
            .unwrap_or(mesh_model::networks::landing::DEFAULT_MAX_NETWORKS);
        if max_networks == 0 {
            bail!("max_networks must be at least 1");
        }
        use mesh_model::networks::landing::MAX_PREFIX6;
        let global_ipv6 = flags_or_file(&flags.global_ipv6, file.global_ipv6);
        let fip_pools = flags_or_file(&flags.fip_pools, file.fip_pools);
        for p in &global_ipv6 {
            if p.trunc() != *p || p.prefix_len() > MAX_PREFIX6 {
                bail!(
                    "global_ipv6 {p}: give a prefix of a /{MAX_PREFIX6} or wider, host bits zero"
                );
            }
        }
        if fip_pools.len() > crate::edge::underlay::MAX_ADVERTS {
            bail!(
                "fip_pools lists {} ranges; at most {} (the other hosts read only that many)",
                fip_pools.len(),
                crate::edge::underlay::MAX_ADVERTS
            );
        }
        for p in &fip_pools {
            if p.trunc() != *p {
                bail!("fip_pools {p}: host bits set; did you mean {}?", p.trunc());
            }
        }
        let channel_quota = gossip::Quota {
            entries: flags
                .channel_quota_entries
                .or(file.channel_quota_entries)
                .unwrap_or(gossip::Quota::DEFAULT.entries),
            bytes: flags
                .channel_quota_bytes
                .or(file.channel_quota_bytes)
                .unwrap_or(gossip::Quota::DEFAULT.bytes),
        };
        if channel_quota.entries < 64 || channel_quota.bytes < 64 * 1024 {
            bail!("channel_quota_entries must be at least 64 and channel_quota_bytes at least 65536 (a host writes its own records within them)");
        }
        let wg_endpoint = flags.wg_endpoint.clone().or(file.wg_endpoint);
        if let Some(e) = &wg_endpoint {
            let port = e
                .rsplit_once(':')
                .and_then(|(h, p)| (!h.is_empty()).then_some(p));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                bail!("wg_endpoint {e:?}: give HOST:PORT");
            }
        }
        let tcp_fallback = flags.tcp_fallback.or(file.tcp_fallback).unwrap_or(true);
        let tcp_extra_port = match flags.tcp_extra_port.or(file.tcp_extra_port) {
            Some(0) => bail!("tcp_extra_port must be a port number (1-65535), not 0"),
            Some(_) if !tcp_fallback => bail!("tcp_extra_port is set but tcp_fallback is false"),
            Some(port) if port == listen.port() => {
                bail!("tcp_extra_port {port} is the control port, which the fallback listens on anyway")
            }
            other => other,
        };
        Ok(Settings {
            tcp_fallback,
            tcp_extra_port,
            wg_port: flags.wg_port.or(file.wg_port).unwrap_or(DEFAULT_WG_PORT),
            wg_endpoint,
            channel_quota,
            max_networks,
            global_ipv6,
            fip_pools,
            docker,
            state_dir: flags
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            listen,
            data_port,
            api_socket: flags
                .api_socket
                .clone()
                .or(file.api_socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_API_SOCKET)),
            name,
            log: flags
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info".to_string()),
            link_prefix,
            metrics_listen: flags.metrics_listen.or(file.metrics_listen),
            console_listen: flags.console_listen.or(file.console_listen),
            cipher: match flags.cipher.or(file.cipher) {
                Some(policy) => policy,
                None => cipher_from_env(std::env::var("MESH_DP_CIPHER").ok().as_deref())?,
            },
            dp_workers: match flags.dp_workers.or(file.dp_workers) {
                Some(0) => bail!("dp_workers must be at least 1"),
                other => other,
            },
            rekey_interval: match flags.rekey_interval.or(file.rekey_interval) {
                None => gossip::Config::DEFAULT_REKEY_INTERVAL,
                Some(secs @ 1..=120) => std::time::Duration::from_secs(secs),
                Some(secs) => bail!("rekey_interval must be 1 to 120 seconds, not {secs}"),
            },
            dns_upstreams: flags_or_file(&flags.dns_upstreams, file.dns_upstreams),
        })
    }
}

/// A list setting: the flags' values when any are given, else the file's.
fn flags_or_file<T: Clone>(flags: &[T], file: Vec<T>) -> Vec<T> {
    if flags.is_empty() {
        file
    } else {
        flags.to_vec()
    }
}

/// `MESH_DP_CIPHER` (for A/B benchmarks, like the `MESH_DP_NO_*`
/// switches): the cipher policy when neither flag nor file sets one.
fn cipher_from_env(value: Option<&str>) -> Result<CipherPolicy> {
    use clap::ValueEnum;
    match value {
        None => Ok(CipherPolicy::default()),
        Some(v) => CipherPolicy::from_str(v, true).map_err(|_| {
            anyhow::anyhow!("MESH_DP_CIPHER={v:?}: expected auto or chacha20-poly1305")
        }),
    }
}

/// Data-plane offloads: all on unless switched off, for operations and A/B
/// benchmarks, by `MESH_DP_NO_OFFLOAD`, `MESH_DP_NO_GSO` or
/// `MESH_DP_NO_COALESCE` being set (`is_set` looks a variable up).
pub fn dataplane_options(is_set: impl Fn(&str) -> bool) -> dataplane::Options {
    dataplane::Options {
        offload: !is_set("MESH_DP_NO_OFFLOAD"),
        gso: !is_set("MESH_DP_NO_GSO"),
        coalesce: !is_set("MESH_DP_NO_COALESCE"),
        ..dataplane::Options::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dataplane_switch_turns_off_only_its_offload() {
        assert_eq!(dataplane_options(|_| false), dataplane::Options::default());
        let o = dataplane_options(|name| name == "MESH_DP_NO_GSO");
        assert!(o.offload && !o.gso && o.coalesce, "{o:?}");
    }

    #[test]
    fn cipher_policy_parses_and_forces_the_portable_offer() {
        let c = FileConfig::parse("cipher = \"chacha20-poly1305\"\n").unwrap();
        assert_eq!(c.cipher, Some(CipherPolicy::Chacha20Poly1305));
        assert_eq!(
            CipherPolicy::Chacha20Poly1305.offer(),
            gossip::CipherOffer::PORTABLE
        );
        assert!(FileConfig::parse("cipher = \"rot13\"\n").is_err());
        assert_eq!(
            cipher_from_env(Some("chacha20-poly1305")).unwrap(),
            CipherPolicy::Chacha20Poly1305
        );
        assert_eq!(cipher_from_env(None).unwrap(), CipherPolicy::Auto);
        assert!(cipher_from_env(Some("rot13")).is_err());
        let auto = CipherPolicy::Auto.offer();
        assert!(auto.contains(gossip::Cipher::ChaCha20Poly1305));
        assert_eq!(
            auto.contains(gossip::Cipher::Aes256Gcm),
            dataplane::cipher::aes_gcm_in_hardware()
        );
    }

    #[test]
    fn parses_full_file() {
        let c = FileConfig::parse(
            "state_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:9000\"\ndata_port = 9001\nname = \"a\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(c.data_port, Some(9001));
    }

    #[test]
    fn bad_line_is_reported_with_its_location() {
        let err = FileConfig::parse("name = \"a\"\nlisten = \"not an address\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("listen"), "{msg}");
    }

    #[test]
    fn docker_plugin_is_off_unless_asked_and_flags_win() {
        let none = Settings::resolve(&Flags::parse_from(["meshd"])).unwrap();
        assert_eq!(none.docker, None);
        let dir = std::env::temp_dir().join(format!("meshcfg-dk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meshd.toml");
        std::fs::write(
            &path,
            "docker_plugin = true\ndocker_host = \"/x/docker.sock\"\n",
        )
        .unwrap();
        let c = path.to_str().unwrap();
        let s = Settings::resolve(&Flags::parse_from(["meshd", "-c", c])).unwrap();
        let d = s.docker.unwrap();
        assert_eq!(d.plugin_socket, PathBuf::from(DEFAULT_DOCKER_PLUGIN_SOCKET));
        assert_eq!(d.docker_host, PathBuf::from("/x/docker.sock"));
        let s = Settings::resolve(&Flags::parse_from([
            "meshd",
            "-c",
            c,
            "--docker-plugin-socket",
            "/p/mesh.sock",
        ]))
        .unwrap();
        assert_eq!(
            s.docker.unwrap().plugin_socket,
            PathBuf::from("/p/mesh.sock")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The packaged default config documents every key: uncommented, it
    /// parses (no stale key) and sets every field (no key missing).
    #[test]
    fn packaged_default_config_lists_every_key() {
        let text: String = include_str!("../../packaging/meshd.toml")
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = FileConfig::parse(&text).unwrap();
        let all = format!("{c:?}");
        assert!(
            !all.contains("None") && !all.contains("[]"),
            "packaging/meshd.toml lacks a key: {all}"
        );
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = FileConfig::parse("lisen = \"1.2.3.4:5\"\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn flags_win_over_file() {
        let dir = std::env::temp_dir().join(format!("meshcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meshd.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nname = \"file\"\n").unwrap();
        let flags = Flags::parse_from([
            "meshd",
            "--config",
            path.to_str().unwrap(),
            "--name",
            "flag",
        ]);
        let s = Settings::resolve(&flags).unwrap();
        assert_eq!(s.name, "flag");
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.data_port, 9001);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
