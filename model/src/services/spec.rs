//! Parsing and checking what users write: ports, selectors, schedulers,
//! target addresses, weights and names. Pure; every error is one line.

use mesh_api::{Protocol, Scheduler, ServicePort};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Input that is refused, with the reason as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn bad(msg: String) -> SpecError {
    SpecError(msg)
}

/// The weight of a target unless given.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight: the weighted map has one slot per unit of weight.
pub const MAX_WEIGHT: u32 = 100;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1000;

/// A service name: a DNS label of lower-case letters, digits and '-'.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "service name {name:?} is not a DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-')"
        )))
    }
}

fn port_number(text: &str, whole: &str) -> Result<u16, SpecError> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(_) => Err(bad(format!(
            "port {text} in {whole:?} is out of range (1-65535)"
        ))),
        Err(_) => Err(bad(format!("port {text:?} in {whole:?} is not a number"))),
    }
}

/// `PORT[:TARGET_PORT][/tcp|/udp]`.
pub fn parse_port(spec: &str) -> Result<ServicePort, SpecError> {
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => {
            return Err(bad(format!(
                "protocol {other:?} in {spec:?} is neither tcp nor udp"
            )))
        }
        None => (spec, Protocol::Tcp),
    };
    let (port, target) = match ports.split_once(':') {
        Some((p, t)) => (port_number(p, spec)?, port_number(t, spec)?),
        None => {
            let p = port_number(ports, spec)?;
            (p, p)
        }
    };
    Ok(ServicePort {
        port,
        target_port: target,
        protocol,
    })
}

/// Every port spec; at least one, no (port, protocol) twice.
pub fn parse_ports(specs: &[String]) -> Result<Vec<ServicePort>, SpecError> {
    if specs.is_empty() {
        return Err(bad("a service needs at least one --port".into()));
    }
    let mut out: Vec<ServicePort> = Vec::new();
    for s in specs {
        let p = parse_port(s)?;
        if out
            .iter()
            .any(|o| o.port == p.port && o.protocol == p.protocol)
        {
            return Err(bad(format!(
                "port {}/{} is given twice",
                p.port, p.protocol
            )));
        }
        out.push(p);
    }
    Ok(out)
}

/// `KEY=VALUE` pairs; keys are label keys (letters, digits, `-_./`).
pub fn parse_selector(items: &[String]) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) =
            parse_label(item).map_err(|e| bad(format!("bad selector {item:?}: {}", e.0)))?;
        if out.insert(k.clone(), v).is_some() {
            return Err(bad(format!("bad selector: key {k:?} is given twice")));
        }
    }
    Ok(out)
}

/// One label `KEY=VALUE`.
pub fn parse_label(item: &str) -> Result<(String, String), SpecError> {
    let Some((k, v)) = item.split_once('=') else {
        return Err(bad("expected KEY=VALUE".into()));
    };
    let key_ok = !k.is_empty()
        && k.len() <= 63
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !key_ok {
        return Err(bad(format!(
            "key {k:?} must be 1-63 of letters, digits, '-', '_', '.', '/'"
        )));
    }
    if v.len() > 253 || v.chars().any(|c| c.is_control() || c == ',') {
        return Err(bad(format!(
            "value {v:?} must be at most 253 characters, without ',' or control characters"
        )));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Labels for an attachment: every key once, each well formed.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for (k, v) in labels {
        parse_label(&format!("{k}={v}")).map_err(|e| bad(format!("bad label {k:?}: {}", e.0)))?;
    }
    Ok(())
}

pub fn parse_scheduler(s: Option<&str>) -> Result<Scheduler, SpecError> {
    match s {
        None | Some("rr") => Ok(Scheduler::Rr),
        Some("wrr") => Ok(Scheduler::Wrr),
        Some(other) => Err(bad(format!("scheduler {other:?} is neither rr nor wrr"))),
    }
}

pub fn check_weight(w: Option<u32>) -> Result<u32, SpecError> {
    match w {
        None => Ok(DEFAULT_WEIGHT),
        Some(w) if (1..=MAX_WEIGHT).contains(&w) => Ok(w),
        Some(w) => Err(bad(format!("weight {w} is out of range (1-{MAX_WEIGHT})"))),
    }
}

/// `ADDR[:PORT]` of a target (IPv4).
pub fn parse_target(s: &str) -> Result<(Ipv4Addr, Option<u16>), SpecError> {
    let (addr, port) = match s.split_once(':') {
        Some((a, p)) => (a, Some(port_number(p, s)?)),
        None => (s, None),
    };
    let ip = addr
        .parse()
        .map_err(|_| bad(format!("{addr:?} in {s:?} is not an IPv4 address")))?;
    Ok((ip, port))
}

/// `VIP:PORT` of `lb create` (Circuit's form).
pub fn parse_vip_port(s: &str) -> Result<(Ipv4Addr, u16), SpecError> {
    match parse_target(s)? {
        (ip, Some(port)) => Ok((ip, port)),
        (_, None) => Err(bad(format!("{s:?} has no port: expected VIP:PORT"))),
    }
}

pub fn check_health_interval(ms: Option<u64>) -> Result<u64, SpecError> {
    match ms {
        None => Ok(DEFAULT_HEALTH_INTERVAL_MS),
        Some(ms) if (100..=60_000).contains(&ms) => Ok(ms),
        Some(ms) => Err(bad(format!(
            "health interval {ms} ms is out of range (100-60000)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_with_defaults() {
        assert_eq!(
            parse_port("80").unwrap(),
            ServicePort {
                port: 80,
                target_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            parse_port("8080:80/udp").unwrap(),
            ServicePort {
                port: 8080,
                target_port: 80,
                protocol: Protocol::Udp
            }
        );
        for bad in ["0", "70000", "x", "80:", "80/sctp", "80:0/tcp", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert!(parse_port("70000").unwrap_err().0.contains("out of range"));
        assert!(parse_ports(&[]).is_err());
        assert!(parse_ports(&["80".into(), "80:81".into()]).is_err());
        assert_eq!(
            parse_ports(&["53/udp".into(), "53/tcp".into()])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn selectors_labels_weights_names() {
        let s = parse_selector(&["app=nginx".into(), "tier=web".into()]).unwrap();
        assert_eq!(s.get("app").map(String::as_str), Some("nginx"));
        assert!(parse_selector(&["app".into()]).is_err());
        assert!(parse_selector(&["=x".into()]).is_err());
        assert!(parse_selector(&["a=1".into(), "a=2".into()]).is_err());
        assert!(parse_selector(&["a=b,c".into()]).is_err());
        assert_eq!(check_weight(None).unwrap(), 1);
        assert!(check_weight(Some(0)).is_err());
        assert!(check_weight(Some(101)).is_err());
        assert!(check_name("web").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_scheduler(Some("wrr")).unwrap(), Scheduler::Wrr);
        assert!(parse_scheduler(Some("lc")).is_err());
    }

    #[test]
    fn targets_and_vips() {
        assert_eq!(
            parse_target("10.0.0.2:80").unwrap(),
            ("10.0.0.2".parse().unwrap(), Some(80))
        );
        assert_eq!(
            parse_target("10.0.0.2").unwrap(),
            ("10.0.0.2".parse().unwrap(), None)
        );
        assert!(parse_target("host:80").is_err());
        assert!(parse_vip_port("10.0.0.9").is_err());
        assert!(parse_vip_port("10.0.0.9:99999").is_err());
    }
}
