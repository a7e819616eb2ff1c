//! Charts of the HTML report, drawn by plotters' SVG backend (text as SVG
//! `<text>`, so no font files are read and the file stays self-contained).
//!
//! What this module decides, and plotters does not: the scale of each axis
//! (logarithmic where a series spans more than [`LOG_SPAN`]x, so that 91 and
//! 137 ms do not lie flat on a 0-10,000 ms axis), round ticks (1-2-5 steps,
//! the load steps themselves on a load axis, never 2.5 or 7.5), SLO and
//! marker lines, and one colour per input when several are overlaid. The
//! title and the legend are HTML around the SVG, so that no label is cut
//! off by a guessed text width.

use maud::{Markup, PreEscaped, html};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

/// Largest over smallest value above which an axis is logarithmic.
pub const LOG_SPAN: f64 = 20.0;

/// Chart size in pixels.
const W: u32 = 640;
const H: u32 = 340;
/// Least distance between two tick labels on the x axis, pixels (labels
/// side by side).
const X_TICK_GAP_PX: f64 = 38.0;
/// The same on the y axis (labels one above the other).
const Y_TICK_GAP_PX: f64 = 24.0;

/// Colours: the first for one input's first series, or for input A.
/// Colours of the inputs when several are overlaid (blue, orange, green,
/// purple: none of them the red of an SLO line).
const INPUT_PALETTE: [(u8, u8, u8); 4] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
];
const PALETTE: [(u8, u8, u8); 8] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
];

/// How an axis maps values to pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Evenly.
    Linear,
    /// By powers of ten.
    Log,
}

impl Scale {
    /// The value in plot space (log10 on a log axis); `None` for a value
    /// the axis cannot show (not finite, or not positive on a log axis).
    fn to_plot(self, v: f64) -> Option<f64> {
        match self {
            Scale::Linear => v.is_finite().then_some(v),
            Scale::Log => (v.is_finite() && v > 0.0).then(|| v.log10()),
        }
    }

    fn value_at(self, p: f64) -> f64 {
        match self {
            Scale::Linear => p,
            Scale::Log => 10f64.powf(p),
        }
    }
}

/// The scale for `values`: logarithmic when they are all positive and the
/// largest is more than [`LOG_SPAN`] times the smallest, linear otherwise
/// (a zero or a negative value cannot sit on a log axis).
pub fn choose_scale(values: impl IntoIterator<Item = f64>) -> Scale {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        if v <= 0.0 {
            return Scale::Linear;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo.is_finite() && hi / lo > LOG_SPAN {
        Scale::Log
    } else {
        Scale::Linear
    }
}

/// The scale of a load axis: as [`choose_scale`], and logarithmic too when
/// the steps span more than 4x and are closer to equal ratios than to equal
/// differences (a geometric sweep, `--rates 2..32` or `1,2,4,8`).
pub fn steps_scale(values: impl IntoIterator<Item = f64>) -> Scale {
    let mut v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if choose_scale(v.iter().copied()) == Scale::Log {
        return Scale::Log;
    }
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    let (Some(&lo), Some(&hi)) = (v.first(), v.last()) else {
        return Scale::Linear;
    };
    if v.len() < 3 || lo <= 0.0 || hi / lo <= 4.0 {
        return Scale::Linear;
    }
    let spread = |f: fn(f64, f64) -> f64| {
        let d: Vec<f64> = v.windows(2).map(|w| f(w[0], w[1])).collect();
        let max = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = d.iter().copied().fold(f64::INFINITY, f64::min);
        max / min
    };
    if spread(|a, b| b / a) < spread(|a, b| b - a) {
        Scale::Log
    } else {
        Scale::Linear
    }
}

/// What an axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AxisKind {
    /// A positive quantity such as a latency: log or linear by
    /// [`choose_scale`], linear from zero.
    Auto,
    /// A count or rate: linear from zero.
    Zero,
    /// Load steps (offered rate, users): scale by [`choose_scale`], ticks
    /// at the steps themselves.
    Steps,
    /// A share of requests drawn in percent, from 0 to 100%.
    Share,
    /// A share of requests drawn in percent, from 0 to a little above its
    /// largest value (at least 1%): small error rates stay visible.
    SmallShare,
}

/// One axis.
#[derive(Debug, Clone)]
pub struct Axis {
    /// What it shows, with the unit.
    pub label: String,
    /// How it is scaled and ticked.
    pub kind: AxisKind,
}

