//! The audit trail (`meshctl log`): every replicated write this host
//! admitted, its own and those learned from peers, and every one it
//! refused with the reason (see [`gossip::journal`]).
//!
//! Gossip reports writes from inside merges, under a channel's lock, so
//! [`Journal::record`] only stamps the local time and queues; a thread of
//! its own resolves the author's name from the [`Roster`], keeps the last
//! [`RING`] entries in memory for the API and appends them as JSON lines to
//! `journal.jsonl` in the state directory. That file is rotated to
//! `journal.jsonl.1` at [`FILE_CAP`] bytes (one old file is kept), and the
//! ring is refilled from both at start, so the trail survives a restart.
//! What a full queue cannot take is counted and logged, never waited for.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};

use gossip::journal::{JournalSink, Op, Write};
use gossip::PeerId;
use mesh_api::{LogEntry, LogOp, LogQuery};
use tracing::warn;

use crate::roster::Roster;

/// Entries kept in memory and served by the API.
pub const RING: usize = 10_000;
/// Bytes of `journal.jsonl` before it is rotated.
pub const FILE_CAP: u64 = 4 << 20;
/// Writes waiting for the journal thread; a joining host's full state is a
/// few thousand. The queue grows only as far as it is used (a preallocated
/// one of this size would cost every daemon ~8 MiB).
const QUEUE: usize = 65_536;
/// Refusals remembered (the oldest forgotten first) so that one repeated at
/// every anti-entropy round is journaled once.
const MAX_REFUSALS_SEEN: usize = 4096;
pub const FILE: &str = "journal.jsonl";

struct Queued {
    write: Write,
    time_ms: u64,
}

struct Shared {
    ring: Mutex<VecDeque<LogEntry>>,
    roster: OnceLock<Arc<Roster>>,
    me: (String, String),
    lost: AtomicU64,
    /// Writes sent and not yet taken by the thread (bounds the queue).
    pending: AtomicUsize,
}

/// The journal of one host; installed into gossip as its [`JournalSink`].
pub struct Journal {
    shared: Arc<Shared>,
    queue: Sender<Queued>,
}

impl Journal {
    /// Opens the journal kept in `dir` (refilling the ring from its files)
    /// for host `me` called `name`, and starts its thread.
    pub fn open(dir: &Path, me: PeerId, name: &str) -> Arc<Journal> {
        let path = dir.join(FILE);
        let shared = Arc::new(Shared {
            ring: Mutex::new(load(&path)),
            roster: OnceLock::new(),
            me: (me.to_hex(), name.to_string()),
            lost: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
        });
        let (queue, rx) = mpsc::channel();
        let keeper = Keeper {
            shared: shared.clone(),
            path,
            file: None,
            size: 0,
            refusals: HashSet::new(),
            refusal_order: VecDeque::new(),
            lost_logged: 0,
        };
        if let Err(e) = std::thread::Builder::new()
            .name("mesh-journal".into())
            .spawn(move || keeper.run(rx))
        {
            warn!("cannot start the journal thread, nothing will be journaled: {e}");
        }
        Arc::new(Journal { shared, queue })
    }

    /// Names authors from `roster` from now on (before, only this host).
    pub fn follow(&self, roster: Arc<Roster>) {
        let _ = self.shared.roster.set(roster);
    }

    /// Entries matching `query`, oldest first. An author membership did
    /// not know yet when its write came (the roster follows membership a
    /// moment behind) is named now if it can be.
    pub fn list(&self, query: &LogQuery) -> Vec<LogEntry> {
        let hosts = self.shared.roster.get().map(|r| r.hosts());
        let mut ring = lock(&self.shared.ring);
        if let Some(hosts) = hosts {
            for e in ring.iter_mut().filter(|e| e.host.is_none()) {
                e.host = hosts.peer(&e.host_id).map(|h| h.name.clone());
            }
        }
        ring.iter()
            .filter(|e| query.since_ms.is_none_or(|t| e.time_ms >= t))
            .filter(|e| query.host.as_deref().is_none_or(|h| e.by(h)))
            .cloned()
            .collect()
    }

