//! The resolver end to end on bytes: what a client sees on each transport.

use super::zone::tests::{fixed, rec};
use super::*;
use hickory_proto::op::{Edns, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record};
use std::sync::atomic::{AtomicUsize, Ordering};

fn client() -> IpAddr {
    "10.0.0.200".parse().unwrap()
}

fn query(name: &str, qtype: RecordType, edns: Option<(u16, u8)>) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some((size, version)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size).set_version(version);
        q.set_edns(e);
    }
    q
}

async fn ask(r: &Resolver, q: &Message, t: Transport) -> (usize, Message) {
    let bytes = r
        .respond("blue", &q.to_vec().unwrap(), client(), t)
        .await
        .expect("an answer");
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    (bytes.len(), m)
}

fn many(n: u8) -> Resolver {
    let recs = (0..n)
        .map(|i| rec(&format!("10.0.0.{}", i + 2), "many", None))
        .collect();
    Resolver {
        source: snapshot::Snapshots::new(Arc::new(fixed(recs)), std::time::Duration::ZERO),
        upstreams: Upstreams::new(vec![]),
    }
}

#[tokio::test]
async fn forty_five_addresses_truncate_on_plain_udp_and_fit_on_tcp_and_edns() {
    let r = many(45);
    let (len, m) = ask(
        &r,
        &query("many.blue.", RecordType::A, None),
        Transport::Udp,
    )
    .await;
    assert!(len <= 512, "{len} bytes");
    assert!(m.metadata.truncation && m.metadata.authoritative);
    assert!(!m.answers.is_empty() && m.answers.len() < 45);
    assert!(m.edns.is_none(), "no OPT to a query without one");

    let (_, m) = ask(
        &r,
        &query("many.blue.", RecordType::A, None),
        Transport::Tcp,
    )
    .await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 45);

    let q = query("many.blue.", RecordType::A, Some((4096, 0)));
    let (len, m) = ask(&r, &q, Transport::Udp).await;
    assert!(len <= 1232 && !m.metadata.truncation);
    assert_eq!(m.answers.len(), 45);
    assert_eq!(m.edns.expect("OPT echoed").max_payload(), 1232);
    // 45 AAAA records do not fit in 1232: TC, and TCP has them all.
    let q6 = query("many.blue.", RecordType::AAAA, Some((4096, 0)));
    let (len, m) = ask(&r, &q6, Transport::Udp).await;
    assert!(len <= 1232 && m.metadata.truncation);
    let (_, m) = ask(&r, &q6, Transport::Tcp).await;
    assert_eq!(m.answers.len(), 45);
}

