//! `--plot FILE.svg`: latency percentile curves (x: percentile on a log "nines" scale,
//! y: microseconds on a log scale), one line per series, hand-written SVG.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::stats::Latency;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// x position of quantile `q`: 0 → 0 nines, 0.9 → 1, 0.99 → 2, ... capped at 5.
fn nines(q: f64) -> f64 {
    (-(1.0 - q).max(1e-5).log10()).clamp(0.0, 5.0)
}

/// Writes an SVG of the percentile curves of `series` to `path`.
pub fn latency_svg(path: &Path, title: &str, series: &[(String, Latency)]) -> anyhow::Result<()> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| h.count() > 0)
        .map(|(name, h)| (name.clone(), h.percentile_curve()))
        .collect();
    let max_us = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|&(_, v)| v))
        .fold(1.0f64, f64::max);
    let min_us = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|&(_, v)| v))
        .fold(max_us, f64::min)
        .max(0.1);
    let (lo, hi) = (
        min_us.log10().floor(),
        max_us.log10().ceil().max(min_us.log10().floor() + 1.0),
    );
    let x = |q: f64| MARGIN + nines(q) / 5.0 * (WIDTH - 2.0 * MARGIN);
    let y = |us: f64| {
        let f = (us.max(0.1).log10() - lo) / (hi - lo);
        HEIGHT - MARGIN - f * (HEIGHT - 2.0 * MARGIN)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (i, label) in ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"]
        .iter()
        .enumerate()
    {
        let px = MARGIN + i as f64 / 5.0 * (WIDTH - 2.0 * MARGIN);
        let _ = writeln!(
            svg,
            r##"<line x1="{px}" y1="{MARGIN}" x2="{px}" y2="{}" stroke="#ddd"/><text x="{px}" y="{}" text-anchor="middle">{label}</text>"##,
            HEIGHT - MARGIN,
            HEIGHT - MARGIN + 16.0
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let us = 10f64.powf(decade);
        let py = y(us);
        let label = if us >= 1000.0 {
            format!("{} ms", us / 1000.0)
        } else {
            format!("{us} µs")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{label}</text>"##,
            WIDTH - MARGIN,
            MARGIN - 6.0,
            py + 4.0
        );
        decade += 1.0;
    }
    for (i, (name, curve)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = curve
            .iter()
            .map(|&(q, v)| format!("{:.1},{:.1}", x(q), y(v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = MARGIN + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{ly}" fill="{colour}">{}</text>"#,
            MARGIN + 10.0,
            escape(name)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        WIDTH / 2.0,
        HEIGHT - 20.0
    );
    let _ = writeln!(svg, "</svg>");
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// A bar chart of one value per series (memory per connection, for `idle`).
pub fn bars_svg(
    path: &Path,
    title: &str,
    unit: &str,
    bars: &[(String, f64)],
) -> anyhow::Result<()> {
    let max = bars.iter().map(|(_, v)| *v).fold(1e-9, f64::max);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let slot = (WIDTH - 2.0 * MARGIN) / bars.len().max(1) as f64;
    for (i, (name, value)) in bars.iter().enumerate() {
        let h = value / max * (HEIGHT - 2.0 * MARGIN);
        let bx = MARGIN + i as f64 * slot + slot * 0.2;
        let by = HEIGHT - MARGIN - h;
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{bx}" y="{by}" width="{}" height="{h}" fill="{colour}"/>"#,
            slot * 0.6
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{value:.1} {}</text>"#,
            bx + slot * 0.3,
            by - 4.0,
            escape(unit)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            bx + slot * 0.3,
            HEIGHT - MARGIN + 16.0,
            escape(name)
        );
    }
    let _ = writeln!(svg, "</svg>");
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(1.0), 5.0);
        assert_eq!(nines(0.0), 0.0);
    }
}