impl Axis {
    /// An axis of `kind` labelled `label`.
    pub fn new(label: impl Into<String>, kind: AxisKind) -> Self {
        Self {
            label: label.into(),
            kind,
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Which input of the report it belongs to (its colour when several
    /// inputs are overlaid).
    pub input: usize,
    /// Points (x, y), drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Draw each point as a dot too (sparse sweeps).
    pub dots: bool,
    /// Indexes of points drawn as a cross: steps where the load generator
    /// could not keep the schedule.
    pub flagged: Vec<usize>,
}

/// A reference line across the plot.
#[derive(Debug, Clone)]
pub struct RefLine {
    /// Where it is (y for a horizontal line, x for a vertical one).
    pub at: f64,
    /// Legend label.
    pub label: String,
    /// What it marks (its colour and dash).
    pub kind: RefKind,
    /// The input it belongs to, if one: drawn in that input's colour when
    /// several are overlaid (the knee of A and the knee of B).
    pub input: Option<usize>,
}

/// What a reference line marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// An objective: red, dashed.
    Slo,
    /// The knee: grey, dashed.
    Knee,
    /// The SLO capacity: green, dotted.
    Capacity,
}

impl RefKind {
    fn style(self) -> (RGBColor, Dash, u32) {
        match self {
            RefKind::Slo => (RGBColor(200, 0, 0), Dash::Dashed, 2),
            RefKind::Knee => (RGBColor(90, 90, 90), Dash::Dashed, 1),
            RefKind::Capacity => (RGBColor(20, 130, 60), Dash::Dotted, 2),
        }
    }
}

/// A chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// The x axis.
    pub x: Axis,
    /// The y axis.
    pub y: Axis,
    /// Lines.
    pub series: Vec<Series>,
    /// Horizontal lines (SLO thresholds on a latency axis).
    pub hlines: Vec<RefLine>,
    /// Vertical lines (knee and capacity on a load axis, thresholds on a
    /// distribution).
    pub vlines: Vec<RefLine>,
    /// How many inputs are overlaid: with more than one, colour tells the
    /// input and the line style tells the series within it.
    pub inputs: usize,
    /// The series are ordered (one per load step): colour them along a ramp
    /// from low (blue) to high (red) rather than by a palette.
    pub ordered: bool,
}

impl Chart {
    /// An empty chart.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Self {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            hlines: Vec::new(),
            vlines: Vec::new(),
            inputs: 1,
            ordered: false,
        }
    }

    /// The scale of each axis, as drawn.
    pub fn scales(&self) -> (Scale, Scale) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.vlines.iter().map(|l| l.at));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.hlines.iter().map(|l| l.at));
        (scale_of(self.x.kind, xs), scale_of(self.y.kind, ys))
    }

    fn style(&self, i: usize) -> (RGBColor, Dash) {
        let s = &self.series[i];
        if self.inputs > 1 {
            let nth = self.series[..i]
                .iter()
                .filter(|o| o.input == s.input)
                .count();
            (input_colour(s.input), Dash::nth(nth))
        } else if self.ordered {
            (
                ramp(i as f64 / (self.series.len().max(2) - 1) as f64),
                Dash::Solid,
            )
        } else {
            (colour(i), Dash::Solid)
        }
    }

    fn ref_style(&self, l: &RefLine) -> (RGBColor, Dash, u32) {
        let (c, d, w) = l.kind.style();
        match l.input {
            Some(i) if self.inputs > 1 && l.kind != RefKind::Slo => (input_colour(i), d, w),
            _ => (c, d, w),
        }
    }

    /// Adds `line` unless one of the same kind is already at the same
    /// place (two inputs run under one SLO share its line); `plain` is its
    /// label without the input's letter, used for the shared line.
    pub fn add_ref(lines: &mut Vec<RefLine>, line: RefLine, plain: &str) {
        if let Some(l) = lines
            .iter_mut()
            .find(|l| l.kind == line.kind && (l.at - line.at).abs() < 1e-9)
        {
            l.label = plain.to_owned();
            l.input = None;
        } else {
            lines.push(line);
        }
    }

    /// The chart as a `<figure>`: title, SVG plot, legend.
    pub fn render(&self) -> Markup {
        let (sx, sy) = self.scales();
        let note = |s: Scale, axis: &str| match s {
            Scale::Log => format!(" · log {axis}"),
            Scale::Linear => String::new(),
        };
        let plot = match self.svg() {
            Ok(Some(svg)) => PreEscaped(svg),
            Ok(None) => PreEscaped("<p class=\"empty\">no data</p>".to_owned()),
            Err(e) => PreEscaped(format!(
                "<p class=\"empty\">chart not drawn: {}</p>",
                maud::html! { (e) }.into_string()
            )),
        };
        let flagged = self.series.iter().any(|s| !s.flagged.is_empty());
        html! {
            figure.chart data-x-scale=(scale_name(sx)) data-y-scale=(scale_name(sy)) {
                figcaption { (self.title) span.scale { (note(sx, "x")) (note(sy, "y")) } }
                (plot)
                div.legend {
                    @for (i, s) in self.series.iter().enumerate() {
                        @let (c, d) = self.style(i);
                        span.entry data-input=(s.input) { (swatch(c, d)) (s.name) }
                    }
                    @for l in self.hlines.iter().chain(&self.vlines) {
                        @let (c, d, _) = self.ref_style(l);
                        span.entry.ref { (swatch(c, d)) (l.label) }
                    }
                    @if flagged {
                        span.entry.ref { span.cross { "×" } "generator could not keep the schedule" }
                    }
                }
            }
        }
    }

    /// The plot as SVG; `None` when there is nothing to draw.
    fn svg(&self) -> Result<Option<String>, String> {
        let (sx, sy) = self.scales();
        let pts = |s: &Series| -> Vec<(f64, f64)> {
            s.points
                .iter()
                .filter_map(|(x, y)| Some((sx.to_plot(*x)?, sy.to_plot(*y)?)))
                .collect()
        };
        let all: Vec<Vec<(f64, f64)>> = self.series.iter().map(pts).collect();
        let xs: Vec<f64> = all
            .iter()
            .flatten()
            .map(|p| p.0)
            .chain(self.vlines.iter().filter_map(|l| sx.to_plot(l.at)))
            .collect();
        let ys: Vec<f64> = all
            .iter()
            .flatten()
            .map(|p| p.1)
            .chain(self.hlines.iter().filter_map(|l| sy.to_plot(l.at)))
            .collect();
        if all.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let (x0, x1) = range(self.x.kind, sx, &xs);
        let (y0, y1) = range(self.y.kind, sy, &ys);
        let x_ticks = self.ticks(
            self.x.kind,
            sx,
            (x0, x1),
            W as f64 - 90.0,
            X_TICK_GAP_PX,
            &xs,
        );
        let y_ticks = self.ticks(
            self.y.kind,
            sy,
            (y0, y1),
            H as f64 - 60.0,
            Y_TICK_GAP_PX,
            &ys,
        );
        let x_label = axis_label(&self.x, sx);
        let y_label = axis_label(&self.y, sy);
        let (xk, yk) = (self.x.kind, self.y.kind);
        let mut buf = String::new();
        {
            let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let mut chart = ChartBuilder::on(&root)
                .margin_top(12)
                .margin_right(22)
                .x_label_area_size(46)
                .y_label_area_size(72)
                .build_cartesian_2d(
                    Ticked {
                        lo: x0,
                        hi: x1,
                        ticks: x_ticks,
                    },
                    Ticked {
                        lo: y0,
                        hi: y1,
                        ticks: y_ticks,
                    },
                )
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_label_formatter(&|v| tick_label(xk, sx.value_at(*v)))
                .y_label_formatter(&|v| tick_label(yk, sy.value_at(*v)))
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 16))
                .bold_line_style(RGBColor(232, 232, 232))
                .light_line_style(TRANSPARENT)
                .axis_style(RGBColor(136, 136, 136))
                .draw()
                .map_err(|e| e.to_string())?;
            for l in &self.hlines {
                if let Some(y) = sy.to_plot(l.at) {
                    draw_ref(&mut chart, vec![(x0, y), (x1, y)], self.ref_style(l))?;
                }
            }
            for l in &self.vlines {
                if let Some(x) = sx.to_plot(l.at) {
                    draw_ref(&mut chart, vec![(x, y0), (x, y1)], self.ref_style(l))?;
                }
            }
            for (i, (s, points)) in self.series.iter().zip(&all).enumerate() {
                let (c, dash) = self.style(i);
                let line = c.stroke_width(2);
                match dash {
                    Dash::Solid => chart
                        .draw_series(LineSeries::new(points.iter().copied(), line))
                        .map(|_| ()),
                    Dash::Dashed => chart
                        .draw_series(DashedLineSeries::new(points.iter().copied(), 7, 4, line))
                        .map(|_| ()),
                    Dash::Dotted => chart
                        .draw_series(DashedLineSeries::new(points.iter().copied(), 2, 3, line))
                        .map(|_| ()),
                    Dash::Long => chart
                        .draw_series(DashedLineSeries::new(points.iter().copied(), 14, 4, line))
                        .map(|_| ()),
                }
                .map_err(|e| e.to_string())?;
                // Flag by the index into the series' own points: those the
                // axes could not show are gone from `points`, so map again.
                let flagged: Vec<(f64, f64)> = s
                    .flagged
                    .iter()
                    .filter_map(|&k| s.points.get(k))
                    .filter_map(|(x, y)| Some((sx.to_plot(*x)?, sy.to_plot(*y)?)))
                    .collect();
                if s.dots {
                    chart
                        .draw_series(
                            points
                                .iter()
                                .filter(|p| !flagged.contains(p))
                                .map(|p| Circle::new(*p, 3, c.filled())),
                        )
                        .map_err(|e| e.to_string())?;
                }
                chart
                    .draw_series(flagged.iter().map(|p| Cross::new(*p, 6, c.stroke_width(3))))
                    .map_err(|e| e.to_string())?;
            }
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(Some(buf))
    }

    /// Tick values (in plot space) for an axis spanning `(lo, hi)` in plot
    /// space over `px` pixels, labels at least `gap` pixels apart; `data` is
    /// the axis' values in plot space.
    fn ticks(
        &self,
        kind: AxisKind,
        scale: Scale,
        (lo, hi): (f64, f64),
        px: f64,
        gap: f64,
        data: &[f64],
    ) -> Vec<f64> {
        let per_unit = px / (hi - lo).max(1e-12);
        let values: Vec<f64> = match (kind, scale) {
            (AxisKind::Steps, _) => {
                let mut v: Vec<f64> = data.iter().map(|p| scale.value_at(*p)).collect();
                v.sort_by(f64::total_cmp);
                v.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
                v
            }
            (_, Scale::Log) => log_ticks(scale.value_at(lo), scale.value_at(hi)),
            // Already four to eight round steps: nothing to thin.
            (_, Scale::Linear) => return linear_ticks(lo, hi),
        };
        thin(
            &values,
            |v| scale.to_plot(v).map_or(f64::NAN, |p| p * per_unit),
            gap,
        )
        .into_iter()
        .filter_map(|v| scale.to_plot(v))
        .filter(|p| *p >= lo - 1e-9 && *p <= hi + 1e-9)
        .collect()
    }
}