#[tokio::test]
async fn badvers_soa_negative_and_refusal_on_the_wire() {
    let r = many(1);
    let (_, m) = ask(
        &r,
        &query("many.blue.", RecordType::A, Some((1232, 1))),
        Transport::Udp,
    )
    .await;
    // BADVERS and BADSIG share code 16; hickory reads it back as BADSIG.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.answers.is_empty());

    let (_, m) = ask(
        &r,
        &query("nope.blue.", RecordType::A, None),
        Transport::Udp,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    let (_, m) = ask(&r, &query("blue.", RecordType::SOA, None), Transport::Udp).await;
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);

    let (_, m) = ask(
        &r,
        &query("example.com.", RecordType::A, None),
        Transport::Udp,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);
    // A reverse name outside our subnets is not ours either.
    let (_, m) = ask(
        &r,
        &query("1.2.0.192.in-addr.arpa.", RecordType::PTR, None),
        Transport::Udp,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    // Two questions: FORMERR. Garbage: nothing, and no panic.
    let mut two = query("many.blue.", RecordType::A, None);
    two.add_query(Query::query(
        Name::from_ascii("x.blue.").unwrap(),
        RecordType::A,
    ));
    let (_, m) = ask(&r, &two, Transport::Udp).await;
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(r
        .respond("blue", &[1, 2, 3], client(), Transport::Udp)
        .await
        .is_none());
}

/// A fake upstream on loopback that counts queries: a second query
/// within the TTL is answered from the cache, and both share one socket.
#[tokio::test]
async fn forwards_to_upstream_and_caches_by_ttl() {
    let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let sources = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let (c2, s2) = (count.clone(), sources.clone());
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = up.recv_from(&mut buf).await.unwrap();
            c2.fetch_add(1, Ordering::SeqCst);
            s2.lock().unwrap().insert(from);
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
    let r = Resolver::new(Arc::new(fixed(vec![])), vec![up_addr]);
    for name in ["example.org.", "example.org.", "example.net."] {
        let (_, m) = ask(&r, &query(name, RecordType::A, None), Transport::Udp).await;
        assert_eq!(m.answers.len(), 1);
        assert!(m.answers[0].ttl <= 60);
        assert!(m.metadata.recursion_available);
    }
    assert_eq!(count.load(Ordering::SeqCst), 2, "second query not cached");
    assert_eq!(sources.lock().unwrap().len(), 2, "a socket per query");
}

#[tokio::test]
async fn upstream_silence_is_servfail() {
    // A bound socket that never answers.
    let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = Resolver::new(Arc::new(fixed(vec![])), vec![up.local_addr().unwrap()]);
    let (_, m) = ask(
        &r,
        &query("example.org.", RecordType::A, None),
        Transport::Udp,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

/// RFC 7766 on a loopback listener: two pipelined queries on one
/// connection, answered in order and in full.
#[tokio::test]
async fn tcp_serves_several_length_prefixed_queries_per_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = Arc::new(many(45));
    let server = tokio::spawn(tcp::serve(r, "blue".into(), listener));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q1 = query("many.blue.", RecordType::A, None);
    let q2 = query("nope.blue.", RecordType::A, None);
    let mut out = Vec::new();
    for q in [&q1, &q2] {
        let b = q.to_vec().unwrap();
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(&b);
    }
    s.write_all(&out).await.unwrap();
    for (q, want) in [(&q1, 45), (&q2, 0)] {
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(m.metadata.id, q.metadata.id);
        assert_eq!(m.answers.len(), want);
    }
    server.abort();
}

/// Past the cap, a new connection is closed without an answer; the ones
/// open keep being served.
#[tokio::test]
async fn tcp_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tcp::serve(Arc::new(many(1)), "blue".into(), listener));
    let q = query("many.blue.", RecordType::A, None).to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    async fn ask_on(s: &mut tokio::net::TcpStream, framed: &[u8]) -> std::io::Result<u16> {
        s.write_all(framed).await?;
        let len = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await?;
        Ok(len)
    }
    let mut open = Vec::new();
    for _ in 0..tcp::MAX_CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        ask_on(&mut s, &framed)
            .await
            .expect("served within the cap");
        open.push(s);
    }
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(ask_on(&mut extra, &framed).await.is_err(), "over the cap");
    ask_on(&mut open[0], &framed)
        .await
        .expect("open connections still served");
    drop(open);
    server.abort();
}

/// An upstream that truncates over UDP is asked again over TCP, and the
/// client gets the whole answer.
#[tokio::test]
async fn truncated_upstream_answers_are_fetched_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let answer = |q: &Message, n: u8| {
        let mut a = Message::response(q.metadata.id, OpCode::Query);
        a.add_query(q.queries[0].clone());
        a.metadata.truncation = n == 0;
        for i in 0..n {
            a.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(A(std::net::Ipv4Addr::new(192, 0, 2, i))),
            ));
        }
        a.to_vec().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let (n, from) = udp.recv_from(&mut buf).await.unwrap();
        let q = Message::from_vec(&buf[..n]).unwrap();
        udp.send_to(&answer(&q, 0), from).await.unwrap();
        let (mut s, _) = tcp.accept().await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        let full = answer(&Message::from_vec(&buf).unwrap(), 40);
        s.write_all(&(full.len() as u16).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&full).await.unwrap();
    });
    let r = Resolver::new(Arc::new(fixed(vec![])), vec![addr]);
    let (_, m) = ask(
        &r,
        &query("big.example.", RecordType::A, None),
        Transport::Tcp,
    )
    .await;
    assert_eq!(m.answers.len(), 40);
    assert!(!m.metadata.truncation);
    // Cached whole; a plain UDP client gets what fits, with TC.
    let (len, m) = ask(
        &r,
        &query("big.example.", RecordType::A, None),
        Transport::Udp,
    )
    .await;
    assert!(len <= 512 && m.metadata.truncation && m.answers.len() < 40);
}

