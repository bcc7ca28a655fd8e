//! The web console (root only): three hosts; h1 serves it on loopback
//! (`--console-listen`), h2 on its lab address (`console_listen` in its
//! meshd.toml). Headless Chromium inside h1's namespace reads the pages:
//! the topology shows three hosts and their links, a blocked data path
//! turns a link "relayed" on the page within 10 s, a container attached
//! on h2 appears on the networks page. Without the token h2's listener
//! answers 401 to everything; nothing answers anything but GET and HEAD.
//! Screenshots of every page go to target/console-screenshots/.

use integration::{test_lab, wait_for, Lab};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NET: &str = "web";
const DATA_PORT: u16 = 7801;
const PORT: u16 = 7880;

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}

/// The start tags of `tag` elements in a DOM dump.
fn tags<'a>(dom: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    dom.match_indices(&open)
        .filter_map(|(i, _)| dom[i..].find('>').map(|end| &dom[i..i + end]))
        .collect()
}

/// The kind of the topology's link to `peer` in a DOM dump.
fn link_kind(dom: &str, peer: &str) -> Option<String> {
    let want = format!("data-peer=\"{peer}\"");
    let t = tags(dom, "line").into_iter().find(|t| t.contains(&want))?;
    let (_, rest) = t.split_once("data-kind=\"")?;
    Some(rest.split('"').next()?.to_string())
}

fn topology(lab: &Lab) -> anyhow::Result<String> {
    let url = format!("http://127.0.0.1:{PORT}/topology");
    let dom = lab.page_dom(&lab.hosts[0].netns, &url, 1500)?;
    anyhow::ensure!(
        dom.contains("data-ready=\"yes\""),
        "the page did not draw:\n{dom}"
    );
    Ok(dom)
}

