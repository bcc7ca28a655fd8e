//! Dialing: one loop per member this host should be connected to but is
//! not, trying its addresses with capped exponential backoff. Whether a loop
//! runs and whether it goes on is decided by [`crate::peers::Peers`]: a loop
//! ends when the peer is up, forgotten or blocked, and `unblock_all` starts
//! new ones — a blocked peer costs nothing while blocked.
//!
//! Dials to members this host never reached share [`UNPROVEN_DIAL_PERMITS`]
//! permits and back off further (see [`crate::peers::DialRound::proven`]):
//! a member minting thousands of identities pointing at chosen addresses
//! gets a trickle of handshake attempts out of each host, not a flood.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::{jitter, lock, Inner};
use crate::{Error, PeerId};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// The cap while control with the peer goes through a relay: the direct
/// link is to take over soon after the path heals.
const RELAYED_BACKOFF_CAP: Duration = Duration::from_secs(3);
/// The cap for members never reached.
const UNPROVEN_BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Handshake attempts to members never reached, in flight at once over all
/// of them. Genuine newcomers dial us too, so they join even while these
/// permits are held by dials that time out.
pub const UNPROVEN_DIAL_PERMITS: usize = 8;
/// The higher id of two hosts that learn of each other at once waits this
/// long before dialing, so that they rarely both dial.
const HIGHER_ID_DELAY: Duration = Duration::from_millis(500);
/// The TCP fallback is dialed only after a peer had no link this long: a
/// relayed control session (UDP, preferred) gets its chance first.
const TCP_AFTER: Duration = Duration::from_secs(5);
/// While a peer's link is over TCP, QUIC is tried again this often (one
/// attempt at a time): back on UDP within a few seconds of it working.
const UDP_RETRY: Duration = Duration::from_secs(2);

/// Resolves `host:port` to every address it names.
pub(super) async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, Error> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Error::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .collect();
    if resolved.is_empty() {
        return Err(Error::Resolve {
            addr: addr.to_string(),
            reason: "no addresses".into(),
        });
    }
    Ok(resolved)
}

/// Doubles `backoff` up to the cap.
fn next_backoff(backoff: Duration, proven: bool) -> Duration {
    let cap = if proven {
        BACKOFF_CAP
    } else {
        UNPROVEN_BACKOFF_CAP
    };
    (backoff * 2).min(cap)
}

/// Runs for a peer already claimed with [`crate::peers::Peers::claim_dial`].
pub(super) async fn dial_loop(node: Arc<Inner>, peer: PeerId) {
    if node.id > peer {
        tokio::time::sleep(jitter(HIGHER_ID_DELAY)).await;
    }
    let mut backoff = BACKOFF_START;
    loop {
        if node.is_shutting_down() {
            return;
        }
        let Some(round) = lock(&node.peers).dial_round(peer) else {
            return;
        };
        if try_candidates(&node, peer, round.candidates.clone(), round.proven, false).await {
            // The next round sees the link and ends the loop.
            continue;
        }
        let relayed = node.relayed_via(&peer);
        // A relay reached over TCP is no UDP path.
        let relayed_over_udp = relayed.is_some_and(|via| {
            !lock(&node.peers)
                .slots
                .get(&via)
                .and_then(|s| s.link.as_ref())
                .is_some_and(|l| l.tcp)
        });
        let relayed = relayed.is_some();
        // No UDP path, direct or relayed: the TCP fallback.
        let waited = node.unlinked_for(&peer).is_some_and(|d| d >= TCP_AFTER);
        if !relayed_over_udp && node.tcp_fallback && waited {
            let targets = tcp_targets(&node, peer, round.candidates);
            if try_candidates(&node, peer, targets, round.proven, true).await {
                continue;
            }
        }
        tokio::time::sleep(jitter(if relayed {
            backoff.min(RELAYED_BACKOFF_CAP)
        } else {
            backoff
        }))
        .await;
        backoff = next_backoff(backoff, round.proven);
    }
}

/// At most this many TCP addresses are dialled for one peer: what a member
/// advertises must not turn every host into its port scanner.
const MAX_TCP_TARGETS: usize = 8;

