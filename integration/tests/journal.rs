//! The audit trail (`meshctl log`) on the namespace lab (root): h0 and h1
//! run meshd, h2 is a raw member (a gossip node joined with the token,
//! writing past the API). A `network create` on h0 is in h1's journal
//! by h0's name, as a create on the `networks` channel, and its removal as
//! a delete; `--host`, `--since` and `--json` filter and print it; the raw
//! member's forged network (naming h0 as its creator) is listed as
//! refused with the guard's reason; the journal survives a restart of h1
//! without the restart's own snapshot turning up as news.

use integration::member::RawMember;
use integration::{is_root, unique_prefix, wait_for, Lab};
use mesh_api::{LogEntry, LogOp};
use mesh_model::records::{NetworkDef, NETWORKS_CHANNEL};
use nix::sys::signal::Signal;
use std::time::Duration;

fn log(lab: &Lab, i: usize, args: &[&str]) -> Vec<LogEntry> {
    let mut a = vec!["log"];
    a.extend_from_slice(args);
    lab.meshctl_json(i, &a).unwrap()
}

/// Waits until host `i`'s journal has an entry `pick` accepts.
fn wait_entry(lab: &Lab, i: usize, pick: impl Fn(&LogEntry) -> bool) -> LogEntry {
    wait_for(Duration::from_secs(15), || {
        let all = log(lab, i, &[]);
        all.iter()
            .find(|e| pick(e))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("not in h{i}'s journal yet: {all:#?}"))
    })
    .unwrap()
}

fn is(e: &LogEntry, channel: &str, key: &str, op: LogOp) -> bool {
    e.channel == channel && e.key == key && e.op == op && e.rejected.is_none()
}

