//! Checking what users (and peers) ask of traffic control: selectors,
//! ports, rule names and shaping values. The API and the channel guards
//! run the same checks, so a peer cannot write what `meshctl` refuses.

use mesh_api::{PolicyPort, PolicyRule, Protocol, QosEntry};
use std::collections::BTreeMap;

use crate::services::spec::{check_labels, parse_label, SpecError};

fn bad(msg: String) -> SpecError {
    SpecError(msg)
}

/// Most rules, ports and selector keys one rule or network may have.
pub const MAX_RULES_PER_NETWORK: usize = 256;
const MAX_PORTS: usize = 64;
const MAX_SELECTOR_KEYS: usize = 16;
/// 100 Gbit/s: anything above is a typo.
pub const MAX_KBIT: u64 = 100_000_000;
/// HTB cannot shape below this.
pub const MIN_KBIT: u64 = 8;
/// A minute of delay is the most the data plane holds frames.
pub const MAX_DELAY_MS: f64 = 60_000.0;

/// `KEY=VALUE[,KEY=VALUE…]`: at least one pair, each key once.
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for item in s.split(',') {
        let item = item.trim();
        let (k, v) = parse_label(item).map_err(|e| bad(format!("bad selector {s:?}: {}", e.0)))?;
        if out.insert(k.clone(), v).is_some() {
            return Err(bad(format!("bad selector {s:?}: key {k:?} is given twice")));
        }
    }
    if out.len() > MAX_SELECTOR_KEYS {
        return Err(bad(format!(
            "bad selector {s:?}: more than {MAX_SELECTOR_KEYS} keys"
        )));
    }
    Ok(out)
}

/// `--from`: a selector, or `any` (empty: every container of the network).
pub fn parse_from(s: &str) -> Result<BTreeMap<String, String>, SpecError> {
    if s.trim() == "any" {
        return Ok(BTreeMap::new());
    }
    parse_selector(s)
}

/// `PORT[/tcp|/udp]`; a bare port means both protocols.
pub fn parse_port(s: &str) -> Result<PolicyPort, SpecError> {
    let (port, protocol) = match s.split_once('/') {
        Some((p, "tcp")) => (p, Some(Protocol::Tcp)),
        Some((p, "udp")) => (p, Some(Protocol::Udp)),
        Some((_, other)) => {
            return Err(bad(format!(
                "port {s:?}: protocol {other:?} is neither tcp nor udp"
            )))
        }
        None => (s, None),
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(PolicyPort { port, protocol }),
        _ => Err(bad(format!(
            "port {s:?}: expected a number from 1 to 65535"
        ))),
    }
}

/// A rule's name: a DNS-label-like word (it names the rule in `policy rm`).
pub fn check_rule_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "rule name {name:?} must be 1-63 of letters, digits, '-', '_'"
        )))
    }
}

/// The name a rule gets without `--name`: the same rule gets the same
/// name on every host.
pub fn default_rule_name(
    from: &BTreeMap<String, String>,
    to: &BTreeMap<String, String>,
    ports: &[PolicyPort],
) -> String {
    let text = format!("{from:?}{to:?}{ports:?}");
    // FNV-1a: short, stable across versions (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("rule-{:08x}", h as u32)
}

/// A rule as stored: what `policy add` could have written.
pub fn check_rule(rule: &PolicyRule) -> Result<(), SpecError> {
    check_rule_name(&rule.name)?;
    if rule.to.is_empty() {
        return Err(bad("--to needs a selector (KEY=VALUE)".into()));
    }
    for sel in [&rule.from, &rule.to] {
        check_labels(sel)?;
        if sel.len() > MAX_SELECTOR_KEYS {
            return Err(bad(format!(
                "a selector has more than {MAX_SELECTOR_KEYS} keys"
            )));
        }
    }
    if rule.ports.len() > MAX_PORTS {
        return Err(bad(format!("more than {MAX_PORTS} ports")));
    }
    if rule.ports.iter().any(|p| p.port == 0) {
        return Err(bad("port 0".into()));
    }
    Ok(())
}

