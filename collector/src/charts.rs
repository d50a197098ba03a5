//! Charts for the reports, as a list of drawing primitives that render to
//! SVG (HTML pages) and to PDF content streams (the permit dossier), so
//! both show the same picture. Coordinates are in points, origin at the
//! top left, y downwards. No I/O, no clock.

use std::fmt::Write as _;

/// An RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb`.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// Series colours (colour-blind safe, Okabe–Ito).
pub const PALETTE: [Rgb; 5] = [
    Rgb(0, 114, 178),
    Rgb(230, 159, 0),
    Rgb(0, 158, 115),
    Rgb(204, 121, 167),
    Rgb(86, 180, 233),
];
/// Axis and text colour.
pub const INK: Rgb = Rgb(40, 40, 40);
/// Grid line colour.
pub const GRID: Rgb = Rgb(220, 220, 220);
/// Target / reference line colour.
pub const TARGET: Rgb = Rgb(213, 94, 0);

/// Horizontal text anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Text starts at x.
    Start,
    /// Text is centred on x.
    Middle,
    /// Text ends at x.
    End,
}

/// A drawing primitive.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    /// A straight line.
    Line {
        /// From.
        from: (f64, f64),
        /// To.
        to: (f64, f64),
        /// Colour.
        color: Rgb,
        /// Width, pt.
        width: f64,
        /// Dashed.
        dashed: bool,
    },
    /// A filled rectangle; (x, y) is its top-left corner.
    Rect {
        /// Left.
        x: f64,
        /// Top.
        y: f64,
        /// Width.
        w: f64,
        /// Height.
        h: f64,
        /// Fill.
        color: Rgb,
    },
    /// An open polyline.
    Polyline {
        /// Points.
        points: Vec<(f64, f64)>,
        /// Colour.
        color: Rgb,
        /// Width, pt.
        width: f64,
    },
    /// A line of text; y is the baseline.
    Text {
        /// x.
        x: f64,
        /// Baseline.
        y: f64,
        /// The text.
        text: String,
        /// Font size, pt.
        size: f64,
        /// Anchor.
        anchor: Anchor,
        /// Colour.
        color: Rgb,
        /// Bold.
        bold: bool,
    },
}

/// A chart ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawing {
    /// Width, pt.
    pub width: f64,
    /// Height, pt.
    pub height: f64,
    /// Title (also the accessible name).
    pub title: String,
    /// Primitives in painting order.
    pub prims: Vec<Prim>,
}

/// One series: a name and a value per category (`None`: no data).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// Legend name.
    pub name: String,
    /// One value per label.
    pub values: Vec<Option<f64>>,
}

/// Bars (grouped, one group per label) or lines (one point per label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Grouped bars.
    Bars,
    /// Lines with point markers.
    Lines,
}

/// A chart's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// Unit of the y axis, e.g. `"MWh"`.
    pub unit: String,
    /// Category labels along x (e.g. months).
    pub labels: Vec<String>,
    /// The series.
    pub series: Vec<SeriesData>,
    /// Bars or lines.
    pub kind: Kind,
    /// Horizontal reference lines: label and value (e.g. a legal target).
    pub targets: Vec<(String, f64)>,
    /// Whether the y axis starts at zero (bars always do).
    pub from_zero: bool,
}

/// A "nice" step for about `n` intervals over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let m = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 2.5 {
        2.5
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// A tick label: no more decimals than the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (0..6)
        .find(|&d| {
            let x = step * 10f64.powi(d);
            (x - x.round()).abs() < 1e-6 * x.abs().max(1.0)
        })
        .unwrap_or(6) as usize;
    format!("{v:.decimals$}")
}

const W: f64 = 500.0;
const H: f64 = 240.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 48.0;

