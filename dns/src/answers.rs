//! Answers to questions asked again: a request's bytes after its ID
//! (flags, counts, question, OPT) and the asker's address decide the
//! answer, so a repeat gets the stored bytes under its own ID, without
//! parsing or encoding. One per UDP socket, owned by its server loop.
//!
//! Kept no longer than the record snapshots the answers were built from
//! ([`crate::snapshot::MAX_AGE`]): all entries go at once when that age is
//! reached, so an answer is never older than an uncached one could be.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Entries per socket and age window: the names a network's containers
/// ask for again and again fit; a flood of random names cannot grow it.
pub const MAX_ENTRIES: usize = 1024;
/// Requests longer than this are answered but not kept.
const MAX_REQUEST: usize = 512;
/// SERVFAIL (the upstream slots were full) may be gone on the next try.
const SERVFAIL: u8 = 2;

pub struct Answers {
    max_age: Duration,
    since: Instant,
    /// The resolver's upstreams generation the answers were kept under.
    upstreams: u64,
    map: HashMap<Box<[u8]>, Box<[u8]>>,
    key: Vec<u8>,
}

impl Answers {
    pub fn new(max_age: Duration) -> Answers {
        Answers {
            max_age,
            since: Instant::now(),
            upstreams: 0,
            map: HashMap::new(),
            key: Vec::with_capacity(16 + MAX_REQUEST),
        }
    }

    /// Fills the key scratch for (`client`, `request`); false when the
    /// request is not one to keep.
    fn key(&mut self, client: IpAddr, request: &[u8]) -> bool {
        if request.len() < 12 || request.len() > MAX_REQUEST {
            return false;
        }
        self.key.clear();
        match client {
            IpAddr::V4(a) => self.key.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => self.key.extend_from_slice(&a.octets()),
        }
        self.key.extend_from_slice(&request[2..]);
        true
    }

    /// Forgets every answer once the upstreams were replaced (a reload):
    /// a repeat must not get what the old ones said.
    pub fn follow_upstreams(&mut self, generation: u64) {
        if generation != self.upstreams {
            self.map.clear();
            self.upstreams = generation;
        }
    }

    /// The kept answer to `request` from `client`, with the request's ID,
    /// in `out`.
    pub fn get(&mut self, now: Instant, client: IpAddr, request: &[u8], out: &mut Vec<u8>) -> bool {
        if now.duration_since(self.since) >= self.max_age {
            self.map.clear();
            self.since = now;
            return false;
        }
        if !self.key(client, request) {
            return false;
        }
        let Some(answer) = self.map.get(self.key.as_slice()) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&request[..2]);
        out.extend_from_slice(&answer[2..]);
        true
    }

    /// Keeps `answer` to `request` from `client`.
    pub fn put(&mut self, client: IpAddr, request: &[u8], answer: &[u8]) {
        let transient = answer.get(3).is_some_and(|b| b & 0x0f == SERVFAIL);
        if transient || answer.len() < 12 || self.map.len() >= MAX_ENTRIES {
            return;
        }
        if self.key(client, request) {
            self.map.insert(self.key.as_slice().into(), answer.into());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 6));

    fn request(id: u16, name: u8) -> Vec<u8> {
        let mut r = id.to_be_bytes().to_vec();
        r.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, name, 0, 0, 1, 0, 1]);
        r
    }

    fn answer(id: u16, rcode: u8) -> Vec<u8> {
        let mut a = id.to_be_bytes().to_vec();
        a.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, 1, 0, 0, 0, 0, 9, 9]);
        a
    }

    #[test]
    fn a_repeat_gets_the_answer_under_its_own_id_from_the_same_asker_only() {
        let t0 = Instant::now();
        let mut a = Answers::new(Duration::from_millis(100));
        let mut out = Vec::new();
        assert!(!a.get(t0, V4, &request(1, b'a'), &mut out));
        a.put(V4, &request(1, b'a'), &answer(1, 0));
        assert!(a.get(t0, V4, &request(0xbeef, b'a'), &mut out));
        assert_eq!(out, answer(0xbeef, 0));
        // Another question, or the same one from another container (whose
        // answer may differ: version-aware names), is not served from it.
        assert!(!a.get(t0, V4, &request(2, b'b'), &mut out));
        assert!(!a.get(t0, OTHER, &request(2, b'a'), &mut out));
    }

    #[test]
    fn everything_goes_with_age_and_transient_failures_are_not_kept() {
        let mut a = Answers::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let mut out = Vec::new();
        a.put(V4, &request(1, b'a'), &answer(1, 0));
        a.put(V4, &request(1, b'b'), &answer(1, SERVFAIL));
        assert_eq!(a.len(), 1);
        assert!(!a.get(
            t0 + Duration::from_millis(100),
            V4,
            &request(1, b'a'),
            &mut out
        ));
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn a_reload_of_the_upstreams_forgets_every_answer() {
        let t0 = Instant::now();
        let mut a = Answers::new(Duration::from_secs(60));
        let mut out = Vec::new();
        a.put(V4, &request(1, b'a'), &answer(1, 0));
        a.follow_upstreams(0);
        assert!(a.get(t0, V4, &request(2, b'a'), &mut out), "same upstreams");
        a.follow_upstreams(1);
        assert!(!a.get(t0, V4, &request(3, b'a'), &mut out), "replaced");
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn bounded_and_short_input_is_not_a_key() {
        let mut a = Answers::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES + 10) {
            let mut r = request(1, b'a');
            r.extend_from_slice(&(i as u32).to_be_bytes());
            a.put(V4, &r, &answer(1, 3));
        }
        assert_eq!(a.len(), MAX_ENTRIES);
        let mut out = Vec::new();
        assert!(!a.get(Instant::now(), V4, &[1, 2, 3], &mut out));
        a.put(V4, &[1, 2, 3], &answer(1, 0));
        assert_eq!(a.len(), MAX_ENTRIES);
    }
}