/// Every forwarded query leaves from a port of its own with a random id;
/// datagrams that do not answer it (another port, another id, another
/// question) are ignored, and the real answer still gets through.
#[tokio::test]
async fn upstream_queries_use_fresh_ports_and_ids_and_ignore_forgeries() {
    let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let answer = |id: u16, q: &Query, ip: [u8; 4]| {
        let mut a = Message::response(id, OpCode::Query);
        a.add_query(q.clone());
        a.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A(ip.into())),
        ));
        a.to_vec().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = up.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let (id, question) = (q.metadata.id, q.queries[0].clone());
            seen2.lock().unwrap().push((from, id));
            let bad = [192, 0, 2, 66];
            // Right id and question from the wrong port; from the right
            // port a wrong id, then the wrong question; then the answer.
            forger
                .send_to(&answer(id, &question, bad), from)
                .await
                .unwrap();
            up.send_to(&answer(id ^ 0x5a5a, &question, bad), from)
                .await
                .unwrap();
            let other = Query::query(Name::from_ascii("other.example.").unwrap(), RecordType::A);
            up.send_to(&answer(id, &other, bad), from).await.unwrap();
            up.send_to(&answer(id, &question, [192, 0, 2, 7]), from)
                .await
                .unwrap();
        }
    });
    let r = Resolver::new(Arc::new(fixed(vec![])), vec![up_addr]);
    for name in ["one.example.", "two.example."] {
        let (_, m) = ask(&r, &query(name, RecordType::A, None), Transport::Udp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let ips: Vec<String> = m.answers.iter().map(|a| a.data.to_string()).collect();
        assert_eq!(ips, ["192.0.2.7"], "{name}: a forged answer was taken");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let ((from1, id1), (from2, id2)) = (seen[0], seen[1]);
    assert_ne!(from1.port(), from2.port(), "same source port: {seen:?}");
    // Random ids (1 in 21845 that two random ones are this close).
    assert!(id1.abs_diff(id2) > 1, "predictable ids: {seen:?}");
}

/// Clients that send queries and never read their answers take every TCP
/// slot; the write timeout frees them, and a well-behaved client is
/// answered well before the idle timeout would close anything.
#[tokio::test]
async fn tcp_clients_that_never_read_do_not_lock_out_the_rest() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // 250 addresses: ~4 KB per answer, 2000 answers to a connection: more
    // than socket buffers hold even where they grow to megabytes.
    // Snapshots kept: the server answers as fast as it can write.
    let recs = (0..250)
        .map(|i| rec(&format!("10.0.0.{}", i + 2), "many", None))
        .collect();
    let r = Resolver {
        source: snapshot::Snapshots::new(Arc::new(fixed(recs)), std::time::Duration::from_secs(60)),
        upstreams: Upstreams::new(vec![]),
    };
    let server = tokio::spawn(tcp::serve(Arc::new(r), "blue".into(), listener));
    let q = query("many.blue.", RecordType::A, None).to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let flood: Vec<u8> = framed.repeat(2000);
    let mut stalled = Vec::new();
    let setup = std::time::Instant::now();
    for _ in 0..tcp::MAX_CONNECTIONS {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        s.write_all(&flood).await.unwrap();
        stalled.push(s);
    }
    eprintln!("slots taken in {:?}", setup.elapsed());
    let start = std::time::Instant::now();
    // Less than IDLE_TIMEOUT: only a write timeout can free a slot by then.
    let deadline = std::time::Duration::from_secs(9);
    let answered = loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(&framed).await?;
            let len = s.read_u16().await?;
            let mut buf = vec![0u8; usize::from(len)];
            s.read_exact(&mut buf).await?;
            Message::from_vec(&buf).map_err(std::io::Error::other)
        };
        if let Ok(Ok(m)) = tokio::time::timeout(std::time::Duration::from_secs(1), attempt).await {
            break Some(m);
        }
        if start.elapsed() > deadline {
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let m = answered.expect("no answer while clients that never read hold the slots");
    assert_eq!(m.answers.len(), 250);
    eprintln!("answered {:?} after the slots were taken", start.elapsed());
    drop(stalled);
    server.abort();
}