#[test]
fn pages_show_the_mesh_live_and_a_remote_listener_needs_the_token() {
    if integration::which("chromium").is_none() {
        eprintln!("skipping: no chromium (scripts/deps.sh installs it)");
        return;
    }
    let Some(mut lab) = test_lab("console", 3) else {
        return;
    };
    lab.hosts[0].extra_args = vec!["--console-listen".into(), format!("127.0.0.1:{PORT}")];
    let h2_addr = SocketAddr::from((lab.hosts[1].underlay_ip, PORT));
    let conf = lab.hosts[1].state_dir.join("meshd.toml");
    std::fs::write(&conf, format!("console_listen = \"{h2_addr}\"\n")).unwrap();
    lab.hosts[1].extra_args = vec!["--config".into(), conf.display().to_string()];
    lab.start_mesh().expect("mesh up");

    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.79.0.0/24"])
        .expect("network create");
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    lab.attach_netns(0, &c1, NET, &["--name", "front", "--label", "app=front"]);
    let a2 = lab.attach_netns(1, &c2, NET, &["--name", "api", "--label", "app=api"]);
    let ip2 = a2.ip.split('/').next().unwrap().to_string();
    lab.wait_ping(&c1, &ip2, Duration::from_secs(10)).unwrap();
    // Paths are probed (and fail over) only while they carry traffic.
    lab.keep_talking(&c1, &ip2).unwrap();
    lab.meshctl(
        0,
        &[
            "service",
            "create",
            "api",
            "--network",
            NET,
            "--port",
            "80",
            "--selector",
            "app=api",
        ],
    )
    .expect("service create");
    lab.wait_path(0, "h2", "direct", Duration::from_secs(10))
        .unwrap();
    lab.wait_path(0, "h3", "direct", Duration::from_secs(10))
        .unwrap();

    // Topology: three hosts, this one marked, a direct link to each peer.
    let dom = wait_for(Duration::from_secs(20), || {
        let dom = topology(&lab)?;
        let k = (link_kind(&dom, "h2"), link_kind(&dom, "h3"));
        anyhow::ensure!(
            k == (Some("direct".into()), Some("direct".into())),
            "links {k:?}"
        );
        Ok(dom)
    })
    .unwrap();
    let nodes = tags(&dom, "g")
        .into_iter()
        .filter(|t| t.contains("data-host="))
        .collect::<Vec<_>>();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(
        nodes
            .iter()
            .any(|t| t.contains("data-host=\"h1\"") && t.contains("data-self=\"true\"")),
        "{nodes:?}"
    );
    let ns1 = lab.hosts[0].netns.clone();
    let dir = shots();
    for page in ["topology", "networks", "services", "host"] {
        let url = format!("http://127.0.0.1:{PORT}/{page}");
        let path = dir.join(format!("{page}.png"));
        lab.page_screenshot(&ns1, &url, &path).unwrap();
        println!("screenshot {}", path.display());
    }

    // Networks: h2's container, with its address, on h1's console.
    let url = format!("http://127.0.0.1:{PORT}/networks");
    let dom = wait_for(Duration::from_secs(15), || {
        let dom = lab.page_dom(&ns1, &url, 1500)?;
        anyhow::ensure!(
            dom.contains("data-container=\"api\""),
            "no container api yet"
        );
        Ok(dom)
    })
    .unwrap();
    let row = &dom[dom.find("data-container=\"api\"").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains(&ip2) && row.contains("h2"), "{row}");
    assert!(
        dom.contains("data-container=\"front\"") && dom.contains("app=front"),
        "{dom}"
    );
    // Services and the host's checks.
    let dom = lab
        .page_dom(&ns1, &format!("http://127.0.0.1:{PORT}/services"), 1500)
        .unwrap();
    assert!(dom.contains("data-service=\"api\""), "{dom}");
    let dom = lab
        .page_dom(&ns1, &format!("http://127.0.0.1:{PORT}/host"), 4000)
        .unwrap();
    assert!(
        dom.contains("id=\"checks\"") && dom.contains("data-check="),
        "{dom}"
    );

    // Cut the direct data path h1–h2: the page says "relayed" within 10 s.
    lab.block_udp_port(0, 1, DATA_PORT).unwrap();
    let cut = Instant::now();
    let dom = wait_for(Duration::from_secs(10), || {
        let dom = topology(&lab)?;
        let k = link_kind(&dom, "h2");
        anyhow::ensure!(k.as_deref() == Some("relayed"), "h2's link is {k:?}");
        Ok(dom)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tail(0, 20)));
    assert!(dom.contains(">via h3</text>"), "{dom}");
    assert_eq!(link_kind(&dom, "h3").as_deref(), Some("direct"));
    println!(
        "the page showed h1-h2 relayed {:?} after the cut",
        cut.elapsed()
    );
    assert!(cut.elapsed() < Duration::from_secs(10));
    let path = dir.join("topology-relayed.png");
    lab.page_screenshot(&ns1, &format!("http://127.0.0.1:{PORT}/topology"), &path)
        .unwrap();

    // Loopback: open, but read-only.
    let local = SocketAddr::from(([127, 0, 0, 1], PORT));
    let a = lab.http(&ns1, local, "GET", "/api/view", &[]).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["host"]["name"], "h1");
    let a = lab.http(&ns1, local, "HEAD", "/topology", &[]).unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, ""), "{a:?}");
    // A page whose name was re-pointed at 127.0.0.1 (DNS rebinding) gets
    // nothing from the open loopback listener.
    let a = lab
        .http(
            &ns1,
            local,
            "GET",
            "/api/view",
            &["Host: rebound.example:7880"],
        )
        .unwrap();
    assert_eq!(a.status, 421, "{a:?}");
    assert!(!a.body.contains("\"links\""), "{}", a.body);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let a = lab.http(&ns1, local, method, "/api/view", &[]).unwrap();
        assert_eq!(a.status, 405, "{method}: {a:?}");
        assert_eq!(a.header("allow"), Some("GET, HEAD"));
    }

    // README's way in (`ssh -N -L 7880:127.0.0.1:7880 root@HOST`, then
    // http://127.0.0.1:7880/): a tunnel from h3 to h1's loopback console.
    ssh_tunnel(&mut lab, 0, 2).unwrap();
    let here = SocketAddr::from(([127, 0, 0, 1], PORT));
    let ns3 = lab.hosts[2].netns.clone();
    wait_for(Duration::from_secs(15), || {
        let a = lab.http(&ns3, here, "GET", "/api/view", &[])?;
        anyhow::ensure!(a.status == 200, "through the tunnel: {}", a.status);
        Ok(())
    })
    .unwrap();
    let dom = lab
        .page_dom(&ns3, &format!("http://127.0.0.1:{PORT}/"), 1500)
        .unwrap();
    assert!(
        dom.contains("data-host=\"h1\" ") && dom.contains("data-ready=\"yes\""),
        "{dom}"
    );

    // h2's listener on its lab address, asked from h3: the token or 401.
    for path in [
        "/",
        "/topology",
        "/app.js",
        "/style.css",
        "/api/view",
        "/api/doctor",
        "/nope",
    ] {
        let a = lab.http(&ns3, h2_addr, "GET", path, &[]).unwrap();
        assert_eq!(a.status, 401, "{path}: {a:?}");
        assert!(
            a.body.contains("meshctl console token"),
            "{path}: {}",
            a.body
        );
        assert_eq!(a.header("x-frame-options"), Some("DENY"));
    }
    let a = lab.http(&ns3, h2_addr, "HEAD", "/api/view", &[]).unwrap();
    assert_eq!(a.status, 401, "HEAD without the token: {a:?}");
    let token = lab
        .meshctl(1, &["console", "token"])
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64, "{token:?}");
    let bearer = format!("Authorization: Bearer {token}");
    let a = lab
        .http(&ns3, h2_addr, "GET", "/api/view", &[&bearer])
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["host"]["name"], "h2");
    let wrong = format!("Authorization: Bearer {}", "0".repeat(64));
    assert_eq!(
        lab.http(&ns3, h2_addr, "GET", "/api/view", &[&wrong])
            .unwrap()
            .status,
        401
    );
    let a = lab
        .http(&ns3, h2_addr, "GET", "/topology", &[&bearer])
        .unwrap();
    assert_eq!(a.status, 200);
    let csp = a.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(
        lab.http(&ns3, h2_addr, "POST", "/api/view", &[&bearer])
            .unwrap()
            .status,
        405
    );
    // /login: a wrong token is refused, the right one sets the cookie.
    let a = lab
        .http(&ns3, h2_addr, "GET", "/login?token=nope", &[])
        .unwrap();
    assert_eq!(a.status, 401);
    let a = lab
        .http(&ns3, h2_addr, "GET", &format!("/login?token={token}"), &[])
        .unwrap();
    assert_eq!(a.status, 303, "{a:?}");
    let cookie = a.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let a = lab
        .http(
            &ns3,
            h2_addr,
            "GET",
            "/api/view",
            &[&format!("Cookie: {pair}")],
        )
        .unwrap();
    assert_eq!(a.status, 200);
    // And a browser that logged in draws h2's view.
    let url = format!("http://{h2_addr}/login?token={token}");
    let dom = lab.page_dom(&ns3, &url, 3000).unwrap();
    assert!(
        dom.contains("data-host=\"h2\"") && dom.contains("data-ready=\"yes\""),
        "{dom}"
    );

    // docs/console.md's rotation: delete the file, ask for the token.
    std::fs::remove_file(lab.hosts[1].state_dir.join("console.token")).unwrap();
    let rotated = lab
        .meshctl(1, &["console", "token"])
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(rotated, token);
    let a = lab
        .http(&ns3, h2_addr, "GET", "/api/view", &[&bearer])
        .unwrap();
    assert_eq!(a.status, 401, "the old token after the rotation: {a:?}");
    let bearer = format!("Authorization: Bearer {rotated}");
    let a = lab
        .http(&ns3, h2_addr, "GET", "/api/view", &[&bearer])
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");

    // console_listen is live: a reload (SIGHUP) moves the listener, and
    // closes the connections the old one kept alive.
    let kept = keep_alive(&ns3, h2_addr, &bearer);
    let moved = SocketAddr::from((lab.hosts[1].underlay_ip, PORT + 1));
    std::fs::write(&conf, format!("console_listen = \"{moved}\"\n")).unwrap();
    let pid = nix::unistd::Pid::from_raw(lab.hosts[1].daemon_pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(Duration::from_secs(10), || {
        let a = lab.http(&ns3, moved, "GET", "/api/view", &[&bearer])?;
        anyhow::ensure!(a.status == 200, "{}", a.status);
        Ok(())
    })
    .unwrap();
    wait_for(Duration::from_secs(5), || {
        let old = lab.http(&ns3, h2_addr, "GET", "/", &[]);
        anyhow::ensure!(old.is_err(), "the old listener still answers");
        Ok(())
    })
    .unwrap();
    assert_eq!(
        kept.join().unwrap().unwrap(),
        0,
        "the kept-alive connection of the old listener was closed"
    );
}

