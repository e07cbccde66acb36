//! Hand-written inline SVG charts for the HTML reports: a line chart (x on a
//! log2 axis, since batch sizes double) and a horizontal bar chart.
//!
//! The output is meant to be pasted into an HTML5 page: no `xmlns` (inline SVG
//! does not need it, and the page must not contain a single URL), no scripts,
//! no fonts beyond the generic `sans-serif`. Every number written into the SVG
//! goes through [`num`], so degenerate input (no points, one point, all-equal
//! values, NaN, infinities) never puts `NaN` or `inf` in the output.

use std::fmt::Write as _;

/// Okabe & Ito's colour-blind-safe palette ("Color Universal Design",
/// <https://jfly.uni-koeln.de/color/>, 2008), in an order whose neighbours
/// stay distinguishable under the common colour-vision deficiencies. Yellow
/// and black come last: yellow is faint on white, black reads as an axis.
pub(crate) const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// Colour of a series or group by its index; the palette repeats past eight.
pub(crate) fn palette(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Colour of anything that belongs to no group.
pub(crate) const NEUTRAL: &str = "#888888";

const FONT: &str = "sans-serif";
const AXIS: &str = "#333333";
const GRID: &str = "#dddddd";

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate for the SVG: one decimal, and 0 for anything not finite.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let s = format!("{v:.1}");
    match s.strip_suffix(".0") {
        Some("-0") => "0".into(),
        Some(i) => i.to_string(),
        None => s,
    }
}

/// At most `max` characters, with an ellipsis when cut. A trailing
/// parenthesised note such as " (simulated)" is kept whole: it is the part a
/// reader must not lose.
fn truncate(s: &str, max: usize) -> String {
    let len = s.chars().count();
    if len <= max {
        return s.to_string();
    }
    let suffix = s
        .rfind(" (")
        .filter(|_| s.ends_with(')'))
        .map(|i| &s[i..])
        .filter(|t| t.chars().count() + 4 <= max)
        .unwrap_or("");
    let keep = max.saturating_sub(1 + suffix.chars().count());
    let mut t: String = s[..s.len() - suffix.len()].chars().take(keep).collect();
    t.push('…');
    t.push_str(suffix);
    t
}

/// "Nice" tick positions covering `[lo, hi]`: multiples of 1, 2 or 5 × 10^k,
/// at most `max_intervals` intervals (at least one). The first tick is at or
/// below `lo`, the last at or above `hi`. Non-finite or empty ranges give a
/// sensible range around what is known (0..1 when nothing is).
pub fn nice_ticks(lo: f64, hi: f64, max_intervals: usize) -> Vec<f64> {
    let (mut lo, mut hi) = match (lo.is_finite(), hi.is_finite()) {
        (true, true) => (lo.min(hi), lo.max(hi)),
        (true, false) => (lo, lo),
        (false, true) => (hi, hi),
        (false, false) => (0.0, 1.0),
    };
    if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE) {
        if lo == 0.0 {
            hi = 1.0;
        } else {
            let pad = lo.abs() * 0.5;
            lo = if lo > 0.0 { 0.0 } else { lo - pad };
            hi = if hi < 0.0 { 0.0 } else { hi + pad };
        }
    }
    let (m, e) = nice_step((hi - lo) / max_intervals.max(1) as f64);
    // A tick is k × m × 10^e; dividing by an exact power of ten (rather than
    // multiplying by an inexact 0.1) gives 0.3, not 0.30000000000000004.
    let pow = 10f64.powi(e.abs());
    let at = |k: f64| if e < 0 { k * m / pow } else { k * m * pow };
    let step = at(1.0);
    let first = (lo / step + 1e-9).floor();
    let last = (hi / step - 1e-9).ceil();
    if !(step.is_finite() && step > 0.0 && first.is_finite() && last.is_finite()) {
        return vec![0.0, 1.0];
    }
    let n = ((last - first).max(1.0) as usize).min(1000);
    (0..=n).map(|i| at(first + i as f64)).collect()
}