/// An upstream on loopback answering every A question with `ip`.
async fn answering_upstream(ip: &'static str) -> SocketAddr {
    let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = up.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = up.recv_from(&mut buf).await {
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut a = Message::response(q.metadata.id, OpCode::Query);
            a.add_query(q.queries[0].clone());
            a.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(A(ip.parse().unwrap())),
            ));
            let _ = up.send_to(&a.to_vec().unwrap(), from).await;
        }
    });
    addr
}

/// A reload replaces the upstreams: the next question goes to the new
/// one, not to the cache of the old one's answers; none turns
/// forwarding off.
#[tokio::test]
async fn replaced_upstreams_answer_at_once_and_none_refuses() {
    let old = answering_upstream("192.0.2.1").await;
    let new = answering_upstream("192.0.2.2").await;
    let r = Resolver::new(Arc::new(fixed(vec![])), vec![old]);
    let a = |m: &Message| match &m.answers[0].data {
        RData::A(a) => a.0.to_string(),
        other => panic!("{other:?}"),
    };
    let q = query("example.org.", RecordType::A, None);
    assert_eq!(a(&ask(&r, &q, Transport::Udp).await.1), "192.0.2.1");
    r.set_upstreams(vec![new]);
    assert_eq!(r.upstreams(), vec![new]);
    assert_eq!(a(&ask(&r, &q, Transport::Udp).await.1), "192.0.2.2");
    r.set_upstreams(vec![]);
    let (_, m) = ask(&r, &q, Transport::Udp).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
}

/// Records that change under the server, as attachments come and go.
struct Moving(std::sync::Mutex<Vec<EndpointRecord>>);

impl RecordSource for Moving {
    fn records(&self, network: &str) -> Vec<EndpointRecord> {
        let recs = self.0.lock().unwrap();
        recs.iter()
            .filter(|r| r.network == network)
            .cloned()
            .collect()
    }
    fn networks(&self) -> Vec<NetworkDef> {
        vec![super::zone::tests::blue()]
    }
}

/// Over the UDP server: a repeated question is answered under its own ID
/// (from the kept bytes), and a record that changes is answered anew
/// once the snapshot it was built from has aged out.
#[tokio::test]
async fn udp_repeats_get_their_own_ids_and_changes_show_through() {
    let source = Arc::new(Moving(std::sync::Mutex::new(vec![rec(
        "10.0.0.7", "web", None,
    )])));
    let r = Resolver::new(source.clone(), vec![]);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = sock.local_addr().unwrap();
    let task = tokio::spawn(udp::serve(r, "blue".into(), sock));
    let me = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 1500];
    let mut ask = async |id: u16| -> Vec<IpAddr> {
        let mut q = query("web.blue.", RecordType::A, None);
        q.metadata.id = id;
        me.send_to(&q.to_vec().unwrap(), server).await.unwrap();
        let n = me.recv(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.id, id, "the answer carries the question's ID");
        m.answers
            .iter()
            .filter_map(|a| match a.data {
                RData::A(A(ip)) => Some(IpAddr::V4(ip)),
                _ => None,
            })
            .collect()
    };
    let first: IpAddr = "10.0.0.7".parse().unwrap();
    for id in [1, 0xbeef, 7] {
        assert_eq!(ask(id).await, [first]);
    }
    *source.0.lock().unwrap() = vec![rec("10.0.0.9", "web", None)];
    let moved: IpAddr = "10.0.0.9".parse().unwrap();
    let mut seen = Vec::new();
    for id in 100..200u16 {
        seen = ask(id).await;
        if seen == [moved] {
            break;
        }
        tokio::time::sleep(snapshot::MAX_AGE / 4).await;
    }
    assert_eq!(seen, [moved], "the new address is answered");
    task.abort();
}
