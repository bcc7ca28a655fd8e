//! The scale lab at a size CI can afford: 12 complete daemons, one
//! network, one container per host (root; needs meshd/meshctl built).
//! Besides convergence and recovery it holds every host's idle sending to
//! a budget in datagrams (`scale::budget`), which does not depend on how
//! loaded the CI machine is, and counts the member records each host
//! floods while idle (none may be: each costs a message on every link).

use integration::is_root;
use integration::scale::{self, budget, Options, Report};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[test]
fn twelve_hosts_converge_reach_each_other_and_recover_from_sigkill() {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    // With margin longer than the ping phase's paths stay active (30 s)
    // plus a reflexive address's lifetime (60 s), after which an idle host
    // used to withdraw its addresses and re-flood its member record: what
    // changes on a slower cycle than the heartbeats is inside the window.
    let opts = Options {
        idle: Duration::from_secs(120),
        ..Options::new(12)
    };
    let report = scale::run(&opts, &AtomicBool::new(false)).expect("scale lab run");
    eprintln!("{}", report.table());
    let over_budget = idle_datagrams_over_budget(&opts, &report);
    assert_eq!(report.hosts, 12);
    assert_eq!(
        report.pings_ok, report.pings_total,
        "unanswered: {:?}",
        report.ping_failures
    );
    assert_eq!(report.pings_total, 12 * 3, "every host pings 3 others");
    assert_eq!(report.killed.len(), 1, "10 % of 12 hosts, rounded");
    // Every daemon was read: nothing measured as zero.
    assert!(report.rss_mib.min > 0.0 && report.threads.min >= 1.0 && report.fds.min > 0.0);
    assert!(
        report.idle_control_bytes_per_sec.min > 0.0,
        "heartbeats are counted on every host"
    );
    assert_eq!(report.idle_by_host.len(), 12, "every host's counters read");
    assert!(
        over_budget.is_empty(),
        "idle sending over budget:\n{}",
        over_budget.join("\n")
    );
}

/// Prints every host's idle datagram rates next to the budgets and returns
/// one line per host and quantity over its budget (relays: any at all,
/// since every direct path works in this lab; member records flooded: any
/// at all, since no host joins, leaves or changes while idle).
fn idle_datagrams_over_budget(opts: &Options, report: &Report) -> Vec<String> {
    let data_budget = budget::data_datagrams_per_sec(opts);
    let control_budget = budget::control_datagrams_per_sec(opts);
    eprintln!(
        "idle datagrams sent per second (budgets: probes ≤ {data_budget:.2}, \
         control ≤ {control_budget:.2}, relay = 0):"
    );
    let mut over = Vec::new();
    for h in &report.idle_by_host {
        eprintln!(
            "  {}: data {:.1} (probes {:.1}), relay {:.1}, control {:.1}",
            h.host,
            h.data_datagrams_per_sec,
            h.probe_datagrams_per_sec,
            h.relay_datagrams_per_sec,
            h.control_datagrams_per_sec
        );
        let flooded = h.member_updates.unwrap_or(u64::MAX);
        eprintln!("  {}: member records flooded {flooded}", h.host);
        if flooded != 0 {
            over.push(format!(
                "{}: flooded {flooded} member records while nothing changed",
                h.host
            ));
        }
        let mut check = |what: &str, value: f64, limit: f64| {
            if value > limit {
                over.push(format!(
                    "{}: {what} {value:.1}/s > {limit:.2}/s (by {:.1}/s)",
                    h.host,
                    value - limit
                ));
            }
        };
        check("path probes", h.probe_datagrams_per_sec, data_budget);
        check(
            "control datagrams",
            h.control_datagrams_per_sec,
            control_budget,
        );
        check("relay datagrams", h.relay_datagrams_per_sec, 0.0);
    }
    over
}