/// The smallest 1, 2 or 5 × 10^k at or above `raw`, as (1|2|5, k).
fn nice_step(raw: f64) -> (f64, i32) {
    if !(raw.is_finite() && raw > 0.0) {
        return (1.0, 0);
    }
    let k = raw.log10().floor() as i32;
    let mag = 10f64.powi(k);
    for m in [1.0, 2.0, 5.0] {
        if m * mag >= raw * (1.0 - 1e-9) {
            return (m, k);
        }
    }
    (1.0, k + 1)
}

/// Decimals needed to write multiples of `step` exactly (0.2 → 1, 50 → 0).
fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) || step >= 1.0 {
        0
    } else {
        ((-step.log10()).ceil().max(0.0) as usize).min(12)
    }
}

/// A tick label: as many decimals as the step needs, and thousands
/// separated by commas from 10,000 up.
fn tick_label(v: f64, step: f64) -> String {
    let d = decimals(step);
    let s = format!("{v:.d$}");
    let s = if s.starts_with("-0") && s.chars().all(|c| matches!(c, '-' | '0' | '.')) {
        s[1..].to_string()
    } else {
        s
    };
    if d == 0 && v.abs() >= 10_000.0 {
        let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &s));
        let mut out = String::from(sign);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        s
    }
}

/// A number for a data label: 2 decimals below 100, none above.
fn value_label(v: f64) -> String {
    if v.abs() >= 100.0 {
        tick_label(v, 1.0)
    } else {
        format!("{v:.2}")
    }
}

/// How the x values of a line chart are placed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum XScale {
    /// log2: equal distances for every doubling.
    Log2 {
        lo: f64,
        hi: f64,
    },
    Linear {
        lo: f64,
        hi: f64,
    },
}

impl XScale {
    /// Log2 when every x is positive, linear otherwise; `xs` are finite.
    fn for_values(xs: &[f64]) -> XScale {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if xs.is_empty() {
            return XScale::Log2 { lo: 1.0, hi: 16.0 };
        }
        if min > 0.0 {
            let mut lo = min.log2().floor();
            let mut hi = max.log2().ceil();
            if hi <= lo {
                lo -= 1.0;
                hi += 1.0;
            }
            XScale::Log2 { lo, hi }
        } else {
            let ticks = nice_ticks(min, max, 8);
            XScale::Linear {
                lo: ticks.first().copied().unwrap_or(0.0),
                hi: ticks.last().copied().unwrap_or(1.0),
            }
        }
    }

    /// Position of `x` in [0, 1] along the axis.
    fn fraction(&self, x: f64) -> f64 {
        let f = match *self {
            XScale::Log2 { lo, hi } => (x.log2() - lo) / (hi - lo),
            XScale::Linear { lo, hi } => (x - lo) / (hi - lo),
        };
        if f.is_finite() { f } else { 0.0 }
    }

    /// Tick values and their labels.
    fn ticks(&self) -> Vec<(f64, String)> {
        match *self {
            XScale::Log2 { lo, hi } => {
                let n = (hi - lo).round().max(1.0) as usize;
                // At most about 12 labels: every doubling, or every second one.
                let every = n.div_ceil(12).max(1);
                (0..=n)
                    .step_by(every)
                    .map(|i| {
                        let v = 2f64.powf(lo + i as f64);
                        let label = if v >= 1.0 {
                            tick_label(v, 1.0)
                        } else {
                            // 0.5, 0.25, ...: enough decimals to be exact.
                            let s = format!("{v:.12}");
                            s.trim_end_matches('0').to_string()
                        };
                        (v, label)
                    })
                    .collect()
            }
            XScale::Linear { lo, hi } => {
                let t = nice_ticks(lo, hi, 8);
                let step = if t.len() > 1 { t[1] - t[0] } else { 1.0 };
                t.into_iter().map(|v| (v, tick_label(v, step))).collect()
            }
        }
    }
}

/// One line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// (x, y); points with a non-finite coordinate are skipped.
    pub points: Vec<(f64, f64)>,
    pub color: String,
    /// Dashed line, e.g. for a p99 drawn next to its p50.
    pub dashed: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, color: &str) -> Series {
        Series {
            name: name.into(),
            points,
            color: color.to_string(),
            dashed: false,
        }
    }

    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    /// The finite points, sorted by x.
    fn clean(&self) -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = self
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    }
}

