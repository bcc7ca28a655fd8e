use super::*;
use clap::Parser;
use std::path::PathBuf;

/// A config file in a directory of its own, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(tag: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("meshreload-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meshd.toml");
        TempFile { dir, path }
    }

    fn write(&self, text: &str) -> &Path {
        std::fs::write(&self.path, text).unwrap();
        &self.path
    }

    fn flags(&self, extra: &[&str]) -> Flags {
        let mut args = vec!["meshd", "-c", self.path.to_str().unwrap()];
        args.extend_from_slice(extra);
        Flags::parse_from(args)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const BASE: &str = "name = \"h1\"\nlog = \"info\"\ndns_upstreams = [\"127.0.0.1:5301\"]\n";

/// The table covers exactly the keys of the file: a key added to
/// meshd.toml without deciding whether it reloads fails here.
#[test]
fn every_key_of_the_file_is_classified() {
    let text: String = include_str!("../../../packaging/meshd.toml")
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let in_file: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut in_table: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    in_table.sort();
    assert_eq!(in_file, in_table);
    let live: Vec<&str> = KEYS.iter().filter(|k| k.live).map(|k| k.name).collect();
    assert_eq!(
        live,
        [
            "log",
            "dns_upstreams",
            "metrics_listen",
            "console_listen",
            "rekey_interval",
            "fip_pools"
        ]
    );
}

#[test]
fn live_keys_are_applied_and_the_others_wait_for_a_restart() {
    let f = TempFile::new("plan");
    let flags = f.flags(&[]);
    let (old_file, old) = read(f.write(BASE), &flags).unwrap();
    let text = "name = \"h1\"\nlog = \"info,mesh_dns=debug\"\n\
                dns_upstreams = [\"127.0.0.1:5302\"]\nmax_networks = 10\n\
                rekey_interval = 30\nfip_pools = [\"192.168.1.224/27\"]\n\
                metrics_listen = \"127.0.0.1:9100\"\n";
    let (new_file, new) = read(f.write(text), &flags).unwrap();
    let p = plan(&flags, &old, &old, &new, &old_file, &new_file);
    assert_eq!(
        p.apply,
        [
            "log",
            "dns_upstreams",
            "metrics_listen",
            "rekey_interval",
            "fip_pools"
        ]
    );
    assert_eq!(p.needs_restart, ["max_networks"]);
    assert!(p.overridden.is_empty());

    // Reloading the same file again: nothing to apply, the restart still
    // pending (it is measured from start-up).
    let p = plan(&flags, &old, &new, &new, &new_file, &new_file);
    assert!(p.apply.is_empty());
    assert_eq!(p.needs_restart, ["max_networks"]);
    // Put back as it was at start: no restart needed any more.
    let p = plan(&flags, &old, &new, &old, &new_file, &old_file);
    assert!(p.needs_restart.is_empty());
    assert_eq!(p.apply.len(), 5);
}

#[test]
fn a_key_set_by_a_flag_is_not_changed_by_the_file() {
    let f = TempFile::new("flags");
    let flags = f.flags(&["--log", "warn", "--dns-upstream", "127.0.0.1:5309"]);
    let (old_file, old) = read(f.write(BASE), &flags).unwrap();
    assert_eq!(old.log, "warn");
    let text = "name = \"h1\"\nlog = \"debug\"\ndns_upstreams = [\"127.0.0.1:5302\"]\n\
                rekey_interval = 20\n";
    let (new_file, new) = read(f.write(text), &flags).unwrap();
    assert_eq!(new.log, "warn");
    assert_eq!(new.dns_upstreams, ["127.0.0.1:5309".parse().unwrap()]);
    let p = plan(&flags, &old, &old, &new, &old_file, &new_file);
    assert_eq!(p.apply, ["rekey_interval"]);
    assert_eq!(p.overridden, ["log", "dns_upstreams"]);
}

#[test]
fn a_bad_file_names_the_file_and_the_line() {
    let f = TempFile::new("bad");
    let flags = f.flags(&[]);
    let file = f.path.display().to_string();
    let cases = [
        // TOML syntax.
        (
            "name = \"h1\"\nlog = \"info\"\ndns_upstreams = [\"127.0.0.1:53\"\nlisten = 1\n",
            "line 4",
        ),
        ("name = \"h1\"\nlog = info\n", "line 2"),
        // An unknown key.
        ("name = \"h1\"\nlogg = \"debug\"\n", "line 2"),
        // A value of the wrong form.
        ("name = \"h1\"\n\ndns_upstreams = [\"nowhere\"]\n", "line 3"),
        // A value out of range (checked after parsing).
        ("name = \"h1\"\nrekey_interval = 500\n", "line 2"),
        ("fip_pools = [\"10.1.2.3/24\"]\n", "line 1"),
        // Not a log filter.
        ("name = \"h1\"\n\n\nlog = \"mesh=loud\"\n", "line 4"),
    ];
    for (text, line) in cases {
        let err = read(f.write(text), &flags).unwrap_err();
        assert!(
            err.starts_with(&format!("{file} {line}")),
            "{text:?}: {err}"
        );
    }
    let err = read(f.write("rekey_interval = 500\n"), &flags).unwrap_err();
    assert!(err.contains("rekey_interval must be 1 to 120"), "{err}");
    let err = read(f.write("logg = 1\n"), &flags).unwrap_err();
    assert!(err.contains("logg"), "{err}");
    let gone = f.dir.join("absent.toml");
    let err = read(&gone, &flags).unwrap_err();
    assert!(err.contains("absent.toml"), "{err}");
}

#[test]
fn lines_and_columns_count_from_one() {
    assert_eq!(line_column("a = 1\nb = 2\n", 0), (1, 1));
    assert_eq!(line_column("a = 1\nb = 2\n", 10), (2, 5));
    assert_eq!(line_column("a", 99), (1, 2));
}

/// docs/meshd.md says for every key whether it reloads live, as the
/// table here decides.
#[test]
fn the_docs_say_which_keys_reload_live() {
    let doc = include_str!("../../../docs/meshd.md");
    let mut seen = 0;
    for row in doc.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let Some(name) = cells[0]
            .split("/ `")
            .nth(1)
            .map(|k| k.trim_end_matches('`'))
        else {
            continue;
        };
        let key = KEYS.iter().find(|k| k.name == name);
        let key =
            key.unwrap_or_else(|| panic!("docs/meshd.md lists {name}, reload::KEYS does not"));
        let want = if key.live { "live" } else { "restart" };
        assert_eq!(cells[2], want, "docs/meshd.md on {name}");
        seen += 1;
    }
    assert_eq!(seen, KEYS.len(), "docs/meshd.md lacks keys");
}

