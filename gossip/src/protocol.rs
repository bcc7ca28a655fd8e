//! Which wire protocol this build speaks, and how it meets builds that speak
//! another (the rules are in `PROTOCOL.md` at the top of the repository).
//!
//! The *major* version is the ALPN id ([`ALPN`]): hosts of two majors fail
//! the TLS handshake and never exchange a frame. Within a major, the
//! *protocol version* is a number in the hello: each side offers a range,
//! the link speaks the highest both support ([`negotiate`]), and every host
//! advertises its range and software version in its signed member record
//! ([`META_PROTOCOL`], [`META_VERSION`]) so `meshctl version` and `doctor`
//! can show every peer's, even those this host has no link to.
//!
//! Tolerance (what lets an old and a new build share a mesh): a frame may
//! carry bytes after the fields this build knows (ignored, counted); a
//! message of a kind this build does not know is skipped, not fatal; a
//! replicated value keeps the bytes its writer signed, so fields appended by
//! a newer writer travel on untouched through older hosts (see
//! `state::lww`). [`UNKNOWN`] counts each kind.
//!
//! For the mixed-version lab test, [`enable_next_for_tests`] makes this
//! build claim the next protocol version and append an extra field to what
//! it writes (`MESH_TEST_NEXT_PROTOCOL=1` in meshd).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// ALPN protocol id: the major version. Major 2 (release 0.2.0) signs each
/// replicated value's encoding as its writer made it, which builds of major
/// 1 did not; they cannot share a mesh.
pub const ALPN: &[u8] = b"mesh/2";
/// The major version, as in [`ALPN`].
pub const MAJOR: u32 = 2;
/// The newest protocol version (within [`MAJOR`]) this build speaks.
/// 1: release 0.2.0. 2: compact relay envelopes ([`COMPACT_ENVELOPES`]).
/// 3: tombstones expire ([`EXPIRING_TOMBSTONES`]).
pub const PROTOCOL_VERSION: u32 = 3;
/// The version whose hosts read relay envelopes with compact tags (a
/// must-understand data-plane flag, dataplane/PROTOCOL.md "Relaying").
pub const COMPACT_ENVELOPES: u32 = 2;
/// The version whose hosts leave expired tombstones out of their digests
/// (`state::expiry`, PROTOCOL.md "Tombstones"): digests towards older
/// hosts hash every tombstone, and tombstones are forgotten only while
/// every member that was not removed speaks it.
pub const EXPIRING_TOMBSTONES: u32 = 3;
/// The oldest protocol version this build still speaks: at least the one of
/// the previous minor release (PROTOCOL.md, "Support window").
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Member-record meta key: the software version (`CARGO_PKG_VERSION`).
pub const META_VERSION: &str = "version";
/// Member-record meta key: the protocol range spoken, `MIN-MAX`.
pub const META_PROTOCOL: &str = "protocol";

static NEXT: AtomicBool = AtomicBool::new(false);

/// The field a next-version build appends to frames and values: a postcard
/// `Option<String>`, as a real appended field would be.
const NEXT_FIELD: &[u8] = &[1, 4, b'n', b'e', b'x', b't'];

/// Makes this process behave as a build of the next protocol version would
/// towards this one: it offers `PROTOCOL_VERSION + 1` and appends an extra
/// field to every frame, hello and replicated value it writes. Test-only:
/// the lab runs a mesh of both kinds and checks that everything works.
pub fn enable_next_for_tests() {
    NEXT.store(true, Ordering::Relaxed);
}

/// Whether [`enable_next_for_tests`] was called.
pub fn next_for_tests() -> bool {
    NEXT.load(Ordering::Relaxed)
}

/// The protocol versions this process offers, `(min, max)`.
pub fn supported() -> (u32, u32) {
    let max = PROTOCOL_VERSION + u32::from(next_for_tests());
    (MIN_PROTOCOL_VERSION, max)
}

/// Bytes this process appends after the fields it knows (empty unless
/// [`enable_next_for_tests`]).
pub fn appended_field() -> &'static [u8] {
    if next_for_tests() {
        NEXT_FIELD
    } else {
        &[]
    }
}

/// The version two ranges meet at: the highest both support, if any.
pub fn negotiate(ours: (u32, u32), theirs: (u32, u32)) -> Option<u32> {
    let version = ours.1.min(theirs.1);
    (version >= ours.0 && version >= theirs.0).then_some(version)
}

/// Whether a peer advertising `theirs` and this process meet at `version`
/// or a later one: what decides if a feature of that version is used
/// towards the peer.
pub fn meets(theirs: (u32, u32), version: u32) -> bool {
    negotiate(supported(), theirs).is_some_and(|v| v >= version)
}

/// `MIN-MAX` as advertised in [`META_PROTOCOL`].
pub fn format_range((min, max): (u32, u32)) -> String {
    format!("{min}-{max}")
}

/// Parses [`format_range`]'s form (a single number is a one-version range).
pub fn parse_range(text: &str) -> Option<(u32, u32)> {
    let (min, max) = match text.split_once('-') {
        Some((min, max)) => (min.trim().parse().ok()?, max.trim().parse().ok()?),
        None => {
            let v = text.trim().parse().ok()?;
            (v, v)
        }
    };
    (min <= max).then_some((min, max))
}

/// What this build met on the wire that a newer build wrote, by kind.
pub struct Unknown {
    /// Frames (hello, messages, channel states) with bytes after the fields
    /// this build knows.
    pub frame_fields: AtomicU64,
    /// Messages of a kind this build does not know, skipped.
    pub messages: AtomicU64,
    /// Replicated values with fields this build does not know (kept and
    /// passed on with the value).
    pub value_fields: AtomicU64,
    /// Replicated values this build cannot read at all (not applied; a
    /// guarded channel, as all of meshd's are, refuses them).
    pub unreadable_values: AtomicU64,
}

/// Process-wide counters (exported as `mesh_protocol_unknown_total`).
pub static UNKNOWN: Unknown = Unknown {
    frame_fields: AtomicU64::new(0),
    messages: AtomicU64::new(0),
    value_fields: AtomicU64::new(0),
    unreadable_values: AtomicU64::new(0),
};

impl Unknown {
    /// `(kind, count)` pairs, for metrics.
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            ("frame_fields", self.frame_fields.load(Ordering::Relaxed)),
            ("messages", self.messages.load(Ordering::Relaxed)),
            ("value_fields", self.value_fields.load(Ordering::Relaxed)),
            (
                "unreadable_values",
                self.unreadable_values.load(Ordering::Relaxed),
            ),
        ]
    }
}

pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_meet_at_the_highest_common_version() {
        assert_eq!(negotiate((1, 1), (1, 2)), Some(1));
        assert_eq!(negotiate((1, 2), (1, 2)), Some(2));
        assert_eq!(negotiate((1, 2), (1, 1)), Some(1));
        assert_eq!(negotiate((2, 3), (1, 1)), None);
        assert_eq!(negotiate((1, 1), (2, 3)), None);
    }

    #[test]
    fn ranges_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_range(&format_range((1, 2))), Some((1, 2)));
        assert_eq!(parse_range("3"), Some((3, 3)));
        for bad in ["", "x", "2-1", "1-", "-1", "1-2-3"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_appended_field_is_a_postcard_option_string() {
        let field: Option<String> = postcard::from_bytes(NEXT_FIELD).unwrap();
        assert_eq!(field.as_deref(), Some("next"));
    }
}
