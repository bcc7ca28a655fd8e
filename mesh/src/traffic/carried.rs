//! Drop counts of tables meshd rebuilds: replacing a table resets nft's
//! counters, so what the replaced table counted is carried over and the
//! totals only grow while meshd runs.

use std::collections::BTreeMap;

/// Counter names of the installed table mapped to what they count (`K`),
/// and the counts of tables replaced since.
#[derive(Debug)]
pub struct Carried<K> {
    names: BTreeMap<String, K>,
    before: BTreeMap<K, u64>,
}

impl<K> Default for Carried<K> {
    fn default() -> Self {
        Carried {
            names: BTreeMap::new(),
            before: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Carried<K> {
    /// Before replacing the table: keep what its counters (`now`) hold.
    pub fn carry(&mut self, now: &BTreeMap<String, u64>) {
        for (name, packets) in now {
            if let Some(k) = self.names.get(name) {
                *self.before.entry(k.clone()).or_default() += packets;
            }
        }
    }

    /// The new table is in: these are its counters' names.
    pub fn installed(&mut self, names: BTreeMap<String, K>) {
        self.names = names;
    }

    /// Totals since meshd started, given the installed table's counters.
    pub fn totals(&self, now: &BTreeMap<String, u64>) -> BTreeMap<K, u64> {
        let mut out = self.before.clone();
        for (name, packets) in now {
            if let Some(k) = self.names.get(name) {
                *out.entry(k.clone()).or_default() += packets;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_rebuild() {
        let mut c: Carried<&str> = Carried::default();
        c.installed([("c1".to_string(), "web")].into());
        let now: BTreeMap<String, u64> = [("c1".to_string(), 5), ("other".to_string(), 9)].into();
        assert_eq!(c.totals(&now), [("web", 5)].into());
        c.carry(&now);
        c.installed([("c2".to_string(), "web")].into());
        let fresh: BTreeMap<String, u64> = [("c2".to_string(), 2)].into();
        assert_eq!(c.totals(&fresh), [("web", 7)].into());
    }
}
