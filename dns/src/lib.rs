//! `mesh-dns`, the embedded DNS server of `meshd`: on every host, per
//! network, UDP and TCP on the network's service addresses (IPv4 and IPv6, the same on every host, on
//! the network's bridge). It is authoritative for each network's zone
//! `<network>.` (container names, SOA, NS, negative answers with the SOA)
//! and for the reverse zones of the networks' subnets, and forwards other
//! names to the operator's upstreams through a cache.
//!
//! Built on `hickory-proto` for the message format rather than on
//! `hickory-server`: answers depend on who asks (version-aware answers
//! pick by the asking container's address, on UDP and TCP alike), the
//! zones change with every attachment, and the sockets are bound to each
//! network's bridge — a handler over the replicated records does that in
//! a few hundred lines, with the bounds (in-flight upstream queries, TCP
//! connections) under our control.
//!
//! - [`wire`]: sizes, truncation, EDNS;
//! - [`zone`], [`reverse`]: the answers (pure, tested without sockets),
//!   over [`snapshot`]s of the replicated records;
//! - [`udp`], [`tcp`]: the servers, on a thread of their own; [`answers`]:
//!   repeated questions answered from bytes; [`upstream`], [`cache`]:
//!   forwarding.
//!
//! It reads the mesh only through a [`RecordSource`] (endpoint records and
//! network definitions, the types of `mesh-model`); `meshd` provides the
//! one over its replicated channels and starts the servers with
//! [`serve_on`] on each network's bridge.

#![warn(unreachable_pub)]

pub mod answers;
pub mod cache;
pub mod reverse;
mod runtime;
pub mod snapshot;
pub mod tcp;
pub mod udp;
pub mod upstream;
pub mod wire;
pub mod zone;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tracing::debug;

use mesh_model::records::{EndpointRecord, NetworkDef};
use snapshot::Snapshots;
use upstream::Upstreams;
use wire::Transport;
use zone::LocalAnswer;

pub use zone::RECORD_TTL;

/// What the resolver needs to know of the mesh, read on every query.
pub trait RecordSource: Send + Sync + 'static {
    /// Records of `network` that may be served now (host alive, not removed).
    fn records(&self, network: &str) -> Vec<EndpointRecord>;
    /// Every network's definition (zones and reverse zones).
    fn networks(&self) -> Vec<NetworkDef>;
}

pub struct Resolver {
    source: Snapshots,
    upstreams: Upstreams,
}

/// What to do with one request.
pub enum Step {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask the upstreams first (holds a slot of the in-flight cap).
    Forward(Forward),
    /// Not a request we answer at all.
    Ignore,
}

pub struct Forward {
    request: Message,
    limit: usize,
    slot: OwnedSemaphorePermit,
}

