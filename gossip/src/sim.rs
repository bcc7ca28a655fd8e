//! Test harness in the manner of quinn-proto's `Pair`: two hosts, each with
//! a [`Link`], an in-memory [`Replica`] and a model of the data plane's key
//! slots, stepped against each other on virtual time. Every frame goes
//! through the wire encoding, arrives `latency` later, and may be lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cipher::{Cipher, CipherOffer};
use crate::link::{Action, Link, LinkParams, LinkTimers, Replica};
use crate::membership::{MemberRecord, MembershipTable};
use crate::state::{LwwMap, Mergeable};
use crate::wire::{self, Digest, Message};
use crate::{PeerId, SessionKeys};

/// The data plane's REJECT_AFTER_TIME (`dataplane::keypair`): a keypair
/// older than this neither seals nor opens.
pub const REJECT_AFTER: Duration = Duration::from_secs(180);

pub const TIMERS: LinkTimers = LinkTimers {
    heartbeat: Duration::from_secs(1),
    dead_after: Duration::from_secs(5),
    rekey: Duration::from_secs(110),
};

pub type Dns = LwwMap<String, String>;

/// A signed record (`id` must be one of [`peer`]'s).
pub fn record(id: PeerId) -> MemberRecord {
    let mut record = MemberRecord {
        id,
        name: format!("host-{}", id.0[0]),
        addrs: vec![format!("127.0.0.1:{}", 7000 + id.0[0] as u16)],
        incarnation: 1,
        version: 0,
        meta: Default::default(),
        signature: Default::default(),
    };
    // Also makes sure the test identities are registered.
    peer(1);
    record.sign();
    record
}

/// Membership table plus channels of one `Dns` type; nothing is pending.
pub struct MemoryReplica {
    pub table: MembershipTable,
    pub channels: BTreeMap<String, Dns>,
}

impl MemoryReplica {
    pub fn new(id: PeerId) -> Self {
        MemoryReplica {
            table: MembershipTable::new(record(id)),
            channels: BTreeMap::new(),
        }
    }
}

impl Replica for MemoryReplica {
    fn digest(&self) -> Digest {
        Digest {
            members: self.table.digest(),
            channels: self
                .channels
                .iter()
                .map(|(name, state)| (name.clone(), wire::state_hash(&state.encode())))
                .collect(),
        }
    }

    fn member_records(&self) -> Vec<MemberRecord> {
        self.table.records().cloned().collect()
    }

    fn merge_members(&mut self, _from: PeerId, records: Vec<MemberRecord>) {
        self.table.merge(records);
    }

    fn channel_state(&self, name: &str) -> Option<Vec<u8>> {
        self.channels.get(name).map(Mergeable::encode)
    }

    fn merge_channel(&mut self, _from: PeerId, name: &str, data: Vec<u8>) -> bool {
        let Some(state) = self.channels.get_mut(name) else {
            return false;
        };
        state.merge(&Dns::decode(&data).expect("test channels hold Dns"));
        true
    }

    fn offer_secret(&mut self, _from: PeerId, _epoch: u64, _token: &str) {}
}

struct Keypair {
    keys: SessionKeys,
    created: Instant,
}

impl Keypair {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < REJECT_AFTER
    }
}

/// The data plane's current / previous / next keypairs (`dataplane::peer::KeySlots`).
#[derive(Default)]
pub struct KeyTable {
    current: Option<Keypair>,
    previous: Option<Keypair>,
    next: Option<Keypair>,
}

/// What a sealed packet carries that matters to the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub generation: u64,
    pub receiver_index: u32,
    pub key: [u8; 32],
    pub cipher: Cipher,
}

impl KeyTable {
    fn install(&mut self, keys: SessionKeys, send_now: bool, now: Instant) {
        let keypair = Keypair { keys, created: now };
        if send_now {
            if self
                .next
                .as_ref()
                .is_some_and(|n| n.keys.generation <= keypair.keys.generation)
            {
                self.next = None;
            }
            self.previous = self.current.take();
            self.current = Some(keypair);
        } else {
            self.next = Some(keypair);
        }
    }

