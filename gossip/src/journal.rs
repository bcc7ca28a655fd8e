//! The audit hook of replicated state: every write a channel admits, and
//! every one it refuses with the reason, is reported to the node's
//! [`JournalSink`] (installed with [`crate::Node::set_journal`]).
//!
//! Maps learn the channel and the sink from a scope their channel opens
//! around each merge ([`scoped`]) rather than holding them: a map value is
//! cloned, decoded and merged in many places that know nothing of nodes,
//! and only merges into a channel's own state are news. Outside a scope
//! (detached channels, scratch copies, unit tests) reporting costs one
//! thread-local read.
//!
//! Only changes are reported: a re-delivered write that is already held
//! never reaches the point where a write is admitted.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::LwwEntry;
use crate::PeerId;

/// What a write does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A value where there was none (or a tombstone).
    Create,
    /// A value replacing a value.
    Update,
    /// A tombstone.
    Delete,
}

impl Op {
    /// The op of a write (`value_set`) over the slot's previous state
    /// (`Some(live)` if the key had a slot).
    pub fn of(before: Option<bool>, value_set: bool) -> Op {
        match (before, value_set) {
            (_, false) => Op::Delete,
            (Some(true), true) => Op::Update,
            _ => Op::Create,
        }
    }
}

/// One admitted or refused write, as the merge saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub channel: Arc<str>,
    /// The key, rendered: a string key as is, others as compact JSON.
    pub key: String,
    /// Who signed it (for a forged write: who it claims to be by).
    pub writer: PeerId,
    /// The write's own stamp (writer's clock, ms since the epoch).
    pub stamp: u64,
    pub op: Op,
    /// Why it was refused; `None` for an admitted write.
    pub rejected: Option<String>,
    /// The peer that delivered a refused write (who sent a forged one),
    /// when it came over a link; `None` for admitted and local writes.
    pub via: Option<PeerId>,
}

/// Where a node's channels report writes. Called under the channel's lock,
/// in the middle of merges (a joining host's full state is thousands of
/// calls): it must not block or do I/O there.
pub trait JournalSink: Send + Sync {
    fn record(&self, write: Write);
}

struct Scope {
    channel: Arc<str>,
    sink: Arc<dyn JournalSink>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
    static QUIET: Cell<u32> = const { Cell::new(0) };
    static VIA: Cell<Option<PeerId>> = const { Cell::new(None) };
}

/// Runs `f` (the merge of what peer `from` sent) with refused writes
/// marked as delivered by `from`.
pub(crate) fn delivered_by<R>(from: PeerId, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<PeerId>);
    impl Drop for Restore {
        fn drop(&mut self) {
            VIA.with(|v| v.set(self.0));
        }
    }
    let _restore = Restore(VIA.with(|v| v.replace(Some(from))));
    f()
}