/// The asking address, IPv4-mapped IPv6 addresses as IPv4.
pub fn client_ip(from: SocketAddr) -> IpAddr {
    match from.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Resolver {
    pub fn new(source: Arc<dyn RecordSource>, upstreams: Vec<SocketAddr>) -> Arc<Resolver> {
        Arc::new(Resolver {
            source: Snapshots::new(source, snapshot::MAX_AGE),
            upstreams: Upstreams::new(upstreams),
        })
    }

    /// Replaces the upstream servers (a reload); queries already asked
    /// finish with the old ones.
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        self.upstreams.set(upstreams);
    }

    /// Changes with every [`Resolver::set_upstreams`]: answers kept from
    /// an older one may hold what the old upstreams said.
    pub fn upstreams_generation(&self) -> u64 {
        self.upstreams.generation()
    }

    /// The upstream servers in use.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams.addrs()
    }

    /// An answer from our own zones, if the name is in one.
    pub fn local(
        &self,
        network: &str,
        qname: &hickory_proto::rr::Name,
        qtype: RecordType,
        client: IpAddr,
    ) -> Option<LocalAnswer> {
        if reverse::parse(qname).is_some() {
            return reverse::answer(&self.source, network, qname, qtype);
        }
        zone::answer(&self.source, network, qname, qtype, client)
    }

    /// Decides what one request gets without waiting on anything.
    pub fn step(&self, network: &str, request: &[u8], client: IpAddr, t: Transport) -> Step {
        let req = match Message::from_vec(request) {
            Ok(m) => m,
            Err(e) => {
                debug!("malformed DNS request from {client}: {e}");
                return wire::format_error(request).map_or(Step::Ignore, Step::Reply);
            }
        };
        if req.metadata.message_type != MessageType::Query {
            return Step::Ignore;
        }
        let limit = wire::answer_limit(&req, t);
        let reply = |m: &Message| wire::encode(m, limit).map_or(Step::Ignore, Step::Reply);
        if let Some(bad) = wire::bad_version(&req) {
            return reply(&bad);
        }
        let mut resp = wire::response_to(&req);
        resp.metadata.recursion_available = !self.upstreams.is_empty();
        if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return reply(&resp);
        }
        let [q] = req.queries.as_slice() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return reply(&resp);
        };
        if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
            // The zones are per asker and never transferred.
            resp.metadata.response_code = ResponseCode::Refused;
            return reply(&resp);
        }
        if q.query_class() == DNSClass::IN {
            if let Some(ans) = self.local(network, q.name(), q.query_type(), client) {
                resp.metadata.authoritative = true;
                resp.metadata.response_code = ans.rcode;
                resp.answers = ans.answers;
                resp.authorities = ans.authority;
                return reply(&resp);
            }
        }
        if self.upstreams.is_empty() {
            resp.metadata.response_code = ResponseCode::Refused;
            return reply(&resp);
        }
        if let Some(hit) = self.upstreams.cached(q) {
            return reply(&from_upstream(&req, hit));
        }
        match self.upstreams.slot() {
            Some(slot) => Step::Forward(Forward {
                request: req,
                limit,
                slot,
            }),
            None => {
                debug!("upstream queries at their cap, SERVFAIL");
                resp.metadata.response_code = ResponseCode::ServFail;
                reply(&resp)
            }
        }
    }

    /// Asks the upstreams for a forwarded request; SERVFAIL when none
    /// answers.
    pub async fn forward(&self, f: Forward) -> Vec<u8> {
        let q = &f.request.queries[0];
        let resp = match self.upstreams.resolve(q, f.slot).await {
            Some(up) => from_upstream(&f.request, up),
            None => {
                let mut r = wire::response_to(&f.request);
                r.metadata.recursion_available = true;
                r.metadata.response_code = ResponseCode::ServFail;
                r
            }
        };
        // The question always fits: it fitted in the request.
        wire::encode(&resp, f.limit).unwrap_or_default()
    }

    /// The response to one request (bytes in, bytes out), waiting on
    /// upstreams if need be.
    pub async fn respond(
        &self,
        network: &str,
        request: &[u8],
        client: IpAddr,
        t: Transport,
    ) -> Option<Vec<u8>> {
        match self.step(network, request, client, t) {
            Step::Reply(b) => Some(b),
            Step::Forward(f) => Some(self.forward(f).await),
            Step::Ignore => None,
        }
    }
}

/// An upstream's answer as ours to `req`: its id, its OPT (or none).
fn from_upstream(req: &Message, mut up: Message) -> Message {
    up.metadata.id = req.metadata.id;
    up.metadata.recursion_desired = req.metadata.recursion_desired;
    up.metadata.truncation = false;
    up.metadata.recursion_available = true;
    up.edns = req.edns.as_ref().map(wire::our_edns);
    up
}

/// Serves `network`'s DNS on `addr:53` over UDP and TCP, bound to
/// `device` so replies leave through the network's bridge even when
/// several networks share a subnet. The servers run on the DNS thread
/// ([`runtime`]); aborting the handles stops them.
pub fn serve_on(
    resolver: Arc<Resolver>,
    network: &str,
    addr: IpAddr,
    device: &str,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let udp = socket_on(addr, device, socket2::Type::DGRAM, socket2::Protocol::UDP)?;
    let tcp = socket_on(addr, device, socket2::Type::STREAM, socket2::Protocol::TCP)?;
    tcp.listen(128)?;
    // Registered with the reactor of the thread that serves them.
    let (udp, tcp) = runtime::register(|| {
        Ok((
            UdpSocket::from_std(udp.into())?,
            TcpListener::from_std(tcp.into())?,
        ))
    })?;
    Ok(vec![
        runtime::spawn(udp::serve(resolver.clone(), network.to_string(), udp))?,
        runtime::spawn(tcp::serve(resolver, network.to_string(), tcp))?,
    ])
}

fn socket_on(
    addr: IpAddr,
    device: &str,
    ty: socket2::Type,
    proto: socket2::Protocol,
) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind_device(Some(device.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(addr, 53).into())?;
    Ok(s)
}

#[cfg(test)]
mod tests;
