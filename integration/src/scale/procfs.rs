//! What one daemon costs, read from /proc and from nftables counters in its
//! namespace — nothing is asked of the daemon itself, so measuring does not
//! wake it.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One reading of a process.
#[derive(Clone, Debug, Default)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
    /// Every thread, by id.
    pub tasks: BTreeMap<u32, TaskSample>,
}

/// One reading of a thread.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskSample {
    /// Its name (`comm`) without a serial number, to tell where time goes.
    pub kind: String,
    /// User + system time, in clock ticks.
    pub ticks: u64,
    /// Voluntary context switches: how often it went to sleep, i.e. was
    /// woken.
    pub wakeups: u64,
}

/// CPU ticks and wake-ups over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spent {
    pub ticks: u64,
    pub wakeups: u64,
}

impl ProcSample {
    /// What the threads did since `earlier`, by kind. Counted per thread,
    /// so that one that ended meanwhile (a blocking-pool thread) takes
    /// only its own time out, and one that started counts whole.
    pub fn since(&self, earlier: &ProcSample) -> BTreeMap<String, Spent> {
        let mut out: BTreeMap<String, Spent> = BTreeMap::new();
        for (tid, t) in &self.tasks {
            let before = earlier.tasks.get(tid).cloned().unwrap_or_default();
            let e = out.entry(t.kind.clone()).or_default();
            e.ticks += t.ticks.saturating_sub(before.ticks);
            e.wakeups += t.wakeups.saturating_sub(before.wakeups);
        }
        out
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime from a `stat` line; the command name may hold spaces and
/// parentheses, so fields are counted after its closing `)`.
fn stat_ticks(stat: &str) -> Result<u64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat line without a command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3 of stat(5), so utime (14) and stime (15)
    // are at indices 11 and 12 here.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short stat line")?
            .parse()
            .context("stat field is not a number")
    };
    Ok(field(11)? + field(12)?)
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn sample(pid: u32) -> Result<ProcSample> {
    let dir = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let mut out = ProcSample {
        rss_kib: status_field(&status, "VmRSS:").unwrap_or(0),
        threads: status_field(&status, "Threads:").unwrap_or(0) as usize,
        fds: std::fs::read_dir(dir.join("fd"))?.count(),
        ..ProcSample::default()
    };
    for task in std::fs::read_dir(dir.join("task"))? {
        let task = task?.path();
        let Some(tid) = task
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the read.
        let (Ok(stat), Ok(comm), Ok(task_status)) = (
            std::fs::read_to_string(task.join("stat")),
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue;
        };
        out.tasks.insert(
            tid,
            TaskSample {
                kind: thread_kind(comm.trim()),
                ticks: stat_ticks(&stat)?,
                wakeups: status_field(&task_status, "voluntary_ctxt_switches:").unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// Thread names without their serial number (`mesh-dp-tap3` → `mesh-dp-tap`).
fn thread_kind(comm: &str) -> String {
    comm.trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

/// First payload byte of a data-plane path probe (`MSG_TYPE_PROBE`).
const MSG_TYPE_PROBE: u8 = 2;
/// First payload byte of a data-plane relay envelope, origin → relay
/// (`MSG_TYPE_RELAY` in dataplane/src/wire.rs).
const MSG_TYPE_RELAY: u8 = 3;
/// The same, relay → destination (`MSG_TYPE_RELAYED`).
const MSG_TYPE_RELAYED: u8 = 4;

/// nftables rules counting what a host sends, inside the host's namespace:
/// `control` is the QUIC port; `data` is every other UDP datagram, since
/// data-plane workers also send from ephemeral ports; `probe` and `relay`
/// are the subsets of those that are path probes sent directly and relay
/// envelopes (type byte = first UDP payload byte, `@th,64,8`: 64 bits past
/// the transport header's start). The rest is containers' frames.
pub fn counter_rules(control_port: u16) -> String {
    format!(
        "table inet meshlab_scale {{\n counter control {{ }}\n counter data {{ }}\n \
         counter probe {{ }}\n counter relay {{ }}\n \
         chain output {{ type filter hook output priority 0; policy accept;\n  \
         udp sport {control_port} counter name \"control\"\n  \
         meta l4proto udp udp sport != {control_port} counter name \"data\"\n  \
         meta l4proto udp udp sport != {control_port} \
         @th,64,8 {MSG_TYPE_PROBE} counter name \"probe\"\n  \
         meta l4proto udp udp sport != {control_port} \
         @th,64,8 {{ {MSG_TYPE_RELAY}, {MSG_TYPE_RELAYED} }} counter name \"relay\"\n \
         }}\n}}\n"
    )
}

/// One reading of an nftables counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// What was counted between `earlier` and `self` (a reset reads as 0).
    pub fn since(self, earlier: Counter) -> Counter {
        Counter {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// Packets and bytes from `nft list counter inet meshlab_scale NAME` output.
pub fn parse_counter(text: &str) -> Result<Counter> {
    let number = |key: &str| -> Result<u64> {
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == key {
                return words
                    .next()
                    .with_context(|| format!("counter without a {key} count"))?
                    .parse()
                    .with_context(|| format!("{key} count is not a number"));
            }
        }
        bail!("no {key} count in nft output: {text}")
    };
    Ok(Counter {
        packets: number("packets")?,
        bytes: number("bytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_odd_command_names() {
        let line = "42 (tokio (w) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0 1 1 1";
        assert_eq!(stat_ticks(line).unwrap(), 281);
        assert!(stat_ticks("42 (x) S 1").is_err());
        assert!(stat_ticks("no parenthesis").is_err());
    }

    #[test]
    fn own_process_is_readable() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.fds > 0 && s.threads >= 1);
        assert!(!s.tasks.is_empty());
    }

    #[test]
    fn a_thread_that_ended_takes_only_its_own_time_out() {
        let t = |kind: &str, ticks, wakeups| TaskSample {
            kind: kind.into(),
            ticks,
            wakeups,
        };
        let before = ProcSample {
            tasks: [(1, t("w", 10, 100)), (2, t("blocking", 50, 500))].into(),
            ..ProcSample::default()
        };
        let after = ProcSample {
            tasks: [(1, t("w", 15, 130)), (3, t("blocking", 2, 7))].into(),
            ..ProcSample::default()
        };
        let spent = after.since(&before);
        assert_eq!(
            spent["w"],
            Spent {
                ticks: 5,
                wakeups: 30
            }
        );
        assert_eq!(
            spent["blocking"],
            Spent {
                ticks: 2,
                wakeups: 7
            }
        );
    }

    #[test]
    fn counters_are_parsed() {
        let text =
            "table inet meshlab_scale {\n\tcounter control {\n\t\tpackets 12 bytes 3456\n\t}\n}\n";
        let c = parse_counter(text).unwrap();
        assert_eq!(
            c,
            Counter {
                packets: 12,
                bytes: 3456
            }
        );
        assert!(parse_counter("packets 1").is_err());
        assert!(parse_counter("bytes 1").is_err());
        assert!(parse_counter("packets 1 bytes x").is_err());
        assert!(parse_counter("packets").is_err());
        let later = Counter {
            packets: 20,
            bytes: 4000,
        };
        assert_eq!(
            later.since(c),
            Counter {
                packets: 8,
                bytes: 544
            }
        );
        assert_eq!(c.since(later), Counter::default());
        assert_eq!(thread_kind("mesh-dp-tap12"), "mesh-dp-tap");
    }

    #[test]
    fn counter_rules_count_relay_envelopes() {
        let rules = counter_rules(7800);
        assert!(
            rules.contains("udp sport 7800 counter name \"control\""),
            "{rules}"
        );
        assert!(
            rules.contains("udp sport != 7800 counter name \"data\""),
            "{rules}"
        );
        assert!(
            rules.contains("@th,64,8 { 3, 4 } counter name \"relay\""),
            "{rules}"
        );
    }
}