impl Chart {
    /// Lays the chart out.
    pub fn draw(&self) -> Drawing {
        let mut p = Vec::new();
        let text = |x: f64, y: f64, t: &str, size: f64, anchor: Anchor, bold: bool| Prim::Text {
            x,
            y,
            text: t.to_owned(),
            size,
            anchor,
            color: INK,
            bold,
        };
        p.push(text(LEFT, 16.0, &self.title, 11.0, Anchor::Start, true));
        let values: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .chain(self.targets.iter().map(|t| t.1))
            .filter(|v| v.is_finite())
            .collect();
        let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let n = self.labels.len().max(1);
        let slot = plot_w / n as f64;
        let has_data = self
            .series
            .iter()
            .any(|s| s.values.iter().flatten().any(|v| v.is_finite()));
        if !has_data {
            p.push(text(
                LEFT + plot_w / 2.0,
                TOP + plot_h / 2.0,
                "no data for this period",
                10.0,
                Anchor::Middle,
                false,
            ));
        }
        let mut lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let mut hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if values.is_empty() {
            (lo, hi) = (0.0, 1.0);
        }
        if self.from_zero || self.kind == Kind::Bars {
            lo = lo.min(0.0);
            hi = hi.max(0.0);
        }
        if hi - lo < 1e-9 * hi.abs().max(lo.abs()).max(1.0) {
            hi = lo + lo.abs().max(1.0) * 0.1;
        }
        let step = nice_step(hi - lo, 5.0);
        let lo = (lo / step).floor() * step;
        let hi = (hi / step).ceil() * step;
        let y_of = |v: f64| TOP + plot_h * (1.0 - (v - lo) / (hi - lo));
        // Grid and y ticks: counted, so no rounding can make the loop run
        // for ever (a step below the values' precision would).
        let ticks = ((hi - lo) / step).round().clamp(1.0, 50.0) as usize;
        for i in 0..=ticks {
            let t = lo + i as f64 * step;
            let y = y_of(t);
            p.push(Prim::Line {
                from: (LEFT, y),
                to: (LEFT + plot_w, y),
                color: GRID,
                width: 0.5,
                dashed: false,
            });
            p.push(text(
                LEFT - 4.0,
                y + 3.0,
                &tick_label(t, step),
                8.0,
                Anchor::End,
                false,
            ));
        }
        p.push(text(4.0, TOP - 6.0, &self.unit, 8.0, Anchor::Start, false));
        // X labels: thin them out so they do not overlap.
        let every = (n as f64 * 28.0 / plot_w).ceil().max(1.0) as usize;
        for (i, l) in self.labels.iter().enumerate() {
            if i % every == 0 {
                let x = LEFT + slot * (i as f64 + 0.5);
                p.push(text(x, TOP + plot_h + 12.0, l, 8.0, Anchor::Middle, false));
            }
        }
        // Data.
        let k = self.series.len().max(1);
        for (si, s) in self.series.iter().enumerate() {
            let color = PALETTE[si % PALETTE.len()];
            match self.kind {
                Kind::Bars => {
                    let bw = slot * 0.8 / k as f64;
                    for (i, v) in s.values.iter().enumerate() {
                        let Some(v) = v.filter(|v| v.is_finite()) else {
                            continue;
                        };
                        let x = LEFT + slot * i as f64 + slot * 0.1 + bw * si as f64;
                        let (y0, y1) = (y_of(v.max(0.0)), y_of(v.min(0.0)));
                        p.push(Prim::Rect {
                            x,
                            y: y0,
                            w: bw,
                            h: (y1 - y0).max(0.5),
                            color,
                        });
                    }
                }
                Kind::Lines => {
                    // A run of consecutive values is one polyline; a gap
                    // (no data) breaks the line.
                    let mut run: Vec<(f64, f64)> = Vec::new();
                    let flush = |run: &mut Vec<(f64, f64)>, p: &mut Vec<Prim>| {
                        if run.len() > 1 {
                            p.push(Prim::Polyline {
                                points: std::mem::take(run),
                                color,
                                width: 1.5,
                            });
                        }
                        run.clear();
                    };
                    for (i, v) in s.values.iter().enumerate() {
                        match v.filter(|v| v.is_finite()) {
                            Some(v) => {
                                let pt = (LEFT + slot * (i as f64 + 0.5), y_of(v));
                                p.push(Prim::Rect {
                                    x: pt.0 - 1.75,
                                    y: pt.1 - 1.75,
                                    w: 3.5,
                                    h: 3.5,
                                    color,
                                });
                                run.push(pt);
                            }
                            None => flush(&mut run, &mut p),
                        }
                    }
                    flush(&mut run, &mut p);
                }
            }
        }
        for (label, v) in &self.targets {
            let y = y_of(*v);
            p.push(Prim::Line {
                from: (LEFT, y),
                to: (LEFT + plot_w, y),
                color: TARGET,
                width: 1.0,
                dashed: true,
            });
            p.push(Prim::Text {
                x: LEFT + plot_w - 2.0,
                y: y - 3.0,
                text: label.clone(),
                size: 8.0,
                anchor: Anchor::End,
                color: TARGET,
                bold: false,
            });
        }
        // Axes.
        p.push(Prim::Line {
            from: (LEFT, TOP),
            to: (LEFT, TOP + plot_h),
            color: INK,
            width: 0.8,
            dashed: false,
        });
        p.push(Prim::Line {
            from: (LEFT, y_of(lo.max(0.0).min(hi))),
            to: (LEFT + plot_w, y_of(lo.max(0.0).min(hi))),
            color: INK,
            width: 0.8,
            dashed: false,
        });
        // Legend.
        let mut x = LEFT;
        for (si, s) in self.series.iter().enumerate() {
            p.push(Prim::Rect {
                x,
                y: H - 16.0,
                w: 8.0,
                h: 8.0,
                color: PALETTE[si % PALETTE.len()],
            });
            p.push(text(x + 11.0, H - 9.0, &s.name, 8.0, Anchor::Start, false));
            x += 20.0 + 4.6 * s.name.chars().count() as f64;
        }
        Drawing {
            width: W,
            height: H,
            title: self.title.clone(),
            prims: p,
        }
    }
}

/// Escapes text for XML and HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

