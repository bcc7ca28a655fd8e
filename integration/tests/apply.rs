//! Declarative configuration on the namespace lab (root): docs/apply.md's
//! walkthrough run as written, with the lab's LAN (198.18.0.0/24) for the
//! docs' 192.168.1.0/24. Pi's service file (taken from the doc) in front of
//! labelled containers on two hosts, reached through its VIP from a
//! container and through its floating IP from an "outside" namespace that
//! is not a mesh host; dry run, idempotence, a refused file, a change,
//! delete; export, then apply of the export on a new, empty mesh gives the
//! same export. Every `meshctl` line of the doc's and the README's
//! examples must have been run, and printed what the doc shows.

use integration::{test_mesh, wait_for, Lab};
use mesh_api::{Fip, Service};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const DOC: &str = include_str!("../../docs/apply.md");
const README: &str = include_str!("../../README.md");
const FIP: &str = "198.18.0.241";

/// The docs' LAN is the lab's.
fn lan(s: &str) -> String {
    s.replace("192.168.1.", "198.18.0.")
}

/// The ```yaml block of `doc` whose first line is `# NAME`.
fn yaml_block(doc: &str, name: &str) -> String {
    let head = format!("```yaml\n# {name}\n");
    let start = doc
        .find(&head)
        .unwrap_or_else(|| panic!("no {name} in the doc"))
        + "```yaml\n".len();
    let len = doc[start..].find("```").unwrap();
    lan(&doc[start..start + len])
}

/// A file without its `# NAME` line.
fn uncommented(file: &str) -> String {
    file.split_once('\n').unwrap().1.to_string()
}

/// The `meshctl` lines of the ```sh blocks of `doc` (comments cut), each
/// with the lines it prints there (up to the next command or comment).
fn sh_steps(doc: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut inside = false;
    let mut last_is_meshctl = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            inside = line == "```sh";
            last_is_meshctl = false;
            continue;
        }
        if !inside || line.trim().is_empty() {
            continue;
        }
        let text = lan(line.split(" #").next().unwrap().trim_end());
        if line.starts_with('#') {
            last_is_meshctl = false;
        } else if text.starts_with("meshctl ") {
            out.push((text, Vec::new()));
            last_is_meshctl = true;
        } else if text.starts_with("curl ") {
            last_is_meshctl = false;
        } else if last_is_meshctl {
            out.last_mut().unwrap().1.push(text);
        }
    }
    out
}

/// Runs `meshctl` lines as written, in a directory holding the files, and
/// keeps what each printed.
struct Ctl<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    ran: Vec<(String, String)>,
}

impl Ctl<'_> {
    /// `line` on host `i`; the recorded line has the lab's namespace
    /// prefix taken out (`/run/netns/<p>-nginx1` is the doc's
    /// `/run/netns/nginx1`).
    fn run(&mut self, i: usize, line: &str) -> anyhow::Result<String> {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("meshctl"), "{line}");
        let out = Command::new(self.lab.bin("meshctl"))
            .arg("--socket")
            .arg(&self.lab.hosts[i].socket)
            .args(words)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let recorded = line.replace(&format!("{}-", self.lab.prefix), "");
        self.ran.push((recorded, text.clone()));
        Ok(text)
    }

    fn ok(&mut self, i: usize, line: &str) -> String {
        self.run(i, line)
            .unwrap_or_else(|e| panic!("{line}: {e:#}"))
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }
}

fn services(lab: &Lab, i: usize) -> Vec<Service> {
    lab.meshctl_json(i, &["service", "list"]).unwrap()
}

fn fips(lab: &Lab, i: usize) -> Vec<Fip> {
    lab.meshctl_json(i, &["fip", "list"]).unwrap()
}

/// Waits until new connections from `ns` to `addr:port` reach both backends.
fn reaches_both(lab: &Lab, ns: &str, addr: &str, port: u16) {
    let want: BTreeSet<String> = ["nginx1", "nginx2"].map(String::from).into();
    wait_for(Duration::from_secs(20), || {
        let seen: BTreeSet<String> = (0..8)
            .filter_map(|_| lab.ask(ns, addr, port))
            .map(|(name, _)| name)
            .collect();
        if seen == want {
            Ok(())
        } else {
            anyhow::bail!("{addr}:{port} from {ns}: {seen:?}")
        }
    })
    .unwrap();
}