/// `ms` since the epoch as RFC 3339 (UTC, whole seconds, rounded up).
fn rfc3339(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_journal_lists_who_wrote_what_and_what_was_refused() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let mut lab = Lab::new(&unique_prefix("jrnl"), 3).expect("building the lab");
    lab.start_daemon(0).unwrap();
    lab.start_daemon(1).unwrap();
    let token = lab.meshctl(0, &["token"]).unwrap();
    let seed = lab.hosts[0].control_address();
    lab.meshctl(1, &["join", &seed, "--token", token.trim()])
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        anyhow::ensure!(lab.peers_up(0)? == 1 && lab.peers_up(1)? == 1);
        Ok(())
    })
    .unwrap();
    let h0 = lab.status(0).unwrap().host;
    let h1 = lab.status(1).unwrap().host;

    // ---- a network created on h0, in h1's journal ----
    lab.meshctl(
        0,
        &["network", "create", "audit", "--subnet", "10.81.0.0/24"],
    )
    .unwrap();
    // By name (h1's roster follows membership within a moment of h0's
    // coming up; until then an entry shows the id).
    let made = wait_entry(&lab, 1, |e| {
        is(e, NETWORKS_CHANNEL, "audit", LogOp::Create) && e.host.as_deref() == Some(&h0.name)
    });
    assert!(made.host_id.starts_with(&h0.id), "{made:?}");
    // h0 journals its own write too.
    wait_entry(&lab, 0, |e| {
        is(e, NETWORKS_CHANNEL, "audit", LogOp::Create) && e.host_id.starts_with(&h0.id)
    });

    let table = lab.meshctl(1, &["log"]).unwrap();
    let head = table.lines().next().unwrap_or_default();
    for col in ["TIME", "HOST", "OP", "CHANNEL", "KEY"] {
        assert!(head.contains(col), "{table}");
    }
    assert!(
        table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 5
                && f[1] == h0.name
                && f[2] == "create"
                && f[3] == "networks"
                && f[4] == "audit"
        }),
        "{table}"
    );

    // --host: by name or id prefix.
    let by_h0 = log(&lab, 1, &["--host", &h0.name]);
    assert!(by_h0.iter().any(|e| e.key == "audit"), "{by_h0:?}");
    assert!(
        by_h0.iter().all(|e| e.host_id.starts_with(&h0.id)),
        "{by_h0:?}"
    );
    let by_id = log(&lab, 1, &["--host", &h0.id[..10]]);
    assert_eq!(by_id, by_h0);
    let by_h1 = log(&lab, 1, &["--host", &h1.name]);
    assert!(
        by_h1.iter().all(|e| e.host_id.starts_with(&h1.id)),
        "{by_h1:?}"
    );
    assert!(!by_h1.iter().any(|e| e.key == "audit"));
    assert!(log(&lab, 1, &["--host", "nosuchhost"]).is_empty());

    // --since: a span back from now, or a time.
    let recent = log(&lab, 1, &["--since", "10m"]);
    assert!(recent.iter().any(|e| e.key == "audit"), "{recent:?}");
    let later = rfc3339(made.time_ms + 1000);
    let after = log(&lab, 1, &["--since", &later]);
    assert!(
        !after
            .iter()
            .any(|e| e.key == "audit" && e.op == LogOp::Create),
        "{later}: {after:?}"
    );
    // As README and docs/meshctl.md show it (h0 is called h1 in the lab).
    assert_eq!(h0.name, "h1");
    let text = lab
        .meshctl(1, &["log", "--since", "10m", "--host", "h1", "--json"])
        .unwrap();
    let shown: Vec<LogEntry> = serde_json::from_str(&text).unwrap();
    assert!(shown.iter().any(|e| e.key == "audit"), "{text}");
    assert!(
        shown.iter().all(|e| e.host_id.starts_with(&h0.id)),
        "{text}"
    );
    let e = lab.meshctl(1, &["log", "--since", "soon"]).unwrap_err();
    assert!(format!("{e:#}").contains("RFC 3339"), "{e:#}");

    // ---- a forged write, refused with its reason ----
    let h2 = &lab.hosts[2];
    let member = RawMember::join(
        &h2.netns,
        "mallory",
        format!("{}:7800", h2.underlay_ip).parse().unwrap(),
        &seed,
        &token,
    )
    .expect("the raw member joins");
    let h0_id = made.host_id.clone();
    member.run(move |node| {
        let ch = node.channel(
            NETWORKS_CHANNEL,
            gossip::LwwMap::<String, NetworkDef>::default(),
        );
        let forged = NetworkDef {
            id: "forged".into(),
            subnet: "10.82.0.0/24".parse().unwrap(),
            subnet6: mesh_model::networks::derive_ula("forged"),
            created_by: h0_id,
            labels: Default::default(),
            hosts: vec![],
            sealed_secrets: Default::default(),
        };
        ch.modify(|m| m.set(node.id(), "forged".into(), forged.clone()));
    });
    let refused = wait_entry(&lab, 1, |e| {
        e.key == "forged" && e.rejected.is_some() && e.host.as_deref() == Some("mallory")
    });
    assert_eq!(refused.host_id, member.id.to_hex());
    // Only mallory can have sent it: h0 refuses it too, so never passes it on.
    assert_eq!(refused.via_id.as_deref(), Some(member.id.to_hex().as_str()));
    assert!(
        refused
            .rejected
            .as_deref()
            .unwrap()
            .contains("names another host as its creator"),
        "{refused:?}"
    );
    let table = lab.meshctl(1, &["log", "--host", "mallory"]).unwrap();
    assert!(
        table
            .lines()
            .next()
            .unwrap_or_default()
            .contains("REJECTED")
            && table.contains("names another host as its creator")
            && table.contains("(sent by "),
        "{table}"
    );
    drop(member);

    // ---- a removal is a delete ----
    lab.meshctl(0, &["network", "rm", "audit"]).unwrap();
    wait_entry(&lab, 1, |e| {
        is(e, NETWORKS_CHANNEL, "audit", LogOp::Delete) && e.host_id.starts_with(&h0.id)
    });

    // ---- the journal survives a restart, which adds no news of its own ----
    let before = log(&lab, 1, &[]);
    lab.stop_daemon(1, Signal::SIGTERM).unwrap();
    lab.start_daemon(1).unwrap();
    wait_for(Duration::from_secs(30), || {
        anyhow::ensure!(lab.peers_up(1)? == 1);
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the roster follows
    let after = log(&lab, 1, &[]);
    assert!(
        after.len() >= before.len(),
        "{} < {}",
        after.len(),
        before.len()
    );
    assert_eq!(after[..before.len()], before[..]);
    let creates = after
        .iter()
        .filter(|e| is(e, NETWORKS_CHANNEL, "audit", LogOp::Create))
        .count();
    assert_eq!(creates, 1, "{after:#?}");
}
