//! The HTML report: one self-contained file (inline CSS and SVG, no
//! script, no external resource) with a metadata header per input, a delta
//! table when two inputs of one kind are compared, and charts in which
//! every input is overlaid, one colour each.
//!
//! The markup is written with `maud`: its `html!` templates are checked at
//! compile time and escape every interpolated string, so a path or a model
//! name with `<` or `&` cannot break the page; only the SVG that plotters
//! drew is inserted as is.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};

#[cfg(test)]
use super::charts::Scale;
use super::charts::{Axis, AxisKind, Chart, RefKind, RefLine, Series, short};
use super::{Input, RunReport, SweepReport, render_table};
use crate::record::ResultRow;
use crate::record::run_meta::{RunConfig, key};
use crate::record::summary::{Slo, Summary};
use crate::record::sweep_table::{SweepMode, SweepStep};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1340px;color:#222;padding:0 12px}h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}pre{background:#f6f8fa;padding:12px;overflow-x:auto;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:14px}figure.chart{margin:0;border:1px solid #e3e3e3;background:#fff;padding:8px 8px 6px;width:640px}figcaption{font-weight:600;font-size:14px;margin:0 0 2px 4px}.scale{font-weight:400;color:#777;font-size:12px}.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;margin:2px 4px}.entry{display:inline-flex;align-items:center;gap:5px;white-space:nowrap}.entry.ref{color:#555}.cross{font-weight:700;font-size:15px}.empty{color:#999;text-align:center;padding:60px 0}table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}table.meta td,table.meta th{text-align:left;vertical-align:top}table.meta td{font-family:ui-monospace,monospace;word-break:break-all}details{margin:6px 0}.better{color:#1a7f37}.worse{color:#b42318}.gen{color:#b42318;font-weight:600}tr.differs td{background:#fff4e0}";

/// Letter of the `i`-th input.
fn letter(i: usize) -> String {
    char::from(b'A' + u8::try_from(i % 26).unwrap_or(0)).to_string()
}

