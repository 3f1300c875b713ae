//! What every benchmark shares, in both crates (`envoy/benches` includes this file by path):
//! the one-line JSON summary `make bench-check` compares with the targets, a description of
//! the machine, simple statistics, and SVG line charts drawn with plotters.
//!
//! A summary line looks like
//! `BENCH_SUMMARY {"name":"tick_cost","figures":{..},"targets":[{"name":..,"value":..,
//! "op":"<=","limit":..,"pass":true}],"pass":true,..}`; `benchmarks/check.py` re-evaluates
//! every target from `value`, `op` and `limit`, so a summary cannot claim a pass it did not
//! earn.

#![allow(dead_code)]

use plotters::prelude::*;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// The workspace root (both bench crates sit one level below it).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Where plots go: `$BENCH_PLOT_DIR`, else `<workspace>/benchmarks`.
pub fn plot_dir() -> PathBuf {
    std::env::var_os("BENCH_PLOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("benchmarks"))
}

/// An environment variable parsed as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Cores, memory and CPU model, from the kernel.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "cores": cores,
        "memory_gib": (mem_kib as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        "cpu_model": model,
    })
}

/// When the benchmark process started (the first call; `main` calls it first thing through
/// `Summary::new` or directly).
pub fn process_start() -> &'static std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now)
}

/// How a figure is compared with its limit.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Le,
    Lt,
    Ge,
    Eq,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }

    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Le => value <= limit,
            Op::Lt => value < limit,
            Op::Ge => value >= limit,
            Op::Eq => value == limit,
        }
    }
}

/// One benchmark's result.
pub struct Summary {
    name: String,
    command: String,
    figures: Map<String, Value>,
    targets: Vec<Value>,
    notes: Vec<String>,
    plots: Vec<String>,
    started: std::time::Instant,
}

impl Summary {
    /// `name` is also the file name under `out/bench/`; `command` reproduces the figures.
    pub fn new(name: &str, command: &str) -> Self {
        Summary {
            name: name.into(),
            command: command.into(),
            figures: Map::new(),
            targets: Vec::new(),
            notes: Vec::new(),
            plots: Vec::new(),
            started: *process_start(),
        }
    }

    pub fn figure(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.figures.insert(key.into(), value.into());
        self
    }

    /// A target: `value op limit` must hold.
    pub fn target(&mut self, name: &str, value: f64, op: Op, limit: f64, unit: &str) -> bool {
        let pass = value.is_finite() && op.holds(value, limit);
        self.targets.push(json!({
            "name": name,
            "value": round(value),
            "op": op.as_str(),
            "limit": limit,
            "unit": unit,
            "pass": pass,
        }));
        pass
    }

    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.notes.push(text.into());
        self
    }

    /// Records a plot, as a path relative to the workspace root when it is below it.
    pub fn plot(&mut self, path: &std::path::Path) -> &mut Self {
        let root = workspace_root();
        let shown = path
            .strip_prefix(&root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        self.plots.push(shown);
        self
    }

    pub fn pass(&self) -> bool {
        self.targets.iter().all(|t| t["pass"] == Value::Bool(true))
    }

    /// Prints the `BENCH_SUMMARY` line (and a readable version above it).
    pub fn emit(&self) {
        let v = json!({
            "name": self.name,
            "command": self.command,
            "machine": machine(),
            "runtime_s": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "figures": self.figures,
            "targets": self.targets,
            "pass": self.pass(),
            "plots": self.plots,
            "notes": self.notes,
        });
        eprintln!("---- {} ----", self.name);
        for t in &self.targets {
            eprintln!(
                "  target {}: {} {} {} {} -> {}",
                t["name"].as_str().unwrap_or(""),
                t["value"],
                t["op"].as_str().unwrap_or(""),
                t["limit"],
                t["unit"].as_str().unwrap_or(""),
                if t["pass"] == Value::Bool(true) {
                    "pass"
                } else {
                    "MISSED"
                }
            );
        }
        println!("BENCH_SUMMARY {v}");
    }
}

/// Rounds to 4 significant decimals, so summaries stay readable.
pub fn round(v: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let digits = 4 - v.abs().log10().ceil() as i32;
    if digits <= 0 {
        return v.round();
    }
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// The `q` quantile (0..=1) of `v` (nearest rank); 0 for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// One chart of a figure; panels are stacked and share the x axis.
pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
    /// A dashed horizontal line (a limit), with its label.
    pub limit: Option<(f64, String)>,
}

impl Panel {
    pub fn new(y_label: impl Into<String>, series: Vec<Series>) -> Self {
        Panel {
            y_label: y_label.into(),
            series,
            limit: None,
        }
    }

    pub fn limit(mut self, value: f64, label: impl Into<String>) -> Self {
        self.limit = Some((value, label.into()));
        self
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];

/// Draws stacked line charts into `<plot dir>/<file>` (SVG) and returns the path.
pub fn chart(file: &str, title: &str, x_label: &str, panels: &[Panel]) -> anyhow::Result<PathBuf> {
    let dir = plot_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(file);
    draw(&path, file, title, x_label, panels)?;
    Ok(path)
}

fn draw(
    path: &std::path::Path,
    file: &str,
    title: &str,
    x_label: &str,
    panels: &[Panel],
) -> anyhow::Result<()> {
    let height = 40 + 260 * panels.len() as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    let e = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plotting {file}: {e:?}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, body) = root.split_vertically(40);
    top.titled(title, ("sans-serif", 22)).map_err(|x| e(&x))?;
    let areas = body.split_evenly((panels.len().max(1), 1));
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in panels {
        for s in &p.series {
            for &(x, _) in &s.points {
                x0 = x0.min(x);
                x1 = x1.max(x);
            }
        }
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    for (area, panel) in areas.iter().zip(panels) {
        let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
        for s in &panel.series {
            for &(_, y) in &s.points {
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        if let Some((l, _)) = &panel.limit {
            y0 = y0.min(*l);
            y1 = y1.max(*l);
        }
        if !y0.is_finite() {
            (y0, y1) = (0.0, 1.0);
        }
        // The y axis starts at zero.
        let y0 = y0.min(0.0);
        let y1 = y1 + ((y1 - y0) * 0.08).max(y1.abs() * 0.02).max(1e-9);
        let mut c = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(90)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(panel.y_label.as_str())
            .x_labels(10)
            .y_labels(8)
            .y_label_formatter(&|v| short(*v))
            .x_label_formatter(&|v| short(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, s) in panel.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            c.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        if let Some((l, label)) = &panel.limit {
            let ink = RGBColor(60, 60, 60);
            c.draw_series(DashedLineSeries::new(
                vec![(x0, *l), (x1, *l)],
                8,
                5,
                ink.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ink));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Axis labels: 1.2k, 3.4M, 0.25.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