/// The TCP fallback addresses of `peer`: its QUIC addresses (same port)
/// and the one extra port it may advertise (`tcp_extra_port`; more, or a
/// port 0, are ignored), at most [`MAX_TCP_TARGETS`] in all.
fn tcp_targets(node: &Inner, peer: PeerId, candidates: Vec<String>) -> Vec<String> {
    let extra: Option<u16> = lock(&node.peers)
        .table
        .get(&peer)
        .and_then(|r| r.meta.get(super::TCP_PORTS_META).cloned())
        .and_then(|ports| ports.split(',').next()?.trim().parse().ok())
        .filter(|port| *port != 0);
    let mut targets: Vec<String> = Vec::new();
    for candidate in &candidates {
        targets.push(candidate.clone());
        if let (Some(port), Some((host, own))) = (extra, candidate.rsplit_once(':')) {
            if own != port.to_string() {
                targets.push(format!("{host}:{port}"));
            }
        }
    }
    targets.dedup();
    targets.truncate(MAX_TCP_TARGETS);
    targets
}

/// Runs while `peer`'s link `link` is over TCP: tries QUIC at its
/// advertised addresses, one attempt at a time, every [`UDP_RETRY`]; a QUIC
/// link that comes up replaces the TCP one (`peers.rs`), which ends this
/// loop. Costs one QUIC handshake attempt per TCP-linked peer per period.
pub(super) async fn udp_retry_loop(node: Arc<Inner>, peer: PeerId, link: usize) {
    loop {
        tokio::time::sleep(jitter(UDP_RETRY)).await;
        if node.is_shutting_down() || !lock(&node.peers).is_current(&peer, link) {
            return;
        }
        let Some(candidates) = lock(&node.peers).advertised(&peer) else {
            continue;
        };
        if try_candidates(&node, peer, candidates, true, false).await {
            debug!(peer = %peer, "back on UDP");
            return;
        }
    }
}

/// Tries every address at once; true once one reached `peer`. All at
/// once, not in turn: a member behind a NAT advertises a private address
/// nobody else can reach (a dial to it only times out) beside its
/// reflexive one, and that NAT lets us in only while its host is dialing
/// us too (simultaneous open), so a dial must not wait behind a dead one.
async fn try_candidates(
    node: &Arc<Inner>,
    peer: PeerId,
    candidates: Vec<String>,
    proven: bool,
    tcp: bool,
) -> bool {
    // One permit per round: a name in a record is also a target.
    let _permit = if proven {
        None
    } else {
        match node.unproven_dials.clone().acquire_owned().await {
            Ok(permit) => Some(permit),
            Err(_) => return false, // closed: shutting down
        }
    };
    let mut dials = tokio::task::JoinSet::new();
    for candidate in candidates {
        // Re-resolved on every attempt: a member's DNS name may move.
        let Ok(targets) = resolve(&candidate).await else {
            debug!(peer = %peer, addr = %candidate, "cannot resolve");
            continue;
        };
        let per_name = if proven { targets.len() } else { 2 };
        for target in targets.into_iter().take(per_name) {
            let node = node.clone();
            dials.spawn(async move {
                let dialed = if tcp {
                    node.dial_tcp(target, Some(peer)).await
                } else {
                    node.dial_addr(target, Some(peer)).await
                };
                (target, dialed)
            });
        }
    }
    // Dropping the set ends the dials still in flight once one got through.
    while let Some(done) = dials.join_next().await {
        match done {
            Ok((_, Ok(id))) if id == peer => return true,
            Ok((_, Ok(_))) | Err(_) => {}
            Ok((target, Err(e))) => debug!(peer = %peer, addr = %target, error = %e, "dial failed"),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = BACKOFF_START;
        let mut steps = vec![backoff];
        for _ in 0..8 {
            backoff = next_backoff(backoff, true);
            steps.push(backoff);
        }
        assert_eq!(steps[1], Duration::from_millis(400));
        assert_eq!(*steps.last().unwrap(), BACKOFF_CAP);
        assert!(steps.windows(2).all(|w| w[0] <= w[1]));
    }
}
