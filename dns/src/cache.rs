//! The cache of upstream answers. Positive answers live as long as their
//! shortest TTL; negative ones (NXDOMAIN, NODATA) as long as the SOA in
//! their authority section says (RFC 2308 §5), and are not kept without
//! one. TTLs count down in what the cache hands out.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MAX_ENTRIES: usize = 4096;
/// Upper bounds, so a wild TTL upstream does not pin an entry for days.
const MAX_POSITIVE_TTL: u32 = 86_400;
const MAX_NEGATIVE_TTL: u32 = 300;

/// (lower-case name, type, class)
pub type Key = (String, u16, u16);

struct Entry {
    msg: Message,
    stored: Instant,
    expires: Instant,
}

#[derive(Default)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
}

/// How long an upstream answer may be kept, if at all.
pub fn cache_ttl(msg: &Message) -> Option<u32> {
    if msg.metadata.truncation {
        return None;
    }
    let negative = match msg.metadata.response_code {
        ResponseCode::NXDomain => true,
        ResponseCode::NoError => msg.answers.is_empty(),
        _ => return None,
    };
    let ttl = if negative {
        msg.authorities
            .iter()
            .find_map(|r| match (&r.data, r.record_type()) {
                (RData::SOA(soa), RecordType::SOA) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?
            .min(MAX_NEGATIVE_TTL)
    } else {
        msg.answers
            .iter()
            .map(|r| r.ttl)
            .min()?
            .min(MAX_POSITIVE_TTL)
    };
    (ttl > 0).then_some(ttl)
}

impl Cache {
    /// The cached answer, its TTLs lowered by the time it has been kept.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Message> {
        let e = self.entries.get(key)?;
        if e.expires <= now {
            self.entries.remove(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(e.stored).as_secs()).unwrap_or(u32::MAX);
        let mut m = e.msg.clone();
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    pub fn put(&mut self, key: Key, msg: &Message, now: Instant) {
        let Some(ttl) = cache_ttl(msg) else { return };
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= MAX_ENTRIES {
                // Full of live entries: drop the one closest to expiry.
                if let Some(k) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
                {
                    self.entries.remove(&k);
                }
            }
        }
        let mut msg = msg.clone();
        // OPT is per hop (RFC 6891 §6.1.1): never cached.
        msg.edns = None;
        msg.additionals.clear();
        // What is handed out never outlives the entry (RFC 2308 §5).
        for r in msg.answers.iter_mut().chain(msg.authorities.iter_mut()) {
            r.ttl = r.ttl.min(ttl);
        }
        self.entries.insert(
            key,
            Entry {
                msg,
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, Record};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn key() -> Key {
        ("a.example.".into(), 1, 1)
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            n("example."),
            ttl,
            RData::SOA(SOA::new(
                n("ns.example."),
                n("h.example."),
                1,
                1,
                1,
                1,
                minimum,
            )),
        )
    }

    #[test]
    fn positive_answers_expire_with_their_ttl_and_count_down() {
        let mut c = Cache::default();
        let mut m = Message::response(1, OpCode::Query);
        m.add_answer(Record::from_rdata(
            n("a.example."),
            10,
            RData::A(A("192.0.2.1".parse().unwrap())),
        ));
        let now = Instant::now();
        c.put(key(), &m, now);
        let later = c.get(&key(), now + Duration::from_secs(4)).unwrap();
        assert_eq!(later.answers[0].ttl, 6);
        assert!(c.get(&key(), now + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn negative_answers_use_the_soa_and_need_one() {
        let mut c = Cache::default();
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        let now = Instant::now();
        c.put(key(), &m, now);
        assert_eq!(c.len(), 0, "no SOA, not cached");
        m.add_authority(soa(3600, 20));
        assert_eq!(cache_ttl(&m), Some(20), "min(SOA TTL, MINIMUM)");
        c.put(key(), &m, now);
        let hit = c.get(&key(), now + Duration::from_secs(5)).unwrap();
        assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(hit.authorities[0].ttl, 15);
        assert!(c.get(&key(), now + Duration::from_secs(20)).is_none());
        // Failures and truncated answers are never kept.
        m.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&m), None);
        m.metadata.response_code = ResponseCode::NoError;
        m.metadata.truncation = true;
        assert_eq!(cache_ttl(&m), None);
    }
}