/// Plot area and margins of a chart, in SVG user units.
#[derive(Clone, Copy, Debug)]
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn plot_w(&self) -> f64 {
        (self.width - self.left - self.right).max(1.0)
    }
    fn plot_h(&self) -> f64 {
        (self.height - self.top - self.bottom).max(1.0)
    }
}

fn open_svg(o: &mut String, f: &Frame, title: &str, description: &str) {
    let _ = write!(
        o,
        r#"<svg class="chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}" font-family="{FONT}" font-size="12">"#,
        escape(description),
        num(f.width),
        num(f.height),
        num(f.width),
        num(f.height),
    );
    let _ = write!(o, "<title>{}</title>", escape(title));
    let _ = write!(
        o,
        r##"<rect x="0" y="0" width="{}" height="{}" fill="#ffffff"/>"##,
        num(f.width),
        num(f.height)
    );
    let _ = write!(
        o,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15" font-weight="bold" fill="{AXIS}">{}</text>"#,
        num(f.width / 2.0),
        escape(title)
    );
}

/// A centred message inside an empty plot area.
fn empty_message(o: &mut String, f: &Frame, message: &str) {
    let _ = write!(
        o,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#fafafa" stroke="{AXIS}"/>"##,
        num(f.left),
        num(f.top),
        num(f.plot_w()),
        num(f.plot_h())
    );
    let _ = write!(
        o,
        r##"<text x="{}" y="{}" text-anchor="middle" dominant-baseline="middle" fill="#555555">{}</text>"##,
        num(f.left + f.plot_w() / 2.0),
        num(f.top + f.plot_h() / 2.0),
        escape(message)
    );
}

/// A legend as a column of swatches at `(x, y)`.
fn legend(o: &mut String, x: f64, y: f64, items: &[(String, String, bool)], marker_shapes: bool) {
    for (i, (name, color, dashed)) in items.iter().enumerate() {
        let cy = y + i as f64 * 20.0;
        if marker_shapes {
            let _ = write!(
                o,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2"{}/>"#,
                num(x),
                num(cy),
                num(x + 24.0),
                num(cy),
                escape(color),
                if *dashed {
                    r#" stroke-dasharray="5 3""#
                } else {
                    ""
                }
            );
            marker(o, i, x + 12.0, cy, color, None);
        } else {
            let _ = write!(
                o,
                r#"<rect x="{}" y="{}" width="14" height="14" fill="{}"/>"#,
                num(x + 5.0),
                num(cy - 7.0),
                escape(color)
            );
        }
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" dominant-baseline="middle" fill="{AXIS}">{}<title>{}</title></text>"#,
            num(x + 30.0),
            num(cy),
            escape(&truncate(name, 30)),
            escape(name)
        );
    }
}

/// A marker whose shape varies with the series (circle, square, diamond,
/// triangle), so that series differ by more than colour.
fn marker(o: &mut String, series: usize, x: f64, y: f64, color: &str, tip: Option<&str>) {
    let c = escape(color);
    let tip = tip
        .map(|t| format!("<title>{}</title>", escape(t)))
        .unwrap_or_default();
    let shape = match series % 4 {
        0 => format!(
            r##"<circle cx="{}" cy="{}" r="4" fill="{c}" stroke="#ffffff">{tip}</circle>"##,
            num(x),
            num(y)
        ),
        1 => format!(
            r##"<rect x="{}" y="{}" width="8" height="8" fill="{c}" stroke="#ffffff">{tip}</rect>"##,
            num(x - 4.0),
            num(y - 4.0)
        ),
        2 => format!(
            r##"<polygon points="{},{} {},{} {},{} {},{}" fill="{c}" stroke="#ffffff">{tip}</polygon>"##,
            num(x),
            num(y - 5.0),
            num(x + 5.0),
            num(y),
            num(x),
            num(y + 5.0),
            num(x - 5.0),
            num(y)
        ),
        _ => format!(
            r##"<polygon points="{},{} {},{} {},{}" fill="{c}" stroke="#ffffff">{tip}</polygon>"##,
            num(x),
            num(y - 5.0),
            num(x + 5.0),
            num(y + 4.0),
            num(x - 5.0),
            num(y + 4.0)
        ),
    };
    o.push_str(&shape);
}

