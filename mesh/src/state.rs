//! What this host keeps in its state directory, besides what the gossip
//! crate keeps there itself (identity key, mesh secret, members) and the
//! network key ([`crate::netsecret`]). Each file has one owner: the
//! attachment list is [`AttachmentStore`]'s, the reservations and channel
//! snapshots are written only through [`StateDir`].
//!
//! Every write goes through [`mesh_sys::fs::write_atomic`], so a crash
//! mid-write never leaves a torn file behind.

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tracing::warn;

use crate::api::Attachment;
use mesh_model::records::{parse_ipv4, BadAddress};

/// A container attachment made by this host, with what is needed to find
/// it again after a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachmentRecord {
    #[serde(flatten)]
    pub attachment: Attachment,
    pub netns_dev: u64,
    pub netns_ino: u64,
    /// The runtime (Docker's network plugin protocol) moved the container
    /// end of the veth itself: meshd never opened the namespace, so only
    /// the host end proves the attachment alive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime_plumbed: bool,
}

impl AttachmentRecord {
    /// The container's IPv4 address.
    pub fn ip(&self) -> Result<std::net::Ipv4Addr, BadAddress> {
        parse_ipv4(&self.attachment.ip)
    }
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

const HOST_ADDRESSES: &str = "host-addresses.json";

/// This host's own address on a network (see [`crate::edge`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostAddressState {
    pub network: String,
    pub ip: std::net::Ipv4Addr,
    /// Asked for with `meshctl expose` (else kept only as a gateway).
    pub exposed: bool,
}

impl StateDir {
    pub fn load_host_addresses(&self) -> Result<Vec<HostAddressState>> {
        self.load_json(HOST_ADDRESSES)
            .map(|v| v.unwrap_or_default())
    }

    pub fn save_host_addresses(&self, records: &[HostAddressState]) -> Result<()> {
        self.save_json(HOST_ADDRESSES, &records)
    }

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

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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

    pub(crate) fn load_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let p = self.dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .with_context(|| format!("{} is corrupt", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub(crate) fn save_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)?;
        write_atomic(&self.dir.join(name), &bytes, 0o600)
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    Ok(mesh_sys::fs::write_atomic(path, bytes, mode)?)
}

/// This host's attachments: the list in memory and `attachments.json`, its
/// only writer. Readers never wait for an attach in progress; a change is
/// kept only once it is on disk.
pub struct AttachmentStore {
    state: StateDir,
    list: Mutex<Vec<AttachmentRecord>>,
}

impl AttachmentStore {
    /// Loads the list. A record whose address does not parse is dropped
    /// (and logged); the count of dropped records is returned with it.
    pub fn load(state: StateDir) -> Result<(AttachmentStore, usize)> {
        let all: Vec<AttachmentRecord> = state.load_json(ATTACHMENTS)?.unwrap_or_default();
        let (good, bad): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.ip().is_ok());
        for r in &bad {
            warn!(
                network = %r.attachment.network,
                netns = %r.attachment.netns,
                ip = %r.attachment.ip,
                "dropping an attachment record whose address does not parse"
            );
        }
        let store = AttachmentStore {
            state,
            list: Mutex::new(good),
        };
        if !bad.is_empty() {
            store.save(&store.lock())?;
        }
        Ok((store, bad.len()))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<AttachmentRecord>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, list: &[AttachmentRecord]) -> Result<()> {
        self.state.save_json(ATTACHMENTS, &list)
    }

    pub fn snapshot(&self) -> Vec<AttachmentRecord> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Adds a record; if it cannot be saved, the list stays as it was.
    pub fn add(&self, rec: AttachmentRecord) -> Result<()> {
        rec.ip()?;
        let mut list = self.lock();
        list.push(rec);
        if let Err(e) = self.save(&list) {
            list.pop();
            return Err(e.context("saving the attachment list"));
        }
        Ok(())
    }

