//! `meshctl log`: the audit trail of replicated writes, as a table or JSON.

use anyhow::Result;
use mesh_api::{Client, LogEntry, LogQuery};
use meshctl::args::{format_time, LogArgs};

use crate::print;

pub async fn run(c: &Client, a: LogArgs) -> Result<()> {
    let entries = c
        .log(&LogQuery {
            since_ms: a.since,
            host: a.host,
        })
        .await?;
    if a.json {
        return print::json(&entries);
    }
    table(&entries);
    Ok(())
}

/// The author as a name, or the short id of one membership did not know.
fn host(e: &LogEntry) -> &str {
    e.host
        .as_deref()
        .unwrap_or_else(|| &e.host_id[..e.host_id.len().min(12)])
}

fn table(entries: &[LogEntry]) {
    let rejected = entries.iter().any(|e| e.rejected.is_some());
    let (hw, cw) = entries.iter().fold((4, 7), |(h, c), e| {
        (h.max(host(e).len()), c.max(e.channel.len()))
    });
    let kw = entries
        .iter()
        .map(|e| e.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let head = format!(
        "{:<20} {:<hw$} {:<6} {:<cw$} {:<kw$}",
        "TIME", "HOST", "OP", "CHANNEL", "KEY"
    );
    match rejected {
        true => println!("{head} REJECTED"),
        false => println!("{}", head.trim_end()),
    }
    for e in entries {
        let line = format!(
            "{:<20} {:<hw$} {:<6} {:<cw$} {:<kw$}",
            format_time(e.time_ms),
            host(e),
            e.op,
            e.channel,
            e.key
        );
        match (&e.rejected, rejected) {
            (Some(why), _) => match (&e.via, &e.via_id) {
                (Some(name), _) => println!("{line} {why} (sent by {name})"),
                (None, Some(id)) => println!("{line} {why} (sent by {})", &id[..id.len().min(12)]),
                (None, None) => println!("{line} {why}"),
            },
            (None, true) => println!("{line} -"),
            (None, false) => println!("{}", line.trim_end()),
        }
    }
}
