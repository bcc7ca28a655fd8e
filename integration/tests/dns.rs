//! mesh's DNS with real resolvers (root, one namespace lab for every
//! check): `dig` for truncation, TCP, EDNS, SOA, negative answers and
//! reverse names; busybox's resolver (not glibc) for a name with 45
//! containers; unbound forwarding a network's zone to mesh.

use integration::{is_root, static_busybox, unique_prefix, wait_for, which, Lab};
use mesh_api::{Attachment, Network};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const NET: &str = "dnsnet";
const SUBNET: &str = "198.19.7.0/24";
/// Containers sharing one name: 45 A records are 750 bytes, 45 AAAA 1290.
const MANY: usize = 45;

fn attach(lab: &Lab, ns: &str, extra: &[&str]) -> Attachment {
    let path = format!("/run/netns/{ns}");
    let mut args = vec!["attach", path.as_str(), "--network", NET];
    args.extend_from_slice(extra);
    // The network may still be on its way to the host.
    wait_for(Duration::from_secs(10), || lab.meshctl_json(0, &args)).expect("attach")
}

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

/// What dig printed, read back.
#[derive(Debug)]
struct Dig {
    text: String,
    status: String,
    flags: BTreeSet<String>,
    /// Section name → records as (owner, ttl, type, data).
    sections: BTreeMap<String, Vec<(String, u32, String, String)>>,
}

impl Dig {
    fn parse(text: String) -> Dig {
        let mut status = String::new();
        let mut flags = BTreeSet::new();
        let mut sections: BTreeMap<String, Vec<_>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                status = rest.split(',').next().unwrap_or_default().to_string();
            } else if let Some(rest) = line.strip_prefix(";; flags: ") {
                let f = rest.split(';').next().unwrap_or_default();
                flags = f.split_whitespace().map(String::from).collect();
            } else if let Some(name) = line
                .strip_prefix(";; ")
                .and_then(|l| l.strip_suffix(" SECTION:"))
            {
                current = Some(name.to_string());
            } else if line.trim().is_empty() {
                current = None;
            } else if let (Some(sec), false) = (&current, line.starts_with(';')) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 5 {
                    sections.entry(sec.clone()).or_default().push((
                        f[0].to_string(),
                        f[1].parse().unwrap_or(u32::MAX),
                        f[3].to_string(),
                        f[4..].join(" "),
                    ));
                }
            }
        }
        Dig {
            text,
            status,
            flags,
            sections,
        }
    }

    fn section(&self, name: &str) -> &[(String, u32, String, String)] {
        self.sections.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The data of the answer records of `rtype`.
    fn answers(&self, rtype: &str) -> BTreeSet<String> {
        self.section("ANSWER")
            .iter()
            .filter(|r| r.2 == rtype)
            .map(|r| r.3.clone())
            .collect()
    }

    /// The SOA of the authority section, with its TTL.
    fn authority_soa(&self) -> Option<(String, u32)> {
        self.section("AUTHORITY")
            .iter()
            .find(|r| r.2 == "SOA")
            .map(|r| (r.0.clone(), r.1))
    }

    fn size(&self) -> usize {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(usize::MAX)
    }
}

