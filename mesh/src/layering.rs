//! The modules of `mesh` depend on each other without cycles: a test reads
//! the sources (outside comments and test code) for `crate::<module>` and
//! fails on any cycle among the top-level modules.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Top-level module → the top-level modules its code names.
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                let top = rel
                    .split('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".rs")
                    .to_string();
                if top == "lib" || top == "main" || !rel.ends_with(".rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap();
                let used = out.entry(top.clone()).or_default();
                for line in code.lines().map(|l| l.split("//").next().unwrap()) {
                    for part in line.split("crate::").skip(1) {
                        let name: String = part
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != top {
                            used.insert(name);
                        }
                    }
                }
            }
        }
        let modules: BTreeSet<String> = out.keys().cloned().collect();
        for used in out.values_mut() {
            used.retain(|m| modules.contains(m));
        }
        out
    }

    /// A path from `from` back to itself, if there is one.
    fn cycle_through(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
        let mut stack = vec![(from.to_string(), vec![from.to_string()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in &g[&at] {
                if next == from {
                    let mut p = path.clone();
                    p.push(next.clone());
                    return Some(p);
                }
                if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
        None
    }

    #[test]
    fn no_import_cycle_among_the_modules() {
        let g = uses();
        assert!(g.len() > 20, "read the sources: {:?}", g.keys());
        let cycles: Vec<String> = g
            .keys()
            .filter_map(|m| cycle_through(&g, m))
            .map(|c| c.join(" → "))
            .collect();
        assert!(cycles.is_empty(), "{cycles:#?}");
    }

    #[test]
    fn the_check_sees_a_cycle() {
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), ["b".to_string()].into()),
            ("b".to_string(), ["a".to_string()].into()),
            ("c".to_string(), ["a".to_string()].into()),
        ]
        .into();
        assert_eq!(cycle_through(&g, "a").unwrap(), ["a", "b", "a"]);
        assert!(cycle_through(&g, "c").is_none());
    }
}
