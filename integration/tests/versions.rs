//! Hosts of two protocol versions in one mesh (PROTOCOL.md), on the 3-host
//! namespace lab (root): hosts 1 and 3 run "the other build", host 2
//! today's. The other build is
//! - today's binary claiming the next protocol version and writing fields no
//!   build knows in every frame, hello, replicated value, member record and
//!   data-plane header (`MESH_TEST_NEXT_PROTOCOL=1`): always;
//! - the newest release's build, from `MESH_COMPAT_BIN_DIR` (CI builds it
//!   once from the release commit, `scripts/compat-release.sh`): when set.
//!
//! Everything must work both ways: join, networks, DNS, services, data,
//! direct and relayed.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use integration::{dns_query, is_root, unique_prefix, wait_for, Lab};
use mesh_api::{Attachment, StatusResponse};

const OTHER: [usize; 2] = [0, 2];
const TODAY: usize = 1;
const DATA_PORT: u16 = 7801;

enum Other {
    Next,
    Release(PathBuf),
}

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

fn max_of(range: &str) -> u32 {
    range.rsplit('-').next().unwrap().parse().unwrap()
}

#[test]
fn a_mesh_of_today_and_the_next_protocol_version_works_both_ways() {
    mixed_mesh(Other::Next);
}

#[test]
fn a_mesh_of_today_and_the_latest_release_works_both_ways() {
    match std::env::var_os("MESH_COMPAT_BIN_DIR") {
        Some(dir) => mixed_mesh(Other::Release(dir.into())),
        None => eprintln!("skipping: MESH_COMPAT_BIN_DIR is not set (no release to compare with)"),
    }
}