/// Lines with markers over a log2 x axis (linear when any x is not positive).
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub width: f64,
    pub height: f64,
    /// Shown instead of lines when no series has a finite point.
    pub empty_message: String,
}

impl LineChart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> LineChart {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            width: 760.0,
            height: 380.0,
            empty_message: "no data".into(),
        }
    }

    pub fn series(mut self, s: Series) -> LineChart {
        self.series.push(s);
        self
    }

    pub fn render(&self) -> String {
        let longest = self
            .series
            .iter()
            .map(|s| s.name.chars().count().min(30))
            .max()
            .unwrap_or(0);
        let f = Frame {
            width: self.width,
            height: self.height,
            left: 72.0,
            // Room for the legend: swatch plus about 7 units per character.
            right: if self.series.is_empty() {
                20.0
            } else {
                48.0 + longest as f64 * 7.0
            },
            top: 36.0,
            bottom: 52.0,
        };
        let cleaned: Vec<Vec<(f64, f64)>> = self.series.iter().map(Series::clean).collect();
        let xs: Vec<f64> = cleaned.iter().flatten().map(|p| p.0).collect();
        let ys: Vec<f64> = cleaned.iter().flatten().map(|p| p.1).collect();
        let description = format!(
            "{}: {} against {}, {} series",
            self.title,
            self.y_label,
            self.x_label,
            self.series.len()
        );
        let mut o = String::new();
        open_svg(&mut o, &f, &self.title, &description);
        self.axis_titles(&mut o, &f);
        if xs.is_empty() {
            empty_message(&mut o, &f, &self.empty_message);
        } else {
            let xscale = XScale::for_values(&xs);
            let ymin = ys.iter().copied().fold(0.0, f64::min);
            let ymax = ys.iter().copied().fold(0.0, f64::max);
            let yt = nice_ticks(ymin, ymax, 6);
            let (y0, y1) = (
                yt.first().copied().unwrap_or(0.0),
                yt.last().copied().unwrap_or(1.0),
            );
            let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
            let px = |x: f64| f.left + xscale.fraction(x) * f.plot_w();
            let py = |y: f64| {
                let fr = (y - y0) / (y1 - y0);
                f.top + f.plot_h() * (1.0 - if fr.is_finite() { fr } else { 0.0 })
            };
            // Grid and y ticks.
            for v in &yt {
                let y = py(*v);
                let _ = write!(
                    o,
                    r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GRID}"/>"#,
                    num(f.left),
                    num(y),
                    num(f.left + f.plot_w()),
                    num(y)
                );
                let _ = write!(
                    o,
                    r#"<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle" fill="{AXIS}">{}</text>"#,
                    num(f.left - 6.0),
                    num(y),
                    tick_label(*v, ystep)
                );
            }
            // x ticks.
            for (v, label) in xscale.ticks() {
                let x = px(v);
                let _ = write!(
                    o,
                    r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GRID}"/>"#,
                    num(x),
                    num(f.top),
                    num(x),
                    num(f.top + f.plot_h())
                );
                let _ = write!(
                    o,
                    r#"<text x="{}" y="{}" text-anchor="middle" fill="{AXIS}">{}</text>"#,
                    num(x),
                    num(f.top + f.plot_h() + 16.0),
                    escape(&label)
                );
            }
            // Axes.
            let _ = write!(
                o,
                r#"<path d="M{} {}V{}H{}" fill="none" stroke="{AXIS}"/>"#,
                num(f.left),
                num(f.top),
                num(f.top + f.plot_h()),
                num(f.left + f.plot_w())
            );
            for (i, (s, pts)) in self.series.iter().zip(&cleaned).enumerate() {
                if pts.len() > 1 {
                    let d: Vec<String> = pts
                        .iter()
                        .enumerate()
                        .map(|(j, (x, y))| {
                            format!(
                                "{}{} {}",
                                if j == 0 { "M" } else { "L" },
                                num(px(*x)),
                                num(py(*y))
                            )
                        })
                        .collect();
                    let _ = write!(
                        o,
                        r#"<path d="{}" fill="none" stroke="{}" stroke-width="2"{}/>"#,
                        d.join(""),
                        escape(&s.color),
                        if s.dashed {
                            r#" stroke-dasharray="6 4""#
                        } else {
                            ""
                        }
                    );
                }
                for (x, y) in pts {
                    let tip = format!(
                        "{}: {} {}, {}",
                        s.name,
                        self.x_label,
                        tick_label(*x, 1.0),
                        value_label(*y)
                    );
                    marker(&mut o, i, px(*x), py(*y), &s.color, Some(&tip));
                }
            }
        }
        if !self.series.is_empty() {
            let items: Vec<(String, String, bool)> = self
                .series
                .iter()
                .map(|s| (s.name.clone(), s.color.clone(), s.dashed))
                .collect();
            legend(
                &mut o,
                f.left + f.plot_w() + 16.0,
                f.top + 10.0,
                &items,
                true,
            );
        }
        o.push_str("</svg>");
        o
    }

    fn axis_titles(&self, o: &mut String, f: &Frame) {
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" text-anchor="middle" fill="{AXIS}">{}</text>"#,
            num(f.left + f.plot_w() / 2.0),
            num(f.height - 12.0),
            escape(&self.x_label)
        );
        let cy = f.top + f.plot_h() / 2.0;
        let _ = write!(
            o,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})" fill="{AXIS}">{}</text>"#,
            num(cy),
            num(cy),
            escape(&self.y_label)
        );
    }
}