/// Shaping values: in range, ceiling not below rate, something to do.
pub fn check_qos(q: &QosEntry) -> Result<(), SpecError> {
    for (flag, v) in [("--rate", q.rate_kbit), ("--ceiling", q.ceiling_kbit)] {
        if let Some(v) = v {
            if !(MIN_KBIT..=MAX_KBIT).contains(&v) {
                return Err(bad(format!(
                    "{flag} {v}: expected {MIN_KBIT} to {MAX_KBIT} kbit/s"
                )));
            }
        }
    }
    if let (Some(rate), Some(ceil)) = (q.rate_kbit, q.ceiling_kbit) {
        if ceil < rate {
            return Err(bad(format!(
                "--ceiling {ceil} is below --rate {rate} (the ceiling is what a container may borrow up to)"
            )));
        }
    }
    for (flag, v, max) in [
        ("--delay", q.delay_ms, MAX_DELAY_MS),
        ("--jitter", q.jitter_ms, MAX_DELAY_MS),
        ("--loss", q.loss_percent, 100.0),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                return Err(bad(format!("{flag} {v}: expected 0 to {max}")));
            }
        }
    }
    if q.jitter_ms.is_some_and(|j| j > 0.0) && q.delay_ms.is_none_or(|d| q.jitter_ms > Some(d)) {
        return Err(bad("--jitter must not exceed --delay".into()));
    }
    let nothing = q.rate_kbit.is_none()
        && q.ceiling_kbit.is_none()
        && q.delay_ms.is_none()
        && q.jitter_ms.is_none()
        && q.loss_percent.is_none();
    if nothing {
        return Err(bad(
            "nothing to shape: pass --rate, --ceiling, --delay, --jitter or --loss".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qos(rate: Option<u64>, ceil: Option<u64>) -> QosEntry {
        QosEntry {
            network: "blue".into(),
            container: None,
            rate_kbit: rate,
            ceiling_kbit: ceil,
            delay_ms: None,
            jitter_ms: None,
            loss_percent: None,
        }
    }

    #[test]
    fn selectors_ports_and_names() {
        assert_eq!(parse_selector("app=web,tier=1").unwrap().len(), 2);
        for bad in ["", "app", "=x", "app=web,app=db", "a=b,,c=d"] {
            assert!(parse_selector(bad).is_err(), "{bad:?}");
        }
        assert!(parse_from("any").unwrap().is_empty());
        assert_eq!(
            parse_port("5432/tcp").unwrap(),
            PolicyPort {
                port: 5432,
                protocol: Some(Protocol::Tcp)
            }
        );
        assert_eq!(parse_port("53").unwrap().protocol, None);
        for bad in ["0", "70000", "-1", "22/sctp", "x/tcp", ""] {
            assert!(parse_port(bad).is_err(), "{bad:?}");
        }
        assert!(check_rule_name("web-to-db").is_ok());
        assert!(check_rule_name("a b").is_err());
        let (f, t) = (
            parse_from("any").unwrap(),
            parse_selector("app=db").unwrap(),
        );
        assert_eq!(
            default_rule_name(&f, &t, &[]),
            default_rule_name(&f, &t, &[])
        );
        check_rule_name(&default_rule_name(&f, &t, &[])).unwrap();
    }

    #[test]
    fn qos_values() {
        check_qos(&qos(Some(5000), Some(6000))).unwrap();
        check_qos(&qos(Some(5000), None)).unwrap();
        let e = check_qos(&qos(Some(6000), Some(5000))).unwrap_err();
        assert!(e.0.contains("below --rate"), "{}", e.0);
        assert!(check_qos(&qos(Some(0), None)).is_err());
        assert!(check_qos(&qos(Some(u64::MAX), None)).is_err());
        assert!(check_qos(&qos(None, None)).is_err(), "nothing to do");
        let mut q = qos(None, None);
        q.loss_percent = Some(101.0);
        assert!(check_qos(&q).is_err());
        q.loss_percent = Some(f64::NAN);
        assert!(check_qos(&q).is_err());
        q.loss_percent = None;
        q.delay_ms = Some(-1.0);
        assert!(check_qos(&q).is_err());
        q.delay_ms = Some(10.0);
        q.jitter_ms = Some(20.0);
        assert!(check_qos(&q).is_err(), "jitter above delay");
        q.jitter_ms = Some(5.0);
        check_qos(&q).unwrap();
    }
}
