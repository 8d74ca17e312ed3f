//! Charts of the report, drawn with plotters as SVG and as PNG.
//!
//! Text is laid out with ab_glyph and a bundled DejaVu Sans, because the machines llmeff runs
//! on (CI containers, cluster nodes) often have no system fonts at all.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::ReportError;

/// The bundled font (DejaVu Sans, Bitstream Vera licence: `assets/fonts/LICENSE-DejaVu.txt`).
pub const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// The family name the charts ask for; the HTML page declares it with `@font-face` so inline
/// SVG text uses the same font as the PNGs.
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// Pixel size of every chart.
pub const SIZE: (u32, u32) = (960, 600);

/// Colour-blind-safe palette (Okabe-Ito), cycled when there are more series.
const PALETTE: &[RGBColor] = &[
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(120, 120, 120),
    RGBColor(240, 228, 66),
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Points only.
    Markers,
    /// Points joined in x order.
    LineMarkers,
    /// A line without points (dense time series).
    Line,
    /// A dashed black line (a Pareto front), drawn over the others.
    Front,
}

/// One named set of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// (x, y) in data units.
    pub points: Vec<(f64, f64)>,
    /// Text written beside each point (empty: none).
    pub labels: Vec<String>,
    /// How it is drawn.
    pub kind: SeriesKind,
}

/// How the x axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XScale {
    /// Linear, any real value.
    Linear,
    /// Linear, ticks only at integers (batch sizes).
    Integer,
    /// Base-2 logarithmic, ticks at powers of two (batch sizes spanning a wide range).
    Log2,
}

/// A chart: title, axis labels with units, and series.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Caption above the plot.
    pub title: String,
    /// X axis description, with unit.
    pub x_label: String,
    /// Y axis description, with unit.
    pub y_label: String,
    /// X axis scale.
    pub x_scale: XScale,
    /// Series in legend order.
    pub series: Vec<Series>,
}

fn register_fonts() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        // "sans-serif" too: plotters falls back to it for any text given no family.
        [FONT_FAMILY, "sans-serif"]
            .iter()
            .all(|name| register_font(name, FontStyle::Normal, FONT).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(ReportError::Plot {
            name: "font".into(),
            message: "the bundled DejaVu Sans could not be parsed".into(),
        })
    }
}

impl Chart {
    fn x_of(&self, x: f64) -> f64 {
        match self.x_scale {
            XScale::Log2 => x.log2(),
            XScale::Linear | XScale::Integer => x,
        }
    }

    /// The finite points of a series, with x mapped to the axis.
    fn mapped(&self, series: &Series) -> Vec<(f64, f64)> {
        series
            .points
            .iter()
            .map(|&(x, y)| (self.x_of(x), y))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    }

