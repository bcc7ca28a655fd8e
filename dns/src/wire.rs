//! Message sizes and the envelope of every answer: how large a response
//! may be on each transport (RFC 1035 §4.2.1, RFC 6891 §6.2.5), truncation
//! with TC, and the EDNS OPT record answers carry (RFC 6891 §7).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// Plain UDP answers fit in this (RFC 1035).
pub const PLAIN_UDP_LIMIT: usize = 512;
/// The largest UDP answer sent even when a client advertises more: the
/// size that avoids IP fragmentation on common paths (DNS flag day 2020).
pub const EDNS_UDP_LIMIT: u16 = 1232;
/// A TCP message is length-prefixed with 16 bits (RFC 1035 §4.2.2).
pub const TCP_LIMIT: usize = u16::MAX as usize;
/// The only EDNS version there is.
const EDNS_VERSION: u8 = 0;
/// Bytes an OPT record without options takes: root name, type, class,
/// TTL, RDLENGTH.
const OPT_LEN: usize = 11;

/// How a request arrived, which bounds its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The largest answer to `req` that may be sent over `transport`.
pub fn answer_limit(req: &Message, transport: Transport) -> usize {
    match (transport, &req.edns) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => PLAIN_UDP_LIMIT,
        (Transport::Udp, Some(e)) => usize::from(
            e.max_payload()
                .clamp(PLAIN_UDP_LIMIT as u16, EDNS_UDP_LIMIT),
        ),
    }
}

/// The skeleton of the response to `req`: same id, opcode, RD and question,
/// and an OPT record exactly when the request had one.
pub fn response_to(req: &Message) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.queries = req.queries.clone();
    resp.edns = req.edns.as_ref().map(our_edns);
    resp
}

/// Our OPT for an answer to a request carrying `theirs`: our UDP size,
/// version 0, the DO bit copied (RFC 3225), no options echoed.
pub fn our_edns(theirs: &Edns) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(EDNS_UDP_LIMIT)
        .set_version(EDNS_VERSION)
        .set_dnssec_ok(theirs.flags().dnssec_ok);
    e
}

/// The answer a request with an EDNS version we do not speak gets
/// (RFC 6891 §6.1.3), or None when the version is ours.
pub fn bad_version(req: &Message) -> Option<Message> {
    let e = req.edns.as_ref()?;
    if e.version() == EDNS_VERSION {
        return None;
    }
    let mut resp = response_to(req);
    resp.metadata.response_code = ResponseCode::BADVERS;
    Some(resp)
}

/// FORMERR for bytes that carry a DNS header but no message we can read
/// (RFC 1035 §4.1.1); nothing for what is not even a query header, so
/// stray packets never make us send.
pub fn format_error(request: &[u8]) -> Option<Vec<u8>> {
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([request[0], request[1]]);
    let op = OpCode::from_u8((request[2] >> 3) & 0x0f);
    let mut m = Message::error_msg(id, op, ResponseCode::FormErr);
    m.metadata.message_type = MessageType::Response;
    m.to_vec().ok()
}

