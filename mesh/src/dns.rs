//! The embedded DNS server: on every host, one UDP socket per network at
//! the network's service address (the same address on every host, on the
//! network's bridge), answering `<name>.<network>` from the replicated
//! endpoint records and forwarding other names to the upstream servers the
//! operator configured, with a cache that honours TTLs.
//!
//! Built on `hickory-proto` for the message format. Answers depend on who
//! asks (version-aware answers pick by the asking container's version), so
//! the server is a small handler over the replicated records rather than a
//! static zone.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::records::EndpointRecord;

/// TTL of our own records: short, since containers come and go.
pub const RECORD_TTL: u32 = 5;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CACHE_ENTRIES: usize = 4096;
/// Negative answers from upstream are kept this long at most.
const NEGATIVE_TTL: u32 = 30;

/// What the resolver needs to know of the mesh, read on every query.
pub trait RecordSource: Send + Sync + 'static {
    /// Records of `network` that may be served now (host alive, not removed).
    fn records(&self, network: &str) -> Vec<EndpointRecord>;
}

/// Cache of upstream answers, keyed by (lower-case name, type).
#[derive(Default)]
pub struct Cache {
    entries: HashMap<(String, u16), (Message, Instant)>,
}

impl Cache {
    fn get(&mut self, key: &(String, u16), now: Instant) -> Option<Message> {
        let (msg, expires) = self.entries.get(key)?;
        if *expires <= now {
            self.entries.remove(key);
            return None;
        }
        let left = expires.duration_since(now).as_secs() as u32;
        let mut m = msg.clone();
        for r in m.answers.iter_mut() {
            r.ttl = r.ttl.min(left);
        }
        Some(m)
    }