    /// Removes the records `gone` picks and returns them. They are gone from
    /// memory even if saving fails (the caller deletes their devices next);
    /// the next start drops what the file still lists.
    pub fn remove_where(
        &self,
        mut gone: impl FnMut(&AttachmentRecord) -> bool,
    ) -> (Vec<AttachmentRecord>, Result<()>) {
        let mut list = self.lock();
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|r| gone(r));
        *list = kept;
        let saved = if removed.is_empty() {
            Ok(())
        } else {
            self.save(&list)
        };
        (removed, saved)
    }

    /// Changes the record whose host-side veth is `host_ifname`; if the
    /// change cannot be saved, the list stays as it was. Returns the
    /// changed record, `None` when there is no such attachment.
    pub fn update(
        &self,
        host_ifname: &str,
        change: impl FnOnce(&mut AttachmentRecord),
    ) -> Result<Option<AttachmentRecord>> {
        let mut list = self.lock();
        let Some(pos) = list
            .iter()
            .position(|r| r.attachment.host_ifname == host_ifname)
        else {
            return Ok(None);
        };
        let old = list[pos].clone();
        change(&mut list[pos]);
        let new = list[pos].clone();
        if let Err(e) = self.save(&list) {
            list[pos] = old;
            return Err(e.context("saving the attachment list"));
        }
        Ok(Some(new))
    }

    /// Forgets every attachment (`meshd --cleanup`).
    pub fn clear(state: &StateDir) -> Result<()> {
        state.save_json::<Vec<AttachmentRecord>>(ATTACHMENTS, &Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshstate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(ip: &str) -> AttachmentRecord {
        AttachmentRecord {
            attachment: Attachment {
                network: "n".into(),
                netns: "/run/netns/x".into(),
                ifname: "eth-n".into(),
                host_ifname: "msv00000001".into(),
                ip: ip.into(),
                ip6: None,
                mac: "02:00:00:00:00:01".into(),
                dns_server: None,
                dns_search: None,
                container_id: Some("abc".into()),
                name: None,
                version: None,
                labels: Default::default(),
                origin: Default::default(),
            },
            netns_dev: 4,
            netns_ino: 4026532000,
            runtime_plumbed: false,
        }
    }

    #[test]
    fn attachments_round_trip() {
        let dir = scratch("rt");
        let s = StateDir::open(&dir).unwrap();
        let (store, dropped) = AttachmentStore::load(s.clone()).unwrap();
        assert!(store.is_empty());
        assert_eq!(dropped, 0);
        let rec = record("10.0.0.2/24");
        store.add(rec.clone()).unwrap();
        let (again, _) = AttachmentStore::load(s.clone()).unwrap();
        assert_eq!(again.snapshot(), vec![rec.clone()]);
        let (gone, saved) = again.remove_where(|r| r.attachment.ip == rec.attachment.ip);
        saved.unwrap();
        assert_eq!(gone, vec![rec]);
        assert!(AttachmentStore::load(s).unwrap().0.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_reset() {
        let dir = scratch("bad");
        let s = StateDir::open(&dir).unwrap();
        std::fs::write(s.file(ATTACHMENTS), b"{not json").unwrap();
        let err = AttachmentStore::load(s)
            .err()
            .expect("a corrupt file is an error");
        assert!(format!("{err:#}").contains("corrupt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_with_an_unparsable_address_is_dropped_and_counted() {
        let dir = scratch("addr");
        let s = StateDir::open(&dir).unwrap();
        let good = record("10.0.0.2/24");
        let bad = record("not-an-address/24");
        std::fs::write(
            s.file(ATTACHMENTS),
            serde_json::to_vec(&[good.clone(), bad]).unwrap(),
        )
        .unwrap();
        let (store, dropped) = AttachmentStore::load(s.clone()).unwrap();
        assert_eq!(dropped, 1);
        assert_eq!(store.snapshot(), vec![good.clone()]);
        // The file no longer lists it either.
        assert_eq!(AttachmentStore::load(s).unwrap().0.snapshot(), vec![good]);
        assert!(store.add(record("bogus")).is_err());
        assert_eq!(store.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_the_list_as_it_was() {
        let dir = scratch("fail");
        let s = StateDir::open(&dir).unwrap();
        let (store, _) = AttachmentStore::load(s.clone()).unwrap();
        store.add(record("10.0.0.2/24")).unwrap();
        // A directory where the temporary file goes makes every save fail,
        // for root too.
        std::fs::create_dir(s.file("attachments.json.tmp")).unwrap();
        let e = store.add(record("10.0.0.3/24")).unwrap_err();
        assert!(format!("{e:#}").contains("attachments.json"), "{e:#}");
        assert_eq!(store.len(), 1);
        assert_eq!(store.snapshot()[0].attachment.ip, "10.0.0.2/24");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
