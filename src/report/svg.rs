//! A small SVG line-chart renderer for self-contained HTML reports: axes
//! with round ticks, labels, a legend, and optional vertical markers.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points (x, y), drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// A chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
    /// Vertical markers (x, label).
    pub markers: Vec<(f64, String)>,
    /// Draw points as dots too (for sparse sweeps).
    pub dots: bool,
}

const W: f64 = 640.0;
const H: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

fn label(v: f64) -> String {
    let v = if v.abs() < 1e-9 { 0.0 } else { v };
    if v.abs() >= 1000.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

impl Chart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter().copied());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        for (x, _) in &self.markers {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
        }
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img"><title>{t}</title><text x="{LEFT}" y="20" class="title">{t}</text>"#,
            t = escape(&self.title)
        );
        if !x0.is_finite() {
            svg.push_str(
                r#"<text x="320" y="160" text-anchor="middle" class="empty">no data</text></svg>"#,
            );
            return svg;
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let y0 = 0.0;
        if y1 <= y0 {
            y1 = 1.0;
        }
        y1 *= 1.05;
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
        for t in ticks(y0, y1) {
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                py(t) + 4.0,
                label(t),
                y = py(t)
            );
        }
        for t in ticks(x0, x1) {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" class="tick">{}</text>"#,
                px(t),
                H - BOTTOM + 16.0,
                label(t)
            );
        }
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" class="axis"/><line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" class="axis"/><text x="{}" y="{}" text-anchor="middle" class="label">{}</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle" class="label">{}</text>"#,
            H - BOTTOM,
            W - RIGHT,
            (LEFT + W - RIGHT) / 2.0,
            H - 10.0,
            escape(&self.x_label),
            (TOP + H - BOTTOM) / 2.0,
            escape(&self.y_label),
            y = H - BOTTOM
        );
        // Marker labels sit low in the plot, one row each, clear of the
        // legend and of each other.
        for (i, (x, text)) in self.markers.iter().enumerate() {
            let _ = write!(
                svg,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" class="marker"/><text x="{:.1}" y="{:.1}" class="marker-label">{}</text>"#,
                H - BOTTOM,
                px(*x) + 4.0,
                H - BOTTOM - 8.0 - 14.0 * i as f64,
                escape(text),
                x = px(*x)
            );
        }
        // Legend entries flow left to right, wrapping, each as wide as its
        // text (about 6.5 px a character at 11 px).
        let (mut lx, mut ly) = (LEFT + 10.0, TOP + 4.0);
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
                path.join(" ")
            );
            if self.dots {
                for p in &path {
                    if let Some((x, y)) = p.split_once(',') {
                        let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
                    }
                }
            }
            let width = 30.0 + 6.5 * s.name.chars().count() as f64;
            if lx + width > W - RIGHT && lx > LEFT + 10.0 {
                lx = LEFT + 10.0;
                ly += 14.0;
            }
            let _ = write!(
                svg,
                r#"<rect x="{lx}" y="{ly}" width="10" height="3" fill="{color}"/><text x="{}" y="{}" class="legend">{}</text>"#,
                lx + 14.0,
                ly + 4.0,
                escape(&s.name)
            );
            lx += width;
        }
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 0.37);
        assert!(t.first() == Some(&0.0) && *t.last().unwrap() <= 0.37 + 1e-9 && t.len() >= 3);
    }

    #[test]
    fn charts_escape_text_and_handle_no_data() {
        let c = Chart {
            title: "a <b> & c".into(),
            series: vec![Series {
                name: "s\"1".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
            ..Chart::default()
        };
        let svg = c.render();
        assert!(svg.contains("a &lt;b&gt; &amp; c") && svg.contains("s&quot;1"));
        assert!(svg.contains("<polyline"));
        assert!(Chart::default().render().contains("no data"));
    }
}
