//! What an idle daemon may send in the scale lab, counted in datagrams
//! rather than time so the budget holds on a loaded CI machine. Both
//! budgets are per host and per second of the idle window.

use super::Options;

/// Data-plane path probes sent directly (pings and their answers); relay
/// envelopes must be none at all. Containers' own frames are not budgeted:
/// they are the users' traffic (ARP and neighbour discovery are flooded to
/// every member of a network, as on any switch).
///
/// After the ping phase a host has at most `2 * ping_fanout` active peers:
/// the `ping_fanout` hosts it pinged plus about as many that pinged it. Each
/// active peer costs one probe and one answer per second, so
/// `2 * (2 * ping_fanout)`, plus three of slack (a wake-up's MTU probe,
/// a container's ARP refresh). Idle peers cost
/// nothing, and relays are only probed while a direct path fails, so the
/// budget does not grow with the number of hosts.
pub fn data_datagrams_per_sec(opts: &Options) -> f64 {
    2.0 * (2 * opts.ping_fanout) as f64 + 3.0
}

/// Control (QUIC) datagrams from the control port.
///
/// Every pair of hosts shares one QUIC link (a full mesh: `hosts - 1` links
/// per host). The dialer of a link sends a heartbeat every 2 s and the other
/// end an ACK, so each end sends one datagram per 2 s on it on average
/// (0.5 per link); `0.75` leaves room for QUIC's own ACK timing. `+ 2`
/// covers anti-entropy (one digest to one peer every 3 s, and its ACK) and
/// rekeys. Nothing else may be sent per link per second while idle.
pub fn control_datagrams_per_sec(opts: &Options) -> f64 {
    0.75 * links(opts) as f64 + 2.0
}

/// QUIC links per host: a full mesh today.
fn links(opts: &Options) -> usize {
    opts.hosts.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_budget_does_not_grow_with_hosts() {
        let small = Options::new(12);
        let large = Options::new(200);
        assert_eq!(data_datagrams_per_sec(&small), 15.0);
        assert_eq!(data_datagrams_per_sec(&large), 15.0);
        assert_eq!(control_datagrams_per_sec(&small), 0.75 * 11.0 + 2.0);
    }
}