fn scale_name(s: Scale) -> &'static str {
    match s {
        Scale::Linear => "linear",
        Scale::Log => "log",
    }
}

fn scale_of(kind: AxisKind, values: impl Iterator<Item = f64>) -> Scale {
    match kind {
        AxisKind::Auto => choose_scale(values),
        AxisKind::Steps => steps_scale(values),
        AxisKind::Zero | AxisKind::Share | AxisKind::SmallShare => Scale::Linear,
    }
}

fn axis_label(axis: &Axis, scale: Scale) -> String {
    match scale {
        Scale::Log => format!("{} (log scale)", axis.label),
        Scale::Linear => axis.label.clone(),
    }
}

/// The plot-space range shown for values `v` (already in plot space).
fn range(kind: AxisKind, scale: Scale, v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    match (kind, scale) {
        (AxisKind::Share, _) => (0.0, 1.0),
        (AxisKind::SmallShare, _) => (0.0, (hi * 1.1).max(0.01)),
        (_, Scale::Log) => {
            let pad = ((hi - lo) * 0.05).max(0.05);
            (lo - pad, hi + pad)
        }
        (AxisKind::Steps, Scale::Linear) => {
            let pad = ((hi - lo) * 0.04).max(0.5);
            ((lo - pad).max(0.0_f64.min(lo)), hi + pad)
        }
        (_, Scale::Linear) => {
            let lo = lo.min(0.0);
            let hi = if hi > lo {
                hi + (hi - lo) * 0.06
            } else {
                lo + 1.0
            };
            (lo, hi)
        }
    }
}

