//! The WireGuard gateway on the 2-host namespace lab (root): a namespace
//! outside the mesh (on the lab's underlay only) runs Debian's userspace
//! `wireguard-go`, configured with `wg setconf` from what `meshctl wg add`
//! printed. It pings a container by address, resolves and reaches
//! NAME.NET through the network's DNS address, is named in the mesh's DNS
//! itself, is refused on a deny network until a rule names its label,
//! cannot use an address not its own, shows in `wg list` with a
//! handshake and bytes; a gateway restart brings it back, `wg move` hands
//! it to the other host, and after `wg rm` it reaches nothing. Also the
//! throughput figure (iperf3 through the gateway vs. container to
//! container) and the README's commands.

use integration::{dns_query, is_root, unique_prefix, wait_for, which, Lab};
use mesh_api::WgClient;
use nix::sys::signal::Signal;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const OPEN: &str = "wgo";
const DENY: &str = "wgd";
/// The outside namespace's address on the lab's underlay.
const OUTSIDE_IP: &str = "198.18.0.200";

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

/// One value of a wg-quick configuration (`Address = …`).
fn value<'a>(config: &'a str, key: &str) -> &'a str {
    config
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in:\n{config}"))
}

/// What `wg setconf` takes: the configuration without wg-quick's own
/// lines (as `wg-quick strip` does).
fn strip(config: &str) -> String {
    config
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !l.starts_with('#') && !["Address", "DNS", "MTU"].contains(&key)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A WireGuard interface `ifname` in `ns`, run by wireguard-go (ended with
/// the lab), configured from `config` as wg-quick would: keys and peer by
/// `wg setconf`, then the address, MTU and routes by hand.
fn bring_up(lab: &mut Lab, ns: &str, ifname: &str, config: &str) {
    let mut cmd = lab.exec(ns, &["wireguard-go", "-f", ifname]);
    cmd.env("WG_PROCESS_FOREGROUND", "1");
    lab.spawn_helper(cmd).unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.exec_ok(ns, &["wg", "show", ifname])
    })
    .unwrap();
    let file = lab.dir.join(format!("{ifname}.conf"));
    std::fs::write(&file, strip(config)).unwrap();
    lab.exec_ok(ns, &["wg", "setconf", ifname, file.to_str().unwrap()])
        .unwrap();
    for addr in value(config, "Address").split(',') {
        lab.exec_ok(ns, &["ip", "addr", "add", addr.trim(), "dev", ifname])
            .unwrap();
    }
    lab.exec_ok(
        ns,
        &[
            "ip",
            "link",
            "set",
            ifname,
            "mtu",
            value(config, "MTU"),
            "up",
        ],
    )
    .unwrap();
    for prefix in value(config, "AllowedIPs").split(',') {
        lab.exec_ok(ns, &["ip", "route", "add", prefix.trim(), "dev", ifname])
            .unwrap();
    }
}