/// The HTML report: one file, no external resources.
pub fn render_html(inputs: &[Input]) -> String {
    let many = inputs.len() > 1;
    let runs: Vec<(usize, &RunReport)> = inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| match input {
            Input::Run(r) => Some((i, r.as_ref())),
            Input::Sweep(_) => None,
        })
        .collect();
    let sweeps: Vec<(usize, &SweepReport)> = inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| match input {
            Input::Sweep(s) => Some((i, s.as_ref())),
            Input::Run(_) => None,
        })
        .collect();
    let page = html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                title { "llm-replay report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "llm-replay report" }
                (meta_table(inputs))
                @if let [(_, a), (_, b)] = runs.as_slice() {
                    h2 { "Comparison (B against A)" }
                    (run_delta(a, b))
                }
                @if let [(_, a), (_, b)] = sweeps.as_slice() {
                    h2 { "Comparison (B against A)" }
                    (sweep_delta(a, b))
                }
                // What each input is, in numbers, before any chart.
                @for (i, input) in inputs.iter().enumerate() {
                    @match input {
                        Input::Run(r) => {
                            h2 { (label(i, many)) "Run " (r.path) }
                            details open[!many] {
                                summary { "summary, as the replay prints it" }
                                pre { (r.summary.to_string()) }
                            }
                        }
                        Input::Sweep(s) => {
                            h2 { (label(i, many)) "Sweep " (s.dir) }
                            (steps_table(s))
                            details open[!many] {
                                summary { "steps, knee and capacity, as the sweep prints them" }
                                pre { (render_table(&s.steps, &s.capacity)) }
                            }
                        }
                    }
                }
                @if !sweeps.is_empty() {
                    h2 { @if sweeps.len() > 1 { "Sweeps, overlaid" } @else { "Sweep charts" } }
                    div.charts { @for c in sweep_charts(&sweeps, many) { (c.render()) } }
                }
                @if !runs.is_empty() {
                    h2 { @if runs.len() > 1 { "Runs, overlaid" } @else { "Run charts" } }
                    div.charts { @for c in run_charts(&runs, many) { (c.render()) } }
                }
                // Charts of one input only: a line per step, server gauges.
                @for (i, input) in inputs.iter().enumerate() {
                    @match input {
                        Input::Run(r) => {
                            @let own: Vec<Chart> = server_charts(&r.rows, &r.server_metrics);
                            @if !own.is_empty() {
                                h2 { (label(i, many)) "Server metrics" }
                                div.charts { @for c in own { (c.render()) } }
                            }
                        }
                        Input::Sweep(s) => {
                            h2 { (label(i, many)) "Distributions per step" }
                            div.charts {
                                (distribution(s, "TTFT from the schedule, per step", |l| &l.0, "ttft",
                                    s.slo.and_then(|o| o.ttft_us)).render())
                                (distribution(s, "E2E from the schedule, per step", |l| &l.1, "e2e",
                                    s.slo.and_then(|o| o.e2e_us)).render())
                            }
                        }
                    }
                }
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

fn label(i: usize, many: bool) -> String {
    if many {
        format!("{}: ", letter(i))
    } else {
        String::new()
    }
}

/// A series name, prefixed with the input's letter when there are several.
fn named(i: usize, many: bool, name: &str) -> String {
    if many {
        format!("{} {name}", letter(i))
    } else {
        name.to_owned()
    }
}

/// The metadata header: one column per input, every figure from the
/// results files' key-value metadata.
fn meta_table(inputs: &[Input]) -> Markup {
    let metas: Vec<(&str, &BTreeMap<String, String>)> = inputs
        .iter()
        .map(|i| match i {
            Input::Run(r) => (r.path.as_str(), &r.meta),
            Input::Sweep(s) => (s.dir.as_str(), &s.meta),
        })
        .collect();
    let configs: Vec<Option<RunConfig>> = metas
        .iter()
        .map(|(_, m)| RunConfig::from_metadata(m))
        .collect();
    let get =
        |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_else(|| "-".into());
    let target = |i: usize| -> String {
        let url = get(metas[i].1, key::TARGET_URL);
        let sim = configs[i]
            .as_ref()
            .and_then(|c| c.target.get("embedded_simulator"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if sim {
            format!("{url} (embedded simulator)")
        } else {
            url
        }
    };
    let api = |i: usize| -> String {
        configs[i]
            .as_ref()
            .and_then(|c| c.target.get("api"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let schedule = |i: usize| -> String {
        match &inputs[i] {
            Input::Sweep(s) => {
                let mode = s.steps.first().map_or("-", |st| st.mode.as_str());
                let loads: Vec<String> = s.steps.iter().map(|st| short(st.offered)).collect();
                format!("{mode} sweep: {}", loads.join(", "))
            }
            Input::Run(_) => configs[i].as_ref().map_or("-".into(), |c| {
                let mut parts = Vec::new();
                if let Ok(v) = serde_json::to_value(&c.schedule) {
                    flatten("", &v, &mut parts);
                }
                if let Some(v) = &c.closed_loop {
                    flatten("closed_loop", v, &mut parts);
                }
                parts.join(" ")
            }),
        }
    };
    let slo = |i: usize| -> String {
        match &inputs[i] {
            Input::Sweep(s) => s.slo.map_or("-".into(), |o| o.to_string()),
            Input::Run(r) => r
                .summary
                .goodput
                .as_ref()
                .map_or("-".into(), |g| g.slo.to_string()),
        }
    };
    let state = |i: usize| -> String {
        let m = metas[i].1;
        let mut parts = Vec::new();
        if let Some(by) = m.get(key::STOPPED_BY) {
            parts.push(format!("stopped by {by}"));
        }
        if let Some(n) = m.get(key::REQUESTS_NOT_REACHED).filter(|n| *n != "0") {
            parts.push(format!("{n} scheduled requests not reached"));
        }
        if !m.contains_key(key::SUMMARY) && matches!(inputs[i], Input::Run(_)) {
            parts.push("no summary written: the run did not finish".into());
        }
        if parts.is_empty() {
            "complete".into()
        } else {
            parts.join("; ")
        }
    };
    type Row<'a> = (&'a str, Box<dyn Fn(usize) -> String + 'a>);
    let rows: Vec<Row<'_>> = vec![
        ("target", Box::new(target)),
        ("API", Box::new(api)),
        ("model", Box::new(|i| get(metas[i].1, key::MODEL))),
        (
            "trace",
            Box::new(|i| {
                format!(
                    "{} ({} rows)",
                    get(metas[i].1, key::TRACE_FILE),
                    get(metas[i].1, key::TRACE_ROWS)
                )
            }),
        ),
        (
            "trace SHA-256",
            Box::new(|i| get(metas[i].1, key::TRACE_SHA256)),
        ),
        ("seed", Box::new(|i| get(metas[i].1, key::SEED))),
        ("schedule", Box::new(schedule)),
        ("SLO", Box::new(slo)),
        ("started", Box::new(|i| get(metas[i].1, key::STARTED_AT))),
        (
            "llm-replay",
            Box::new(|i| {
                format!(
                    "{} (results format {})",
                    get(metas[i].1, key::TOOL_VERSION),
                    get(metas[i].1, key::RESULTS_VERSION)
                )
            }),
        ),
        ("state", Box::new(state)),
    ];
    let many = inputs.len() > 1;
    let differing = differing_options(&configs);
    html! {
        table.meta {
            tr {
                th {}
                @for (i, (path, _)) in metas.iter().enumerate() {
                    th { (label(i, many)) (path) }
                }
            }
            @for (name, f) in &rows {
                @let values: Vec<String> = (0..metas.len()).map(f).collect();
                // Where compared inputs differ (another trace, seed or
                // version), the row is highlighted.
                @let differs = values.windows(2).any(|w| w[0] != w[1]);
                tr class=[differs.then_some("differs")] { th { (name) } @for v in &values { td { (v) } } }
            }
            tr {
                th { "flags" }
                @for c in &configs {
                    td {
                        @match c {
                            Some(c) => details {
                                summary { "target and run options (as recorded)" }
                                pre { (serde_json::to_string_pretty(c).unwrap_or_default()) }
                            },
                            None => "-",
                        }
                    }
                }
            }
            @if differing.iter().any(|w| !w.is_empty()) {
                tr.differs {
                    th { "options that differ" }
                    @for words in &differing {
                        td { @for w in words { div { (w) } } }
                    }
                }
            }
        }
    }
}

/// For each input, the recorded options (flattened `key=value`) whose
/// values are not the same in every input: what tells two compared runs
/// apart (`target.sim.max_batch=8` against `=16`). The target URL and the
/// per-run seeds of the schedule are left out (shown above, or always
/// differing); nothing when there is one input.
fn differing_options(configs: &[Option<RunConfig>]) -> Vec<Vec<String>> {
    if configs.len() < 2 {
        return Vec::new();
    }
    let maps: Vec<BTreeMap<String, String>> = configs
        .iter()
        .map(|c| {
            let mut words = Vec::new();
            if let Some(v) = c.as_ref().and_then(|c| serde_json::to_value(c).ok()) {
                flatten("", &v, &mut words);
            }
            words
                .into_iter()
                .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect()
        })
        .collect();
    let keys: std::collections::BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
    let differ: Vec<&String> = keys
        .into_iter()
        .filter(|k| k.as_str() != "target.url")
        .filter(|k| maps.windows(2).any(|w| w[0].get(*k) != w[1].get(*k)))
        .collect();
    maps.iter()
        .map(|m| {
            differ
                .iter()
                .map(|k| format!("{k}={}", m.get(*k).map_or("(none)", String::as_str)))
                .collect()
        })
        .collect()
}

/// `v` as `key=value` words, nested keys joined by dots, nulls left out
/// (`mode=rate rate=10 arrivals.kind=poisson limit.duration_ns=8000000000`).
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Null => {}
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(&join(k), v, out);
            }
        }
        serde_json::Value::String(s) => out.push(format!("{prefix}={s}")),
        other => out.push(format!("{prefix}={other}")),
    }
}

/// One row of a delta table: name, A, B, and whether lower is better.
type Delta = (String, Option<f64>, Option<f64>, bool);

fn delta_table(rows: &[Delta]) -> Markup {
    html! {
        table.delta {
            tr { th { "figure" } th { "A" } th { "B" } th { "B / A" } th { "B − A" } }
            @for (name, a, b, lower_better) in rows {
                @let ratio = match (a, b) { (Some(a), Some(b)) if *a != 0.0 => Some(b / a), _ => None };
                @let class = match ratio {
                    Some(r) if (r - 1.0).abs() < 0.02 => "",
                    Some(r) if (r < 1.0) == *lower_better => "better",
                    Some(_) => "worse",
                    None => "",
                };
                tr {
                    th { (name) }
                    td { (a.map_or("-".into(), short)) }
                    td { (b.map_or("-".into(), short)) }
                    td class=(class) { (ratio.map_or("-".into(), |r| format!("{r:.2}×"))) }
                    td { @match (a, b) { (Some(a), Some(b)) => (signed(b - a)), _ => "-" } }
                }
            }
        }
    }
}

/// `d` with its sign (a true minus sign).
fn signed(d: f64) -> String {
    if d < 0.0 {
        format!("−{}", short(-d))
    } else {
        format!("+{}", short(d))
    }
}

fn run_delta(a: &RunReport, b: &RunReport) -> Markup {
    let row = |name: &str, f: &dyn Fn(&RunReport) -> Option<f64>, lower: bool| -> Delta {
        (name.to_owned(), f(a), f(b), lower)
    };
    fn s(r: &RunReport) -> &Summary {
        &r.summary
    }
    let rows = vec![
        row("requests", &|r| Some(r.summary.requests as f64), false),
        row("errors", &|r| Some(r.summary.failed() as f64), true),
        row(
            "throughput (ok req/s)",
            &|r| Some(s(r).request_throughput),
            false,
        ),
        row(
            "output tokens/s",
            &|r| Some(s(r).output_token_throughput),
            false,
        ),
        row(
            "TTFT p50 ms (from schedule)",
            &|r| Some(s(r).ttft_from_schedule.p50_ms),
            true,
        ),
        row(
            "TTFT p90 ms",
            &|r| Some(s(r).ttft_from_schedule.p90_ms),
            true,
        ),
        row(
            "TTFT p99 ms",
            &|r| Some(s(r).ttft_from_schedule.p99_ms),
            true,
        ),
        row("TPOT p50 ms", &|r| Some(s(r).tpot.p50_ms), true),
        row("TPOT p99 ms", &|r| Some(s(r).tpot.p99_ms), true),
        row("ITL p50 ms", &|r| Some(s(r).itl.p50_ms), true),
        row("ITL p99 ms", &|r| Some(s(r).itl.p99_ms), true),
        row(
            "E2E p50 ms (from schedule)",
            &|r| Some(s(r).e2e_from_schedule.p50_ms),
            true,
        ),
        row("E2E p99 ms", &|r| Some(s(r).e2e_from_schedule.p99_ms), true),
        row(
            "goodput (% meeting the SLO)",
            &|r| r.summary.goodput.as_ref().map(|g| g.fraction * 100.0),
            false,
        ),
        row(
            "send lag p99 ms",
            &|r| Some(s(r).fidelity.send_lag.p99_ms),
            true,
        ),
    ];
    delta_table(&rows)
}

fn sweep_delta(a: &SweepReport, b: &SweepReport) -> Markup {
    let users = a.is_users() || b.is_users();
    let unit = if users { "users" } else { "req/s" };
    let max = |s: &SweepReport, f: fn(&SweepStep) -> f64| s.steps.iter().map(f).reduce(f64::max);
    let mut rows: Vec<Delta> = vec![
        (
            format!("knee ({unit})"),
            a.capacity.conclusions(users).0,
            b.capacity.conclusions(users).0,
            false,
        ),
        (
            format!("SLO capacity ({unit})"),
            a.capacity.conclusions(users).1,
            b.capacity.conclusions(users).1,
            false,
        ),
        (
            "peak throughput (ok req/s)".into(),
            max(a, |s| s.request_throughput),
            max(b, |s| s.request_throughput),
            false,
        ),
        (
            "peak output tokens/s".into(),
            max(a, |s| s.output_token_throughput),
            max(b, |s| s.output_token_throughput),
            false,
        ),
    ];
    // Step by step where both ran the same load.
    for sa in &a.steps {
        let Some(sb) = b
            .steps
            .iter()
            .find(|sb| sb.mode == sa.mode && (sb.offered - sa.offered).abs() < 1e-9)
        else {
            continue;
        };
        let at = format!("{}={}", sa.mode, short(sa.offered));
        rows.push((
            format!("{at}: TTFT p99 ms"),
            Some(sa.ttft_p99_ms),
            Some(sb.ttft_p99_ms),
            true,
        ));
        rows.push((
            format!("{at}: TPOT p99 ms"),
            Some(sa.tpot_p99_ms),
            Some(sb.tpot_p99_ms),
            true,
        ));
        rows.push((
            format!("{at}: throughput (ok req/s)"),
            Some(sa.request_throughput),
            Some(sb.request_throughput),
            false,
        ));
    }
    delta_table(&rows)
}

fn steps_table(s: &SweepReport) -> Markup {
    html! {
        table {
            tr {
                th { "offered" } th { "sent req/s" } th { "ok req/s" } th { "errors" } th { "goodput" }
                th { "TTFT p99 ms" } th { "TPOT p99 ms" } th { "ITL p99 ms" } th { "E2E p99 ms" }
                th { "send lag p99 ms" } th { "generator" } th { "results" }
            }
            @for st in &s.steps {
                tr {
                    td { (format!("{}={}", st.mode, short(st.offered))) }
                    td { (format!("{:.2}", st.achieved_rate)) }
                    td { (format!("{:.2}", st.request_throughput)) }
                    td { (st.errors) }
                    td { (st.goodput_fraction.map_or("-".into(), |g| format!("{:.1}%", g * 100.0))) }
                    td { (format!("{:.0}", st.ttft_p99_ms)) }
                    td { (format!("{:.1}", st.tpot_p99_ms)) }
                    td { (format!("{:.1}", st.itl_p99_ms)) }
                    td { (format!("{:.0}", st.e2e_p99_ms)) }
                    td { (format!("{:.2}", st.send_lag_p99_ms)) }
                    @if st.generator_bottleneck { td.gen { "× behind schedule" } } @else { td { "kept up" } }
                    td { (st.results_path) }
                }
            }
        }
    }
}

/// Adds the SLO threshold line (µs) of `what` to `lines`, once for all
/// inputs that share it.
fn slo_line(lines: &mut Vec<RefLine>, input: usize, many: bool, what: &str, us: Option<u64>) {
    if let Some(us) = us {
        let ms = us as f64 / 1e3;
        let label = format!("SLO {what} {} ms", short(ms));
        add_ref(lines, input, many, ms, RefKind::Slo, &label);
    }
}

/// Adds a reference line of `input` at `at` to `lines`.
fn add_ref(
    lines: &mut Vec<RefLine>,
    input: usize,
    many: bool,
    at: f64,
    kind: RefKind,
    label: &str,
) {
    Chart::add_ref(
        lines,
        RefLine {
            at,
            label: named(input, many, label),
            kind,
            input: Some(input),
        },
        label,
    );
}

impl SweepReport {
    fn is_users(&self) -> bool {
        self.steps
            .iter()
            .any(|st| st.mode == SweepMode::Concurrency)
    }
}

fn sweep_charts(sweeps: &[(usize, &SweepReport)], many: bool) -> Vec<Chart> {
    let users = sweeps.iter().any(|(_, s)| s.is_users());
    let load_axis = || {
        Axis::new(
            if users {
                "virtual users (closed loop)"
            } else {
                "offered load (requests / s)"
            },
            AxisKind::Steps,
        )
    };
    let x_load = move |st: &SweepStep| if users { st.offered } else { st.offered_rate };
    let tput_axis = || Axis::new("achieved throughput (ok requests / s)", AxisKind::Auto);
    let ms = || Axis::new("ms", AxisKind::Auto);
    let inputs = sweeps.len();
    // One chart: for each sweep, a series per (name, y), x from `x`.
    type Pick = fn(&SweepStep) -> f64;
    let chart = |title: &str,
                 x_axis: Axis,
                 y_axis: Axis,
                 x: &dyn Fn(&SweepStep) -> f64,
                 ys: &[(&str, Pick)],
                 slo: &dyn Fn(&SweepReport) -> Option<u64>,
                 slo_name: &str,
                 markers: bool| {
        let mut c = Chart::new(title, x_axis, y_axis);
        c.inputs = inputs;
        for (i, s) in sweeps {
            for (name, y) in ys {
                // A figure the steps do not have (goodput without an SLO)
                // gets no line and no legend entry.
                if s.steps.iter().all(|st| !y(st).is_finite()) {
                    continue;
                }
                c.series.push(Series {
                    name: named(*i, many, name),
                    input: *i,
                    points: s.steps.iter().map(|st| (x(st), y(st))).collect(),
                    dots: true,
                    flagged: s
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(_, st)| st.generator_bottleneck)
                        .map(|(k, _)| k)
                        .collect(),
                });
            }
            slo_line(&mut c.hlines, *i, many, slo_name, slo(s));
            if markers {
                let (knee, capacity) = s.capacity.conclusions(users);
                let unit = if users { "users" } else { "req/s" };
                if let Some(k) = knee {
                    let label = format!("knee {} {unit}", short(k));
                    add_ref(&mut c.vlines, *i, many, k, RefKind::Knee, &label);
                }
                if let Some(k) = capacity {
                    // Every step passed: the capacity is at least the top.
                    let at_least = if s.capacity.slo_capacity_lower_bound {
                        "≥ "
                    } else {
                        ""
                    };
                    let label = format!("SLO capacity {at_least}{} {unit}", short(k));
                    add_ref(&mut c.vlines, *i, many, k, RefKind::Capacity, &label);
                }
            }
        }
        c
    };
    let ttft = |s: &SweepReport| s.slo.and_then(|o| o.ttft_us);
    let tpot = |s: &SweepReport| s.slo.and_then(|o| o.tpot_us);
    let e2e = |s: &SweepReport| s.slo.and_then(|o| o.e2e_us);
    let none = |_: &SweepReport| None;
    let tput = |st: &SweepStep| st.request_throughput;
    let mut charts = vec![
        chart(
            "TTFT from the schedule vs achieved throughput",
            tput_axis(),
            ms(),
            &tput,
            &[("p50", |s| s.ttft_p50_ms), ("p99", |s| s.ttft_p99_ms)],
            &ttft,
            "ttft",
            false,
        ),
        chart(
            "TPOT vs achieved throughput",
            tput_axis(),
            ms(),
            &tput,
            &[("p50", |s| s.tpot_p50_ms), ("p99", |s| s.tpot_p99_ms)],
            &tpot,
            "tpot",
            false,
        ),
        chart(
            "TTFT from the schedule vs offered load",
            load_axis(),
            ms(),
            &x_load,
            &[
                ("p50", |s| s.ttft_p50_ms),
                ("p90", |s| s.ttft_p90_ms),
                ("p99", |s| s.ttft_p99_ms),
            ],
            &ttft,
            "ttft",
            true,
        ),
        chart(
            "TPOT vs offered load",
            load_axis(),
            ms(),
            &x_load,
            &[
                ("p50", |s| s.tpot_p50_ms),
                ("p90", |s| s.tpot_p90_ms),
                ("p99", |s| s.tpot_p99_ms),
            ],
            &tpot,
            "tpot",
            true,
        ),
        chart(
            "ITL (inter-token latency) vs offered load",
            load_axis(),
            ms(),
            &x_load,
            &[("p50", |s| s.itl_p50_ms), ("p99", |s| s.itl_p99_ms)],
            &none,
            "itl",
            true,
        ),
        chart(
            "E2E from the schedule vs offered load",
            load_axis(),
            ms(),
            &x_load,
            &[
                ("p50", |s| s.e2e_p50_ms),
                ("p90", |s| s.e2e_p90_ms),
                ("p99", |s| s.e2e_p99_ms),
            ],
            &e2e,
            "e2e",
            true,
        ),
        chart(
            "Throughput vs offered load",
            load_axis(),
            Axis::new("requests / s", AxisKind::Zero),
            &x_load,
            &[
                ("offered", |s| s.offered_rate),
                ("sent", |s| s.achieved_rate),
                ("completed ok", |s| s.request_throughput),
                ("meeting the SLO", |s| s.goodput_rate.unwrap_or(f64::NAN)),
            ],
            &none,
            "",
            true,
        ),
        chart(
            "Output tokens / s vs offered load",
            load_axis(),
            Axis::new("tokens / s", AxisKind::Zero),
            &x_load,
            &[("output tokens", |s| s.output_token_throughput)],
            &none,
            "",
            true,
        ),
        chart(
            "Error rate vs offered load",
            load_axis(),
            Axis::new("share of requests failed", AxisKind::SmallShare),
            &x_load,
            &[("errors", |s| {
                if s.requests > 0 {
                    s.errors as f64 / s.requests as f64
                } else {
                    f64::NAN
                }
            })],
            &none,
            "",
            true,
        ),
    ];
    if sweeps.iter().any(|(_, s)| s.slo.is_some()) {
        let mut c = chart(
            "Goodput: share of requests meeting the SLO",
            load_axis(),
            Axis::new("share of requests (failures counted)", AxisKind::Share),
            &x_load,
            &[("meeting the SLO", |s| {
                s.goodput_fraction.unwrap_or(f64::NAN)
            })],
            &none,
            "",
            true,
        );
        for (i, s) in sweeps {
            if let Some(t) = s.capacity.goodput_target {
                let label = format!("goodput target {}%", short(t * 100.0));
                add_ref(&mut c.hlines, *i, many, t, RefKind::Slo, &label);
            }
        }
        charts.push(c);
    }
    charts
}

