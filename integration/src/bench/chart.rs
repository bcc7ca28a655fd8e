//! The benchmark as a picture: an SVG bar chart written beside the TSV —
//! throughput with one stream and with four, and the overlay daemons' CPU
//! seconds per GB, one bar per mode, the mesh modes highlighted.
//!
//! Hand-written SVG rather than a plotting crate: three panels of bars need
//! no layout engine, font files or build-time dependencies, and the output
//! is small, diff-able text.

use super::report::ModeResult;
use std::fmt::Write as _;

const PANEL_W: f64 = 260.0;
const LABEL_W: f64 = 110.0;
const BAR_H: f64 = 18.0;
const GAP: f64 = 6.0;
const TOP: f64 = 58.0;

/// Colour of a mode's bars: the mesh in red, the kernel references light,
/// the userspace peers grey.
fn colour(mode: &str) -> &'static str {
    if mode.starts_with("mesh") {
        "#d62728"
    } else if mode == "underlay" || mode == "vxlan" {
        "#b0b0b0"
    } else {
        "#6b6b6b"
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart for `results` (failed modes get an empty row marked "failed").
pub(super) fn render(results: &[ModeResult], title: &str) -> String {
    type Metric = (&'static str, fn(&ModeResult) -> Option<f64>, usize);
    let metrics: [Metric; 3] = [
        ("1 stream, Gbit/s", |r| r.medians().gbps_1, 2),
        ("4 streams, Gbit/s", |r| r.medians().gbps_p4, 2),
        (
            "daemon CPU s/GB, 1 stream (lower: better)",
            |r| r.medians().dcpu_1,
            1,
        ),
    ];
    let rows = results.len().max(1) as f64;
    let width = LABEL_W + PANEL_W * metrics.len() as f64 + 20.0;
    let height = TOP + rows * (BAR_H + GAP) + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, r) in results.iter().enumerate() {
        let y = TOP + i as f64 * (BAR_H + GAP);
        let weight = if r.mode.starts_with("mesh") {
            "bold"
        } else {
            "normal"
        };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" font-weight="{weight}">{}</text>"#,
            LABEL_W - 8.0,
            y + BAR_H * 0.75,
            escape(&r.mode)
        );
    }
    for (p, (name, value, precision)) in metrics.iter().enumerate() {
        let x0 = LABEL_W + p as f64 * PANEL_W;
        let values: Vec<Option<f64>> = results
            .iter()
            .map(|r| if r.ok { value(r) } else { None })
            .collect();
        let max = values.iter().flatten().copied().fold(0.0f64, f64::max);
        let scale = if max > 0.0 {
            (PANEL_W - 60.0) / max
        } else {
            0.0
        };
        let _ = writeln!(
            svg,
            r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#,
            TOP - 12.0,
            escape(name)
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{}" x2="{x0}" y2="{}" stroke="#333"/>"##,
            TOP - 4.0,
            TOP + rows * (BAR_H + GAP)
        );
        for (i, (r, v)) in results.iter().zip(&values).enumerate() {
            let y = TOP + i as f64 * (BAR_H + GAP);
            match v {
                Some(v) => {
                    let w = (v * scale).max(1.0);
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x0}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{}"/>"#,
                        colour(&r.mode)
                    );
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}">{v:.precision$}</text>"#,
                        x0 + w + 4.0,
                        y + BAR_H * 0.75
                    );
                }
                None => {
                    let label = if r.ok { "-" } else { "failed" };
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" fill="#999">{label}</text>"##,
                        x0 + 4.0,
                        y + BAR_H * 0.75
                    );
                }
            }
        }
    }
    let _ = writeln!(
        svg,
        r##"<text x="10" y="{}" fill="#555">median of the runs; mesh rows in red; machine shared, compare within one run only</text>"##,
        height - 10.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::Sample;

    fn result(mode: &str, ok: bool, gbps: f64) -> ModeResult {
        ModeResult {
            mode: mode.into(),
            ok,
            reason: String::new(),
            mtu: "1420".into(),
            info: String::new(),
            load_start: String::new(),
            load_end: String::new(),
            samples: vec![Sample {
                gbps_1: Some(gbps),
                gbps_p4: Some(gbps * 1.5),
                dcpu_1: Some(3.0),
                ..Sample::default()
            }],
        }
    }

    #[test]
    fn one_row_per_mode_mesh_highlighted_failures_marked() {
        let svg = render(
            &[
                result("vxlan", true, 10.0),
                result("boringtun", false, 0.0),
                result("mesh", true, 5.0),
                result("mesh-chacha", true, 4.0),
            ],
            "bench <test>",
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bench &lt;test&gt;"), "title escaped");
        assert_eq!(svg.matches("#d62728").count(), 6, "2 mesh modes x 3 panels");
        assert_eq!(svg.matches(">failed<").count(), 3);
        assert!(svg.contains(">10.00<") && svg.contains(">15.00<"));
        // The largest bar of a panel spans the panel's bar area.
        assert!(svg.contains(r#"width="200.0""#), "{svg}");
    }
}
