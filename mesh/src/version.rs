//! What this meshd tells the mesh about its versions, and the test switch
//! that makes it behave as the next protocol version would (PROTOCOL.md).

use std::collections::BTreeMap;

use gossip::protocol;
use tracing::warn;

/// Member meta key: the meshd version a host runs.
pub use gossip::protocol::META_VERSION;
/// This meshd's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Environment variable: `1` makes this meshd claim the next protocol
/// version and write fields no build knows (the mixed-version lab test).
pub const TEST_NEXT_PROTOCOL_ENV: &str = "MESH_TEST_NEXT_PROTOCOL";
/// Meta key only a next-version build writes: a member-record field older
/// builds do not know (and must keep).
const META_NEXT_FIELD: &str = "next.field";

/// The protocol range this process speaks, as advertised.
pub fn protocol_range() -> String {
    protocol::format_range(protocol::supported())
}

/// Reads [`TEST_NEXT_PROTOCOL_ENV`] once at start, before the data plane
/// and gossip start.
pub fn apply_test_env() {
    if std::env::var(TEST_NEXT_PROTOCOL_ENV).as_deref() != Ok("1") {
        return;
    }
    // A release build never claims a version it does not speak: with a
    // real newer peer it would negotiate that version for nothing.
    if !cfg!(debug_assertions) {
        warn!("{TEST_NEXT_PROTOCOL_ENV} is ignored: a test setting of debug builds only");
        return;
    }
    {
        protocol::enable_next_for_tests();
        dataplane::wire::send_unknown_flag_for_tests();
        warn!(
            "{TEST_NEXT_PROTOCOL_ENV}=1: claiming protocol {} and writing fields no build knows (a test setting)",
            protocol_range()
        );
    }
}

/// Puts this host's versions into its member record's meta.
pub fn advertise(meta: &mut BTreeMap<String, String>) {
    meta.insert(META_VERSION.into(), VERSION.into());
    meta.insert(protocol::META_PROTOCOL.into(), protocol_range());
    if protocol::next_for_tests() {
        meta.insert(META_NEXT_FIELD.into(), "1".into());
    }
}

/// A peer's advertised protocol range, if it advertises a readable one.
pub fn peer_range(meta: &BTreeMap<String, String>) -> Option<(u32, u32)> {
    protocol::parse_range(meta.get(protocol::META_PROTOCOL)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_range_reads_back() {
        let mut meta = BTreeMap::new();
        advertise(&mut meta);
        assert_eq!(meta[META_VERSION], VERSION);
        assert_eq!(peer_range(&meta), Some(protocol::supported()));
    }
}