fn dig(lab: &Lab, ns: &str, server: &str, args: &[&str]) -> Dig {
    let at = format!("@{server}");
    let mut cmd = vec!["dig", "+time=2", "+tries=2", at.as_str()];
    cmd.extend_from_slice(args);
    let out = lab
        .exec(ns, &cmd)
        .output()
        .unwrap_or_else(|e| panic!("running dig {args:?}: {e}"));
    Dig::parse(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn dns_holds_up_with_dig_busybox_and_unbound() {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    for tool in ["dig", "unbound"] {
        assert!(which(tool).is_some(), "{tool} missing: run scripts/deps.sh");
    }
    let busybox = static_busybox().expect("busybox-static missing: run scripts/deps.sh");
    let mut lab = Lab::new(&unique_prefix("dns"), 1).expect("building the lab");
    lab.start_mesh().expect("mesh up");
    let net: Network = lab
        .meshctl_json(0, &["network", "create", NET, "--subnet", SUBNET])
        .unwrap();
    let (dns, dns6) = (net.dns.clone(), net.dns6.clone());

    let client_ns = lab.add_container("client").unwrap();
    attach(&lab, &client_ns, &["--name", "client", "--version", "v2"]);
    let web_ns = lab.add_container("web").unwrap();
    let web = attach(&lab, &web_ns, &["--name", "web"]);
    let (web4, web6) = (bare(&web.ip), bare(web.ip6.as_deref().unwrap()));
    let mut api = BTreeMap::new();
    for v in ["v1", "v2"] {
        let ns = lab.add_container(&format!("api{v}")).unwrap();
        api.insert(
            v,
            bare(&attach(&lab, &ns, &["--name", "api", "--version", v]).ip),
        );
    }
    let mut many4 = BTreeSet::new();
    for i in 0..MANY {
        let ns = lab.add_container(&format!("m{i}")).unwrap();
        many4.insert(bare(&attach(&lab, &ns, &["--name", "many"]).ip));
    }
    assert_eq!(many4.len(), MANY);
    let c = client_ns.as_str();
    let many = format!("many.{NET}.");
    // The server is up once a name answers.
    wait_for(Duration::from_secs(10), || {
        let d = dig(&lab, c, &dns, &["web.dnsnet"]);
        anyhow::ensure!(d.answers("A") == [web4.clone()].into(), "{}", d.text);
        Ok(())
    })
    .unwrap();

    // Plain UDP: at most 512 bytes, TC set, only whole records.
    let d = dig(&lab, c, &dns, &["+noedns", "+ignore", &many]);
    assert!(
        d.flags.contains("tc") && d.flags.contains("aa"),
        "{}",
        d.text
    );
    assert!(d.size() <= 512, "{}", d.text);
    let part = d.answers("A");
    assert!(!part.is_empty() && part.len() < MANY && part.is_subset(&many4));
    // Without +ignore dig retries over TCP and gets all 45.
    let d = dig(&lab, c, &dns, &["+noedns", &many]);
    assert_eq!(d.answers("A"), many4, "{}", d.text);
    assert!(d.text.contains("(TCP)"), "{}", d.text);
    // EDNS: the OPT comes back with our size; 45 A fit in 1232 bytes.
    let d = dig(
        &lab,
        c,
        &dns,
        &["+edns=0", "+bufsize=4096", "+ignore", &many],
    );
    assert!(d.text.contains("; EDNS: version: 0"), "{}", d.text);
    assert!(d.text.contains("udp: 1232"), "{}", d.text);
    assert!(!d.flags.contains("tc") && d.size() <= 1232, "{}", d.text);
    assert_eq!(d.answers("A"), many4);
    // 45 AAAA do not: truncated, then TCP (over IPv6 too).
    for server in [&dns, &dns6] {
        let d = dig(&lab, c, server, &["AAAA", &many]);
        assert_eq!(d.answers("AAAA").len(), MANY, "{}", d.text);
        assert!(d.text.contains("(TCP)"), "{}", d.text);
    }
    // An unknown EDNS version: BADVERS.
    let d = dig(&lab, c, &dns, &["+edns=1", "+noednsneg", "web.dnsnet"]);
    assert_eq!(d.status, "BADVERS", "{}", d.text);

    // The zone's SOA and NS, authoritative; the NS resolves.
    let d = dig(&lab, c, &dns, &["SOA", "dnsnet."]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(d.flags.contains("aa"), "{}", d.text);
    let soa = d.answers("SOA");
    assert!(
        soa.iter()
            .any(|s| s.starts_with("ns.dnsnet. hostmaster.dnsnet.")),
        "{}",
        d.text
    );
    let d = dig(&lab, c, &dns, &["NS", "dnsnet."]);
    assert_eq!(d.answers("NS"), ["ns.dnsnet.".to_string()].into());
    let d = dig(&lab, c, &dns, &["ns.dnsnet."]);
    assert_eq!(d.answers("A"), [dns.clone()].into());

    // Negative answers carry the SOA with the negative TTL.
    let d = dig(&lab, c, &dns, &["nope.dnsnet."]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    assert_eq!(d.authority_soa(), Some(("dnsnet.".into(), 5)), "{}", d.text);
    let d = dig(&lab, c, &dns, &["MX", "web.dnsnet."]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(d.section("ANSWER").is_empty(), "{}", d.text);
    assert_eq!(d.authority_soa(), Some(("dnsnet.".into(), 5)), "{}", d.text);
    // Outside the mesh, without upstreams: REFUSED.
    let d = dig(&lab, c, &dns, &["example.com."]);
    assert_eq!(d.status, "REFUSED", "{}", d.text);

    // Reverse names, IPv4 and IPv6.
    let d = dig(&lab, c, &dns, &["-x", &web4]);
    assert_eq!(
        d.answers("PTR"),
        ["web.dnsnet.".to_string()].into(),
        "{}",
        d.text
    );
    let d = dig(&lab, c, &dns6, &["-x", &web6]);
    assert_eq!(
        d.answers("PTR"),
        ["web.dnsnet.".to_string()].into(),
        "{}",
        d.text
    );
    let d = dig(&lab, c, &dns, &["-x", "198.19.7.200"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    assert_eq!(
        d.authority_soa().map(|s| s.0),
        Some("7.19.198.in-addr.arpa.".into())
    );

    // Version-aware, over UDP and TCP alike: the v2 client sees api v2.
    let v2: BTreeSet<String> = [api["v2"].clone()].into();
    let both: BTreeSet<String> = api.values().cloned().collect();
    for tcp in ["+notcp", "+tcp"] {
        let d = dig(&lab, c, &dns, &[tcp, "api.dnsnet."]);
        assert_eq!(d.answers("A"), v2, "{tcp}: {}", d.text);
        let d = dig(&lab, &web_ns, &dns, &[tcp, "api.dnsnet."]);
        assert_eq!(d.answers("A"), both, "{tcp}: {}", d.text);
    }

    // busybox's own resolver (no glibc): the 45-container name.
    let bb = busybox.to_str().unwrap();
    let out = lab
        .exec_ok(c, &[bb, "nslookup", "-type=a", &many, &dns])
        .expect("busybox nslookup");
    let got: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Address: "))
        .map(|a| a.trim().to_string())
        .collect();
    assert!(!got.is_empty() && got.is_subset(&many4), "{out}");

    // unbound in a container, forwarding the network's zone to mesh;
    // asked from the client container.
    let res_ns = lab.add_container("resolver").unwrap();
    let res_ip = bare(&attach(&lab, &res_ns, &["--name", "resolver"]).ip);
    let conf = lab.dir.join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: {res_ip}\n  port: 53\n  access-control: 0.0.0.0/0 allow\n  \
             username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  \
             use-syslog: no\n  logfile: \"{dir}/unbound.log\"\n  do-daemonize: no\n  module-config: \"iterator\"\n  \
             do-ip6: no\n  verbosity: 1\n  domain-insecure: \"{NET}.\"\n\
             forward-zone:\n  name: \"{NET}.\"\n  forward-addr: {dns}\n",
            dir = lab.dir.display()
        ),
    )
    .unwrap();
    let unbound = lab.exec(&res_ns, &["unbound", "-d", "-c", conf.to_str().unwrap()]);
    lab.spawn_helper(unbound).expect("starting unbound");
    wait_for(Duration::from_secs(10), || {
        let d = dig(&lab, c, &res_ip, &["web.dnsnet."]);
        anyhow::ensure!(d.answers("A") == [web4.clone()].into(), "{}", d.text);
        Ok(())
    })
    .expect("unbound forwards to mesh");
    // Cached: the second answer's TTL is the record's or less.
    let d = dig(&lab, c, &res_ip, &["web.dnsnet."]);
    assert!(d.section("ANSWER").iter().all(|r| r.1 <= 5), "{}", d.text);
    // A negative answer keeps mesh's SOA through unbound.
    let d = dig(&lab, c, &res_ip, &["nope.dnsnet."]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    assert_eq!(d.authority_soa().map(|s| s.0), Some("dnsnet.".into()));
    // 45 AAAA: unbound takes them from mesh over TCP, the client too.
    let d = dig(&lab, c, &res_ip, &["AAAA", &many]);
    assert_eq!(d.answers("AAAA").len(), MANY, "{}", d.text);
}