    /// Writes a full queue could not take, since start.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }
}

impl JournalSink for Journal {
    fn record(&self, write: Write) {
        let time_ms = gossip::state::now_millis();
        let pending = &self.shared.pending;
        if pending.fetch_add(1, Ordering::Relaxed) >= QUEUE
            || self.queue.send(Queued { write, time_ms }).is_err()
        {
            pending.fetch_sub(1, Ordering::Relaxed);
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The last [`RING`] entries of the rotated file and the current one.
fn load(path: &Path) -> VecDeque<LogEntry> {
    let mut ring = VecDeque::new();
    let mut bad = 0usize;
    for file in [rotated(path), path.to_path_buf()] {
        let Ok(f) = File::open(&file) else { continue };
        for line in BufReader::new(f).lines() {
            match line.map(|l| serde_json::from_str::<LogEntry>(&l)) {
                Ok(Ok(entry)) => {
                    if ring.len() == RING {
                        ring.pop_front();
                    }
                    ring.push_back(entry);
                }
                _ => bad += 1,
            }
        }
    }
    if bad > 0 {
        warn!(
            bad,
            file = %path.display(),
            "skipped unreadable journal lines"
        );
    }
    ring
}

/// The journal thread's side: names, the ring and the file.
struct Keeper {
    shared: Arc<Shared>,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    /// Refusals seen, by write (writer, channel, key, stamp): not by reason,
    /// which may change between rounds (a stamp's distance ahead).
    refusals: HashSet<(PeerId, Arc<str>, String, u64)>,
    refusal_order: VecDeque<(PeerId, Arc<str>, String, u64)>,
    lost_logged: u64,
}

impl Keeper {
    fn run(mut self, rx: Receiver<Queued>) {
        while let Ok(first) = rx.recv() {
            self.take(first);
            // Drain what came meanwhile, then flush once.
            loop {
                match rx.try_recv() {
                    Ok(next) => self.take(next),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            self.flush();
            let lost = self.shared.lost.load(Ordering::Relaxed);
            if lost > self.lost_logged {
                warn!(
                    lost,
                    "the journal's queue was full: some writes were not journaled"
                );
                self.lost_logged = lost;
            }
        }
        self.flush();
    }

    fn take(&mut self, q: Queued) {
        self.shared.pending.fetch_sub(1, Ordering::Relaxed);
        let w = q.write;
        if w.rejected.is_some() {
            let seen = (w.writer, w.channel.clone(), w.key.clone(), w.stamp);
            if !self.refusals.insert(seen.clone()) {
                return;
            }
            self.refusal_order.push_back(seen);
            if self.refusal_order.len() > MAX_REFUSALS_SEEN {
                if let Some(oldest) = self.refusal_order.pop_front() {
                    self.refusals.remove(&oldest);
                }
            }
        }
        let host_id = w.writer.to_hex();
        let via_id = w.via.map(|v| v.to_hex());
        let entry = LogEntry {
            via: via_id.as_deref().and_then(|v| self.name_of(v)),
            via_id,
            time_ms: q.time_ms,
            stamp_ms: w.stamp,
            host: self.name_of(&host_id),
            host_id,
            channel: w.channel.to_string(),
            key: w.key,
            op: match w.op {
                Op::Create => LogOp::Create,
                Op::Update => LogOp::Update,
                Op::Delete => LogOp::Delete,
            },
            rejected: w.rejected,
        };
        self.append(&entry);
        let mut ring = lock(&self.shared.ring);
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    fn name_of(&self, id: &str) -> Option<String> {
        let (me, my_name) = &self.shared.me;
        if id == me {
            return Some(my_name.clone());
        }
        let hosts = self.shared.roster.get()?.hosts();
        hosts.peer(id).map(|h| h.name.clone())
    }

    fn append(&mut self, entry: &LogEntry) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        self.open();
        if self.file.is_some() && self.size + line.len() as u64 > FILE_CAP {
            self.flush();
            self.file = None;
            if let Err(e) = std::fs::rename(&self.path, rotated(&self.path)) {
                warn!(file = %self.path.display(), "cannot rotate the journal: {e}");
            }
            self.open();
        }
        if let Some(f) = &mut self.file {
            match f.write_all(&line) {
                Ok(()) => self.size += line.len() as u64,
                Err(e) => warn!(file = %self.path.display(), "cannot write the journal: {e}"),
            }
        }
    }

    /// Opens the file for appending unless it is open, learning its size.
    fn open(&mut self) {
        if self.file.is_some() {
            return;
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(BufWriter::new(f));
            }
            Err(e) => warn!(file = %self.path.display(), "cannot open the journal: {e}"),
        }
    }

    fn flush(&mut self) {
        if let Some(Err(e)) = self.file.as_mut().map(|f| f.flush()) {
            warn!(file = %self.path.display(), "cannot write the journal: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn write(key: &str, op: Op, rejected: Option<&str>) -> Write {
        Write {
            channel: "networks".into(),
            key: key.into(),
            writer: PeerId([3; 32]),
            stamp: 7,
            op,
            rejected: rejected.map(str::to_string),
            via: None,
        }
    }

    fn wait_len(j: &Journal, n: usize) -> Vec<LogEntry> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = j.list(&LogQuery::default());
            if all.len() >= n || Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn entries_are_named_filtered_deduplicated_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("mesh-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let me = PeerId([3; 32]);
        let j = Journal::open(&dir, me, "h1");
        j.record(write("web", Op::Create, None));
        let mut other = write("db", Op::Delete, None);
        other.writer = PeerId([4; 32]);
        j.record(other);
        // The same refusal at two anti-entropy rounds is one entry.
        j.record(write("bad", Op::Create, Some("quota")));
        j.record(write("bad", Op::Create, Some("quota")));
        j.record(write("web", Op::Update, None));
        let all = wait_len(&j, 4);
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[0].host.as_deref(), Some("h1"));
        assert_eq!(all[0].op, LogOp::Create);
        assert_eq!(all[1].host, None, "an author membership does not know");
        assert_eq!(all[2].rejected.as_deref(), Some("quota"));
        let by_other = j.list(&LogQuery {
            host: Some("0404".into()),
            since_ms: None,
        });
        assert_eq!(by_other.len(), 1);
        assert_eq!(by_other[0].key, "db");
        let future = j.list(&LogQuery {
            since_ms: Some(all[3].time_ms + 60_000),
            host: None,
        });
        assert!(future.is_empty());
        drop(j);
        // The thread flushes and ends once the journal is dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut back = Vec::new();
        while Instant::now() < deadline {
            back = load(&dir.join(FILE)).into_iter().collect::<Vec<_>>();
            if back.len() == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(back, all);
        let reopened = Journal::open(&dir, me, "h1");
        assert_eq!(reopened.list(&LogQuery::default()), all);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_file_rotates_at_its_cap_keeping_one_old_file() {
        let dir = std::env::temp_dir().join(format!("mesh-journal-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE);
        // A current file just under the cap: the next entry rotates it.
        let filler = serde_json::to_string(&LogEntry {
            time_ms: 1,
            stamp_ms: 1,
            host_id: "00".into(),
            host: None,
            channel: "c".into(),
            key: "k".repeat(200),
            op: LogOp::Create,
            rejected: None,
            via_id: None,
            via: None,
        })
        .unwrap();
        let lines = (FILE_CAP as usize - 10) / (filler.len() + 1);
        std::fs::write(&path, format!("{filler}\n").repeat(lines)).unwrap();
        std::fs::write(rotated(&path), "older, dropped at rotation\n").unwrap();
        let j = Journal::open(&dir, PeerId([3; 32]), "h1");
        assert_eq!(j.list(&LogQuery::default()).len(), lines.min(RING));
        j.record(write("web", Op::Create, None));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains("\"key\":\"web\"")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(j);
        let current = std::fs::read_to_string(&path).unwrap();
        assert_eq!(current.lines().count(), 1, "a fresh file after rotation");
        assert!(current.contains("\"key\":\"web\""));
        let old = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(old > FILE_CAP - 1000 && old <= FILE_CAP, "{old}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
