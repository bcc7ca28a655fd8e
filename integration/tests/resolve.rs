//! ARP and IPv6 neighbour discovery for attachments on other hosts are
//! answered by the asking container's own host, from the endpoint
//! records, not flooded to every member (issue 24): on the 3-host
//! namespace lab (root), db on host 1 resolves web on host 0 over IPv4 and
//! IPv6 and pings it, while host 2, which holds neither, captures its TAP.
//! Host 2 must see no question for web's addresses; a question for an
//! address no record names still floods (and host 2 sees it), so the
//! capture is known to work.

use integration::{is_root, unique_prefix, wait_for, Lab};
use mesh_api::{Attachment, StatusResponse};
use std::time::Duration;

const NET: &str = "resolve";
const UNNAMED: &str = "10.95.0.200";

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

fn status(lab: &Lab, host: usize) -> StatusResponse {
    lab.status(host)
        .unwrap_or_else(|e| panic!("status of host {host}: {e:#}"))
}

fn answered(lab: &Lab, host: usize) -> u64 {
    let s = status(lab, host);
    s.drops.get("neighbour_answered").copied().unwrap_or(0)
}

/// The MAC `ns` resolved `ip` to, if it has.
fn neighbour(lab: &Lab, ns: &str, ip: &str) -> Option<String> {
    let out = lab.exec_ok(ns, &["ip", "neigh", "show", ip]).ok()?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

#[test]
fn a_container_resolves_remote_attachments_without_a_flood() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let prefix = unique_prefix("rsv");
    let mut lab = Lab::new(&prefix, 3).expect("building the lab");
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.95.0.0/24"])
        .unwrap();
    let web = lab.add_container("web").unwrap();
    let db = lab.add_container("db").unwrap();
    let w: Attachment = lab.attach_netns(0, &web, NET, &["--name", "web"]);
    let _d: Attachment = lab.attach_netns(1, &db, NET, &["--name", "db"]);
    let web_ip = bare(&w.ip);
    let web_ip6 = bare(w.ip6.as_deref().expect("the network has an IPv6 prefix"));
    // Both hosts of the conversation have the records before anyone asks
    // (the test is about the answers, not about how fast records spread).
    wait_for(Duration::from_secs(15), || {
        for host in 0..2 {
            let n = status(&lab, host).switch.pinned_macs;
            anyhow::ensure!(n >= 2, "host {host} pinned {n} MACs");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    let host2 = lab.hosts[2].netns.clone();
    let tap = lab.network_tap(2).unwrap();
    let capture = lab.dir.join("host2-tap.txt");
    let log = lab.dir.join("host2-tcpdump.log");
    let pid = lab
        .spawn_helper({
            let mut c = lab.exec(&host2, &["tcpdump", "-i", &tap, "-n", "-l", "arp or icmp6"]);
            c.stdout(std::fs::File::create(&capture).unwrap())
                .stderr(std::fs::File::create(&log).unwrap());
            c
        })
        .unwrap();
    // The checks below are of what host 2 did not see: they check
    // something only once the capture runs.
    wait_for(Duration::from_secs(10), || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        anyhow::ensure!(said.contains("listening on"), "tcpdump: {said}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    let before = (answered(&lab, 0), answered(&lab, 1));
    lab.exec_ok(&db, &["ip", "neigh", "flush", "all"]).unwrap();
    lab.wait_ping(&db, &web_ip, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("IPv4: {e:#}"));
    wait_for(Duration::from_secs(10), || {
        lab.exec_ok(&db, &["ping", "-6", "-n", "-c", "1", "-W", "1", &web_ip6])
            .map(|_| ())
    })
    .unwrap_or_else(|e| panic!("IPv6: {e:#}"));
    // A question no record answers still floods.
    let _ = lab
        .exec(&db, &["ping", "-n", "-c", "1", "-W", "1", UNNAMED])
        .output();
    std::thread::sleep(Duration::from_millis(500));
    lab.stop_helper(pid).unwrap();
    let seen = std::fs::read_to_string(&capture).unwrap_or_default();

    for ip in [&web_ip, &web_ip6] {
        assert_eq!(
            neighbour(&lab, &db, ip).as_deref(),
            Some(w.mac.as_str()),
            "db resolved {ip} to web's MAC"
        );
    }
    assert!(
        seen.contains(&format!("who-has {UNNAMED} ")),
        "the unnamed address's request flooded to host 2:\n{seen}"
    );
    for ip in [&web_ip, &web_ip6] {
        assert!(
            !seen
                .lines()
                .any(|l| l.contains(&format!("who-has {ip} "))
                    || l.contains(&format!("who has {ip},"))),
            "a question for {ip} reached host 2:\n{seen}"
        );
    }
    let after = (answered(&lab, 0), answered(&lab, 1));
    assert!(
        after.1 >= before.1 + 2,
        "host 1 answered db's ARP request and solicitation: {before:?} → {after:?}"
    );
    assert!(
        after.0 > before.0,
        "host 0 answered web's question for db: {before:?} → {after:?}"
    );
}