    fn promote_next(&mut self) {
        self.previous = self.current.take();
        self.current = self.next.take();
    }

    fn confirm(&mut self, generation: u64) {
        if self
            .next
            .as_ref()
            .is_some_and(|n| n.keys.generation == generation)
        {
            self.promote_next();
        }
    }

    pub fn current_generation(&self) -> Option<u64> {
        self.current.as_ref().map(|k| k.keys.generation)
    }

    pub fn current_cipher(&self) -> Option<Cipher> {
        self.current.as_ref().map(|k| k.keys.cipher)
    }

    pub fn next_generation(&self) -> Option<u64> {
        self.next.as_ref().map(|k| k.keys.generation)
    }

    /// What a packet sent now is sealed with; `None` if nothing usable.
    pub fn seal(&self, now: Instant) -> Option<Sealed> {
        let current = self.current.as_ref().filter(|k| k.live(now))?;
        Some(Sealed {
            generation: current.keys.generation,
            receiver_index: current.keys.remote_index,
            key: current.keys.send_key,
            cipher: current.keys.cipher,
        })
    }

    /// Whether a packet sealed as `sealed` opens here now; the first packet
    /// under `next` promotes it, as in the data plane.
    pub fn open(&mut self, sealed: Sealed, now: Instant) -> bool {
        let matches = |slot: &Option<Keypair>| {
            slot.as_ref().is_some_and(|k| {
                k.live(now)
                    && k.keys.local_index == sealed.receiver_index
                    && k.keys.recv_key == sealed.key
                    && k.keys.cipher == sealed.cipher
            })
        };
        if matches(&self.next) {
            self.promote_next();
            return true;
        }
        matches(&self.current) || matches(&self.previous)
    }
}

pub struct Host {
    pub link: Link,
    pub replica: MemoryReplica,
    pub keys: KeyTable,
    /// Set when the link closed: code and reason.
    pub closed: Option<(u32, &'static str)>,
    /// Every frame this host sent, lost ones included.
    pub sent: Vec<Message>,
}

/// Decides whether a frame from host `from` is lost.
type Loss = Box<dyn FnMut(usize, &Message) -> bool>;

pub struct Pair {
    pub now: Instant,
    pub hosts: [Host; 2],
    pub latency: Duration,
    in_flight: Vec<(Instant, usize, Message)>,
    lose: Loss,
    pub lost: Vec<(usize, Message)>,
}

/// The `n`-th smallest (1-based, up to 16) of sixteen fixed test
/// identities: real keys, so their records and writes are signed, ordered so
/// that tie-breaks by id are predictable.
pub fn peer(n: u8) -> PeerId {
    static IDS: std::sync::OnceLock<Vec<PeerId>> = std::sync::OnceLock::new();
    let ids = IDS.get_or_init(|| {
        let mut ids: Vec<PeerId> = (1..=16u8)
            .map(|seed| crate::Identity::from_seed([seed; 32]).unwrap().peer_id())
            .collect();
        ids.sort();
        ids
    });
    ids[usize::from(n) - 1]
}

pub static A: std::sync::LazyLock<PeerId> = std::sync::LazyLock::new(|| peer(1));
pub static B: std::sync::LazyLock<PeerId> = std::sync::LazyLock::new(|| peer(2));

impl Pair {
    /// Hosts `A` (index 0) and `B` (index 1) on one connection dialed by
    /// host `dialer`, with `last_key_generation` from the handshake.
    pub fn new(dialer: usize, last_key_generation: u64) -> Pair {
        Pair::with_ciphers(dialer, last_key_generation, [(None, None), (None, None)])
    }

