//! A tiny web server and client for lab tests: busybox httpd answering
//! with its name and the address it saw, and busybox wget asking once.

use std::time::Duration;

use crate::{wait_for, Lab};

impl Lab {
    /// busybox httpd in `ns` on `port`; `GET /cgi-bin/who` answers
    /// `NAME REMOTE_ADDR`.
    pub fn serve_who(&mut self, ns: &str, name: &str, port: u16) -> anyhow::Result<()> {
        let root = self.dir.join(format!("www-{name}-{port}"));
        let cgi = root.join("cgi-bin");
        std::fs::create_dir_all(&cgi)?;
        let script = cgi.join("who");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"{name} $REMOTE_ADDR\"\n"
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let port = port.to_string();
        let root = root.to_string_lossy().into_owned();
        let cmd = self.exec(ns, &["busybox", "httpd", "-f", "-p", &port, "-h", &root]);
        self.spawn_helper(cmd)?;
        Ok(())
    }

    /// `GET url` from `ns` over one new connection (busybox wget): the
    /// body, or `None` within 2 s.
    pub fn http_get(&self, ns: &str, url: &str) -> Option<String> {
        self.exec_ok(
            ns,
            &["timeout", "2", "busybox", "wget", "-q", "-O", "-", url],
        )
        .ok()
    }

    /// One new connection from `ns` to `host:port`: the server's name and
    /// the address it saw, or `None` within 2 s.
    pub fn ask(&self, ns: &str, host: &str, port: u16) -> Option<(String, String)> {
        let out = self.http_get(ns, &format!("http://{host}:{port}/cgi-bin/who"))?;
        let mut parts = out.split_whitespace();
        let name = parts.next()?.to_string();
        // busybox httpd listens on IPv6: `[::ffff:A.B.C.D]`.
        let seen = parts.next()?.trim_matches(|c| c == '[' || c == ']');
        Some((
            name,
            seen.strip_prefix("::ffff:").unwrap_or(seen).to_string(),
        ))
    }

    /// [`Lab::ask`] until it answers (15 s at most).
    pub fn wait_ask(&self, ns: &str, host: &str, port: u16) -> anyhow::Result<(String, String)> {
        wait_for(Duration::from_secs(15), || {
            self.ask(ns, host, port)
                .ok_or_else(|| anyhow::anyhow!("{ns} gets no answer from {host}:{port}"))
        })
    }
}
