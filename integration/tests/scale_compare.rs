//! `mesh-lab scale --compare before.json --against after.json` as written in
//! docs/scale-lab.md: two saved reports side by side, nothing run (no root).

use integration::scale::Report;
use std::process::Command;

#[test]
fn compare_against_prints_two_saved_runs_side_by_side() {
    let dir = std::env::temp_dir().join(format!("mesh-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut before, mut after) = (Report::new(50), Report::new(50));
    (before.pings_ok, before.pings_total) = (76, 150);
    (after.pings_ok, after.pings_total) = (150, 150);
    for (name, r) in [("before.json", &before), ("after.json", &after)] {
        std::fs::write(dir.join(name), serde_json::to_string(r).unwrap()).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-lab"))
        .current_dir(&dir)
        .args([
            "scale",
            "--compare",
            "before.json",
            "--against",
            "after.json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("before.json") && text.contains("after.json"),
        "{text}"
    );
    assert!(text.contains("| 76 / 150 | 150 / 150 |"), "{text}");
}