/// Sorted `values` as a CDF: at most ~400 points, the last at 1.
fn cdf_points(mut values: Vec<f64>) -> Vec<(f64, f64)> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let step = (n / 400).max(1);
    let mut points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(i, v)| (*v, (i + 1) as f64 / n as f64))
        .collect();
    if let Some(last) = values.last() {
        points.push((*last, 1.0));
    }
    points
}

/// Most values a distribution is sorted from.
const CDF_SAMPLE: usize = 200_000;

/// Every k-th of `total` values, at most about [`CDF_SAMPLE`] of them: a
/// long run has millions of token gaps, and a 400-point curve does not
/// need them all (a systematic sample keeps the shape; the percentiles in
/// the tables still come from every value).
fn every_kth(total: usize, values: impl Iterator<Item = f64>) -> Vec<f64> {
    values.step_by(total.div_ceil(CDF_SAMPLE).max(1)).collect()
}

/// One CDF per step of one sweep.
fn distribution(
    s: &SweepReport,
    title: &str,
    pick: fn(&super::Latencies) -> &Vec<f64>,
    what: &str,
    slo_us: Option<u64>,
) -> Chart {
    let mut c = Chart::new(
        title,
        Axis::new("ms", AxisKind::Auto),
        Axis::new("share of ok requests", AxisKind::Share),
    );
    c.ordered = true;
    c.series = s
        .steps
        .iter()
        .zip(&s.latencies)
        .map(|(st, l)| Series {
            name: format!("{}={}", st.mode, short(st.offered)),
            points: cdf_points(pick(l).clone()),
            ..Series::default()
        })
        .collect();
    slo_line(&mut c.vlines, 0, false, what, slo_us);
    c
}