impl Drawing {
    /// Inline SVG (scales to its container's width).
    pub fn to_svg(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" aria-label="{}" style="max-width:100%;height:auto" font-family="Helvetica, Arial, sans-serif"><title>{}</title>"#,
            self.width,
            self.height,
            escape(&self.title),
            escape(&self.title)
        );
        for p in &self.prims {
            match p {
                Prim::Line {
                    from,
                    to,
                    color,
                    width,
                    dashed,
                } => {
                    let _ = write!(
                        s,
                        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="{}"{}/>"#,
                        from.0,
                        from.1,
                        to.0,
                        to.1,
                        color.hex(),
                        width,
                        if *dashed {
                            r#" stroke-dasharray="4 3""#
                        } else {
                            ""
                        }
                    );
                }
                Prim::Rect { x, y, w, h, color } => {
                    let _ = write!(
                        s,
                        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{}"/>"#,
                        color.hex()
                    );
                }
                Prim::Polyline {
                    points,
                    color,
                    width,
                } => {
                    let pts: Vec<String> = points
                        .iter()
                        .map(|(x, y)| format!("{x:.1},{y:.1}"))
                        .collect();
                    let _ = write!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}"/>"#,
                        pts.join(" "),
                        color.hex()
                    );
                }
                Prim::Text {
                    x,
                    y,
                    text,
                    size,
                    anchor,
                    color,
                    bold,
                } => {
                    let a = match anchor {
                        Anchor::Start => "start",
                        Anchor::Middle => "middle",
                        Anchor::End => "end",
                    };
                    let _ = write!(
                        s,
                        r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{a}" fill="{}"{}>{}</text>"#,
                        color.hex(),
                        if *bold { r#" font-weight="bold""# } else { "" },
                        escape(text)
                    );
                }
            }
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn chart(kind: Kind, values: Vec<Option<f64>>) -> Chart {
        Chart {
            title: "PUE <monthly>".into(),
            unit: "ratio".into(),
            labels: (1..=values.len()).map(|m| format!("2026-{m:02}")).collect(),
            series: vec![SeriesData {
                name: "PUE".into(),
                values,
            }],
            kind,
            targets: vec![("EnEfG 1.5".into(), 1.5)],
            from_zero: false,
        }
    }

    #[test]
    fn a_gap_breaks_the_line_and_values_stay_inside_the_plot() {
        let d = chart(
            Kind::Lines,
            vec![Some(1.3), Some(1.4), None, Some(1.2), Some(1.25)],
        )
        .draw();
        let lines: Vec<&Vec<(f64, f64)>> = d
            .prims
            .iter()
            .filter_map(|p| match p {
                Prim::Polyline { points, .. } => Some(points),
                _ => None,
            })
            .collect();
        assert_eq!(lines.len(), 2, "one line before the gap, one after");
        for pts in lines {
            for &(x, y) in pts {
                assert!((LEFT..=W - RIGHT).contains(&x) && (TOP..=H - BOTTOM).contains(&y));
            }
        }
        // The lower value is drawn lower (larger y).
        let ys: Vec<f64> = d
            .prims
            .iter()
            .filter_map(|p| match p {
                Prim::Polyline { points, .. } => Some(points[0].1),
                _ => None,
            })
            .collect();
        assert!(ys[1] > ys[0], "1.2 sits below 1.3");
    }

    #[test]
    fn bars_are_proportional_and_start_at_zero() {
        let d = chart(Kind::Bars, vec![Some(100.0), Some(50.0)]).draw();
        let hs: Vec<f64> = d
            .prims
            .iter()
            .filter_map(|p| match p {
                Prim::Rect { h, w, .. } if *w > 8.0 => Some(*h),
                _ => None,
            })
            .collect();
        assert_eq!(hs.len(), 2);
        assert!((hs[0] / hs[1] - 2.0).abs() < 1e-9, "{hs:?}");
    }

    #[test]
    fn svg_escapes_text_and_says_when_there_is_no_data() {
        let svg = chart(Kind::Lines, vec![None, None]).draw().to_svg();
        assert!(svg.contains("PUE &lt;monthly&gt;"));
        assert!(!svg.contains("<monthly>"));
        assert!(svg.contains("no data for this period"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(0.37, 5.0), 0.1);
        assert_eq!(nice_step(1234.0, 5.0), 250.0);
        assert_eq!(tick_label(1.2000000001, 0.1), "1.2");
        assert_eq!(tick_label(250.0, 250.0), "250");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
    }
    #[test]
    fn values_a_rounding_error_apart_still_draw_a_finite_axis() {
        let v = 12_345.678_9;
        let d = chart(
            Kind::Lines,
            vec![Some(v), Some(f64::from_bits(v.to_bits() + 1))],
        );
        let d = Chart {
            targets: vec![],
            ..d
        }
        .draw();
        let ticks = d
            .prims
            .iter()
            .filter(|p| matches!(p, Prim::Line { color, .. } if *color == GRID))
            .count();
        assert!((2..=51).contains(&ticks), "{ticks}");
    }
}