/// A kept-alive connection to `addr` from namespace `ns`: one request
/// answered, then the thread waits (up to 20 s) for the server to close
/// it and returns what it read after the answer (0: closed).
fn keep_alive(
    ns: &str,
    addr: SocketAddr,
    auth: &str,
) -> std::thread::JoinHandle<anyhow::Result<usize>> {
    use std::io::{Read, Write};
    let fd = mesh_sys::netns::open(format!("/run/netns/{ns}")).unwrap();
    let request = format!("GET /app.js HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n\r\n");
    let (answered, wait) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || -> anyhow::Result<usize> {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(request.as_bytes())?;
        // The whole answer: headers, then Content-Length bytes.
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        let need = loop {
            let n = s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                break end + 4 + len;
            }
        };
        while got.len() < need {
            let n = s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "closed in the answer");
            got.extend_from_slice(&buf[..n]);
        }
        answered.send(()).ok();
        Ok(s.read(&mut buf)?)
    });
    wait.recv_timeout(Duration::from_secs(10))
        .expect("an answer on the kept-alive connection");
    t
}

/// The pages at 100 hosts: the console's own files and a snapshot of a
/// synthetic mesh (built by meshd's view builder), served from inside a
/// lab namespace, drawn by Chromium. Chromium's clocks stand still under
/// a virtual-time budget, so the cost is Chromium's whole run (start,
/// fetch, draw, screenshot), at 100 hosts against 3; printed for
/// docs/console.md. Writes topology-100.png.
#[test]
fn a_hundred_hosts_page_draws_quickly() {
    if integration::which("chromium").is_none() {
        eprintln!("skipping: no chromium (scripts/deps.sh installs it)");
        return;
    }
    let Some(lab) = test_lab("console100", 1) else {
        return;
    };
    let ns = lab.hosts[0].netns.clone();
    let serve = |hosts| {
        let view = mesh::console::view::build(
            mesh::console::sample::mesh(hosts),
            &mut Default::default(),
            Instant::now(),
        );
        let json = serde_json::to_string(&view).unwrap();
        println!("{hosts}-host view: {} bytes", json.len());
        serve_static(&ns, json)
    };
    let (small, large) = (serve(3), serve(100));
    let url = |s: &Static, page: &str| format!("http://127.0.0.1:{}/{page}", s.port);

    let dom = lab.page_dom(&ns, &url(&large, "topology"), 3000).unwrap();
    assert!(dom.contains("data-ready=\"yes\""), "{dom}");
    assert_eq!(tags(&dom, "line").len(), 99);
    let nodes = tags(&dom, "g")
        .into_iter()
        .filter(|t| t.contains("data-host="))
        .count();
    assert_eq!(nodes, 100);
    for page in ["networks", "services"] {
        let dom = lab.page_dom(&ns, &url(&large, page), 3000).unwrap();
        assert!(dom.contains("data-ready=\"yes\""), "{page}");
    }

    let dir = shots();
    let median = |s: &Static, tag: &str| {
        let mut runs: Vec<Duration> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let path = dir.join(format!("topology-{tag}.png"));
                lab.page_screenshot(&ns, &url(s, "topology"), &path)
                    .unwrap();
                t.elapsed()
            })
            .collect();
        runs.sort();
        runs[1]
    };
    let (three, hundred) = (median(&small, "3"), median(&large, "100"));
    println!("chromium load, draw and screenshot of the topology: 3 hosts {three:?}, 100 hosts {hundred:?} (median of 3)");
    let _ = std::fs::remove_file(dir.join("topology-3.png"));
}

