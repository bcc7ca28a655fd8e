//! The web console from a lab test's side: headless Chromium (Debian's
//! `chromium`) run inside a host's namespace, and a plain HTTP/1.1 GET
//! from inside a namespace for status codes and headers.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Lab;

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Lab {
    /// `METHOD path` to `addr` from inside namespace `ns`, with `headers`
    /// (`Name: value`), over one connection (`Connection: close`).
    pub fn http(
        &self,
        ns: &str,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[&str],
    ) -> Result<Answer> {
        let fd = mesh_sys::netns::open(format!("/run/netns/{ns}"))?;
        // `Host` is the address asked, unless the caller names another.
        let own_host = headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("host:"));
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !own_host {
            request.push_str(&format!("Host: {addr}\r\n"));
        }
        for h in headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        request.push_str("Content-Length: 0\r\n\r\n");
        // A thread of its own enters the namespace; the test's stays.
        let raw = std::thread::spawn(move || -> Result<Vec<u8>> {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the namespace")?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("connecting to {addr}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(request.as_bytes())?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)?;
            Ok(raw)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))??;
        parse(&raw)
    }

    /// Headless Chromium in namespace `ns`: `args` then `url`; its stdout.
    /// Each run has a fresh profile under the lab's directory.
    pub fn chromium(&self, ns: &str, args: &[&str], url: &str) -> Result<String> {
        let profile = self.dir.join(format!("chromium-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&profile)?;
        let profile_arg = format!("--user-data-dir={}", profile.display());
        let mut cmd = vec!["timeout", "90", "chromium"];
        cmd.extend_from_slice(&CHROMIUM_FLAGS);
        cmd.push(&profile_arg);
        cmd.extend_from_slice(args);
        cmd.push(url);
        let mut c = self.exec(ns, &cmd);
        c.env("HOME", &profile);
        let out = c
            .output()
            .context("running chromium (apt-get install chromium)")?;
        let _ = std::fs::remove_dir_all(&profile);
        if !out.status.success() {
            bail!(
                "chromium {url}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The page's DOM after its scripts ran for `budget_ms` of virtual time.
    pub fn page_dom(&self, ns: &str, url: &str, budget_ms: u32) -> Result<String> {
        let budget = format!("--virtual-time-budget={budget_ms}");
        self.chromium(ns, &[&budget, "--dump-dom"], url)
    }

    /// A 1280×900 screenshot of the page at `path`.
    pub fn page_screenshot(&self, ns: &str, url: &str, path: &Path) -> Result<PathBuf> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let shot = format!("--screenshot={}", path.display());
        self.chromium(
            ns,
            &[
                &shot,
                "--window-size=1280,900",
                "--virtual-time-budget=5000",
                "--hide-scrollbars",
            ],
            url,
        )?;
        let len = std::fs::metadata(path)
            .with_context(|| format!("chromium wrote no {}", path.display()))?
            .len();
        if len < 1000 {
            bail!("{} is {len} bytes: not a page", path.display());
        }
        Ok(path.to_path_buf())
    }
}

/// A quiet, self-contained run: no sandbox (we are root), no GPU, nothing
/// fetched from the network behind the page's back.
const CHROMIUM_FLAGS: [&str; 11] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
];

fn parse(raw: &[u8]) -> Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a blank line after its headers")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}