/// A run's per-second timeline: scheduled, sent and completed per second,
/// in flight, and TTFT percentiles by scheduled second.
struct Timeline {
    offered: Vec<f64>,
    sent: Vec<f64>,
    done: Vec<f64>,
    inflight: Vec<f64>,
    ttft_p50: Vec<(f64, f64)>,
    ttft_p99: Vec<(f64, f64)>,
}

/// The `q` quantile of sorted `v` (NaN when empty), by the summary's one
/// method.
fn quantile(v: &[f64], q: f64) -> f64 {
    crate::record::summary::quantile_by_rank(v.len(), q, |k| v[k]).unwrap_or(f64::NAN)
}

fn timeline(rows: &[ResultRow]) -> Option<Timeline> {
    let t0 = rows.iter().map(|r| r.scheduled_at_us).min()?;
    let end = rows
        .iter()
        .map(|r| {
            r.completed_at_us
                .unwrap_or(r.scheduled_at_us)
                .max(r.scheduled_at_us)
        })
        .max()
        .unwrap_or(t0);
    let secs = usize::try_from((end - t0) / 1_000_000 + 1)
        .unwrap_or(1)
        .min(86_400);
    let bin = |t: i64| {
        usize::try_from((t - t0) / 1_000_000)
            .unwrap_or(0)
            .min(secs - 1)
    };
    let (mut offered, mut sent, mut done) = (vec![0f64; secs], vec![0f64; secs], vec![0f64; secs]);
    let mut inflight = vec![0f64; secs];
    let mut ttft: Vec<Vec<f64>> = vec![Vec::new(); secs];
    for r in rows {
        offered[bin(r.scheduled_at_us)] += 1.0;
        if let Some(s) = r.sent_at_us {
            sent[bin(s)] += 1.0;
            let stop = r.completed_at_us.map_or(secs - 1, bin);
            for v in &mut inflight[bin(s)..=stop.max(bin(s))] {
                *v += 1.0;
            }
        }
        if let Some(c) = r.completed_at_us {
            done[bin(c)] += 1.0;
        }
        if let Some(t) = r.ttft_from_schedule_us() {
            ttft[bin(r.scheduled_at_us)].push(t as f64 / 1e3);
        }
    }
    for v in &mut ttft {
        v.sort_by(f64::total_cmp);
    }
    let pct = |q: f64| -> Vec<(f64, f64)> {
        ttft.iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(i, v)| (i as f64, quantile(v, q)))
            .collect()
    };
    Some(Timeline {
        ttft_p50: pct(0.5),
        ttft_p99: pct(0.99),
        offered,
        sent,
        done,
        inflight,
    })
}