/// A server of the console's files and one fixed `/api/view`, on
/// 127.0.0.1 inside namespace `ns`, until dropped.
struct Static {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Static {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_static(ns: &str, view: String) -> Static {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let fd = mesh_sys::netns::open(format!("/run/netns/{ns}")).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            // The rest of the request's head.
            let mut h = String::new();
            while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (status, ct, body) = if path == "/api/view" {
                ("200 OK", "application/json", view.as_str())
            } else if mesh::console::PAGES.contains(&path) {
                ("200 OK", "text/html", mesh::console::ASSETS[0].2)
            } else if let Some(a) = mesh::console::ASSETS.iter().find(|a| a.0 == path) {
                ("200 OK", a.1, a.2)
            } else {
                ("404 Not Found", "text/plain", "")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Static {
        port: rx.recv().unwrap(),
        stop,
        thread: Some(thread),
    }
}

/// sshd on host `server`'s lab address (a key made for the test, root
/// only by key) and `ssh -N -L 7880:127.0.0.1:7880 root@SERVER` from
/// host `client`, both ended with the lab.
fn ssh_tunnel(lab: &mut Lab, server: usize, client: usize) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = lab.dir.join("ssh");
    std::fs::create_dir_all(&dir)?;
    let p = |f: &str| dir.join(f).display().to_string();
    for key in ["hostkey", "id"] {
        let _ = std::fs::remove_file(dir.join(key));
        integration::run(std::process::Command::new("ssh-keygen").args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &p(key),
        ]))?;
    }
    std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys"))?;
    let addr = lab.hosts[server].underlay_ip;
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "ListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowTcpForwarding local\n",
            p("hostkey"),
            p("authorized_keys"),
            p("sshd.pid")
        ),
    )?;
    // sshd's privilege-separation directory (the package's service makes it).
    std::fs::create_dir_all("/run/sshd")?;
    let sshd = lab.exec(
        &lab.hosts[server].netns,
        &["/usr/sbin/sshd", "-D", "-e", "-f", &p("sshd_config")],
    );
    lab.spawn_helper(sshd).context("starting sshd")?;
    let probe = format!("exec 3<>/dev/tcp/{addr}/22");
    wait_for(Duration::from_secs(10), || {
        lab.exec_ok(&lab.hosts[client].netns, &["bash", "-c", &probe])
    })
    .context("sshd does not answer")?;
    let known = format!("UserKnownHostsFile={}", p("known_hosts"));
    let target = format!("root@{addr}");
    let ssh = lab.exec(
        &lab.hosts[client].netns,
        &[
            "ssh",
            "-i",
            &p("id"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            &known,
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "-L",
            "7880:127.0.0.1:7880",
            &target,
        ],
    );
    lab.spawn_helper(ssh).context("starting ssh")?;
    Ok(())
}