    /// Like [`Pair::new`], with what each host saw advertised in the
    /// handshake: `views[host] = (its own offer, the other's offer)`.
    pub fn with_ciphers(
        dialer: usize,
        last_key_generation: u64,
        views: [(Option<CipherOffer>, Option<CipherOffer>); 2],
    ) -> Pair {
        let now = Instant::now();
        let host = |index: usize| {
            let (local, remote) = if index == 0 { (*A, *B) } else { (*B, *A) };
            let params = LinkParams {
                local,
                remote,
                initiator: index == dialer,
                connection_secret: [42; 32],
                last_key_generation,
                local_ciphers: views[index].0,
                remote_ciphers: views[index].1,
                timers: TIMERS,
            };
            Host {
                link: Link::new(params, now),
                replica: MemoryReplica::new(local),
                keys: KeyTable::default(),
                closed: None,
                sent: Vec::new(),
            }
        };
        Pair {
            now,
            hosts: [host(0), host(1)],
            latency: Duration::from_millis(20),
            in_flight: Vec::new(),
            lose: Box::new(|_, _| false),
            lost: Vec::new(),
        }
    }

    /// Frames for which `lose(from, frame)` is true never arrive.
    pub fn set_loss(&mut self, lose: impl FnMut(usize, &Message) -> bool + 'static) {
        self.lose = Box::new(lose);
    }

    pub fn open(&mut self) {
        for index in 0..2 {
            let host = &mut self.hosts[index];
            let actions = host.link.open(&host.replica, self.now);
            self.execute(index, actions);
        }
    }

    fn execute(&mut self, from: usize, actions: Vec<Action>) {
        for action in actions {
            let host = &mut self.hosts[from];
            match action {
                Action::Send(message) => {
                    let frame = wire::encode_frame(&message).expect("encodable");
                    let message: Message =
                        wire::decode_body(&frame[wire::FRAME_HEADER_LEN..]).expect("decodable");
                    host.sent.push(message.clone());
                    if (self.lose)(from, &message) {
                        self.lost.push((from, message));
                    } else {
                        self.in_flight
                            .push((self.now + self.latency, 1 - from, message));
                    }
                }
                Action::InstallKeys { keys, send_now } => {
                    host.keys.install(keys, send_now, self.now)
                }
                Action::ConfirmKeys { generation } => host.keys.confirm(generation),
                Action::Close { code, reason } => host.closed = Some((code, reason)),
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let deliveries = self.in_flight.iter().map(|(at, _, _)| *at);
        let timers = self
            .hosts
            .iter()
            .filter(|h| h.closed.is_none())
            .map(|h| h.link.poll_timeout());
        deliveries.chain(timers).min()
    }

    /// Runs the next event due by `limit`; false (and `now = limit`) if none.
    pub fn step(&mut self, limit: Instant) -> bool {
        let Some(at) = self.next_event().filter(|at| *at <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|m| m.0 <= now);
        self.in_flight = later;
        for (_, to, message) in due {
            let host = &mut self.hosts[to];
            let actions = host.link.handle(message, now, &mut host.replica);
            self.execute(to, actions);
        }
        for index in 0..2 {
            let host = &mut self.hosts[index];
            if host.closed.is_none() && host.link.poll_timeout() <= now {
                let actions = host.link.tick(now);
                self.execute(index, actions);
            }
        }
        true
    }

    /// Steps until `duration` from now has passed, calling `check` after
    /// every event.
    pub fn run_for(&mut self, duration: Duration, mut check: impl FnMut(&mut Pair)) {
        let deadline = self.now + duration;
        while self.step(deadline) {
            check(self);
        }
    }

    /// Whether a packet sealed by `from` now opens at the other host.
    pub fn deliverable(&mut self, from: usize) -> bool {
        let now = self.now;
        let Some(sealed) = self.hosts[from].keys.seal(now) else {
            return false;
        };
        self.hosts[1 - from].keys.open(sealed, now)
    }
}
