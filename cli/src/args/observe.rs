//! `meshctl doctor` and `meshctl top`.

use clap::Args;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check only this peer (name or id); this host's own checks run always.
    pub host: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one sample (rates over one interval) and exit.
    #[arg(long)]
    pub once: bool,
    /// JSON (one document per sample) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Seconds between samples (rates are over this interval).
    #[arg(long, default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,
}

/// Seconds, 0.1 to 3600.
pub fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if (0.1..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} s: the interval must be 0.1 to 3600 s"))
    }
}