fn files_dir(lab: &Lab) -> PathBuf {
    let d = lab.dir.join("files");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn apply_export_delete_pis_service_file() {
    let Some(mut lab) = test_mesh("apply", 3) else {
        return;
    };
    let out = lab.add_outside(100).unwrap();
    let dir = files_dir(&lab);
    let nginx_yaml = yaml_block(DOC, "nginx.yaml");
    assert_eq!(
        nginx_yaml,
        yaml_block(README, "nginx.yaml"),
        "the README and docs/apply.md show the same file"
    );
    for name in ["mesh.yaml", "nginx.yaml", "shop.yaml"] {
        std::fs::write(dir.join(name), yaml_block(DOC, name)).unwrap();
    }

    // Containers on two hosts: nginx1, nginx2 (labelled) and a client.
    let mut containers = Vec::new();
    for name in ["nginx1", "nginx2", "client"] {
        containers.push(lab.add_container(name).unwrap());
    }
    for (i, ns) in containers.iter().take(2).enumerate() {
        lab.serve_who(ns, &format!("nginx{}", i + 1), 80).unwrap();
    }
    let mut ctl = Ctl {
        lab: &lab,
        dir: dir.clone(),
        ran: Vec::new(),
    };
    ctl.ok(0, "meshctl apply -f mesh.yaml");
    for (i, host) in [(0, 1), (1, 2)] {
        let line = format!(
            "meshctl attach /run/netns/{} --network web --label app=nginx",
            containers[i]
        );
        wait_for(Duration::from_secs(10), || ctl.run(host, &line)).unwrap();
    }
    let client = containers[2].clone();
    lab.attach_netns(0, &client, "web", &[]);

    // ---- dry run: the diff, and nothing changed.
    let dry = ctl.ok(0, "meshctl apply -f nginx.yaml --network web --dry-run");
    assert!(dry.contains("create service nginx.web"), "{dry}");
    assert!(services(&lab, 0).is_empty() && fips(&lab, 0).is_empty());

    // ---- apply: the VIP from a container, the FIP from the outside.
    ctl.ok(0, "meshctl apply -f nginx.yaml --network web");
    let svc = services(&lab, 0).pop().expect("service nginx");
    let vip = svc.vip.split('/').next().unwrap().to_string();
    reaches_both(&lab, &client, &vip, 80);
    reaches_both(&lab, &out, FIP, 80);

    // ---- again: unchanged, nothing written (the export is the same).
    let before = ctl.ok(0, "meshctl export");
    let again = ctl.ok(0, "meshctl apply -f nginx.yaml --network web");
    assert!(
        again
            .lines()
            .all(|l| l.starts_with("unchanged ") || l == "0 created, 0 changed, 2 unchanged"),
        "{again}"
    );
    assert_eq!(ctl.ok(0, "meshctl export"), before);

    // ---- refused whole: a typo, and an object the mesh cannot take; the
    // valid network in the same file is not created either.
    // A valid network of its own, then the service with a typo.
    let extra = uncommented(&yaml_block(DOC, "mesh.yaml"))
        .split("---")
        .next()
        .unwrap()
        .replace("name: web", "name: extra")
        .replace("10.40.0.0", "10.41.0.0");
    let typo = uncommented(&nginx_yaml).replace("targetPort", "targetport");
    ctl.write("bad.yaml", &format!("{extra}---\n{typo}"));
    let e = ctl
        .run(0, "meshctl apply -f bad.yaml --network web")
        .unwrap_err()
        .to_string();
    // What the doc shows, line for line.
    let shown = DOC
        .split("```text\n")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .unwrap();
    let mut shown = shown.lines().map(str::trim);
    assert_eq!(
        shown.next(),
        Some("meshctl apply -f bad.yaml --network web")
    );
    let shown: Vec<&str> = shown.filter(|l| !l.is_empty()).collect();
    let got: Vec<&str> = e.lines().map(str::trim).collect();
    assert_eq!(got, shown);
    let other = nginx_yaml
        .replace("name: nginx", "name: other")
        .replace(FIP, "198.18.0.243");
    ctl.write("nosuch.yaml", &format!("{extra}---\n{other}"));
    let e = ctl
        .run(0, "meshctl apply -f nosuch.yaml --network nosuch")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "nosuch.yaml: document 2 (v1/Service other): spec.network: no network \"nosuch\""
        ),
        "{e}"
    );
    assert_eq!(
        ctl.ok(0, "meshctl export"),
        before,
        "a refused file changed something"
    );

    // ---- a change: the port moves, the VIP and the FIP stay.
    ctl.write(
        "nginx8080.yaml",
        &nginx_yaml.replace("- port: 80\n", "- port: 8080\n"),
    );
    let changed = ctl.ok(0, "meshctl apply -f nginx8080.yaml --network web");
    assert_eq!(
        changed,
        format!(
            "change service nginx.web (ports)\nchange fip {FIP} (nginx.web:8080)\n0 created, 2 changed, 0 unchanged\n"
        )
    );
    let moved = services(&lab, 0).pop().unwrap();
    assert_eq!(moved.vip, svc.vip, "the VIP stays");
    reaches_both(&lab, &client, &vip, 8080);
    reaches_both(&lab, &out, FIP, 8080);
    ctl.ok(0, "meshctl apply -f nginx.yaml --network web");
    reaches_both(&lab, &out, FIP, 80);

    // ---- every kind, and the export of it all.
    ctl.ok(2, "meshctl apply -f shop.yaml");
    // Every host holds the same (shop.yaml went to host 3).
    let all = wait_for(Duration::from_secs(20), || {
        let texts: Vec<String> = (0..3)
            .map(|i| ctl.run(i, "meshctl export"))
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(
            texts.iter().all(|t| *t == texts[0]) && texts[0].contains("kind: Qos"),
            "the hosts' exports differ"
        );
        Ok(texts[0].clone())
    })
    .unwrap();
    ctl.ok(0, "meshctl export -o backup.yaml");
    let backup = std::fs::read_to_string(dir.join("backup.yaml")).unwrap();
    assert_eq!(backup, all);
    for kind in [
        "kind: Network",
        "kind: Service",
        "kind: Policy",
        "kind: Qos",
        "kind: FloatingIPPool",
        "kind: FloatingIP",
    ] {
        assert!(backup.contains(kind), "{kind} missing from\n{backup}");
    }
    let dry_all = ctl.ok(1, "meshctl apply -f backup.yaml --dry-run");
    assert!(
        dry_all.ends_with("dry run: 0 to create, 0 to change, 10 unchanged; nothing changed\n"),
        "{dry_all}"
    );

    // ---- delete: gone, and from the outside too; a second time, absent.
    ctl.ok(0, "meshctl delete -f nginx.yaml --network web");
    assert!(services(&lab, 0).iter().all(|s| s.name != "nginx"));
    assert!(fips(&lab, 0).iter().all(|f| f.addr != FIP));
    wait_for(Duration::from_secs(10), || match lab.ask(&out, FIP, 80) {
        None => Ok(()),
        Some(a) => anyhow::bail!("{FIP} still answers: {a:?}"),
    })
    .unwrap();
    let twice = ctl.ok(0, "meshctl delete -f nginx.yaml --network web");
    assert!(
        twice.ends_with("0 deleted, 0 changed, 2 absent\n"),
        "{twice}"
    );

    let mut ran = std::mem::take(&mut ctl.ran);
    drop(ctl);
    drop(lab);

    // ---- the export applied on an empty mesh: the same objects.
    let Some(lab2) = test_mesh("apply2", 2) else {
        return;
    };
    let dir2 = files_dir(&lab2);
    std::fs::write(dir2.join("backup.yaml"), &backup).unwrap();
    let mut ctl2 = Ctl {
        lab: &lab2,
        dir: dir2,
        ran: Vec::new(),
    };
    let made = ctl2.ok(0, "meshctl apply -f backup.yaml");
    assert!(
        made.ends_with("10 created, 0 changed, 0 unchanged\n"),
        "{made}"
    );
    let mut exported = String::new();
    let same = wait_for(Duration::from_secs(20), || {
        exported = ctl2.run(1, "meshctl export")?;
        anyhow::ensure!(exported == backup, "not the backup yet");
        Ok(())
    });
    assert!(same.is_ok(), "backup:\n{backup}\nexport:\n{exported}");
    let again = ctl2.ok(0, "meshctl apply -f backup.yaml");
    assert!(
        again.ends_with("0 created, 0 changed, 10 unchanged\n"),
        "{again}"
    );
    ran.append(&mut ctl2.ran);
    check_docs(&ran);
}

/// Every `meshctl` line of docs/apply.md's and the README's examples was
/// run, and printed what the doc shows (where it shows something).
fn check_docs(ran: &[(String, String)]) {
    let readme_part = {
        let start = README.find("**Declarative configuration**").unwrap();
        let len = README[start..].find("\n**").unwrap_or(README.len() - start);
        &README[start..start + len]
    };
    for (doc, text) in [("docs/apply.md", DOC), ("README.md", readme_part)] {
        let steps = sh_steps(text);
        assert!(!steps.is_empty(), "no meshctl line in {doc}");
        for (cmd, shown) in steps {
            let runs: Vec<&String> = ran
                .iter()
                .filter(|(c, _)| *c == cmd)
                .map(|(_, o)| o)
                .collect();
            assert!(!runs.is_empty(), "{doc}: `{cmd}` was not run");
            if shown.is_empty() {
                continue;
            }
            let want = format!("{}\n", shown.join("\n"));
            assert!(
                runs.iter().any(|o| **o == want),
                "{doc}: `{cmd}` printed {runs:?}, the doc shows\n{want}"
            );
        }
    }
}
