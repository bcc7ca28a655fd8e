//! The scale lab at a size CI can afford: 12 complete daemons, one
//! network, one container per host (root; needs meshd/meshctl built).

use integration::is_root;
use integration::scale::{self, Options};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[test]
fn twelve_hosts_converge_reach_each_other_and_recover_from_sigkill() {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    let opts = Options {
        idle: Duration::from_secs(10),
        ..Options::new(12)
    };
    let report = scale::run(&opts, &AtomicBool::new(false)).expect("scale lab run");
    eprintln!("{}", report.table());
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
}