fn run_charts(runs: &[(usize, &RunReport)], many: bool) -> Vec<Chart> {
    let secs = || Axis::new("seconds since the first scheduled request", AxisKind::Zero);
    let share = |what: &str| Axis::new(format!("share of {what}"), AxisKind::Share);
    let ms = || Axis::new("ms", AxisKind::Auto);
    let per_s = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect()
    };
    let mut rate = Chart::new(
        "Offered vs achieved rate",
        secs(),
        Axis::new("requests / s", AxisKind::Zero),
    );
    let mut inflight = Chart::new(
        "Requests in flight",
        secs(),
        Axis::new("requests", AxisKind::Zero),
    );
    let mut ttft_t = Chart::new("TTFT from the schedule, by scheduled second", secs(), ms());
    let mut ttft = Chart::new(
        "TTFT from the schedule: distribution",
        ms(),
        share("ok requests"),
    );
    let mut e2e = Chart::new(
        "E2E from the schedule: distribution",
        ms(),
        share("ok requests"),
    );
    let mut tokens = Chart::new(
        "TPOT and ITL: distribution",
        ms(),
        share("ok requests (TPOT) or token gaps (ITL)"),
    );
    let mut lag = Chart::new(
        "Send lag (actual minus scheduled send): distribution",
        ms(),
        share("sent requests"),
    );
    let inputs = runs.len();
    for c in [
        &mut rate,
        &mut inflight,
        &mut ttft_t,
        &mut ttft,
        &mut e2e,
        &mut tokens,
        &mut lag,
    ] {
        c.inputs = inputs;
    }
    for (i, r) in runs {
        let i = *i;
        let line = |name: &str, points: Vec<(f64, f64)>| Series {
            name: named(i, many, name),
            input: i,
            points,
            ..Series::default()
        };
        let slo = r.summary.goodput.as_ref().map(|g| g.slo);
        let slo_of = |f: fn(&Slo) -> Option<u64>| slo.as_ref().and_then(f);
        if let Some(t) = timeline(&r.rows) {
            rate.series.push(line("scheduled", per_s(&t.offered)));
            rate.series.push(line("sent", per_s(&t.sent)));
            rate.series.push(line("completed", per_s(&t.done)));
            inflight.series.push(line("in flight", per_s(&t.inflight)));
            ttft_t.series.push(line("p50", t.ttft_p50));
            ttft_t.series.push(line("p99", t.ttft_p99));
        }
        slo_line(&mut ttft_t.hlines, i, many, "ttft", slo_of(|s| s.ttft_us));
        let ok = || r.rows.iter().filter(|row| row.is_ok());
        let ms_of = |f: fn(&ResultRow) -> Option<i64>| -> Vec<f64> {
            ok().filter_map(f).map(|v| v as f64 / 1e3).collect()
        };
        ttft.series.push(line(
            "TTFT",
            cdf_points(ms_of(ResultRow::ttft_from_schedule_us)),
        ));
        slo_line(&mut ttft.vlines, i, many, "ttft", slo_of(|s| s.ttft_us));
        e2e.series.push(line(
            "E2E",
            cdf_points(ms_of(ResultRow::e2e_from_schedule_us)),
        ));
        slo_line(&mut e2e.vlines, i, many, "e2e", slo_of(|s| s.e2e_us));
        tokens.series.push(line(
            "TPOT",
            cdf_points(
                ok().filter_map(ResultRow::tpot_us)
                    .map(|v| v / 1e3)
                    .collect(),
            ),
        ));
        tokens.series.push(line(
            "ITL",
            cdf_points(every_kth(
                ok().map(|row| row.itl_us.len()).sum(),
                ok().flat_map(|row| row.itl_us.iter().map(|v| *v as f64 / 1e3)),
            )),
        ));
        slo_line(&mut tokens.vlines, i, many, "tpot", slo_of(|s| s.tpot_us));
        lag.series.push(line(
            "send lag",
            cdf_points(
                r.rows
                    .iter()
                    .filter_map(|row| row.send_lag_us)
                    .map(|v| v as f64 / 1e3)
                    .collect(),
            ),
        ));
    }
    vec![rate, inflight, ttft_t, ttft, e2e, tokens, lag]
}