    fn put(&mut self, key: (String, u16), msg: &Message, now: Instant) {
        let ttl = msg
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()
            .unwrap_or(NEGATIVE_TTL)
            .min(if msg.answers.is_empty() {
                NEGATIVE_TTL
            } else {
                u32::MAX
            });
        if ttl == 0 {
            return;
        }
        if self.entries.len() >= MAX_CACHE_ENTRIES {
            self.entries.retain(|_, (_, exp)| *exp > now);
            if self.entries.len() >= MAX_CACHE_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(
            key,
            (msg.clone(), now + Duration::from_secs(u64::from(ttl))),
        );
    }
}

pub struct Resolver {
    source: Arc<dyn RecordSource>,
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
}

/// The answer to a question about the mesh's own names.
#[derive(Debug, PartialEq, Eq)]
pub enum Local {
    Answer(Vec<IpAddr>),
    /// The network is ours but no such name.
    NxDomain,
    /// Not one of our names.
    NotOurs,
}

impl Resolver {
    pub fn new(source: Arc<dyn RecordSource>, upstreams: Vec<SocketAddr>) -> Arc<Resolver> {
        Arc::new(Resolver {
            source,
            upstreams,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// `<name>.<network>.` for a query arriving on `network` from `client`.
    pub fn lookup(&self, network: &str, qname: &str, qtype: RecordType, client: IpAddr) -> Local {
        let qname = qname.trim_end_matches('.').to_ascii_lowercase();
        let Some((name, zone)) = qname.rsplit_once('.') else {
            return Local::NotOurs;
        };
        let records = self.source.records(zone);
        let zone_known = zone == network || !records.is_empty();
        if !zone_known {
            return Local::NotOurs;
        }
        let named: Vec<&EndpointRecord> = records
            .iter()
            .filter(|r| r.name.as_deref().map(str::to_ascii_lowercase).as_deref() == Some(name))
            .collect();
        if named.is_empty() {
            return Local::NxDomain;
        }
        // Version-aware: a client of version V gets the V containers when
        // there are any, otherwise everyone.
        let client_version = self
            .source
            .records(network)
            .into_iter()
            .find(|r| r.ip == client || r.ip6.map(IpAddr::V6) == Some(client))
            .and_then(|r| r.version);
        let same: Vec<&&EndpointRecord> = named
            .iter()
            .filter(|r| client_version.is_some() && r.version == client_version)
            .collect();
        let chosen: Vec<&EndpointRecord> = if same.is_empty() {
            named
        } else {
            same.into_iter().copied().collect()
        };
        let mut addrs: Vec<IpAddr> = chosen
            .iter()
            .filter_map(|r| match qtype {
                RecordType::A => Some(r.ip).filter(IpAddr::is_ipv4),
                RecordType::AAAA => r.ip6.map(IpAddr::V6),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        addrs.shuffle(&mut rand::thread_rng());
        Local::Answer(addrs)
    }

    /// Builds the response to one request (bytes in, bytes out).
    pub async fn respond(&self, network: &str, request: &[u8], client: IpAddr) -> Option<Vec<u8>> {
        let req = match Message::from_vec(request) {
            Ok(m) => m,
            Err(e) => {
                debug!("malformed DNS request from {client}: {e}");
                return None;
            }
        };
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = !self.upstreams.is_empty();
        let (Some(q), 1, OpCode::Query) =
            (req.queries.first(), req.queries.len(), req.metadata.op_code)
        else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp.to_vec().ok();
        };
        resp.add_query(q.clone());
        let qname = q.name().to_ascii();
        match self.lookup(network, &qname, q.query_type(), client) {
            Local::Answer(addrs) => {
                resp.metadata.authoritative = true;
                for a in addrs {
                    let rdata = match a {
                        IpAddr::V4(v4) => RData::A(A(v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                    };
                    resp.add_answer(Record::from_rdata(q.name().clone(), RECORD_TTL, rdata));
                }
            }
            Local::NxDomain => {
                resp.metadata.authoritative = true;
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            Local::NotOurs => match self.forward(q).await {
                Some(mut up) => {
                    up.metadata.id = req.metadata.id;
                    return up.to_vec().ok();
                }
                None => {
                    resp.metadata.response_code = if self.upstreams.is_empty() {
                        ResponseCode::Refused
                    } else {
                        ResponseCode::ServFail
                    };
                }
            },
        }
        resp.to_vec().ok()
    }

    async fn forward(&self, q: &Query) -> Option<Message> {
        if self.upstreams.is_empty() {
            return None;
        }
        let key = (
            q.name().to_ascii().to_ascii_lowercase(),
            u16::from(q.query_type()),
        );
        let now = Instant::now();
        if let Some(hit) = self.lock_cache().get(&key, now) {
            return Some(hit);
        }
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(q.clone());
        let bytes = m.to_vec().ok()?;
        for up in &self.upstreams {
            let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .ok()?;
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(&bytes, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await?;
                    if from == *up {
                        return Ok::<usize, std::io::Error>(n);
                    }
                }
            })
            .await;
            let Ok(Ok(n)) = got else {
                warn!(upstream = %up, "upstream DNS server did not answer");
                continue;
            };
            let Ok(ans) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if ans.metadata.id != m.metadata.id {
                continue;
            }
            self.lock_cache().put(key, &ans, Instant::now());
            return Some(ans);
        }
        None
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves DNS for `network` on `sock` until the task is aborted.
pub async fn serve(resolver: Arc<Resolver>, network: String, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                warn!(network = %network, "DNS socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let request = buf[..n].to_vec();
        let (resolver, network, sock) = (resolver.clone(), network.clone(), sock.clone());
        // Forwarded queries wait on upstreams: answer each on its own task.
        tokio::spawn(async move {
            let client = match from.ip() {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            };
            if let Some(resp) = resolver.respond(&network, &request, client).await {
                let _ = sock.send_to(&resp, from).await;
            }
        });
    }
}

/// A UDP socket on `addr:53` bound to `device`, so replies leave through
/// the network's bridge even when several networks share a subnet.
pub fn bind_on_device(addr: IpAddr, device: &str) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind_device(Some(device.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(addr, 53).into())?;
    UdpSocket::from_std(s.into())
}

pub fn name_of(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<EndpointRecord>);
    impl RecordSource for Fixed {
        fn records(&self, network: &str) -> Vec<EndpointRecord> {
            self.0
                .iter()
                .filter(|r| r.network == network)
                .cloned()
                .collect()
        }
    }

    fn rec(ip: &str, name: &str, version: Option<&str>) -> EndpointRecord {
        EndpointRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            ip6: Some(
                format!("fd00::{}", ip.rsplit('.').next().unwrap())
                    .parse()
                    .unwrap(),
            ),
            mac: "02:00:00:00:00:01".into(),
            host: "h".into(),
            name: Some(name.into()),
            version: version.map(Into::into),
        }
    }

    fn resolver(records: Vec<EndpointRecord>, upstreams: Vec<SocketAddr>) -> Arc<Resolver> {
        Resolver::new(Arc::new(Fixed(records)), upstreams)
    }

    fn ips(l: Local) -> BTreeSet<IpAddr> {
        match l {
            Local::Answer(v) => v.into_iter().collect(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn answers_a_and_aaaa_for_all_containers_of_a_name() {
        let r = resolver(
            vec![
                rec("10.0.0.2", "web", None),
                rec("10.0.0.3", "web", None),
                rec("10.0.0.4", "db", None),
            ],
            vec![],
        );
        let c: IpAddr = "10.0.0.9".parse().unwrap();
        let a = ips(r.lookup("blue", "web.blue.", RecordType::A, c));
        assert_eq!(
            a,
            ["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()].into()
        );
        let aaaa = ips(r.lookup("blue", "WEB.Blue", RecordType::AAAA, c));
        assert_eq!(aaaa.len(), 2);
        assert!(aaaa.iter().all(IpAddr::is_ipv6));
        assert_eq!(
            r.lookup("blue", "nope.blue.", RecordType::A, c),
            Local::NxDomain
        );
        assert_eq!(
            r.lookup("blue", "example.com.", RecordType::A, c),
            Local::NotOurs
        );
    }

    #[test]
    fn version_aware_answers() {
        let r = resolver(
            vec![
                rec("10.0.0.2", "api", Some("v1")),
                rec("10.0.0.3", "api", Some("v2")),
                rec("10.0.0.10", "client", Some("v2")),
                rec("10.0.0.11", "old", Some("v3")),
            ],
            vec![],
        );
        let v2_client = "10.0.0.10".parse().unwrap();
        assert_eq!(
            ips(r.lookup("blue", "api.blue", RecordType::A, v2_client)),
            ["10.0.0.3".parse().unwrap()].into()
        );
        // A v3 client: no v3 api, so all of them.
        let v3_client = "10.0.0.11".parse().unwrap();
        assert_eq!(
            ips(r.lookup("blue", "api.blue", RecordType::A, v3_client)).len(),
            2
        );
        // Unknown client: all.
        assert_eq!(
            ips(r.lookup(
                "blue",
                "api.blue",
                RecordType::A,
                "10.0.0.99".parse().unwrap()
            ))
            .len(),
            2
        );
    }

    #[tokio::test]
    async fn wire_round_trip_and_refusal_without_upstreams() {
        let r = resolver(vec![rec("10.0.0.2", "web", None)], vec![]);
        let mut q = Message::query();
        q.metadata.id = 4242;
        q.add_query(Query::query(
            Name::from_ascii("web.blue.").unwrap(),
            RecordType::A,
        ));
        let resp = r
            .respond("blue", &q.to_vec().unwrap(), "10.0.0.9".parse().unwrap())
            .await
            .unwrap();
        let m = Message::from_vec(&resp).unwrap();
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.answers.len(), 1);
        let mut q2 = Message::query();
        q2.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        let resp = r
            .respond("blue", &q2.to_vec().unwrap(), "10.0.0.9".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            Message::from_vec(&resp).unwrap().metadata.response_code,
            ResponseCode::Refused
        );
        // Garbage gets no answer and no panic.
        assert!(r
            .respond("blue", &[1, 2, 3], "10.0.0.9".parse().unwrap())
            .await
            .is_none());
    }

    /// A fake upstream on loopback that counts queries: a second query
    /// within the TTL is answered from the cache.
    #[tokio::test]
    async fn forwards_to_upstream_and_caches_by_ttl() {
        let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = count.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = up.recv_from(&mut buf).await.unwrap();
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut a = Message::response(q.metadata.id, OpCode::Query);
                a.add_query(q.queries[0].clone());
                a.add_answer(Record::from_rdata(
                    q.queries[0].name().clone(),
                    60,
                    RData::A(A("192.0.2.7".parse().unwrap())),
                ));
                up.send_to(&a.to_vec().unwrap(), from).await.unwrap();
            }
        });
        let r = resolver(vec![], vec![up_addr]);
        for _ in 0..2 {
            let mut q = Message::query();
            q.add_query(Query::query(
                Name::from_ascii("example.org.").unwrap(),
                RecordType::A,
            ));
            let resp = r
                .respond("blue", &q.to_vec().unwrap(), "10.0.0.9".parse().unwrap())
                .await
                .unwrap();
            let m = Message::from_vec(&resp).unwrap();
            assert_eq!(m.metadata.id, q.metadata.id);
            assert_eq!(m.answers.len(), 1);
            assert!(m.answers[0].ttl <= 60);
        }
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "second query was not cached"
        );
    }

    #[test]
    fn cache_expires() {
        let mut c = Cache::default();
        let mut m = Message::response(1, OpCode::Query);
        m.add_answer(Record::from_rdata(
            Name::from_ascii("a.").unwrap(),
            1,
            RData::A(A("192.0.2.1".parse().unwrap())),
        ));
        let now = Instant::now();
        c.put(("a.".into(), 1), &m, now);
        assert!(c.get(&("a.".into(), 1), now).is_some());
        assert!(c
            .get(&("a.".into(), 1), now + Duration::from_secs(2))
            .is_none());
    }
}
