//! Network policy on the 3-host namespace lab (root), one lab for every
//! check: on a `deny` network `app=web` reaches `app=db` on 5432 only
//! (wherever each runs), replies flow, `db` cannot open `web`, removing a
//! rule cuts an open connection within 2 s, an `open` network is
//! untouched, and a restarting daemon never lets the deny network open.

use integration::{is_root, unique_prefix, wait_for, Lab};
use mesh_api::{Attachment, Network, PolicyMode, PolicyRule};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

const DENY: &str = "pol";
const OPEN: &str = "opn";

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

struct World {
    lab: Lab,
    www: PathBuf,
}

impl World {
    /// A container on `host`, on both networks, with `app=LABEL`; returns
    /// its namespace and its addresses on the deny and the open network.
    fn container(&mut self, name: &str, host: usize, app: &str) -> (String, String, String) {
        let ns = self.lab.add_container(name).unwrap();
        let label = format!("app={app}");
        let a: Attachment =
            self.lab
                .attach_netns(host, &ns, DENY, &["--name", name, "--label", &label]);
        let o: Attachment = self.lab.attach_netns(host, &ns, OPEN, &["--label", &label]);
        (ns, bare(&a.ip), bare(&o.ip))
    }

    /// busybox httpd in `ns` on each of `ports`, answering `ok`.
    fn serve(&mut self, ns: &str, ports: &[u16]) {
        let root = self.www.join(ns);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), "ok\n").unwrap();
        for p in ports {
            let cmd = self.lab.exec(
                ns,
                &[
                    "busybox",
                    "httpd",
                    "-f",
                    "-p",
                    &p.to_string(),
                    "-h",
                    root.to_str().unwrap(),
                ],
            );
            self.lab.spawn_helper(cmd).unwrap();
        }
    }

    /// Whether `from` gets an answer from `ip:port` (one new connection).
    fn reaches(&self, from: &str, ip: &str, port: u16) -> bool {
        self.lab
            .http_get(from, &format!("http://{ip}:{port}/f"))
            .is_some_and(|o| o.trim() == "ok")
    }

    fn wait_reaches(&self, from: &str, ip: &str, port: u16) {
        wait_for(Duration::from_secs(10), || {
            if self.reaches(from, ip, port) {
                Ok(())
            } else {
                anyhow::bail!("{from} does not reach {ip}:{port}")
            }
        })
        .unwrap_or_else(|e| {
            self.lab.dump_logs();
            panic!("{e:#}")
        });
    }
}

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn deny_networks_pass_only_what_rules_allow() {
    if !is_root() || integration::which("busybox").is_none() {
        eprintln!("skipping: needs root and busybox");
        return;
    }
    let mut lab = Lab::new(&unique_prefix("pol"), 3).expect("building the lab");
    lab.start_mesh().expect("mesh up");
    let www = std::env::temp_dir().join(format!("{}-www", unique_prefix("pol")));
    lab.meshctl(
        0,
        &[
            "network",
            "create",
            DENY,
            "--subnet",
            "10.91.0.0/24",
            "--policy",
            "deny",
        ],
    )
    .unwrap();
    lab.meshctl(0, &["network", "create", OPEN, "--subnet", "10.92.0.0/24"])
        .unwrap();
    let mut w = World { lab, www };
    let (web, _, web_o) = w.container("web", 0, "web");
    let (db, db_ip, db_o) = w.container("db", 1, "db");
    let (web2, web2_ip, _) = w.container("web2", 2, "web");
    let (other, _, _) = w.container("other", 2, "other");
    // On db's own host: its traffic to db never leaves the bridge.
    let (near, _, _) = w.container("near", 1, "web");
    w.serve(&db, &[5432, 22]);
    w.serve(&web2, &[80]);

    // Every host sees the network as deny (the setting is replicated).
    wait_for(Duration::from_secs(10), || {
        let nets: Vec<Network> = w.lab.meshctl_json(2, &["network", "list"])?;
        match nets.iter().find(|n| n.id == DENY) {
            Some(n) if n.policy == PolicyMode::Deny => Ok(()),
            _ => anyhow::bail!("not deny yet on host 2"),
        }
    })
    .unwrap();
    // No rule: nothing passes. The open network is unaffected.
    assert!(!w.reaches(&web, &db_ip, 5432), "deny without rules passed");
    assert!(!w.lab.ping(&web, &db_ip, 1), "ping passed a deny network");
    w.wait_reaches(&web, &db_o, 5432);
    assert!(w.lab.ping(&web, &db_o, 1));

    // Bad input: one line, nothing added.
    for (args, want) in [
        (
            vec!["policy", "add", "nosuch", "--from", "any", "--to", "app=db"],
            "does not exist",
        ),
        (
            vec!["policy", "add", DENY, "--from", "app", "--to", "app=db"],
            "bad selector",
        ),
        (
            vec![
                "policy", "add", DENY, "--from", "any", "--to", "app=db", "--port", "99999",
            ],
            "port",
        ),
        (vec!["policy", "rm", DENY, "nosuch"], "no rule named"),
    ] {
        let e = w.lab.meshctl(0, &args).unwrap_err().to_string();
        assert!(e.contains(want) && !e.contains('\n'), "{args:?}: {e}");
    }
    let rules: Vec<PolicyRule> = w.lab.meshctl_json(0, &["policy", "list"]).unwrap();
    assert!(rules.is_empty(), "{rules:?}");

    // web → db on 5432 (from any host), written on a host that has neither.
    w.lab
        .meshctl(
            2,
            &[
                "policy", "add", DENY, "--from", "app=web", "--to", "app=db", "--port", "5432/tcp",
                "--name", "web-db",
            ],
        )
        .unwrap();
    w.wait_reaches(&web, &db_ip, 5432); // cross-host, replies flow
    w.wait_reaches(&web2, &db_ip, 5432); // from the third host
    w.wait_reaches(&near, &db_ip, 5432); // on the same host
    assert!(
        !w.reaches(&near, &db_ip, 22),
        "port 22 is not allowed on one host either"
    );
    assert!(!w.reaches(&web, &db_ip, 22), "port 22 is not allowed");
    assert!(!w.reaches(&other, &db_ip, 5432), "app=other is not allowed");
    assert!(!w.reaches(&db, &web2_ip, 80), "db must not open web");
    let listed: Vec<PolicyRule> = w.lab.meshctl_json(1, &["policy", "list", DENY]).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "web-db");

    // Drops are counted per network and container where they happen.
    let metrics = w.lab.meshctl(1, &["metrics"]).unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("mesh_policy_dropped_packets_total")
                && l.contains(&format!("container=\"{db_ip}\""))
        })
        .unwrap_or_else(|| panic!("no policy drop metric for db:\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 0.0, "{line}");

    // A long connection on an allowed port is cut when its rule goes.
    w.lab
        .meshctl(
            0,
            &[
                "policy", "add", DENY, "--from", "app=web", "--to", "app=db", "--port", "7000",
                "--name", "stream",
            ],
        )
        .unwrap();
    let sink = w.www.join("stream.out");
    wait_for(Duration::from_secs(10), || {
        let rules: Vec<PolicyRule> = w.lab.meshctl_json(1, &["policy", "list", DENY])?;
        match rules.iter().any(|r| r.name == "stream") {
            true => Ok(()),
            false => anyhow::bail!("the rule has not reached db's host"),
        }
    })
    .unwrap();
    let listen = format!(
        "while true; do busybox nc -l -p 7000; done >> {}",
        sink.display()
    );
    let cmd = w.lab.exec(&db, &["sh", "-c", &listen]);
    w.lab.spawn_helper(cmd).unwrap();
    // Reconnects if it started before the listener (a refused connection).
    let talk = format!(
        "while true; do (while true; do echo tick; sleep 0.1; done) | busybox nc {db_ip} 7000; sleep 0.2; done"
    );
    let cmd = w.lab.exec(&web, &["sh", "-c", &talk]);
    w.lab.spawn_helper(cmd).unwrap();
    wait_for(Duration::from_secs(10), || {
        if size(&sink) > 20 {
            Ok(())
        } else {
            anyhow::bail!("the stream does not flow")
        }
    })
    .unwrap();
    w.lab.meshctl(1, &["policy", "rm", DENY, "stream"]).unwrap();
    // The contract: cut within 2 s. After that, nothing more arrives.
    std::thread::sleep(Duration::from_secs(2));
    let cut_at = size(&sink);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        size(&sink),
        cut_at,
        "the removed rule's connection still flows"
    );
    assert!(w.reaches(&web, &db_ip, 5432), "the other rule still holds");

    // New labels (a re-attach) change what a container may reach.
    let path = format!("/run/netns/{other}");
    w.lab
        .meshctl(2, &["detach", &path, "--network", DENY])
        .unwrap();
    w.lab
        .attach_netns(2, &other, DENY, &["--name", "other", "--label", "app=web"]);
    w.wait_reaches(&other, &db_ip, 5432);

    // A restart of db's daemon never opens the deny network.
    w.lab.stop_daemon(1, Signal::SIGTERM).unwrap();
    assert!(
        !w.reaches(&web, &db_ip, 22),
        "open while db's meshd is down"
    );
    w.lab.start_daemon(1).unwrap();
    assert!(
        !w.reaches(&near, &db_ip, 22),
        "open while db's meshd starts"
    );
    w.wait_reaches(&web, &db_ip, 5432);
    assert!(
        !w.reaches(&web, &db_ip, 22),
        "open after db's meshd restarted"
    );
    // The open network stayed open throughout.
    assert!(w.reaches(&web, &db_o, 5432));
    assert!(
        w.lab.ping(&db, &web_o, 1),
        "db pings web on the open network"
    );
    let _ = std::fs::remove_dir_all(&w.www);
}