/// Round ticks covering `[lo, hi]`: steps of 1, 2 or 5 times a power of
/// ten, four to eight of them.
pub fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let mag = 10f64.powf((span / 5.0).log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0, 20.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 8.0)
        .unwrap_or(20.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks of a log axis over `[lo, hi]`: 1, 2 and 5 times each power of ten
/// (thinned later by the room they have).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    out
}

/// How round a tick value is: 0 for a power of ten, 1 for 2, 4, 5 or 8
/// times one and for powers of two (the steps of a geometric sweep), 2 for
/// other whole numbers, 3 for the rest. Rounder ticks win when labels would
/// overlap.
fn roundness(v: f64) -> u8 {
    if v <= 0.0 {
        return if v == 0.0 { 0 } else { 3 };
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    let near = |m: f64| (mantissa - m).abs() < 1e-9 || (mantissa - m * 10.0).abs() < 1e-9;
    let power_of_two = (v.log2() - v.log2().round()).abs() < 1e-9;
    if near(1.0) {
        0
    } else if power_of_two || [2.0, 4.0, 5.0, 8.0].into_iter().any(near) {
        1
    } else if (v - v.round()).abs() < 1e-9 {
        2
    } else {
        3
    }
}

/// `values` without those whose labels would come closer than `gap`
/// pixels to a rounder one (by [`roundness`], then in order), sorted.
fn thin(values: &[f64], px: impl Fn(f64) -> f64, gap: f64) -> Vec<f64> {
    let mut order: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| px(*v).is_finite())
        .collect();
    order.sort_by_key(|v| roundness(*v));
    let mut kept: Vec<f64> = Vec::new();
    for v in order {
        if kept.iter().all(|k| (px(*k) - px(v)).abs() >= gap) {
            kept.push(v);
        }
    }
    kept.sort_by(f64::total_cmp);
    kept
}

