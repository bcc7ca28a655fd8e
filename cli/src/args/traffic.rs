//! `meshctl policy …` and `meshctl network qos …` (see docs/qos-policy.md,
//! QoS and network policy).

use clap::Subcommand;

use super::Output;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Allow traffic from the containers FROM selects (or any) to those TO selects.
    Add {
        network: String,
        /// `KEY=VALUE[,KEY=VALUE…]` or `any`.
        #[arg(long)]
        from: String,
        /// `KEY=VALUE[,KEY=VALUE…]`.
        #[arg(long)]
        to: String,
        /// `PORT[/tcp|/udp]` (repeatable; none: every port and protocol).
        #[arg(long = "port")]
        ports: Vec<String>,
        /// The rule's name (default: derived from the rule).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// The rules (of one network, or all).
    List {
        network: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Remove a rule: what it allowed stops at once, open connections included.
    Rm { network: String, name: String },
}

#[derive(Debug, Subcommand)]
pub enum QosCommand {
    /// Shape a network's containers (or one container): rate and ceiling
    /// in kbit/s, delay and jitter (e.g. 50ms), loss in percent.
    Set {
        network: String,
        /// A container (name, address, or on its host a PID or netns path).
        #[arg(long)]
        container: Option<String>,
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long)]
        ceiling: Option<u64>,
        #[arg(long, value_parser = parse_duration_ms)]
        delay: Option<f64>,
        #[arg(long, value_parser = parse_duration_ms)]
        jitter: Option<f64>,
        #[arg(long, value_parser = parse_percent)]
        loss: Option<f64>,
        #[command(flatten)]
        out: Output,
    },
    /// Remove the shaping of a network (and of its containers) or of one container.
    Reset {
        network: String,
        #[arg(long)]
        container: Option<String>,
    },
    /// What is shaped (on one network, or all).
    Show {
        network: Option<String>,
        #[command(flatten)]
        out: Output,
    },
}

/// `50ms`, `1.5s`, `200us`, or a bare number of milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * scale),
        _ => Err(format!("duration {s:?}: expected e.g. 50ms, 1.5s or 200us")),
    }
}

/// `10` or `10%`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%');
    match t.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected a percentage from 0 to 100")),
    }
}