fn mixed_mesh(other: Other) {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    if integration::which("busybox").is_none() {
        eprintln!("skipping: busybox is not installed");
        return;
    }
    let mut lab = Lab::new(&unique_prefix("ver"), 3).expect("building the lab");
    for i in OTHER {
        match &other {
            Other::Next => lab.hosts[i]
                .env
                .push(("MESH_TEST_NEXT_PROTOCOL".into(), "1".into())),
            Other::Release(dir) => lab.hosts[i].bin_dir = Some(dir.clone()),
        }
    }
    // Host 2 (today's) joins through host 1 (the other build), host 3 too.
    if let Err(e) = lab.start_mesh() {
        lab.dump_logs();
        panic!("mixed mesh did not come up: {e:#}");
    }

    // Versions: each link speaks the highest version both ends support.
    let status = |i: usize| -> StatusResponse { lab.status(i).unwrap() };
    let today = status(TODAY);
    let today_max = max_of(today.host.protocol.as_deref().unwrap());
    for p in &today.peers {
        // The release may speak only older versions; the next build, ours.
        let theirs = max_of(p.protocol.as_deref().unwrap());
        assert_eq!(p.link_protocol, Some(today_max.min(theirs)), "{p:?}");
    }
    if let Other::Next = other {
        let first = status(OTHER[0]);
        let next_max = max_of(first.host.protocol.as_deref().unwrap());
        assert_eq!(next_max, today_max + 1);
        let link_to = |name: &str| {
            first
                .peers
                .iter()
                .find(|p| p.name == name)
                .unwrap()
                .link_protocol
        };
        assert_eq!(link_to(&lab.hosts[2].name), Some(next_max));
        assert_eq!(link_to(&lab.hosts[TODAY].name), Some(today_max));
    }
    let version = lab.meshctl(TODAY, &["version"]).unwrap();
    assert!(
        version.contains(&format!("client  {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // Networks written by either build land everywhere.
    lab.meshctl(
        OTHER[0],
        &["network", "create", "mixa", "--subnet", "10.81.0.0/24"],
    )
    .unwrap();
    lab.meshctl(
        TODAY,
        &["network", "create", "mixb", "--subnet", "10.82.0.0/24"],
    )
    .unwrap();
    for i in 0..3 {
        wait_for(Duration::from_secs(15), || {
            let list = lab.meshctl(i, &["network", "list"])?;
            anyhow::ensure!(
                list.contains("mixa") && list.contains("mixb"),
                "host {i}: {list}"
            );
            Ok(())
        })
        .unwrap();
    }

    // A container per host on mixa, each serving its name over HTTP.
    let www = lab.dir.join("www");
    let mut containers = Vec::new();
    for (i, name) in ["c1", "c2", "c3"].into_iter().enumerate() {
        let ns = lab.add_container(name).unwrap();
        let a: Attachment =
            lab.attach_netns(i, &ns, "mixa", &["--name", name, "--label", "app=web"]);
        let root = www.join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("{name}\n")).unwrap();
        let httpd = lab.exec(
            &ns,
            &[
                "busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
                root.to_str().unwrap(),
            ],
        );
        lab.spawn_helper(httpd).unwrap();
        containers.push((ns, a));
    }
    let ip = |i: usize| bare(&containers[i].1.ip);

    // Data, both ways across the versions.
    for (from, to) in [(1, 0), (0, 1), (1, 2), (2, 1), (0, 2)] {
        lab.wait_ping(&containers[from].0, &ip(to), Duration::from_secs(20))
            .unwrap_or_else(|e| {
                lab.dump_logs();
                panic!("{e:#}")
            });
    }

    // Relayed data across the versions. Each hop of a relayed datagram
    // picks its own envelope form (compact only towards a host of protocol
    // 2 or later, dataplane/PROTOCOL.md); a wrong one is `bad_reserved`.
    // First the outer hosts' data port is blocked, so today's host relays
    // between the other builds; then today's host's and host 1's, so host
    // 3 relays with today's host as origin and destination.
    for (a, b, via) in [(0, 2, TODAY), (0, TODAY, 2)] {
        lab.block_udp_port(a, b, DATA_PORT).unwrap();
        let want = format!("relayed via {}", lab.hosts[via].name);
        lab.wait_path(a, &lab.hosts[b].name, &want, Duration::from_secs(20))
            .unwrap_or_else(|e| {
                lab.dump_logs();
                panic!("{e:#}")
            });
        for (from, to) in [(a, b), (b, a)] {
            lab.wait_ping(&containers[from].0, &ip(to), Duration::from_secs(20))
                .unwrap_or_else(|e| {
                    lab.dump_logs();
                    panic!("relayed {from} -> {to} via {via}: {e:#}")
                });
        }
        lab.unblock_udp_port(a, b, DATA_PORT).unwrap();
        // Direct again before the next pair is cut: a relay forwards only
        // to hosts it reaches directly.
        for (x, y) in [(a, b), (b, a)] {
            lab.wait_path(x, &lab.hosts[y].name, "direct", Duration::from_secs(20))
                .unwrap_or_else(|e| {
                    lab.dump_logs();
                    panic!("{e:#}")
                });
        }
    }
    for i in 0..3 {
        let metrics = lab.meshctl(i, &["metrics"]).unwrap();
        let bad = metrics
            .lines()
            .filter(|l| l.contains("dataplane_dropped_datagrams") && l.contains("bad_reserved"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
        assert_eq!(
            bad, 0,
            "host {i} dropped datagrams with flags it does not know"
        );
    }

    // DNS: each build answers names of containers on the other.
    for (from, to, name) in [(1, 0, "c1.mixa"), (0, 1, "c2.mixa"), (2, 1, "c2.mixa")] {
        let server: IpAddr = containers[from]
            .1
            .dns_server
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        wait_for(Duration::from_secs(10), || {
            let a = dns_query(&containers[from].0, server, name, RecordType::A)?;
            anyhow::ensure!(a == vec![ip(to).parse::<IpAddr>()?], "{name}: {a:?}");
            Ok(())
        })
        .unwrap();
    }

    // Services: one defined on each build, reached from a container on the
    // other, spread over backends on both builds.
    for (author, client, service) in [(OTHER[0], TODAY, "webx"), (TODAY, OTHER[1], "weby")] {
        lab.meshctl(
            author,
            &[
                "service",
                "create",
                service,
                "--network",
                "mixa",
                "--port",
                "80:8080",
                "--selector",
                "app=web",
            ],
        )
        .unwrap();
        let url = format!("http://{service}.mixa/");
        let ns = &containers[client].0;
        let seen = wait_for(Duration::from_secs(20), || {
            let script =
                format!("for i in $(seq 12); do timeout 2 busybox wget -q -O - {url}; done");
            let out = lab.exec_ok(ns, &["sh", "-c", &script])?;
            let mut names: Vec<&str> = out.split_whitespace().collect();
            names.sort();
            names.dedup();
            anyhow::ensure!(names.len() >= 2, "{url} from host {client}: {out:?}");
            Ok(names.into_iter().map(String::from).collect::<Vec<_>>())
        })
        .unwrap_or_else(|e| {
            lab.dump_logs();
            panic!("{e:#}")
        });
        eprintln!("{service} answered by {seen:?}");
    }

    // What the other build added really crossed today's build, and was
    // ignored there rather than refused.
    if let Other::Next = other {
        let metrics = lab.meshctl(TODAY, &["metrics"]).unwrap();
        for kind in ["frame_fields", "value_fields"] {
            let count: u64 = metrics
                .lines()
                .find(|l| l.starts_with(&format!("mesh_protocol_unknown_total{{kind=\"{kind}\"}}")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {kind} count in:\n{metrics}"));
            assert!(count > 0, "today's host saw no {kind} from the next build");
        }
        let status = lab.status(TODAY).unwrap();
        assert_eq!(
            status.drops.get("bad_reserved").copied().unwrap_or(0),
            0,
            "datagrams with the next build's header flag were dropped"
        );
    }
}
