//! What survives a restart: the `members` file in the state dir (postcard),
//! so a restarted host knows whom to dial without an explicit join and
//! starts with an incarnation above its last one. The mesh secret lives
//! beside it in `secret` (see [`crate::MeshSecret::save`]).

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::membership::MemberRecord;
use crate::peers::Peers;
use crate::{wire, PeerId};

const MEMBERS_FILE: &str = "members";
/// When this host last had a link up (Unix ms, text): how long it was away
/// is what decides whether its state of expiring channels is set aside.
const CONTACT_FILE: &str = "contact";

#[derive(Debug, Serialize, Deserialize, Default, PartialEq)]
pub(crate) struct Persisted {
    pub own_incarnation: u64,
    pub records: Vec<MemberRecord>,
    pub last_remotes: Vec<(PeerId, SocketAddr)>,
    /// Rotation epoch of the current secret (in `secret`).
    pub secret_epoch: u64,
    /// Secrets before the last rotations, newest last: a known member that
    /// was down during a rotation may still prove one to get the new one.
    pub previous_secrets: Vec<String>,
}

impl Persisted {
    /// A snapshot of `peers`; marks it as saved.
    pub fn capture<L>(peers: &mut Peers<L>) -> Persisted {
        peers.persist_dirty = false;
        Persisted {
            own_incarnation: peers.table.local().incarnation,
            records: peers.table.others().cloned().collect(),
            last_remotes: peers
                .slots
                .iter()
                .filter_map(|(id, s)| s.last_remote.map(|a| (*id, a)))
                .collect(),
            secret_epoch: 0,
            previous_secrets: Vec::new(),
        }
    }
}

/// The members file of `dir`; empty if there is none or it is unreadable
/// (it is only a cache of what the mesh tells us again).
pub(crate) fn load(dir: &Path) -> Persisted {
    match std::fs::read(dir.join(MEMBERS_FILE)) {
        Ok(bytes) => wire::decode_body(&bytes).unwrap_or_else(|e| {
            warn!(error = %e, "ignoring unreadable members file");
            Persisted::default()
        }),
        Err(_) => Persisted::default(),
    }
}

/// Replaces the members file atomically, mode 0600.
pub(crate) fn save(dir: &Path, persisted: &Persisted) -> Result<(), mesh_sys::fs::Error> {
    // Serializing records and addresses into a Vec cannot fail.
    let bytes = postcard::to_stdvec(persisted).unwrap_or_default();
    mesh_sys::fs::write_atomic(&dir.join(MEMBERS_FILE), &bytes, 0o600)
}

/// The last contact saved in `dir` (Unix ms), if any and readable.
pub(crate) fn load_contact(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(CONTACT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// When the members file was last written (Unix ms), if there is one.
pub(crate) fn members_saved_at(dir: &Path) -> Option<u64> {
    let modified = std::fs::metadata(dir.join(MEMBERS_FILE))
        .ok()?
        .modified()
        .ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(since.as_millis() as u64)
}

pub(crate) fn save_contact(dir: &Path, at_ms: u64) -> Result<(), mesh_sys::fs::Error> {
    mesh_sys::fs::write_atomic(&dir.join(CONTACT_FILE), at_ms.to_string().as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::membership::MembershipTable;
    use crate::sim::{record, A, B};

    #[test]
    fn members_round_trip_and_garbage_reads_as_empty() {
        let dir = std::env::temp_dir().join(format!("gossip-persist-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir), Persisted::default(), "no file yet");

        let mut peers: Peers<()> = Peers::new(MembershipTable::new(record(*A)));
        peers.table.merge([record(*B)]);
        peers.slots.entry(*B).or_default().last_remote = Some("10.1.2.3:7000".parse().unwrap());
        let snapshot = Persisted::capture(&mut peers);
        assert!(!peers.persist_dirty);
        save(&dir, &snapshot).unwrap();
        let file = dir.join(MEMBERS_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&dir), snapshot);
        assert_eq!(
            snapshot.records,
            vec![record(*B)],
            "our own record is not kept"
        );

        std::fs::write(&file, b"\xff\xff\xff garbage").unwrap();
        assert_eq!(load(&dir), Persisted::default());
        std::fs::remove_dir_all(dir).ok();
    }
}