/// What a failed listener move leaves serving: the old listener after a
/// bad new address; after a failed same-port move, the old one opened
/// again, or none (and the error says so).
#[tokio::test]
async fn a_failed_listener_move_says_what_still_serves() {
    use std::net::SocketAddr;
    let old: SocketAddr = "127.0.0.1:7880".parse().unwrap();
    let other_port: SocketAddr = "127.0.0.2:7881".parse().unwrap();
    let same_port: SocketAddr = "127.0.0.2:7880".parse().unwrap();
    let serving = || Some(tokio::spawn(std::future::pending::<()>()));
    let only_old = |a: SocketAddr| async move {
        anyhow::ensure!(a == old, "cannot bind {a}");
        Ok(tokio::spawn(std::future::pending::<()>()))
    };
    let nothing = |a: SocketAddr| async move {
        anyhow::bail!("cannot bind {a}");
        #[allow(unreachable_code)]
        Ok(tokio::spawn(async {}))
    };

    let mut task = serving();
    assert!(rebind(&mut task, Some(old), Some(other_port), only_old)
        .await
        .is_err());
    assert!(task.is_some(), "the old listener was never stopped");

    let mut task = serving();
    assert!(rebind(&mut task, Some(old), Some(same_port), only_old)
        .await
        .is_err());
    assert!(task.is_some(), "the old listener is open again");

    let mut task = serving();
    let e = rebind(&mut task, Some(old), Some(same_port), nothing)
        .await
        .unwrap_err();
    assert!(task.is_none());
    assert!(format!("{e:#}").contains("none is serving"), "{e:#}");
}