/// One bar of a [`BarChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub color: String,
    /// Drawn lighter with a dashed outline, e.g. a simulated host.
    pub muted: bool,
}

/// Horizontal bars, one per labelled value, over a value axis that starts at 0.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub value_label: String,
    pub bars: Vec<Bar>,
    /// (name, colour) swatches, e.g. the hardware groups.
    pub legend: Vec<(String, String)>,
    pub width: f64,
    /// Shown inside the frame when no bar has a finite value.
    pub empty_message: String,
}

impl BarChart {
    pub fn new(title: impl Into<String>, value_label: impl Into<String>) -> BarChart {
        BarChart {
            title: title.into(),
            value_label: value_label.into(),
            bars: Vec::new(),
            legend: Vec::new(),
            width: 760.0,
            empty_message: "no data".into(),
        }
    }

    pub fn render(&self) -> String {
        const BAR: f64 = 18.0;
        const GAP: f64 = 8.0;
        let bars: Vec<&Bar> = self.bars.iter().filter(|b| b.value.is_finite()).collect();
        let longest_label = bars
            .iter()
            .map(|b| b.label.chars().count().min(32))
            .max()
            .unwrap_or(0);
        let longest_legend = self
            .legend
            .iter()
            .map(|(n, _)| n.chars().count().min(30))
            .max()
            .unwrap_or(0);
        let rows = bars.len().max(3) as f64;
        let legend_h = self.legend.len() as f64 * 20.0;
        let plot_h = (rows * (BAR + GAP) + GAP).max(legend_h);
        let f = Frame {
            width: self.width,
            height: 36.0 + plot_h + 52.0,
            left: if bars.is_empty() {
                72.0
            } else {
                (longest_label as f64 * 7.0 + 16.0).max(72.0)
            },
            right: if self.legend.is_empty() {
                56.0
            } else {
                72.0 + longest_legend as f64 * 7.0
            },
            top: 36.0,
            bottom: 52.0,
        };
        let description = format!("{}: {}, {} bars", self.title, self.value_label, bars.len());
        let mut o = String::new();
        open_svg(&mut o, &f, &self.title, &description);
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" text-anchor="middle" fill="{AXIS}">{}</text>"#,
            num(f.left + f.plot_w() / 2.0),
            num(f.height - 12.0),
            escape(&self.value_label)
        );
        if bars.is_empty() {
            empty_message(&mut o, &f, &self.empty_message);
        } else {
            // Negative values are drawn as empty bars at 0; their labels keep the value.
            let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
            let ticks = nice_ticks(0.0, max, 6);
            let top_tick = ticks.last().copied().unwrap_or(1.0);
            let step = if ticks.len() > 1 {
                ticks[1] - ticks[0]
            } else {
                1.0
            };
            let px = |v: f64| {
                let fr = v.max(0.0) / top_tick;
                f.left + f.plot_w() * if fr.is_finite() { fr } else { 0.0 }
            };
            for v in &ticks {
                let x = px(*v);
                let _ = write!(
                    o,
                    r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GRID}"/>"#,
                    num(x),
                    num(f.top),
                    num(x),
                    num(f.top + f.plot_h())
                );
                let _ = write!(
                    o,
                    r#"<text x="{}" y="{}" text-anchor="middle" fill="{AXIS}">{}</text>"#,
                    num(x),
                    num(f.top + f.plot_h() + 16.0),
                    tick_label(*v, step)
                );
            }
            for (i, b) in bars.iter().enumerate() {
                let y = f.top + GAP + i as f64 * (BAR + GAP);
                let w = px(b.value) - f.left;
                let c = escape(&b.color);
                let style = if b.muted {
                    format!(r#" fill-opacity="0.45" stroke="{c}" stroke-dasharray="4 2""#)
                } else {
                    String::new()
                };
                let _ = write!(
                    o,
                    r#"<rect x="{}" y="{}" width="{}" height="{BAR}" fill="{c}"{style}><title>{}: {}</title></rect>"#,
                    num(f.left),
                    num(y),
                    num(w.max(0.0)),
                    escape(&b.label),
                    value_label(b.value)
                );
                let _ = write!(
                    o,
                    r#"<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle" fill="{AXIS}">{}</text>"#,
                    num(f.left - 6.0),
                    num(y + BAR / 2.0),
                    escape(&truncate(&b.label, 32))
                );
                let _ = write!(
                    o,
                    r#"<text x="{}" y="{}" dominant-baseline="middle" fill="{AXIS}">{}</text>"#,
                    num(f.left + w.max(0.0) + 4.0),
                    num(y + BAR / 2.0),
                    value_label(b.value)
                );
            }
            let _ = write!(
                o,
                r#"<path d="M{} {}V{}H{}" fill="none" stroke="{AXIS}"/>"#,
                num(f.left),
                num(f.top),
                num(f.top + f.plot_h()),
                num(f.left + f.plot_w())
            );
        }
        if !self.legend.is_empty() {
            let items: Vec<(String, String, bool)> = self
                .legend
                .iter()
                .map(|(n, c)| (n.clone(), c.clone(), false))
                .collect();
            legend(
                &mut o,
                f.left + f.plot_w() + 40.0,
                f.top + 10.0,
                &items,
                false,
            );
        }
        o.push_str("</svg>");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.contains("NaN"), "{svg}");
        assert!(!svg.to_ascii_lowercase().contains("inf"), "{svg}");
        assert!(!svg.contains("http"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(
            svg.contains(r#"role="img""#) && svg.contains("aria-label=") && svg.contains("<title>")
        );
        assert!(svg.contains("viewBox=") && svg.contains("width=") && svg.contains("height="));
    }

    #[test]
    fn ticks_are_one_two_five_times_a_power_of_ten() {
        let t = nice_ticks(0.0, 616.0, 8);
        assert_eq!(
            t,
            vec![0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0]
        );
        let t = nice_ticks(0.0, 616.0, 5);
        assert_eq!(t, vec![0.0, 200.0, 400.0, 600.0, 800.0]);
        let t = nice_ticks(0.0, 1.0, 5);
        assert_eq!(t, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let t = nice_ticks(0.0, 0.3, 6);
        assert_eq!(t, vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]);
        let t = nice_ticks(-3.0, 7.0, 5);
        assert_eq!(t, vec![-4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(
            nice_ticks(12_000.0, 48_500.0, 4),
            vec![10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0]
        );
    }

    #[test]
    fn ticks_of_degenerate_ranges_are_finite() {
        assert_eq!(nice_ticks(0.0, 0.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(5.0, 5.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        for t in [
            nice_ticks(f64::NAN, f64::NAN, 5),
            nice_ticks(f64::NAN, 3.0, 5),
            nice_ticks(f64::NEG_INFINITY, f64::INFINITY, 5),
            nice_ticks(-2.0, -2.0, 5),
            nice_ticks(1e-300, 1e-300, 0),
        ] {
            assert!(t.len() >= 2 && t.iter().all(|v| v.is_finite()), "{t:?}");
        }
        assert_eq!(tick_label(-0.0, 0.2), "0.0");
        assert_eq!(tick_label(48_000.0, 1000.0), "48,000");
    }

    #[test]
    fn log2_axis_puts_every_doubling_the_same_distance_apart() {
        let s = XScale::for_values(&[8.0, 16.0, 32.0, 64.0, 128.0]);
        assert_eq!(s, XScale::Log2 { lo: 3.0, hi: 7.0 });
        let step = s.fraction(16.0) - s.fraction(8.0);
        assert!((step - 0.25).abs() < 1e-12);
        assert!((s.fraction(128.0) - s.fraction(64.0) - step).abs() < 1e-12);
        let labels: Vec<String> = s.ticks().into_iter().map(|(_, l)| l).collect();
        assert_eq!(labels, ["8", "16", "32", "64", "128"]);
        // One point still spans an axis; zero or negative x falls back to linear.
        assert_eq!(
            XScale::for_values(&[8.0]),
            XScale::Log2 { lo: 2.0, hi: 4.0 }
        );
        assert!(matches!(
            XScale::for_values(&[0.0, 4.0]),
            XScale::Linear { .. }
        ));
        assert_eq!(XScale::for_values(&[0.5, 2.0]).ticks()[0].1, "0.5");
    }

    #[test]
    fn degenerate_line_charts_render_without_nan() {
        let empty = LineChart::new("Empty", "Batch size", "samples/s").render();
        well_formed(&empty);
        assert!(empty.contains("no data"));

        let single = LineChart::new("One", "Batch size", "samples/s")
            .series(Series::new("A100 <x>", vec![(8.0, 500.0)], palette(0)))
            .render();
        well_formed(&single);
        assert!(single.contains("A100 &lt;x&gt;"));
        assert!(single.contains("<circle"));

        let odd = LineChart::new("Odd", "x", "y")
            .series(Series::new(
                "flat",
                vec![(1.0, 3.0), (2.0, 3.0), (4.0, 3.0)],
                palette(0),
            ))
            .series(
                Series::new(
                    "nan",
                    vec![(f64::NAN, 1.0), (2.0, f64::INFINITY), (8.0, -5.0)],
                    palette(1),
                )
                .dashed(),
            )
            .series(Series::new(
                "zero x",
                vec![(0.0, 0.0), (-1.0, 2.0)],
                palette(2),
            ))
            .series(Series::new("no points", vec![], palette(3)))
            .render();
        well_formed(&odd);
        assert!(odd.contains("stroke-dasharray"));

        let all_nan = LineChart::new("All missing", "x", "y")
            .series(Series::new("nan", vec![(f64::NAN, f64::NAN)], palette(0)))
            .render();
        well_formed(&all_nan);
        assert!(all_nan.contains("no data"));
    }

    #[test]
    fn degenerate_bar_charts_render_without_nan() {
        let mut c = BarChart::new("Energy", "samples/J");
        c.empty_message = "no energy data".into();
        let empty = c.render();
        well_formed(&empty);
        assert!(empty.contains("no energy data"));

        c.bars = vec![
            Bar {
                label: "zero".into(),
                value: 0.0,
                color: palette(0).into(),
                muted: false,
            },
            Bar {
                label: "neg".into(),
                value: -2.0,
                color: palette(1).into(),
                muted: true,
            },
            Bar {
                label: "nan".into(),
                value: f64::NAN,
                color: palette(2).into(),
                muted: false,
            },
        ];
        c.legend = vec![("H100 & co".into(), palette(0).into())];
        let zeros = c.render();
        well_formed(&zeros);
        assert!(zeros.contains("H100 &amp; co"));
        assert!(!zeros.contains(">nan<"));

        c.bars = vec![Bar {
            label: "one".into(),
            value: 616.49,
            color: palette(0).into(),
            muted: false,
        }];
        let one = c.render();
        well_formed(&one);
        assert!(one.contains(">616<"));
    }

    #[test]
    fn truncation_keeps_the_simulated_label() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(
            truncate("a-very-long-host-name-indeed cuda:0 (simulated)", 30),
            "a-very-long-host-… (simulated)"
        );
        assert_eq!(truncate("abcdefghijkl", 5), "abcd…");
        assert_eq!(truncate("ab (cdefghijkl)", 6), "ab (c…");
    }

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
