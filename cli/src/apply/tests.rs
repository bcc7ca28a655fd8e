//! Reading, checking, diffing and exporting, without a daemon.

use super::current::Current;
use super::desired::{build, Desired};
use super::load::parse;
use super::plan::{Planner, Step, Verb};
use super::{export, summary};
use mesh_api::{
    Fip, FipBinding, FipPool, Network, PolicyMode, PolicyPort, PolicyRule, Protocol, QosEntry,
    Scheduler, Service, ServicePort,
};

const PI: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  type: LoadBalancer
  loadBalancerIP: 192.168.1.241
  selector:
    app: nginx
  ports:
  - port: 80
    targetPort: 80
    protocol: TCP
";

const MESH: &str = "\
apiVersion: mesh/v1
kind: Network
metadata:
  name: web
spec:
  subnet: 10.40.0.0/24
---
apiVersion: mesh/v1
kind: FloatingIPPool
spec:
  cidr: 192.168.1.240/28
";

fn desired(files: &[(&str, &str)], network: Option<&str>) -> Result<Desired, Vec<String>> {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for (name, text) in files {
        docs.extend(parse(name, text, &mut errors));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    build(docs, network).map_err(|e| e.0)
}

fn lines(items: &[super::plan::Item]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

fn network(id: &str, subnet: &str) -> Network {
    Network {
        id: id.into(),
        subnet: subnet.into(),
        subnet6: "fd00:1::/64".into(),
        dns: "10.40.0.254".into(),
        dns6: "fd00:1::fe".into(),
        labels: Default::default(),
        hosts: vec![],
        wire_id: 7,
        bridge: "msb7".into(),
        mtu: 1420,
        mtu_set: false,
        created_by: "aa".into(),
        policy: PolicyMode::Open,
        egress: false,
    }
}

/// What the mesh holds once MESH and PI are applied.
fn applied() -> Current {
    Current {
        networks: vec![network("web", "10.40.0.0/24")],
        services: vec![Service {
            name: "nginx".into(),
            network: "web".into(),
            vip: "10.40.0.3".into(),
            vip6: "fd00:1::3".into(),
            ports: vec![ServicePort {
                port: 80,
                target_port: 80,
                protocol: Protocol::Tcp,
            }],
            selector: [("app".to_string(), "nginx".to_string())].into(),
            scheduler: Scheduler::Rr,
            health_interval_ms: 1000,
            targets: vec![],
        }],
        pools: vec![FipPool {
            cidr: "192.168.1.240/28".into(),
            fips: 1,
            hosts: vec!["h1".into()],
        }],
        fips: vec![Fip {
            addr: "192.168.1.241".into(),
            pool: Some("192.168.1.240/28".into()),
            holder: Some("h1".into()),
            reason: None,
            bindings: vec![FipBinding {
                service: "nginx".into(),
                network: "web".into(),
                public_port: 80,
                service_port: Some(80),
                protocol: Some(Protocol::Tcp),
            }],
        }],
        ..Default::default()
    }
}

#[test]
fn pis_service_file_is_a_service_and_a_floating_ip() {
    let d = desired(&[("pi.yaml", PI)], Some("web")).unwrap();
    assert_eq!(d.services.len(), 1);
    let s = &d.services[0];
    assert_eq!((s.name.as_str(), s.network.as_str()), ("nginx", "web"));
    assert_eq!(s.ports[0].target_port, 80);
    assert_eq!(d.fips[0].addr, Some("192.168.1.241".parse().unwrap()));
    assert_eq!(d.fips[0].associations[0].port, Some(80));
    assert!(!d.fips[0].exclusive);

    let cur = Current::default();
    let both = desired(&[("mesh.yaml", MESH), ("pi.yaml", PI)], Some("web")).unwrap();
    let items = Planner::new(&cur, &both).apply().unwrap();
    assert_eq!(
        lines(&items),
        [
            "create fip-pool 192.168.1.240/28",
            "create network web",
            "create service nginx.web",
            "create fip 192.168.1.241",
        ]
    );
    assert_eq!(
        summary(&items, true),
        "dry run: 4 to create, 0 to change, 0 unchanged; nothing changed"
    );
    assert!(matches!(
        items[3].steps[..],
        [Step::CreateFip(Some(_)), Step::Associate(None, _)]
    ));
}

#[test]
fn the_network_comes_from_namespace_annotation_or_flag_and_they_must_agree() {
    let with_ns = PI.replace("  name: nginx\n", "  name: nginx\n  namespace: blue\n");
    let d = desired(&[("a.yaml", &with_ns)], None).unwrap();
    assert_eq!(d.services[0].network, "blue");
    let annotated = PI.replace(
        "  name: nginx\n",
        "  name: nginx\n  annotations:\n    mesh/network: red\n",
    );
    assert_eq!(
        desired(&[("a.yaml", &annotated)], None).unwrap().services[0].network,
        "red"
    );
    let e = desired(&[("a.yaml", &with_ns)], Some("web")).unwrap_err();
    assert!(
        e[0].contains("--network: network \"web\" disagrees with metadata.namespace"),
        "{e:?}"
    );
    let e = desired(&[("a.yaml", PI)], None).unwrap_err();
    assert!(
        e[0].starts_with("a.yaml: document 1 (v1/Service nginx): metadata.namespace: no network"),
        "{e:?}"
    );
}

#[test]
fn errors_name_file_document_and_field_and_all_are_reported() {
    let typo = format!("{MESH}---\n{}", PI.replace("targetPort", "targetport"));
    let e = desired(&[("bad.yaml", &typo)], Some("web")).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("bad.yaml: document 3: spec.ports[0]: unknown field `targetport`"),
        "{e:?}"
    );
    assert!(e[0].contains(" line "), "{e:?}");

    let many = "\
apiVersion: mesh/v1
kind: Netwrok
metadata: {name: x}
---
apiVersion: apps/v1
kind: Deployment
---
apiVersion: mesh/v1
kind: Network
metadata: {name: ok}
spec: {subnet: 10.1.2.3/24}
---
apiVersion: mesh/v1
kind: Service
metadata: {name: Web}
spec: {network: ok, ports: [\"80:99999\"]}
";
    let e = desired(&[("m.yaml", many)], None).unwrap_err();
    assert!(
        e[0].contains("m.yaml: document 1: kind: \"Netwrok\" is not a kind of mesh/v1"),
        "{e:?}"
    );
    assert!(
        e[1].contains("m.yaml: document 2: apiVersion: \"apps/v1\""),
        "{e:?}"
    );
    // Read, then checked: the rest of the file still gets its say.
    let e = desired(
        &[(
            "m.yaml",
            &many[many.find("apiVersion: mesh/v1\nkind: Network\n").unwrap()..],
        )],
        None,
    )
    .unwrap_err();
    assert!(
        e[0].contains(
            "document 1 (Network ok): spec.subnet: subnet \"10.1.2.3/24\" has host bits set"
        ),
        "{e:?}"
    );
    assert!(
        e[1].contains("document 2 (Service Web): metadata.name: service name \"Web\""),
        "{e:?}"
    );

    let e = desired(&[("y.yaml", "a: [1, 2\n")], None).unwrap_err();
    assert!(e[0].starts_with("y.yaml: "), "{e:?}");
    let e = desired(&[("d.yaml", &format!("{MESH}---\n{MESH}"))], None).unwrap_err();
    assert!(
        e[0].contains("network web is also defined by d.yaml: document 1"),
        "{e:?}"
    );
    let lb = PI.replace("LoadBalancer", "NodePort");
    let e = desired(&[("n.yaml", &lb)], Some("web")).unwrap_err();
    assert!(
        e[0].contains("spec.type: \"NodePort\" is not supported"),
        "{e:?}"
    );
    let named = PI.replace("targetPort: 80", "targetPort: http");
    let e = desired(&[("n.yaml", &named)], Some("web")).unwrap_err();
    assert!(e[0].contains("spec.ports[0].targetPort"), "{e:?}");
}

#[test]
fn applied_files_are_unchanged_and_changes_are_named() {
    let cur = applied();
    let want = desired(&[("mesh.yaml", MESH), ("pi.yaml", PI)], Some("web")).unwrap();
    let items = Planner::new(&cur, &want).apply().unwrap();
    assert!(
        items
            .iter()
            .all(|i| i.verb == Verb::Unchanged && i.steps.is_empty()),
        "{:?}",
        lines(&items)
    );
    assert_eq!(summary(&items, false), "0 created, 0 changed, 4 unchanged");

    // A new port: the service is made again on its VIP, the FIP follows.
    let moved = PI.replace("- port: 80\n", "- port: 8080\n");
    let want = desired(&[("pi.yaml", &moved)], Some("web")).unwrap();
    let items = Planner::new(&cur, &want).apply().unwrap();
    assert_eq!(
        lines(&items),
        [
            "change service nginx.web (ports)",
            "change fip 192.168.1.241 (nginx.web:8080)"
        ]
    );
    match &items[0].steps[..] {
        // In place: only the ports travel; the VIP is not touched.
        [Step::UpdateService(name, r)] => {
            assert_eq!(name, "nginx");
            assert_eq!(r.ports.as_deref(), Some(&["8080:80".to_string()][..]));
            assert_eq!((r.ip.as_ref(), r.selector.as_ref()), (None, None));
        }
        other => panic!("{other:?}"),
    }

    // A network's settings change in place; its subnet does not.
    let deny = MESH.replace(
        "  subnet: 10.40.0.0/24\n",
        "  subnet: 10.40.0.0/24\n  policy: deny\n  mtu: 1400\n",
    );
    let want = desired(&[("m.yaml", &deny)], None).unwrap();
    let items = Planner::new(&cur, &want).apply().unwrap();
    assert_eq!(items[1].to_string(), "change network web (policy, mtu)");
    let moved = MESH.replace("10.40.0.0/24", "10.41.0.0/24");
    let want = desired(&[("m.yaml", &moved)], None).unwrap();
    let e = Planner::new(&cur, &want).apply().unwrap_err().0;
    assert!(e[0].contains("m.yaml: document 1 (Network web): spec.subnet: network web has subnet 10.40.0.0/24, which cannot change"), "{e:?}");

    // Against the mesh: no network, no pool.
    let want = desired(&[("pi.yaml", PI)], Some("blue")).unwrap();
    let e = Planner::new(&Current::default(), &want)
        .apply()
        .unwrap_err()
        .0;
    assert!(e[0].contains("spec.network: no network \"blue\""), "{e:?}");
    assert!(
        e[1].contains("192.168.1.241 is in no floating-IP pool"),
        "{e:?}"
    );
}

#[test]
fn delete_removes_what_exists_in_reverse_order() {
    let cur = applied();
    let want = desired(&[("mesh.yaml", MESH), ("pi.yaml", PI)], Some("web")).unwrap();
    let items = Planner::new(&cur, &want).delete().unwrap();
    assert_eq!(
        lines(&items),
        [
            "delete fip 192.168.1.241",
            "delete service nginx.web",
            "delete network web",
            "delete fip-pool 192.168.1.240/28",
        ]
    );
    assert!(matches!(
        items[0].steps[..],
        [Step::Dissociate(..), Step::ReleaseFip(_)]
    ));
    let items = Planner::new(&Current::default(), &want).delete().unwrap();
    assert!(items.iter().all(|i| i.verb == Verb::Absent));
    assert_eq!(summary(&items, false), "0 deleted, 0 changed, 4 absent");
}

#[test]
fn an_export_applied_to_the_mesh_it_came_from_changes_nothing() {
    let mut cur = applied();
    let mut shop = network("shop", "10.60.0.0/24");
    shop.policy = PolicyMode::Deny;
    shop.egress = true;
    shop.mtu = 1400;
    shop.mtu_set = true;
    cur.networks.push(shop);
    cur.policies.push(PolicyRule {
        network: "shop".into(),
        name: "web-db".into(),
        from: [("app".to_string(), "web".to_string())].into(),
        to: [("app".to_string(), "db".to_string())].into(),
        ports: vec![PolicyPort {
            port: 5432,
            protocol: Some(Protocol::Tcp),
        }],
    });
    cur.qos.push(QosEntry {
        network: "shop".into(),
        container: None,
        rate_kbit: Some(5000),
        ceiling_kbit: Some(6000),
        delay_ms: Some(50.0),
        jitter_ms: Some(0.5),
        loss_percent: Some(10.0),
    });
    cur.services[0].targets.push(mesh_api::ServiceTarget {
        ip: "10.40.0.9".into(),
        ip6: None,
        port: Some(8080),
        host: None,
        name: None,
        weight: 3,
        explicit: true,
        health: mesh_api::TargetHealth::Unchecked,
        active: true,
        connections: 0,
    });
    cur.sort();
    let text = export::render(&cur).unwrap();
    assert!(
        text.contains("delay: 50ms") && text.contains("jitter: 0.5ms"),
        "{text}"
    );
    assert!(
        text.contains("  ports:\n  - 80\n"),
        "a bare port is a number: {text}"
    );
    let want = desired(&[("backup.yaml", &text)], None).unwrap();
    let items = Planner::new(&cur, &want).apply().unwrap();
    assert_eq!(items.len(), 7, "{:?}", lines(&items));
    assert!(
        items.iter().all(|i| i.verb == Verb::Unchanged),
        "{:?}",
        lines(&items)
    );
    // On an empty mesh, everything is created with the same VIP.
    let items = Planner::new(&Current::default(), &want).apply().unwrap();
    assert!(
        items.iter().all(|i| i.verb == Verb::Create),
        "{:?}",
        lines(&items)
    );
    let create = items.iter().flat_map(|i| &i.steps).find_map(|s| match s {
        Step::CreateService(r) => Some(r),
        _ => None,
    });
    assert_eq!(create.unwrap().ip.as_deref(), Some("10.40.0.3"));
}

#[test]
fn a_directory_is_its_yaml_files_by_name() {
    let dir = std::env::temp_dir().join(format!("meshctl-apply-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.yml"), PI).unwrap();
    std::fs::write(dir.join("a.yaml"), MESH).unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
    let docs = super::load::load(std::slice::from_ref(&dir)).unwrap();
    let files: Vec<String> = docs
        .iter()
        .map(|(o, _)| format!("{}#{}", o.file.rsplit('/').next().unwrap(), o.doc))
        .collect();
    assert_eq!(files, ["a.yaml#1", "a.yaml#2", "b.yml#1"]);
    let e = super::load::load(&[dir.join("nosuch.yaml")]).unwrap_err();
    assert!(e.to_string().contains("nosuch.yaml: "), "{e}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = super::load::load(&[empty]).unwrap_err();
    assert!(e.0[0].ends_with("no *.yaml or *.yml file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_load_balancer_without_an_address_keeps_the_one_it_got() {
    let any = PI.replace("  loadBalancerIP: 192.168.1.241\n", "");
    let want = desired(&[("pi.yaml", &any)], Some("web")).unwrap();
    assert_eq!(want.fips[0].addr, None);
    // Found by its association, not taken again.
    let items = Planner::new(&applied(), &want).apply().unwrap();
    assert_eq!(
        lines(&items),
        ["unchanged service nginx.web", "unchanged fip 192.168.1.241"]
    );
    let mut cur = applied();
    cur.fips.clear();
    let items = Planner::new(&cur, &want).apply().unwrap();
    assert_eq!(items[1].to_string(), "create fip (next free address)");
    assert!(matches!(
        items[1].steps[..],
        [Step::CreateFip(None), Step::Associate(None, _)]
    ));
    // A ClusterIP service has no floating IP; loadBalancerIP needs one.
    let cluster = PI.replace("LoadBalancer", "ClusterIP");
    let e = desired(&[("c.yaml", &cluster)], Some("web")).unwrap_err();
    assert!(
        e[0].contains("spec.loadBalancerIP: needs spec.type: LoadBalancer"),
        "{e:?}"
    );
}