/// busybox httpd in `ns` on port 80, answering `ok`.
fn serve(lab: &mut Lab, ns: &str) {
    let root = lab.dir.join(format!("www-{ns}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), "ok\n").unwrap();
    let cmd = lab.exec(
        ns,
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            root.to_str().unwrap(),
        ],
    );
    lab.spawn_helper(cmd).unwrap();
}

fn reaches(lab: &Lab, from: &str, ip: &str) -> bool {
    lab.http_get(from, &format!("http://{ip}/f"))
        .is_some_and(|o| o.trim() == "ok")
}

fn client(lab: &Lab, host: usize, name: &str) -> Option<WgClient> {
    let list: Vec<WgClient> = lab.meshctl_json(host, &["wg", "list"]).unwrap();
    list.into_iter().find(|c| c.name == name)
}

#[test]
fn wireguard_clients_are_members_of_their_network() {
    for bin in ["wireguard-go", "wg", "busybox", "iperf3"] {
        if !is_root() || which(bin).is_none() {
            eprintln!("skipping: needs root and {bin} (scripts/deps.sh installs it)");
            return;
        }
    }
    let mut lab = Lab::new(&unique_prefix("wg"), 2).expect("building the lab");
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", OPEN, "--subnet", "10.93.0.0/24"])
        .unwrap();
    lab.meshctl(
        0,
        &[
            "network",
            "create",
            DENY,
            "--subnet",
            "10.94.0.0/24",
            "--policy",
            "deny",
        ],
    )
    .unwrap();
    // A container on the other host (the gateway is h1), on both networks.
    let web = lab.add_container("web").unwrap();
    let wo = lab.attach_netns(1, &web, OPEN, &["--name", "web"]);
    let wd = lab.attach_netns(1, &web, DENY, &["--name", "web", "--label", "app=db"]);
    let (web_ip, web_deny_ip) = (bare(&wo.ip), bare(&wd.ip));
    serve(&mut lab, &web);
    // And one on the gateway host, for the direct path's throughput.
    let near = lab.add_container("near").unwrap();
    lab.attach_netns(0, &near, OPEN, &["--name", "near"]);

    // Bad input: one clear line each, nothing added.
    for (args, want) in [
        (
            vec!["wg", "add", "bad.name", "--network", OPEN],
            "DNS label",
        ),
        (vec!["wg", "add", "x", "--network", "nosuch"], "nosuch"),
        (
            vec!["wg", "add", "x", "--network", OPEN, "--public-key", "AAAA"],
            "32",
        ),
        (
            vec!["wg", "add", "x", "--network", OPEN, "--host", "nosuch"],
            "nosuch",
        ),
        (vec!["wg", "rm", "nosuch"], "no WireGuard client"),
        (
            vec!["wg", "move", "nosuch", "--host", "h2"],
            "no WireGuard client",
        ),
    ] {
        let e = lab.meshctl(0, &args).unwrap_err().to_string();
        assert!(e.contains(want) && !e.contains('\n'), "{args:?}: {e}");
    }

    // The outside world: a namespace on the underlay, nothing of the mesh.
    let outside = lab.add_container("out").unwrap();
    let ul = lab.underlay.clone();
    lab.exec_ok(
        &ul,
        &[
            "ip", "link", "add", "pwg", "type", "veth", "peer", "name", "ul0", "netns", &outside,
        ],
    )
    .unwrap();
    lab.exec_ok(&ul, &["ip", "link", "set", "pwg", "master", "br0", "up"])
        .unwrap();
    let addr = format!("{OUTSIDE_IP}/24");
    lab.exec_ok(&outside, &["ip", "addr", "add", &addr, "dev", "ul0"])
        .unwrap();
    lab.exec_ok(&outside, &["ip", "link", "set", "ul0", "up"])
        .unwrap();
    assert!(
        !lab.ping(&outside, &web_ip, 1),
        "the mesh is reachable without WireGuard"
    );

    // As README and docs/wireguard.md show the commands (networks blue and
    // shop are wgo and wgd here; the lab's hosts are h1 and h2).
    let config = lab
        .meshctl(
            0,
            &[
                "wg",
                "add",
                "laptop",
                "--network",
                OPEN,
                "--label",
                "role=laptop",
            ],
        )
        .unwrap();
    let added = client(&lab, 0, "laptop").expect("laptop listed");
    assert_eq!(value(&config, "Endpoint"), "198.18.0.1:51820", "{config}");
    assert_eq!(value(&config, "AllowedIPs"), added.allowed_ips.join(", "));
    assert_eq!(value(&config, "DNS"), format!("{}, {OPEN}", added.dns));
    assert!(value(&config, "PrivateKey").len() == 44, "{config}");
    let laptop_ip = bare(added.ip.as_deref().unwrap());
    let dup = lab.meshctl(0, &["wg", "add", "laptop", "--network", OPEN]);
    assert!(dup.unwrap_err().to_string().contains("exists"));

    // The device keeps its key: a pair made there, only the public half sent.
    let qr = lab
        .meshctl(
            0,
            &[
                "wg",
                "add",
                "phone",
                "--network",
                OPEN,
                "--public-key",
                "hIwGWBcXq9wXP8LyEQb+MNxWnLN2jZp5Yb7aSFXXWTs=",
                "--qr",
            ],
        )
        .unwrap();
    assert!(!qr.lines().any(|l| l.starts_with("PrivateKey")), "{qr}");
    assert!(qr.contains('█') || qr.contains('▀'), "no QR code:\n{qr}");

    let ifname = format!("wg{}", std::process::id() % 100_000);
    bring_up(&mut lab, &outside, &ifname, &config);
    let t0 = Instant::now();
    lab.wait_ping(&outside, &web_ip, Duration::from_secs(20))
        .unwrap_or_else(|e| {
            lab.dump_logs();
            panic!("{e:#}")
        });
    eprintln!("first ping through the gateway after {:?}", t0.elapsed());
    // IPv6 too: the network's prefix is in AllowedIPs.
    let web_ip6 = bare(wo.ip6.as_deref().expect("an IPv6 address"));
    lab.wait_ping(&outside, &web_ip6, Duration::from_secs(10))
        .unwrap_or_else(|e| {
            lab.dump_logs();
            panic!("IPv6 through the gateway: {e:#}")
        });
    // Name resolution through the network's DNS address, then HTTP.
    let dns: IpAddr = added.dns.parse().unwrap();
    let found = dns_query(
        &outside,
        dns,
        &format!("web.{OPEN}"),
        hickory_proto::rr::RecordType::A,
    )
    .unwrap();
    assert_eq!(found, vec![web_ip.parse::<IpAddr>().unwrap()]);
    // Its resolver as wg-quick's DNS line sets it (`ip netns exec` reads it).
    let etc = std::path::Path::new("/etc/netns").join(&outside);
    std::fs::create_dir_all(&etc).unwrap();
    let (server, search) = value(&config, "DNS").split_once(", ").unwrap();
    std::fs::write(
        etc.join("resolv.conf"),
        format!("nameserver {server}\nsearch {search}\n"),
    )
    .unwrap();
    for name in [format!("web.{OPEN}"), "web".to_string()] {
        let out = lab
            .exec_ok(&outside, &["getent", "ahostsv4", &name])
            .unwrap();
        let ip = out.split_whitespace().next().unwrap_or_default();
        assert_eq!(ip, web_ip, "{name} resolved to {out:?}");
        assert!(reaches(&lab, &outside, ip), "{name}");
    }
    // The client is a member: the container finds it by name and reaches it.
    let back = dns_query(
        &web,
        dns,
        &format!("laptop.{OPEN}"),
        hickory_proto::rr::RecordType::A,
    )
    .unwrap();
    assert_eq!(back, vec![laptop_ip.parse::<IpAddr>().unwrap()]);
    assert!(
        lab.ping(&web, &laptop_ip, 2),
        "the mesh does not reach the client"
    );
    let laptop_ip6 = bare(added.ip6.as_deref().unwrap());
    assert!(lab.ping(&web, &laptop_ip6, 2), "nor over IPv6");

    // Source checks: an address not the client's does not get in.
    let spoof = "10.93.0.250";
    lab.exec_ok(
        &outside,
        &["ip", "addr", "add", &format!("{spoof}/32"), "dev", &ifname],
    )
    .unwrap();
    let spoofed = lab
        .exec(
            &outside,
            &[
                "ping", "-n", "-q", "-c", "2", "-W", "1", "-I", spoof, &web_ip,
            ],
        )
        .status()
        .unwrap();
    assert!(!spoofed.success(), "a spoofed source passed the gateway");
    lab.exec_ok(
        &outside,
        &["ip", "addr", "del", &format!("{spoof}/32"), "dev", &ifname],
    )
    .unwrap();

    // wg list: a handshake and bytes on the gateway; the other host says
    // where the counters are.
    let c = client(&lab, 0, "laptop").unwrap();
    let s = c.stats.expect("the gateway has counters");
    assert!(
        s.last_handshake_ms.is_some() && s.rx_bytes > 0 && s.tx_bytes > 0,
        "{s:?}"
    );
    assert!(s.spoofed >= 2, "spoofed packets not counted: {s:?}");
    assert_eq!(
        s.endpoint.as_deref().map(|e| e.starts_with(OUTSIDE_IP)),
        Some(true)
    );
    let elsewhere = wait_for(Duration::from_secs(10), || {
        client(&lab, 1, "laptop").ok_or_else(|| anyhow::anyhow!("not replicated yet"))
    })
    .unwrap();
    assert!(elsewhere.stats.is_none() && elsewhere.gateway == "h1");
    let text = lab.meshctl(0, &["wg", "list"]).unwrap();
    assert!(text.contains("laptop") && text.contains("ago"), "{text}");
    let metrics = lab.meshctl(0, &["metrics"]).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mesh_wg_client_received_bytes_total{")
                && l.contains("client=\"laptop\"")),
        "{metrics}"
    );

    // Throughput: through the gateway vs. container to container, both to
    // the same container on the other host, in the same run.
    lab.iperf_server(&web, 5201).unwrap();
    let direct = lab.iperf_gbps(&near, &web_ip, 5201, 3).unwrap();
    let through = lab.iperf_gbps(&outside, &web_ip, 5201, 3).unwrap();
    eprintln!(
        "THROUGHPUT: WireGuard gateway {through:.3} Gbit/s, direct {direct:.3} Gbit/s, ratio {:.2}",
        through / direct
    );
    assert!(through > 0.0);

    // The deny network: a client with a label, refused until a rule names
    // it; added from h1 with the other host as its gateway.
    let dconf = lab
        .meshctl(
            0,
            &[
                "wg",
                "add",
                "tablet",
                "--network",
                DENY,
                "--label",
                "app=web",
                "--host",
                "h2",
            ],
        )
        .unwrap();
    assert_eq!(value(&dconf, "Endpoint"), "198.18.0.2:51820", "{dconf}");
    let dif = format!("{ifname}d");
    bring_up(&mut lab, &outside, &dif, &dconf);
    assert!(
        !reaches(&lab, &outside, &web_deny_ip),
        "deny network passed without a rule"
    );
    lab.meshctl(
        1,
        &[
            "policy", "add", DENY, "--from", "app=web", "--to", "app=db", "--port", "80/tcp",
        ],
    )
    .unwrap();
    wait_for(Duration::from_secs(20), || {
        match reaches(&lab, &outside, &web_deny_ip) {
            true => Ok(()),
            false => anyhow::bail!("the rule does not let the client in"),
        }
    })
    .unwrap_or_else(|e| {
        lab.dump_logs();
        panic!("{e:#}")
    });

    // A gateway restart keeps its clients (same key, address, name).
    lab.stop_daemon(0, Signal::SIGTERM).unwrap();
    assert!(!lab.ping(&outside, &web_ip, 1));
    lab.start_daemon(0).unwrap();
    let t0 = Instant::now();
    // The gateway greets the client where it was: well before the 15 s
    // the client's own WireGuard waits to notice.
    lab.wait_ping(&outside, &web_ip, Duration::from_secs(10))
        .unwrap_or_else(|e| {
            lab.dump_logs();
            panic!("after a restart: {e:#}")
        });
    eprintln!(
        "back through the restarted gateway after {:?}",
        t0.elapsed()
    );
    wait_for(Duration::from_secs(20), || {
        match reaches(&lab, &outside, &web_deny_ip) {
            true => Ok(()),
            false => anyhow::bail!("the deny network's client is not back"),
        }
    })
    .unwrap();
    assert_eq!(client(&lab, 0, "laptop").unwrap().ip, added.ip);

    // wg move: the other host takes the client over; its new [Peer].
    let moved = lab
        .meshctl(0, &["wg", "move", "laptop", "--host", "h2"])
        .unwrap();
    assert_eq!(value(&moved, "Endpoint"), "198.18.0.2:51820", "{moved}");
    let old_key = value(&config, "PublicKey");
    lab.exec_ok(&outside, &["wg", "set", &ifname, "peer", old_key, "remove"])
        .unwrap();
    lab.exec_ok(
        &outside,
        &[
            "wg",
            "set",
            &ifname,
            "peer",
            value(&moved, "PublicKey"),
            "endpoint",
            value(&moved, "Endpoint"),
            "allowed-ips",
            &value(&moved, "AllowedIPs").replace(' ', ""),
            "persistent-keepalive",
            "25",
        ],
    )
    .unwrap();
    lab.wait_ping(&outside, &web_ip, Duration::from_secs(30))
        .unwrap_or_else(|e| {
            lab.dump_logs();
            panic!("after wg move: {e:#}")
        });
    assert_eq!(client(&lab, 1, "laptop").unwrap().ip, added.ip);
    assert!(client(&lab, 1, "laptop").unwrap().stats.is_some());

    // wg rm revokes at once: nothing is reached any more.
    lab.meshctl(0, &["wg", "rm", "laptop"]).unwrap();
    lab.meshctl(0, &["wg", "rm", "tablet"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.ping_replies(&outside, &web_ip, 3),
        0,
        "a removed client still reaches the mesh"
    );
    assert!(!reaches(&lab, &outside, &web_deny_ip));
    assert!(client(&lab, 0, "laptop").is_none());
    lab.meshctl(0, &["wg", "rm", "phone"]).unwrap();
    wait_for(Duration::from_secs(10), || {
        let list: Vec<WgClient> = lab.meshctl_json(1, &["wg", "list"])?;
        match list.is_empty() {
            true => Ok(()),
            false => anyhow::bail!("still listed on h2: {list:?}"),
        }
    })
    .unwrap();

    // A host without a gateway (wg_port 0) is refused as one, at once.
    lab.stop_daemon(1, Signal::SIGTERM).unwrap();
    lab.hosts[1].extra_args = vec!["--wg-port".into(), "0".into()];
    lab.start_daemon(1).unwrap();
    wait_for(Duration::from_secs(15), || {
        let e = match lab.meshctl(0, &["wg", "add", "x", "--network", OPEN, "--host", "h2"]) {
            Ok(out) => panic!("a host without a gateway took a client: {out}"),
            Err(e) => e.to_string(),
        };
        match e.contains("runs no WireGuard gateway") {
            true => Ok(()),
            false => anyhow::bail!("{e}"),
        }
    })
    .unwrap();
}