/// Runs `f` (a merge into `channel`'s state) with its writes reported to
/// `sink`; without a sink, `f` runs as it is.
pub(crate) fn scoped<R>(
    sink: Option<Arc<dyn JournalSink>>,
    channel: &Arc<str>,
    f: impl FnOnce() -> R,
) -> R {
    let Some(sink) = sink else { return f() };
    let previous = SCOPE.with(|s| {
        s.replace(Some(Scope {
            channel: channel.clone(),
            sink,
        }))
    });
    // Restored even if `f` panics (a channel survives a panicking merge).
    struct Restore(Option<Option<Scope>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take().flatten();
            SCOPE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(Some(previous));
    f()
}

/// Runs `f` with nothing reported: for state that is not news, like a
/// host's own snapshot merged back in at start.
pub fn unrecorded<R>(f: impl FnOnce() -> R) -> R {
    struct Loud;
    impl Drop for Loud {
        fn drop(&mut self) {
            QUIET.with(|q| q.set(q.get().saturating_sub(1)));
        }
    }
    QUIET.with(|q| q.set(q.get() + 1));
    let _loud = Loud;
    f()
}

fn report<K: Serialize>(key: &K, writer: PeerId, stamp: u64, op: Op, rejected: Option<&str>) {
    if QUIET.with(Cell::get) > 0 {
        return;
    }
    SCOPE.with(|s| {
        if let Some(scope) = s.borrow().as_ref() {
            scope.sink.record(Write {
                channel: scope.channel.clone(),
                key: render_key(key),
                writer,
                stamp,
                op,
                rejected: rejected.map(|r| clip(r.to_string())),
                via: rejected.and_then(|_| VIA.with(Cell::get)),
            });
        }
    });
}

/// `entry` was admitted over `before` (the slot it replaced, if any).
pub(crate) fn admitted<K: Serialize, V>(
    key: &K,
    before: Option<&LwwEntry<V>>,
    entry: &LwwEntry<V>,
) {
    let op = Op::of(before.map(|b| !b.is_tombstone()), !entry.is_tombstone());
    report(key, entry.stamp.writer, entry.stamp.timestamp, op, None);
}

/// `entry` was refused for `reason`; `before` is the slot as it stays.
pub(crate) fn rejected<K: Serialize, V>(
    key: &K,
    before: Option<&LwwEntry<V>>,
    entry: &LwwEntry<V>,
    reason: &str,
) {
    let op = Op::of(before.map(|b| !b.is_tombstone()), !entry.is_tombstone());
    report(
        key,
        entry.stamp.writer,
        entry.stamp.timestamp,
        op,
        Some(reason),
    );
}

/// Longest key or reason an entry keeps: a hostile writer's megabyte key
/// must not fill the journal's memory and file.
pub const MAX_TEXT: usize = 256;

/// `text` cut to [`MAX_TEXT`] bytes on a character boundary, marked `…`.
pub fn clip(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn render_key<K: Serialize>(key: &K) -> String {
    clip(match serde_json::to_value(key) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<unprintable key: {e}>"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Admission, LwwMap, Mergeable};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Write>>);
    impl JournalSink for Collect {
        fn record(&self, write: Write) {
            self.0.lock().unwrap().push(write);
        }
    }

    fn ops(sink: &Collect) -> Vec<(String, Op, Option<String>)> {
        sink.0
            .lock()
            .unwrap()
            .drain(..)
            .map(|w| (w.key, w.op, w.rejected))
            .collect()
    }

    #[test]
    fn admitted_changes_are_reported_once_with_their_op() {
        let writer = crate::Identity::from_seed([51; 32]).unwrap().peer_id();
        let sink = Arc::new(Collect::default());
        let channel: Arc<str> = "nets".into();
        let mut ours: LwwMap<String, u32> = LwwMap::new();
        let mut theirs: LwwMap<String, u32> = LwwMap::new();
        let delta = theirs.set(writer, "a".into(), 1);
        let s = Some(sink.clone() as Arc<dyn JournalSink>);
        scoped(s.clone(), &channel, || ours.merge(&delta));
        // A re-delivery is no news.
        scoped(s.clone(), &channel, || ours.merge(&delta));
        let update = theirs.set(writer, "a".into(), 2);
        scoped(s.clone(), &channel, || ours.merge(&update));
        let removal = theirs.remove(writer, "a".into());
        scoped(s.clone(), &channel, || ours.merge(&removal));
        let again = theirs.set(writer, "a".into(), 3);
        scoped(s.clone(), &channel, || ours.merge(&again));
        assert_eq!(
            ops(&sink),
            vec![
                ("a".into(), Op::Create, None),
                ("a".into(), Op::Update, None),
                ("a".into(), Op::Delete, None),
                ("a".into(), Op::Create, None),
            ]
        );
        // Outside a scope, or quieted, nothing is reported.
        let later = theirs.set(writer, "b".into(), 1);
        ours.clone().merge(&later);
        scoped(s, &channel, || unrecorded(|| ours.merge(&later)));
        assert!(ops(&sink).is_empty());
    }

    #[test]
    fn refused_writes_are_reported_with_their_reason() {
        let writer = crate::Identity::from_seed([52; 32]).unwrap().peer_id();
        let no_odd: Admission<String, u32> = Arc::new(|_, e, _, _| match e.value {
            Some(v) if v % 2 == 1 => Err("odd values are refused".into()),
            _ => Ok(()),
        });
        let mut guarded = LwwMap::guarded("test", no_odd);
        let mut remote: LwwMap<String, u32> = LwwMap::new();
        remote.set(writer, "odd".into(), 3);
        remote.set(writer, "even".into(), 4);
        // Claimed to be by a writer whose key nobody holds: unsigned.
        remote.set(PeerId([7; 32]), "forged".into(), 6);
        let sink = Arc::new(Collect::default());
        let channel: Arc<str> = "test".into();
        scoped(Some(sink.clone() as _), &channel, || guarded.merge(&remote));
        let mut got = ops(&sink);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("even".into(), Op::Create, None),
                (
                    "forged".into(),
                    Op::Create,
                    Some("signature is not the writer's".into())
                ),
                (
                    "odd".into(),
                    Op::Create,
                    Some("odd values are refused".into())
                ),
            ]
        );
    }

    #[test]
    fn keys_render_readably() {
        assert_eq!(render_key(&"web"), "web");
        assert_eq!(render_key(&("net", 3)), r#"["net",3]"#);
    }
}