/// A tick's label: percent on a share axis, else a short number.
fn tick_label(kind: AxisKind, v: f64) -> String {
    match kind {
        AxisKind::Share | AxisKind::SmallShare => {
            let p = v * 100.0;
            if p >= 10.0 || (p - p.round()).abs() < 1e-9 {
                format!("{p:.0}%")
            } else {
                format!("{}%", short(p))
            }
        }
        _ => short(v),
    }
}

/// `v` in at most three significant digits, no trailing zeros.
pub fn short(v: f64) -> String {
    let v = if v.abs() < 1e-12 { 0.0 } else { v };
    if v.abs() >= 100.0 {
        return format!("{:.0}", v);
    }
    let decimals = if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// A linear plot-space axis with the ticks this module chose (plotters'
/// own key points would be 2.5 and 7.5, and evenly spaced in log space).
struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let r = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (r * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
    Long,
}

impl Dash {
    fn nth(n: usize) -> Self {
        [Dash::Solid, Dash::Dashed, Dash::Dotted, Dash::Long][n % 4]
    }

    fn dasharray(self) -> &'static str {
        match self {
            Dash::Solid => "none",
            Dash::Dashed => "7 4",
            Dash::Dotted => "2 3",
            Dash::Long => "14 4",
        }
    }
}

fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// A colour from blue (0) through teal, green and orange to red (1).
fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (43.0, 57.0, 144.0),
        (34.0, 142.0, 170.0),
        (104.0, 178.0, 64.0),
        (234.0, 140.0, 30.0),
        (190.0, 30.0, 45.0),
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let k = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - k as f64;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn input_colour(i: usize) -> RGBColor {
    let (r, g, b) = INPUT_PALETTE[i % INPUT_PALETTE.len()];
    RGBColor(r, g, b)
}

