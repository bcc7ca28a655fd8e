//! The phases of a simulation run and the conditions they wait for.

use std::time::{Duration, Instant};

use super::host::SimHost;
use super::{peer_id, Kind, Sim, SimReport, Spread, Topology, CHANNEL};
use crate::state::Mergeable;
use crate::wire::Message;

impl Sim {
    pub(super) fn alive(&self) -> impl Iterator<Item = (usize, &SimHost)> {
        self.hosts.iter().enumerate().filter(|(_, h)| h.alive)
    }

    /// Every live host knows every member, is linked (with keys) to all it
    /// wants, and — full mesh — to every other live host.
    pub(super) fn converged(&self) -> bool {
        let n = self.cfg.hosts;
        let live = self.alive().count();
        self.alive().all(|(_, h)| {
            if h.table.len() != n || h.keys.len() != h.links.len() {
                return false;
            }
            match self.cfg.topology {
                Topology::FullMesh => h.links.len() == live - 1,
                Topology::Bounded => {
                    h.wanted_for == n
                        && h.wanted
                            .iter()
                            .all(|p| h.links.contains_key(p) || !self.hosts[*p].alive)
                }
            }
        })
    }

    fn bytes(&self) -> Vec<u64> {
        self.hosts.iter().map(|h| h.sent_bytes).collect()
    }

    fn packets(&self) -> Vec<u64> {
        self.hosts.iter().map(|h| h.sent_packets).collect()
    }

    /// Runs every phase and reports; `None` in a field means the phase did
    /// not finish within the limit.
    pub fn run(mut self) -> SimReport {
        let wall = Instant::now();
        let n = self.cfg.hosts;
        self.hosts[0].alive = true;
        self.start_hosts_timers(0);
        for j in 1..n {
            let at = self.cfg.join_interval * j as u32;
            self.schedule(at, Kind::Join(j));
        }
        let last_join = self.cfg.join_interval * (n as u32 - 1);
        self.advance(last_join);
        let converge = self.run_until(Sim::converged);
        let join_bytes = self.bytes();
        let join_elapsed = self.now;

        // A change on host 0 (a network record), carried as a delta.
        self.advance(self.now + Duration::from_secs(5));
        let delta =
            self.hosts[0]
                .channel
                .set(peer_id(0), "network/scale".into(), "10.77.0.0/16".into());
        self.hosts[0].channel.merge(&delta);
        let data = delta.encode();
        self.broadcast(
            0,
            None,
            Message::ChannelDelta {
                channel: CHANNEL.into(),
                data,
            },
        );
        let change = self.run_until(|sim| {
            sim.alive()
                .all(|(_, h)| h.channel.contains_key(&"network/scale".to_string()))
        });

        // Idle: whole periods of heartbeats and digests, no changes.
        self.advance(self.now + Duration::from_secs(5));
        let (b0, p0, t0) = (self.bytes(), self.packets(), self.now);
        self.advance(self.now + self.cfg.idle);
        let secs = (self.now - t0).as_secs_f64();
        let idle_bps: Vec<f64> = self
            .bytes()
            .iter()
            .zip(&b0)
            .map(|(a, b)| (a - b) as f64 / secs)
            .collect();
        let idle_pps: Vec<f64> = self
            .packets()
            .iter()
            .zip(&p0)
            .map(|(a, b)| (a - b) as f64 / secs)
            .collect();

        // Kill a share silently, spread over the hosts (never the seed).
        let k = ((n as f64 * self.cfg.kill_share).round() as usize).max(1);
        let victims: Vec<usize> = (0..k).map(|j| (j * n / k + n / (2 * k)).max(1)).collect();
        for &v in &victims {
            let host = &mut self.hosts[v];
            host.alive = false;
            host.links.clear();
            host.keys.clear();
            host.dialing.clear();
            host.backoff.clear();
        }
        let detect = self.run_until(|sim| {
            sim.alive()
                .all(|(_, h)| victims.iter().all(|v| !h.links.contains_key(v)))
        });
        for &v in &victims {
            let host = &mut self.hosts[v];
            host.alive = true;
            host.wanted_for = 0;
            // A restart: newer incarnation, the persisted members kept.
            host.table.update_local(|r| r.incarnation += 1);
            let peers: Vec<usize> = (0..n).filter(|p| *p != v).collect();
            for p in peers {
                if !self.bounded() {
                    self.dial(v, p, Duration::ZERO);
                }
            }
        }
        let back = self.run_until(|sim| {
            sim.converged()
                && sim.alive().all(|(_, h)| {
                    victims.iter().all(|v| {
                        h.table
                            .get(&peer_id(*v))
                            .is_some_and(|r| r.incarnation >= 2)
                    })
                })
        });

        let links: Vec<f64> = self.hosts.iter().map(|h| h.links.len() as f64).collect();
        let keys: Vec<f64> = self.hosts.iter().map(|h| h.keys.len() as f64).collect();
        let table_bytes = postcard::to_stdvec(&self.hosts[0].table.records().collect::<Vec<_>>())
            .map(|v| v.len())
            .unwrap_or(0);
        SimReport {
            hosts: n,
            topology: self.cfg.topology,
            links: Spread::of(&links),
            keys: Spread::of(&keys),
            last_join_secs: last_join.as_secs_f64(),
            converge_secs: converge.map(|d| d.as_secs_f64()),
            change_secs: change.map(|d| d.as_secs_f64()),
            join_kib_per_host: Spread::of(
                &join_bytes
                    .iter()
                    .map(|b| *b as f64 / 1024.0)
                    .collect::<Vec<_>>(),
            ),
            join_window_secs: join_elapsed.as_secs_f64(),
            idle_bytes_per_sec: Spread::of(&idle_bps),
            idle_packets_per_sec: Spread::of(&idle_pps),
            killed: k,
            detect_secs: detect.map(|d| d.as_secs_f64()),
            back_secs: back.map(|d| d.as_secs_f64()),
            table_bytes,
            events: self.events,
            wall_secs: wall.elapsed().as_secs_f64(),
        }
    }
}
