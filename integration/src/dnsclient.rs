//! The lab's own DNS client: one question from inside a namespace.

use anyhow::{anyhow, bail, Context, Result};
use std::time::Duration;

/// Asks the DNS server at `server` a question from inside namespace `ns`
/// (the test's own client: no resolver library or dig needed). Returns the
/// addresses answered, or an error naming the response code.
pub fn dns_query(
    ns: &str,
    server: std::net::IpAddr,
    name: &str,
    qtype: hickory_proto::rr::RecordType,
) -> Result<Vec<std::net::IpAddr>> {
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData};
    let ns_path = format!("/run/netns/{ns}");
    let name = name.to_string();
    mesh_sys::netns::run_in_net(&ns_path, move || -> Result<Vec<std::net::IpAddr>> {
        let bind = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = std::net::UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(&name)?, qtype));
        sock.send_to(&q.to_vec()?, (server, 53))?;
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).context("no DNS answer")?;
        let m = Message::from_vec(&buf[..n]).map_err(|e| anyhow!("bad DNS answer: {e}"))?;
        if m.metadata.response_code != ResponseCode::NoError {
            bail!("DNS answered {}", m.metadata.response_code);
        }
        Ok(m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    })?
}
