//! What this host keeps in its state directory, besides what the gossip
//! crate keeps there itself (identity key, secret, members).
//!
//! Every write goes to a temporary file that is renamed over the old one,
//! so a crash mid-write never leaves a torn file behind.

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::api::Attachment;

/// A container attachment made by this host, with what is needed to find
/// it again after a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachmentRecord {
    #[serde(flatten)]
    pub attachment: Attachment,
    pub netns_dev: u64,
    pub netns_ino: u64,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

const ATTACHMENTS: &str = "attachments.json";
const RESERVATIONS: &str = "reservations.json";

/// An address taken without an attachment (`meshctl ipam reserve`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reservation {
    pub network: String,
    pub ip: std::net::Ipv4Addr,
    #[serde(default)]
    pub label: Option<String>,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
        std::fs::create_dir_all(dir.join("channels"))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn load_attachments(&self) -> Result<Vec<AttachmentRecord>> {
        self.load_json(ATTACHMENTS).map(|v| v.unwrap_or_default())
    }

    pub fn save_attachments(&self, records: &[AttachmentRecord]) -> Result<()> {
        self.save_json(ATTACHMENTS, &records)
    }

    pub fn load_reservations(&self) -> Result<Vec<Reservation>> {
        self.load_json(RESERVATIONS).map(|v| v.unwrap_or_default())
    }

    pub fn save_reservations(&self, records: &[Reservation]) -> Result<()> {
        self.save_json(RESERVATIONS, &records)
    }

    /// Snapshot of a replicated channel, so a host that restarts alone
    /// still knows its networks.
    pub fn load_channel(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.dir.join("channels").join(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub fn save_channel(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.dir.join("channels").join(name), bytes, 0o600)
    }

    fn load_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let p = self.dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .with_context(|| format!("{} is corrupt", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    fn save_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)?;
        write_atomic(&self.dir.join(name), &bytes, 0o600)
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_round_trip() {
        let dir = std::env::temp_dir().join(format!("meshstate-{}", std::process::id()));
        let s = StateDir::open(&dir).unwrap();
        assert!(s.load_attachments().unwrap().is_empty());
        let rec = AttachmentRecord {
            attachment: Attachment {
                network: "n".into(),
                netns: "/run/netns/x".into(),
                ifname: "eth-n".into(),
                host_ifname: "msv00000001".into(),
                ip: "10.0.0.2/24".into(),
                ip6: None,
                mac: "02:00:00:00:00:01".into(),
                dns_server: None,
                dns_search: None,
                container_id: Some("abc".into()),
                name: None,
                version: None,
            },
            netns_dev: 4,
            netns_ino: 4026532000,
        };
        s.save_attachments(std::slice::from_ref(&rec)).unwrap();
        assert_eq!(s.load_attachments().unwrap(), vec![rec]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_reset() {
        let dir = std::env::temp_dir().join(format!("meshstate-bad-{}", std::process::id()));
        let s = StateDir::open(&dir).unwrap();
        std::fs::write(s.file(ATTACHMENTS), b"{not json").unwrap();
        let err = s.load_attachments().unwrap_err();
        assert!(format!("{err:#}").contains("corrupt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