/// Encodes `resp` in at most `limit` bytes. What does not fit is left
/// out: other additional records silently, answer and authority records
/// with TC set, so the client retries over TCP (RFC 2181 §9). Whole
/// records only, and as many answers as fit, which is what stub resolvers
/// that never retry (musl, busybox) live with. The OPT record is always
/// kept.
pub fn encode(resp: &Message, limit: usize) -> Option<Vec<u8>> {
    let full = resp.to_vec().ok()?;
    if full.len() <= limit {
        return Some(full);
    }
    // Without additionals, may the answer still be complete?
    let mut lean = resp.clone();
    lean.additionals.clear();
    if let Ok(bytes) = lean.to_vec() {
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    // Let the encoder place as many whole records as fit in the room left
    // for an OPT, then rebuild with exactly those.
    let room = limit.saturating_sub(if resp.edns.is_some() { OPT_LEN } else { 0 });
    let mut probe = lean.clone();
    probe.edns = None;
    let mut buf = Vec::with_capacity(room);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_max_size(u16::try_from(room).unwrap_or(u16::MAX));
    // A question too large for the room is not an answer at all.
    probe.emit(&mut enc).ok()?;
    let answers = usize::from(u16::from_be_bytes([buf[6], buf[7]]));
    let authorities = usize::from(u16::from_be_bytes([buf[8], buf[9]]));
    let mut cut = lean;
    cut.answers.truncate(answers);
    cut.authorities.truncate(authorities);
    cut.metadata.truncation = true;
    cut.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::net::Ipv4Addr;

    fn query(edns: Option<u16>) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("web.blue.").unwrap(),
            RecordType::A,
        ));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            q.set_edns(e);
        }
        q
    }

    fn answer_with(req: &Message, n: usize) -> Message {
        let mut resp = response_to(req);
        for i in 0..n {
            resp.add_answer(Record::from_rdata(
                Name::from_ascii("web.blue.").unwrap(),
                5,
                RData::A(A(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8))),
            ));
        }
        resp
    }

    #[test]
    fn limits_follow_transport_and_advertised_size() {
        assert_eq!(answer_limit(&query(None), Transport::Udp), 512);
        assert_eq!(answer_limit(&query(Some(4096)), Transport::Udp), 1232);
        assert_eq!(answer_limit(&query(Some(800)), Transport::Udp), 800);
        // Below 512 counts as 512 (RFC 6891 §6.2.5).
        assert_eq!(answer_limit(&query(Some(100)), Transport::Udp), 512);
        assert_eq!(answer_limit(&query(None), Transport::Tcp), 65535);
    }

    /// Header 12 + question 14 (`web.blue.` A IN) + 16 per compressed A
    /// record: 30 records make 506 bytes, 31 would make 522.
    #[test]
    fn truncation_boundary_at_512_bytes() {
        let req = query(None);
        let fits = encode(&answer_with(&req, 30), 512).unwrap();
        assert_eq!(fits.len(), 506);
        let m = Message::from_vec(&fits).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 30);

        let over = encode(&answer_with(&req, 45), 512).unwrap();
        assert!(over.len() <= 512, "{} bytes", over.len());
        let m = Message::from_vec(&over).unwrap();
        assert!(m.metadata.truncation);
        assert_eq!(m.answers.len(), 30, "as many whole records as fit");
        assert_eq!(m.queries.len(), 1);
    }

    #[test]
    fn edns_answers_keep_their_opt_when_truncated() {
        let req = query(Some(512));
        let over = encode(&answer_with(&req, 45), answer_limit(&req, Transport::Udp)).unwrap();
        assert!(over.len() <= 512);
        let m = Message::from_vec(&over).unwrap();
        assert!(m.metadata.truncation);
        assert_eq!(m.answers.len(), 29, "one record's room goes to the OPT");
        let opt = m.edns.expect("OPT kept");
        assert_eq!(opt.max_payload(), EDNS_UDP_LIMIT);
        assert_eq!(opt.version(), 0);
        // 45 records fit in 1232.
        let req = query(Some(4096));
        let all = encode(&answer_with(&req, 45), answer_limit(&req, Transport::Udp)).unwrap();
        let m = Message::from_vec(&all).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 45);
    }

    #[test]
    fn unknown_edns_version_is_badvers_with_opt() {
        let mut req = query(Some(1232));
        assert!(bad_version(&req).is_none());
        req.edns.as_mut().unwrap().set_version(1);
        let resp = bad_version(&req).unwrap();
        let m = Message::from_vec(&encode(&resp, 512).unwrap()).unwrap();
        // BADVERS and BADSIG share code 16; hickory reads it back as BADSIG.
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(m.edns.unwrap().version(), 0);
    }

    #[test]
    fn unreadable_queries_get_formerr_and_junk_gets_nothing() {
        assert!(format_error(&[1, 2, 3]).is_none());
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0xff; 5]);
        let m = Message::from_vec(&format_error(&junk).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A response is never answered.
        junk[2] |= 0x80;
        assert!(format_error(&junk).is_none());
    }
}