/// Queue and cache gauges of vLLM, SGLang, llama.cpp and the simulator on
/// a run's timeline (label sets summed): counts on one chart, 0-1 usage
/// gauges on another, so that neither flattens the other.
fn server_charts(
    rows: &[ResultRow],
    samples: &[crate::record::server_metrics::Sample],
) -> Vec<Chart> {
    let Some(t0) = rows.iter().map(|r| r.scheduled_at_us).min() else {
        return Vec::new();
    };
    let wanted = [
        "running",
        "waiting",
        "processing",
        "deferred",
        "queue",
        "kv_cache_usage",
        "cache_usage",
    ];
    let mut by_metric: BTreeMap<&str, BTreeMap<i64, f64>> = BTreeMap::new();
    for s in samples {
        if s.value.is_finite()
            && wanted.iter().any(|w| s.metric.contains(w))
            && !s.metric.ends_with("_total")
        {
            *by_metric
                .entry(s.metric.as_str())
                .or_default()
                .entry(s.ts_us)
                .or_insert(0.0) += s.value;
        }
    }
    let secs = || Axis::new("seconds since the first scheduled request", AxisKind::Zero);
    let mut counts = Chart::new(
        "Server queues (scraped every second)",
        secs(),
        Axis::new("requests", AxisKind::Zero),
    );
    let mut gauges = Chart::new(
        "Server cache usage (scraped every second)",
        secs(),
        Axis::new("share of capacity", AxisKind::Share),
    );
    for (name, points) in by_metric.into_iter().take(8) {
        let series = Series {
            name: name.to_owned(),
            points: points
                .into_iter()
                .map(|(t, v)| ((t - t0) as f64 / 1e6, v))
                .collect(),
            ..Series::default()
        };
        if name.contains("usage") {
            gauges.series.push(series);
        } else {
            counts.series.push(series);
        }
    }
    // A gauge that is not a 0-1 share (a percent, say) gets a plain axis.
    if gauges
        .series
        .iter()
        .flat_map(|s| &s.points)
        .any(|p| p.1 > 1.0)
    {
        gauges.y = Axis::new("value", AxisKind::Zero);
    }
    [counts, gauges]
        .into_iter()
        .filter(|c| !c.series.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::capacity::Capacity;

    /// A step of `rate` req/s (built through the public constructor, so
    /// that columns added to the table later need no change here).
    fn step(i: i32, rate: f64, ttft_p99_ms: f64, behind: bool) -> SweepStep {
        let empty = crate::record::summary::summarize(&[], None, Some(rate));
        let mut st = SweepStep::from_summary(
            i,
            SweepMode::Rate,
            rate,
            &empty,
            format!("rate={rate}/results.parquet"),
        );
        st.offered_rate = rate;
        st.achieved_rate = rate;
        st.request_throughput = rate * 0.99;
        st.output_token_throughput = rate * 50.0;
        st.ttft_p50_ms = ttft_p99_ms / 2.0;
        st.ttft_p90_ms = ttft_p99_ms * 0.8;
        st.ttft_p99_ms = ttft_p99_ms;
        (st.tpot_p50_ms, st.tpot_p90_ms, st.tpot_p99_ms) = (8.0, 8.5, 9.0);
        (st.itl_p50_ms, st.itl_p99_ms) = (8.0, 12.0);
        (st.e2e_p50_ms, st.e2e_p90_ms, st.e2e_p99_ms) = (400.0, 450.0, 500.0);
        (st.requests, st.ok, st.errors) = (100, 99, 1);
        st.generator_bottleneck = behind;
        st
    }

    fn sweep(steps: Vec<SweepStep>) -> SweepReport {
        SweepReport {
            dir: "s".into(),
            latencies: vec![(Vec::new(), Vec::new()); steps.len()],
            steps,
            capacity: Capacity::default(),
            meta: BTreeMap::new(),
            slo: None,
        }
    }

    fn chart<'a>(charts: &'a [Chart], title: &str) -> &'a Chart {
        charts.iter().find(|c| c.title == title).unwrap()
    }

    #[test]
    fn generator_bound_steps_are_crossed_and_wide_latencies_get_log_axes() {
        let s = sweep(vec![
            step(0, 1.0, 91.0, false),
            step(1, 2.0, 137.0, false),
            step(2, 4.0, 10_000.0, true),
        ]);
        let charts = sweep_charts(&[(0, &s)], false);
        let ttft = chart(&charts, "TTFT from the schedule vs offered load");
        assert_eq!(ttft.series[2].flagged, vec![2]);
        let (x, y) = ttft.scales();
        assert_eq!((x, y), (Scale::Linear, Scale::Log));
        let html = ttft.render().into_string();
        assert!(html.contains("generator could not keep the schedule"));
        // TPOT spans 8-9 ms: linear.
        assert_eq!(
            chart(&charts, "TPOT vs offered load").scales().1,
            Scale::Linear
        );
        // A step table says which steps fell behind.
        assert!(steps_table(&s).into_string().contains("× behind schedule"));
        // Without an SLO there is no goodput chart, line or SLO line.
        assert!(charts.iter().all(|c| !c.title.starts_with("Goodput")));
        let tput = chart(&charts, "Throughput vs offered load");
        assert!(tput.series.iter().all(|s| s.name != "meeting the SLO"));
        assert!(charts.iter().all(|c| c.hlines.is_empty()));
    }

    #[test]
    fn the_slo_draws_a_line_on_each_latency_chart_it_bounds() {
        let mut s = sweep(vec![step(0, 1.0, 91.0, false), step(1, 2.0, 137.0, false)]);
        s.slo = Some("ttft=500ms,tpot=50ms".parse().unwrap());
        s.capacity.goodput_target = Some(0.99);
        let charts = sweep_charts(&[(0, &s)], false);
        let at = |title: &str| -> Vec<f64> {
            chart(&charts, title).hlines.iter().map(|l| l.at).collect()
        };
        assert_eq!(at("TTFT from the schedule vs offered load"), vec![500.0]);
        assert_eq!(
            at("TTFT from the schedule vs achieved throughput"),
            vec![500.0]
        );
        assert_eq!(at("TPOT vs offered load"), vec![50.0]);
        assert!(at("E2E from the schedule vs offered load").is_empty());
        assert_eq!(at("Goodput: share of requests meeting the SLO"), vec![0.99]);
        // 91-500 ms spans 5.5x: the TTFT axis stays linear with the line on it.
        assert_eq!(
            chart(&charts, "TTFT from the schedule vs offered load")
                .scales()
                .1,
            Scale::Linear
        );
    }

    #[test]
    fn a_capacity_every_step_met_is_labelled_as_a_lower_bound() {
        let mut s = sweep(vec![step(0, 1.0, 91.0, false), step(1, 2.0, 137.0, false)]);
        s.slo = Some("ttft=500ms".parse().unwrap());
        s.capacity.slo_capacity_rate = Some(2.0);
        let label = |s: &SweepReport| -> String {
            let charts = sweep_charts(&[(0, s)], false);
            let ttft = chart(&charts, "TTFT from the schedule vs offered load");
            ttft.vlines
                .iter()
                .find(|l| l.kind == RefKind::Capacity)
                .unwrap()
                .label
                .clone()
        };
        assert_eq!(label(&s), "SLO capacity 2 req/s");
        s.capacity.slo_capacity_lower_bound = true;
        assert_eq!(label(&s), "SLO capacity ≥ 2 req/s");
    }

    #[test]
    fn delta_signs_and_ratios() {
        assert_eq!(signed(-7.5), "−7.5");
        assert_eq!(signed(2.0), "+2");
        let t = delta_table(&[("TTFT p99 ms".into(), Some(100.0), Some(50.0), true)]).into_string();
        assert!(
            t.contains("0.50×") && t.contains("better") && t.contains("−50"),
            "{t}"
        );
    }

    #[test]
    fn a_distribution_samples_at_most_about_its_limit() {
        let n = CDF_SAMPLE * 3 + 7;
        let v = every_kth(n, (0..n).map(|i| i as f64));
        assert!(
            v.len() <= CDF_SAMPLE && v.len() > CDF_SAMPLE / 2,
            "{}",
            v.len()
        );
        assert_eq!(
            every_kth(5, (0..5).map(f64::from)),
            vec![0.0, 1.0, 2.0, 3.0, 4.0]
        );
        let pts = cdf_points(v);
        assert!(pts.len() <= 402 && pts.last().map(|p| p.1) == Some(1.0));
    }

    #[test]
    fn a_schedule_reads_as_key_value_words() {
        let mut out = Vec::new();
        let v = serde_json::json!({"mode": "rate", "rate": 10.0, "arrivals": {"kind": "poisson"},
            "limit": {"duration_ns": 8, "requests": null}});
        flatten("", &v, &mut out);
        assert_eq!(
            out,
            [
                "arrivals.kind=poisson",
                "limit.duration_ns=8",
                "mode=rate",
                "rate=10.0"
            ]
        );
    }

    #[test]
    fn server_counts_and_usage_gauges_get_separate_axes() {
        let rows = vec![ResultRow {
            scheduled_at_us: 1_000_000,
            ..ResultRow::default()
        }];
        let sample = |metric: &str, ts_us: i64, value: f64| crate::record::server_metrics::Sample {
            ts_us,
            metric: metric.into(),
            labels: String::new(),
            value,
        };
        let samples = [
            sample("vllm:num_requests_running", 1_000_000, 12.0),
            sample("vllm:num_requests_waiting", 2_000_000, 30.0),
            sample("vllm:kv_cache_usage_perc", 1_000_000, 0.4),
            sample("vllm:kv_cache_usage_perc", 2_000_000, 0.9),
            sample("vllm:request_success_total", 2_000_000, 9.0),
        ];
        let charts = server_charts(&rows, &samples);
        assert_eq!(charts.len(), 2);
        assert_eq!(charts[0].series.len(), 2);
        assert_eq!(charts[0].y.kind, AxisKind::Zero);
        assert_eq!(charts[1].series[0].name, "vllm:kv_cache_usage_perc");
        assert_eq!(charts[1].series[0].points, vec![(0.0, 0.4), (1.0, 0.9)]);
        assert_eq!(charts[1].y.kind, AxisKind::Share);
        assert!(server_charts(&rows, &samples[..2]).len() == 1);
    }

    #[test]
    fn the_options_that_tell_two_inputs_apart_are_listed() {
        let config = |batch: u64, url: &str| -> Option<RunConfig> {
            serde_json::from_value(serde_json::json!({
                "target": {"url": url, "sim": {"max_batch": batch, "seed": 0}},
                "schedule": {"mode": "recorded", "speedup": 1.0},
                "seed": 3,
            }))
            .ok()
        };
        let (a, b) = (
            config(8, "http://127.0.0.1:1"),
            config(16, "http://127.0.0.1:2"),
        );
        assert!(a.is_some());
        assert_eq!(
            differing_options(&[a.clone(), b]),
            [["target.sim.max_batch=8"], ["target.sim.max_batch=16"]]
        );
        assert!(
            differing_options(&[a.clone(), a.clone()])
                .iter()
                .all(Vec::is_empty)
        );
        assert!(differing_options(&[a]).is_empty());
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert!((quantile(&v, 0.99) - 3.97).abs() < 1e-9);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