fn css(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn swatch(c: RGBColor, d: Dash) -> Markup {
    PreEscaped(format!(
        r#"<svg width="30" height="10" aria-hidden="true"><line x1="1" y1="5" x2="29" y2="5" stroke="{}" stroke-width="2.5" stroke-dasharray="{}"/></svg>"#,
        css(c),
        d.dasharray()
    ))
}

fn draw_ref<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    points: Vec<(f64, f64)>,
    (c, dash, width): (RGBColor, Dash, u32),
) -> Result<(), String> {
    let (size, gap) = if dash == Dash::Dotted { (2, 4) } else { (6, 4) };
    chart
        .draw_series(DashedLineSeries::new(
            points,
            size,
            gap,
            c.stroke_width(width),
        ))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_axis_is_logarithmic_only_past_twenty_times() {
        assert_eq!(choose_scale([91.0, 137.0]), Scale::Linear);
        assert_eq!(choose_scale([10.0, 199.0]), Scale::Linear);
        assert_eq!(choose_scale([10.0, 201.0]), Scale::Log);
        assert_eq!(choose_scale([91.0, 137.0, 10_000.0]), Scale::Log);
        // Zero or negative values cannot sit on a log axis.
        assert_eq!(choose_scale([0.0, 1.0, 1000.0]), Scale::Linear);
        assert_eq!(choose_scale([f64::NAN, 1.0, 1000.0]), Scale::Log);
        assert_eq!(choose_scale([]), Scale::Linear);
    }

    #[test]
    fn linear_ticks_step_by_one_two_or_five() {
        assert_eq!(linear_ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            linear_ticks(0.0, 33.0),
            vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
        for (lo, hi) in [(0.0, 0.37), (0.0, 7.5), (3.0, 9000.0), (0.0, 1.0)] {
            let t = linear_ticks(lo, hi);
            assert!((4..=9).contains(&t.len()), "{lo}..{hi}: {t:?}");
            let step = t[1] - t[0];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
                "{lo}..{hi}: step {step}"
            );
        }
    }

    #[test]
    fn log_ticks_are_one_two_five_per_decade() {
        assert_eq!(
            log_ticks(8.0, 600.0),
            vec![10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
    }

    #[test]
    fn geometric_steps_keep_their_own_ticks_when_labels_crowd() {
        // Steps 2..32 with search steps between 8 and 16, on a log axis of
        // 475 px a decade: the powers of two stay, crowded others go.
        let steps = [2.0, 4.0, 8.0, 12.0, 14.0, 15.0, 16.0, 32.0];
        assert_eq!(steps_scale(steps), Scale::Log);
        assert_eq!(steps_scale([10.0, 20.0, 30.0, 40.0, 50.0]), Scale::Linear);
        assert_eq!(steps_scale([2.0, 4.0, 8.0]), Scale::Linear);
        assert_eq!(steps_scale([1.0, 2.0, 4.0, 8.0]), Scale::Log);
        assert_eq!(
            thin(&steps, |v| v.log10() * 475.0, 38.0),
            vec![2.0, 4.0, 8.0, 12.0, 16.0, 32.0]
        );
        assert_eq!(roundness(2.5), 3);
        assert_eq!(roundness(7.5), 3);
        assert_eq!(roundness(64.0), 1);
        assert_eq!(roundness(1000.0), 0);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short(2.0), "2");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(12.5), "12.5");
        assert_eq!(short(10_000.0), "10000");
        assert_eq!(tick_label(AxisKind::Share, 0.5), "50%");
        assert_eq!(tick_label(AxisKind::SmallShare, 0.005), "0.5%");
    }

    fn latency_chart(ys: &[f64]) -> Chart {
        let mut c = Chart::new(
            "TTFT <p99> & more",
            Axis::new("offered load (requests / s)", AxisKind::Steps),
            Axis::new("ms", AxisKind::Auto),
        );
        c.series.push(Series {
            name: "p99 \"tail\"".into(),
            points: ys
                .iter()
                .enumerate()
                .map(|(i, y)| ((i + 1) as f64, *y))
                .collect(),
            dots: true,
            flagged: vec![1],
            ..Series::default()
        });
        c
    }

    #[test]
    fn charts_escape_text_and_draw_lines_crosses_and_slo_lines() {
        let mut c = latency_chart(&[91.0, 137.0, 120.0]);
        c.hlines.push(RefLine {
            at: 500.0,
            label: "SLO ttft 500 ms".into(),
            kind: RefKind::Slo,
            input: None,
        });
        let html = c.render().into_string();
        assert!(html.contains("TTFT &lt;p99&gt; &amp; more"), "{html}");
        assert!(html.contains("p99 &quot;tail&quot;") || html.contains("p99 \"tail\""));
        assert!(html.contains("<polyline") && html.contains("<circle"));
        assert!(html.contains("SLO ttft 500 ms") && html.contains("generator could not"));
        // 91..500 spans 5.5x: linear.
        assert!(html.contains("data-y-scale=\"linear\""));
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    }

    #[test]
    fn a_wide_latency_series_gets_a_log_axis_with_round_ticks() {
        let html = latency_chart(&[91.0, 137.0, 10_000.0])
            .render()
            .into_string();
        assert!(html.contains("data-y-scale=\"log\""), "{html}");
        assert!(html.contains("(log scale)"));
        assert!(
            html.contains("\n100\n") && html.contains("\n1000\n"),
            "{html}"
        );
    }

    #[test]
    fn a_chart_without_points_says_so() {
        let c = Chart::new(
            "x",
            Axis::new("a", AxisKind::Zero),
            Axis::new("b", AxisKind::Zero),
        );
        assert!(c.render().into_string().contains("no data"));
    }
}