    /// Axis ranges: y from zero (or the lowest value, if negative), padded so no point sits on
    /// the frame; a single value gets a unit-wide range.
    fn ranges(&self) -> Option<(std::ops::Range<f64>, std::ops::Range<f64>)> {
        let points: Vec<(f64, f64)> = self.series.iter().flat_map(|s| self.mapped(s)).collect();
        if points.is_empty() {
            return None;
        }
        let fold = |f: fn(&(f64, f64)) -> f64| {
            points
                .iter()
                .map(f)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                })
        };
        let (x_lo, x_hi) = fold(|p| p.0);
        let (y_lo, y_hi) = fold(|p| p.1);
        let x_range = match self.x_scale {
            XScale::Linear => {
                let lo = x_lo.min(0.0);
                let hi = if x_hi > lo { x_hi * 1.08 } else { lo + 1.0 };
                lo..hi
            }
            XScale::Integer | XScale::Log2 => {
                let pad = ((x_hi - x_lo) * 0.06).max(0.5);
                (x_lo - pad)..(x_hi + pad)
            }
        };
        let y_lo = y_lo.min(0.0);
        let y_hi = if y_hi > y_lo {
            y_hi + (y_hi - y_lo) * 0.1
        } else {
            y_lo + 1.0
        };
        Some((x_range, y_lo..y_hi))
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        register_fonts()?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(|e| self.error(e))?;
        }
        Ok(svg)
    }

    /// The chart as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, ReportError> {
        register_fonts()?;
        let (w, h) = SIZE;
        let mut pixels = vec![0u8; (w * h * 3) as usize];
        {
            let backend = BitMapBackend::<plotters::backend::RGBPixel>::with_buffer_and_format(
                &mut pixels,
                SIZE,
            )
            .map_err(|e| self.error(e))?;
            let root = backend.into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(|e| self.error(e))?;
        }
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| self.error(e))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| self.error(e))?;
        writer.finish().map_err(|e| self.error(e))?;
        Ok(bytes)
    }

    fn error(&self, e: impl std::fmt::Display) -> ReportError {
        ReportError::Plot {
            name: self.title.clone(),
            message: e.to_string(),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| self.error(e);
        root.fill(&WHITE).map_err(err)?;
        let Some((x_range, y_range)) = self.ranges() else {
            return Err(self.error("no finite points to draw"));
        };
        let font = |size: u32| (FONT_FAMILY, size).into_font();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(24))
            .margin(18)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(x_range, y_range)
            .map_err(err)?;
        let x_format = |v: &f64| match self.x_scale {
            XScale::Linear => tick(*v),
            XScale::Integer => integer_tick(*v),
            XScale::Log2 => integer_tick(v.exp2()),
        };
        let y_format = |v: &f64| tick(*v);
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style(font(17))
            .label_style(font(14))
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(err)?;

        let mut colour = 0;
        for series in &self.series {
            let points = self.mapped(series);
            if points.is_empty() {
                continue;
            }
            let (line, fill) = if series.kind == SeriesKind::Front {
                (BLACK.stroke_width(2), BLACK.filled())
            } else {
                let c = PALETTE[colour % PALETTE.len()];
                colour += 1;
                (c.stroke_width(2), c.filled())
            };
            let mut sorted = points.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let anno = match series.kind {
                SeriesKind::Markers => chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 5, fill)))
                    .map_err(err)?,
                SeriesKind::LineMarkers => {
                    chart
                        .draw_series(points.iter().map(|&p| Circle::new(p, 5, fill)))
                        .map_err(err)?;
                    chart
                        .draw_series(LineSeries::new(sorted, line))
                        .map_err(err)?
                }
                SeriesKind::Line => chart
                    .draw_series(LineSeries::new(sorted, line))
                    .map_err(err)?,
                SeriesKind::Front => chart
                    .draw_series(DashedLineSeries::new(sorted, 8, 5, line))
                    .map_err(err)?,
            };
            anno.label(series.name.as_str());
            if series.kind == SeriesKind::Markers {
                anno.legend(move |(x, y)| Circle::new((x + 10, y), 5, fill));
            } else {
                anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], line));
            }
            if !series.labels.is_empty() {
                let style = font(13).color(&RGBColor(60, 60, 60));
                chart
                    .draw_series(series.points.iter().zip(&series.labels).filter_map(
                        |(&(x, y), label)| {
                            let p = (self.x_of(x), y);
                            (p.0.is_finite() && p.1.is_finite()).then(|| {
                                EmptyElement::at(p) + Text::new(label.clone(), (7, -18), &style)
                            })
                        },
                    ))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(font(14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// A tick label with as few digits as the value needs (`0.5`, not `0.500`).
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 0.001 {
        // Three significant digits below 1, three decimals above, trailing zeros trimmed.
        let decimals = if a >= 1.0 {
            3
        } else {
            2 + (-a.log10()).ceil() as usize
        };
        let s = format!("{v:.decimals$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// An integer tick label; ticks between integers stay blank.
fn integer_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-6 && v.round() >= 0.0 {
        format!("{}", v.round())
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(scale: XScale, points: Vec<(f64, f64)>) -> Chart {
        Chart {
            title: "t <&>".into(),
            x_label: "x (s)".into(),
            y_label: "y (tokens/s)".into(),
            x_scale: scale,
            series: vec![Series {
                name: "a & b".into(),
                points,
                labels: Vec::new(),
                kind: SeriesKind::LineMarkers,
            }],
        }
    }

    #[test]
    fn renders_svg_and_png_even_for_a_single_point() {
        let c = chart(XScale::Integer, vec![(4.0, 10.0)]);
        let svg = c.to_svg().unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a &amp; b"));
        let png = c.to_png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn a_chart_without_finite_points_is_an_error_not_a_panic() {
        let c = chart(XScale::Linear, vec![(f64::NAN, 1.0)]);
        assert!(c.to_svg().is_err());
        let c = chart(XScale::Log2, vec![(0.0, 1.0)]);
        assert!(c.to_png().is_err());
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(1500.4), "1500");
        assert_eq!(tick(0.0002), "2.0e-4");
        assert_eq!(tick(0.0015), "0.0015");
        assert_eq!(tick(2.25), "2.25");
        assert_eq!(integer_tick(4.0), "4");
        assert_eq!(integer_tick(4.5), "");
    }
}
