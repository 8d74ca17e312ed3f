//! Charts of the report, drawn with plotters as SVG and as PNG.
//!
//! Text is laid out with ab_glyph and a bundled DejaVu Sans, because the machines llmeff runs
//! on (CI containers, cluster nodes) often have no system fonts at all.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
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
    /// A black ring around each point, drawn over the others: points the caption explains
    /// (a saturation point). Takes no colour of its own, so the other series keep theirs.
    Highlight,
    /// A grey line that is no data but a reference (an ideal, a threshold): dashed, and dotted
    /// for a chart's second reference line so the two read apart. Takes no colour of its own.
    Reference,
}

/// Grey of reference lines.
const REFERENCE_GREY: RGBColor = RGBColor(110, 110, 110);

/// Dash and gap lengths in pixels of the first and later reference lines of a chart.
const REFERENCE_DASHES: [(u32, u32); 2] = [(8, 5), (2, 4)];

/// The spread of one point over its cycles, in data units: `(low, high)` per axis.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorBar {
    /// Horizontal extent.
    pub x: Option<(f64, f64)>,
    /// Vertical extent.
    pub y: Option<(f64, f64)>,
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
    /// Error bars, one per point (empty: none).
    pub errors: Vec<ErrorBar>,
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
    /// Base-2 logarithmic, ticks at powers of two (batch sizes or request rates spanning a
    /// wide range; rates below one per second get ticks at 0.5, 0.25, ...).
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

/// How the rows of a [`CategoryChart`] are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoryKind {
    /// A bar from zero to the value, the range as an error bar.
    Bars,
    /// A box over the quartiles, a line at the value (the median), whiskers over the range.
    Boxes,
}

/// One row of a [`CategoryChart`]: a configuration and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryRow {
    /// The configuration, written left of the row.
    pub label: String,
    /// Bar length, or the median of a box.
    pub value: f64,
    /// Error bar or whiskers (low, high).
    pub range: Option<(f64, f64)>,
    /// Box extent (first and third quartile); boxes only.
    pub quartiles: Option<(f64, f64)>,
    /// Text written right of the row (empty: none).
    pub note: String,
}

/// A chart with one horizontal row per category: bars or box plots. Rows read top to bottom
/// and labels sit in their own column, so long configuration names stay legible.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryChart {
    /// Caption above the plot.
    pub title: String,
    /// Value axis description, with unit.
    pub value_label: String,
    /// Bars or boxes.
    pub kind: CategoryKind,
    /// Rows, top to bottom.
    pub rows: Vec<CategoryRow>,
}

/// Any chart the report draws.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    /// Points and lines over two numeric axes.
    Xy(Chart),
    /// One row per category.
    Categories(CategoryChart),
}

/// Legend geometry of an [`Chart`]: where each entry sits, in pixels of the whole image.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendLayout {
    /// Top of the legend band: everything above it is the plot.
    pub top: u32,
    /// Top-left corner of each entry, in series order (series without finite points skipped).
    pub entries: Vec<(String, (i32, i32))>,
    /// Height of the whole image.
    pub height: u32,
}

/// An error bar's two ends in data units and its caps' pixel offsets.
type ErrorLine = ((f64, f64), (f64, f64), [(i32, i32); 2]);

const LEGEND_ROW: u32 = 26;
const LEGEND_SYMBOL: i32 = 30;
const LEGEND_GAP: i32 = 28;
const LEGEND_MARGIN: i32 = 18;
const LEGEND_FONT: u32 = 14;
const CATEGORY_ROW: u32 = 38;
const CATEGORY_LABEL_MAX: u32 = 380;

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

fn font(size: u32) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().into()
}

/// Width in pixels of `text` in the bundled font at `size`; fonts must be registered.
fn text_width(text: &str, size: u32) -> u32 {
    let mut scratch = String::new();
    let area = SVGBackend::with_string(&mut scratch, (16, 16)).into_drawing_area();
    area.estimate_text_size(text, &font(size))
        .map(|(w, _)| w)
        // A DejaVu glyph averages about 0.62 em; only reached if the font failed to lay out.
        .unwrap_or_else(|_| text.chars().count() as u32 * size * 62 / 100)
}

/// `text` cut to at most `max` pixels, with an ellipsis when cut.
fn fit(text: &str, size: u32, max: u32) -> String {
    if text_width(text, size) <= max {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut n = chars.len();
    while n > 1 {
        n -= 1;
        let candidate: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(&candidate, size) <= max {
            return candidate;
        }
    }
    "…".into()
}

/// Renders an image of `size` as SVG with `draw`.
fn render_svg<F>(size: (u32, u32), draw: F) -> Result<String, ReportError>
where
    F: FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), ReportError>,
{
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| ReportError::Plot {
            name: "svg".into(),
            message: e.to_string(),
        })?;
    }
    Ok(svg)
}

/// Renders an image of `size` as PNG bytes with `draw`.
fn render_png<F>(size: (u32, u32), draw: F) -> Result<Vec<u8>, ReportError>
where
    F: FnOnce(
        &DrawingArea<BitMapBackend<'_, plotters::backend::RGBPixel>, Shift>,
    ) -> Result<(), ReportError>,
{
    let plot_error = |e: &dyn std::fmt::Display| ReportError::Plot {
        name: "png".into(),
        message: e.to_string(),
    };
    let (w, h) = size;
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let backend =
            BitMapBackend::<plotters::backend::RGBPixel>::with_buffer_and_format(&mut pixels, size)
                .map_err(|e| plot_error(&e))?;
        let root = backend.into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| plot_error(&e))?;
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| plot_error(&e))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| plot_error(&e))?;
    writer.finish().map_err(|e| plot_error(&e))?;
    Ok(bytes)
}

impl Figure {
    /// The chart's title.
    pub fn title(&self) -> &str {
        match self {
            Figure::Xy(c) => &c.title,
            Figure::Categories(c) => &c.title,
        }
    }

    /// The figure as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        match self {
            Figure::Xy(c) => c.to_svg(),
            Figure::Categories(c) => c.to_svg(),
        }
    }

    /// The figure as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, ReportError> {
        match self {
            Figure::Xy(c) => c.to_png(),
            Figure::Categories(c) => c.to_png(),
        }
    }
}

impl Chart {
    fn x_of(&self, x: f64) -> f64 {
        match self.x_scale {
            XScale::Log2 => x.log2(),
            XScale::Linear | XScale::Integer => x,
        }
    }

    /// The finite points of a series, with x mapped to the axis, each with its error bar
    /// (mapped likewise; an error bar that does not map to finite values is dropped).
    fn mapped(&self, series: &Series) -> Vec<((f64, f64), ErrorBar)> {
        series
            .points
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| {
                let e = series.errors.get(i).copied().unwrap_or_default();
                let finite = |r: (f64, f64)| r.0.is_finite() && r.1.is_finite();
                let e = ErrorBar {
                    x: e.x
                        .map(|(lo, hi)| (self.x_of(lo), self.x_of(hi)))
                        .filter(|r| finite(*r)),
                    y: e.y.filter(|r| finite(*r)),
                };
                ((self.x_of(x), y), e)
            })
            .filter(|((x, y), _)| x.is_finite() && y.is_finite())
            .collect()
    }

    /// Axis ranges: y from zero (or the lowest value, if negative), padded so no point or
    /// error bar sits on the frame; a single value gets a unit-wide range.
    fn ranges(&self) -> Option<(std::ops::Range<f64>, std::ops::Range<f64>)> {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for s in &self.series {
            for ((x, y), e) in self.mapped(s) {
                xs.push(x);
                ys.push(y);
                if let Some((lo, hi)) = e.x {
                    xs.extend([lo, hi]);
                }
                if let Some((lo, hi)) = e.y {
                    ys.extend([lo, hi]);
                }
            }
        }
        if xs.is_empty() {
            return None;
        }
        let span = |v: &[f64]| {
            v.iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                })
        };
        let (x_lo, x_hi) = span(&xs);
        let (y_lo, y_hi) = span(&ys);
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

    /// Where the legend goes: a band below the plot, entries flowing left to right and
    /// wrapping, so the legend never covers data however many series there are.
    pub fn legend_layout(&self) -> Result<LegendLayout, ReportError> {
        register_fonts()?;
        let (width, plot_height) = SIZE;
        let names: Vec<&str> = self
            .series
            .iter()
            .filter(|s| !self.mapped(s).is_empty())
            .map(|s| s.name.as_str())
            .collect();
        let max_text = width as i32 - 2 * LEGEND_MARGIN - LEGEND_SYMBOL;
        let mut entries = Vec::new();
        let (mut x, mut row) = (LEGEND_MARGIN, 0u32);
        for name in names {
            let text = fit(name, LEGEND_FONT, max_text.max(40) as u32);
            let w = LEGEND_SYMBOL + text_width(&text, LEGEND_FONT) as i32;
            if x > LEGEND_MARGIN && x + w > width as i32 - LEGEND_MARGIN {
                x = LEGEND_MARGIN;
                row += 1;
            }
            entries.push((text, (x, (plot_height + 6 + row * LEGEND_ROW) as i32)));
            x += w + LEGEND_GAP;
        }
        let rows = if entries.is_empty() { 0 } else { row + 1 };
        Ok(LegendLayout {
            top: plot_height,
            height: plot_height + rows * LEGEND_ROW + if rows > 0 { 12 } else { 0 },
            entries,
        })
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        let legend = self.legend_layout()?;
        render_svg((SIZE.0, legend.height), |root| self.draw(root, &legend))
    }

    /// The chart as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, ReportError> {
        let legend = self.legend_layout()?;
        render_png((SIZE.0, legend.height), |root| self.draw(root, &legend))
    }

    fn error(&self, e: impl std::fmt::Display) -> ReportError {
        ReportError::Plot {
            name: self.title.clone(),
            message: e.to_string(),
        }
    }

    /// The dash and gap of each series (reference lines only), in order.
    fn dashes(&self) -> Vec<(u32, u32)> {
        let mut references = 0;
        self.series
            .iter()
            .map(|s| {
                if s.kind == SeriesKind::Reference {
                    references += 1;
                    REFERENCE_DASHES[(references - 1).min(REFERENCE_DASHES.len() - 1)]
                } else {
                    (8, 5)
                }
            })
            .collect()
    }

    /// The colour and stroke of each series, in order.
    fn styles(&self) -> Vec<(ShapeStyle, ShapeStyle)> {
        let mut colour = 0;
        self.series
            .iter()
            .map(|s| {
                if matches!(s.kind, SeriesKind::Front | SeriesKind::Highlight) {
                    (BLACK.stroke_width(2), BLACK.filled())
                } else if s.kind == SeriesKind::Reference {
                    (REFERENCE_GREY.stroke_width(2), REFERENCE_GREY.filled())
                } else {
                    let c = PALETTE[colour % PALETTE.len()];
                    colour += 1;
                    (c.stroke_width(2), c.filled())
                }
            })
            .collect()
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        legend: &LegendLayout,
    ) -> Result<(), ReportError> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| self.error(e);
        root.fill(&WHITE).map_err(err)?;
        let Some((x_range, y_range)) = self.ranges() else {
            return Err(self.error("no finite points to draw"));
        };
        let (plot, below) = root.split_vertically(legend.top);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, font(24))
            .margin(18)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(x_range, y_range)
            .map_err(err)?;
        let x_format = |v: &f64| match self.x_scale {
            XScale::Linear => tick(*v),
            XScale::Integer => integer_tick(*v),
            XScale::Log2 => power_of_two_tick(*v),
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

        let styles = self.styles();
        let dashes = self.dashes();
        for ((series, &(line, fill)), &(dash, gap)) in self.series.iter().zip(&styles).zip(&dashes)
        {
            let mapped = self.mapped(series);
            if mapped.is_empty() {
                continue;
            }
            let points: Vec<(f64, f64)> = mapped.iter().map(|(p, _)| *p).collect();
            let mut sorted = points.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            // Error bars first, so markers sit on top of them.
            let thin = fill.color.stroke_width(1);
            for &((x, y), e) in &mapped {
                // Each bar is a line in data units with caps of fixed pixel length.
                let mut bars: Vec<ErrorLine> = Vec::new();
                if let Some((lo, hi)) = e.y {
                    bars.push(((x, lo), (x, hi), [(-5, 0), (5, 0)]));
                }
                if let Some((lo, hi)) = e.x {
                    bars.push(((lo, y), (hi, y), [(0, -5), (0, 5)]));
                }
                for (a, b, cap) in bars {
                    chart
                        .draw_series([PathElement::new(vec![a, b], thin)])
                        .map_err(err)?;
                    chart
                        .draw_series(
                            [a, b].map(|p| EmptyElement::at(p) + PathElement::new(cap, thin)),
                        )
                        .map_err(err)?;
                }
            }
            match series.kind {
                SeriesKind::Markers => {
                    chart
                        .draw_series(points.iter().map(|&p| Circle::new(p, 5, fill)))
                        .map_err(err)?;
                }
                SeriesKind::LineMarkers => {
                    chart
                        .draw_series(points.iter().map(|&p| Circle::new(p, 5, fill)))
                        .map_err(err)?;
                    chart
                        .draw_series(LineSeries::new(sorted, line))
                        .map_err(err)?;
                }
                SeriesKind::Line => {
                    chart
                        .draw_series(LineSeries::new(sorted, line))
                        .map_err(err)?;
                }
                SeriesKind::Front | SeriesKind::Reference => {
                    chart
                        .draw_series(DashedLineSeries::new(sorted, dash, gap, line))
                        .map_err(err)?;
                }
                SeriesKind::Highlight => {
                    chart
                        .draw_series(points.iter().map(|&p| Circle::new(p, 10, line)))
                        .map_err(err)?;
                }
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

        // The legend, in its own band below the plot.
        let drawn: Vec<_> = self
            .series
            .iter()
            .zip(styles)
            .zip(dashes)
            .filter(|((s, _), _)| !self.mapped(s).is_empty())
            .map(|((s, style), dash)| (s, style, dash))
            .collect();
        let top = legend.top as i32;
        for ((text, (x, y)), (series, (line, fill), (dash, gap))) in
            legend.entries.iter().zip(drawn)
        {
            let (x, y) = (*x, *y - top);
            let mid = y + LEGEND_ROW as i32 / 2;
            if series.kind == SeriesKind::Markers {
                below
                    .draw(&Circle::new((x + 10, mid), 5, fill))
                    .map_err(err)?;
            } else if series.kind == SeriesKind::Highlight {
                below
                    .draw(&Circle::new((x + 10, mid), 8, line))
                    .map_err(err)?;
            } else if series.kind == SeriesKind::Reference {
                let (dash, gap) = (dash as i32, gap as i32);
                let mut from = x;
                while from < x + 21 {
                    let to = (from + dash).min(x + 21);
                    below
                        .draw(&PathElement::new(vec![(from, mid), (to, mid)], line))
                        .map_err(err)?;
                    from = to + gap;
                }
            } else if series.kind == SeriesKind::Front {
                below
                    .draw(&PathElement::new(vec![(x, mid), (x + 8, mid)], line))
                    .map_err(err)?;
                below
                    .draw(&PathElement::new(vec![(x + 13, mid), (x + 21, mid)], line))
                    .map_err(err)?;
            } else {
                below
                    .draw(&PathElement::new(vec![(x, mid), (x + 21, mid)], line))
                    .map_err(err)?;
            }
            below
                .draw_text(
                    text,
                    &font(LEGEND_FONT).pos(Pos::new(HPos::Left, VPos::Center)),
                    (x + LEGEND_SYMBOL, mid),
                )
                .map_err(err)?;
        }
        Ok(())
    }
}

impl CategoryChart {
    fn error(&self, e: impl std::fmt::Display) -> ReportError {
        ReportError::Plot {
            name: self.title.clone(),
            message: e.to_string(),
        }
    }

    /// Width of the label column and each row's label, cut to fit it.
    fn labels(&self) -> (u32, Vec<String>) {
        let labels: Vec<String> = self
            .rows
            .iter()
            .map(|r| fit(&r.label, 14, CATEGORY_LABEL_MAX))
            .collect();
        let width = labels
            .iter()
            .map(|l| text_width(l, 14))
            .max()
            .unwrap_or(0)
            .max(60)
            + 24;
        (width, labels)
    }

    fn size(&self) -> (u32, u32) {
        (SIZE.0, 150 + CATEGORY_ROW * self.rows.len().max(1) as u32)
    }

    /// Value axis range: from zero (or the lowest value) to past the highest, with room for
    /// the notes written beside the rows.
    fn range(&self, label_width: u32) -> Option<std::ops::Range<f64>> {
        let values: Vec<f64> = self
            .rows
            .iter()
            .flat_map(|r| {
                [Some(r.value), r.range.map(|x| x.0), r.range.map(|x| x.1)]
                    .into_iter()
                    .chain([r.quartiles.map(|q| q.0), r.quartiles.map(|q| q.1)])
                    .flatten()
            })
            .filter(|v| v.is_finite())
            .collect();
        if values.is_empty() {
            return None;
        }
        let lo = values.iter().copied().fold(0.0, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let hi = if hi > lo { hi } else { lo + 1.0 };
        // Room right of the longest row for the notes written beside the rows: their width
        // as a share of the plot's, so no note runs off the image.
        let note = self
            .rows
            .iter()
            .map(|r| text_width(&r.note, 13))
            .max()
            .unwrap_or(0) as f64
            + 24.0;
        let plot = (SIZE.0 as f64 - label_width as f64 - 60.0).max(note * 2.0);
        let room = (note / (plot - note)).max(0.05);
        Some(lo..hi + (hi - lo) * room)
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        register_fonts()?;
        render_svg(self.size(), |root| self.draw(root))
    }

    /// The chart as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, ReportError> {
        register_fonts()?;
        render_png(self.size(), |root| self.draw(root))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| self.error(e);
        root.fill(&WHITE).map_err(err)?;
        let (label_width, labels) = self.labels();
        let Some(range) = self.range(label_width) else {
            return Err(self.error("no finite values to draw"));
        };
        let n = self.rows.len();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(24))
            .margin(18)
            .x_label_area_size(56)
            .y_label_area_size(label_width)
            .build_cartesian_2d(range, -0.5..(n as f64 - 0.5))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(&self.value_label)
            .axis_desc_style(font(17))
            .label_style(font(14))
            .x_label_formatter(&|v: &f64| tick(*v))
            // Only the labelled grid lines: a fine grid behind bars reads as hatching.
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(err)?;
        let colour = PALETTE[0];
        let whisker = RGBColor(40, 40, 40).stroke_width(1);
        let note_style = font(13).color(&RGBColor(60, 60, 60));
        for (i, (row, label)) in self.rows.iter().zip(&labels).enumerate() {
            // The first row at the top.
            let y = (n - 1 - i) as f64;
            if !row.value.is_finite() {
                continue;
            }
            match self.kind {
                CategoryKind::Bars => {
                    chart
                        .draw_series([Rectangle::new(
                            [(0.0, y - 0.32), (row.value, y + 0.32)],
                            colour.mix(0.8).filled(),
                        )])
                        .map_err(err)?;
                }
                CategoryKind::Boxes => {
                    if let Some((q1, q3)) = row.quartiles {
                        chart
                            .draw_series([
                                Rectangle::new(
                                    [(q1, y - 0.3), (q3, y + 0.3)],
                                    colour.mix(0.35).filled(),
                                ),
                                Rectangle::new(
                                    [(q1, y - 0.3), (q3, y + 0.3)],
                                    colour.stroke_width(1),
                                ),
                            ])
                            .map_err(err)?;
                    }
                    chart
                        .draw_series([PathElement::new(
                            vec![(row.value, y - 0.3), (row.value, y + 0.3)],
                            BLACK.stroke_width(3),
                        )])
                        .map_err(err)?;
                }
            }
            if let Some((lo, hi)) = row.range.filter(|r| r.0.is_finite() && r.1.is_finite()) {
                chart
                    .draw_series([
                        PathElement::new(vec![(lo, y), (hi, y)], whisker).into_dyn(),
                        PathElement::new(vec![(lo, y - 0.15), (lo, y + 0.15)], whisker).into_dyn(),
                        PathElement::new(vec![(hi, y - 0.15), (hi, y + 0.15)], whisker).into_dyn(),
                    ])
                    .map_err(err)?;
            }
            if !row.note.is_empty() {
                let end = row.range.map_or(row.value, |r| r.1.max(row.value));
                chart
                    .draw_series([EmptyElement::at((end, y))
                        + Text::new(
                            row.note.clone(),
                            (8, 0),
                            note_style.pos(Pos::new(HPos::Left, VPos::Center)),
                        )])
                    .map_err(err)?;
            }
            // The label, right-aligned against the axis.
            let (ax, ay) = chart.backend_coord(&(chart.x_range().start, y));
            root.draw_text(
                label,
                &font(14).pos(Pos::new(HPos::Right, VPos::Center)),
                (ax - 8, ay),
            )
            .map_err(err)?;
        }
        Ok(())
    }
}

/// A tick label with as few digits as the value needs (`0.5`, not `0.500`), never in
/// exponent notation for the magnitudes a study produces.
fn tick(v: f64) -> String {
    super::format::number(v)
}

/// An integer tick label; ticks between integers stay blank.
fn integer_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-6 && v.round() >= 0.0 {
        format!("{}", v.round())
    } else {
        String::new()
    }
}

/// The tick label of a log2 axis at `log2_value`: the power of two where it is a whole
/// exponent (`0.5`, `1`, `1024`), blank between them.
fn power_of_two_tick(log2_value: f64) -> String {
    if (log2_value - log2_value.round()).abs() < 1e-6 {
        tick(log2_value.round().exp2())
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
                errors: Vec::new(),
                kind: SeriesKind::LineMarkers,
            }],
        }
    }

    /// The `attr` values of every `<tag ...>` element of an SVG document.
    fn attrs(svg: &str, tag: &str, attr: &str) -> Vec<f64> {
        svg.split(&format!("<{tag} "))
            .skip(1)
            .filter_map(|el| {
                let el = &el[..el.find('>')?];
                let start = el.find(&format!(" {attr}=\""))? + attr.len() + 3;
                el[start..start + el[start..].find('"')?].parse().ok()
            })
            .collect()
    }

    /// The y of every `<text>` element whose content is `content`.
    fn text_y(svg: &str, content: &str) -> Vec<f64> {
        svg.split("<text ")
            .skip(1)
            .filter(|el| {
                // plotters writes the content on its own line.
                el.find('>')
                    .is_some_and(|i| el[i + 1..].starts_with(&format!("\n{content}\n</text>")))
            })
            .filter_map(|el| {
                let start = el.find(" y=\"")? + 4;
                el[start..start + el[start..].find('"')?].parse().ok()
            })
            .collect()
    }

    #[test]
    fn the_legend_sits_below_the_plot_and_never_over_data() {
        // Many long-named series: a legend inside the plot would cover points.
        let series: Vec<Series> = (0..7)
            .map(|i| Series {
                name: format!("tiny-stories f32 decoding=sample temperature=0.{i} top_k=40"),
                points: vec![
                    (f64::from(i), 10.0 - f64::from(i)),
                    (f64::from(i) + 0.5, 10.0),
                ],
                labels: Vec::new(),
                errors: Vec::new(),
                kind: SeriesKind::Markers,
            })
            .collect();
        let c = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_scale: XScale::Linear,
            series,
        };
        let layout = c.legend_layout().unwrap();
        assert_eq!(layout.top, SIZE.1);
        assert_eq!(layout.entries.len(), 7);
        assert!(
            layout.height > SIZE.1 + 2 * LEGEND_ROW,
            "entries wrap onto rows"
        );
        let svg = c.to_svg().unwrap();
        assert!(svg.contains(&format!("height=\"{}\"", layout.height)));
        let circles = attrs(&svg, "circle", "cy");
        assert!(!circles.is_empty());
        for s in &c.series {
            let ys = text_y(&svg, &s.name);
            assert_eq!(ys.len(), 1, "{} drawn once", s.name);
            assert!(ys[0] > f64::from(SIZE.1), "legend text at y={}", ys[0]);
        }
        // Data markers stay in the plot band; legend markers only below it.
        let in_plot = circles.iter().filter(|&&y| y < f64::from(SIZE.1)).count();
        assert_eq!(in_plot, 14, "{circles:?}");
    }

    #[test]
    fn error_bars_are_drawn_and_widen_the_axes() {
        let mut c = chart(XScale::Linear, vec![(1.0, 10.0), (2.0, 12.0)]);
        let plain = c.to_svg().unwrap();
        c.series[0].errors = vec![
            ErrorBar {
                x: Some((0.5, 1.5)),
                y: Some((8.0, 30.0)),
            },
            ErrorBar::default(),
        ];
        let (_, y) = c.ranges().unwrap();
        assert!(y.end > 30.0, "{y:?}");
        let with = c.to_svg().unwrap();
        // Two bars of one line and two caps each.
        let lines = |svg: &str| svg.matches("<polyline").count();
        assert_eq!(lines(&with), lines(&plain) + 6);
    }

    #[test]
    fn category_charts_label_rows_and_keep_notes_inside() {
        let long = "decoding=sample temperature=0.8 top_k=40 top_p=0.95 min_new_tokens=8 max_new_tokens=256";
        for kind in [CategoryKind::Bars, CategoryKind::Boxes] {
            let c = CategoryChart {
                title: "b".into(),
                value_label: "v (ms)".into(),
                kind,
                rows: vec![
                    CategoryRow {
                        label: "greedy".into(),
                        value: 2.0,
                        range: Some((1.0, 3.0)),
                        quartiles: Some((1.5, 2.5)),
                        note: "p50 2 ms, n=16".into(),
                    },
                    CategoryRow {
                        label: long.into(),
                        value: 4.0,
                        range: None,
                        quartiles: None,
                        note: "4".into(),
                    },
                ],
            };
            let svg = c.to_svg().unwrap();
            assert_eq!(text_y(&svg, "greedy").len(), 1);
            assert!(!svg.contains(long), "an overlong label is cut");
            assert!(svg.contains("…\n</text>"));
            let (label_width, _) = c.labels();
            assert!(label_width <= CATEGORY_LABEL_MAX + 24);
            // The note's room: the value axis reaches past the longest row.
            let range = c.range(label_width).unwrap();
            assert!(range.end > 4.0 * 1.05, "{range:?}");
            assert!(c.to_png().is_ok());
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
        assert_eq!(tick(0.0002), "0.0002");
        assert_eq!(tick(0.0015), "0.0015");
        assert_eq!(tick(2.25), "2.25");
        assert_eq!(integer_tick(4.0), "4");
        assert_eq!(integer_tick(4.5), "");
        assert_eq!(power_of_two_tick(3.0), "8");
        assert_eq!(power_of_two_tick(10.0), "1024");
        assert_eq!(power_of_two_tick(-1.0), "0.5");
        assert_eq!(power_of_two_tick(-2.0), "0.25");
        assert_eq!(power_of_two_tick(3.5), "");
    }

    #[test]
    fn highlights_and_references_take_no_colour_and_have_legend_entries() {
        let mut c = chart(XScale::Log2, vec![(100.0, 90.0), (400.0, 300.0)]);
        c.series.push(Series {
            name: "ideal".into(),
            points: vec![(100.0, 100.0), (400.0, 400.0)],
            labels: Vec::new(),
            errors: Vec::new(),
            kind: SeriesKind::Reference,
        });
        c.series.push(Series {
            name: "threshold".into(),
            points: vec![(100.0, 90.0), (400.0, 360.0)],
            labels: Vec::new(),
            errors: Vec::new(),
            kind: SeriesKind::Reference,
        });
        c.series.push(Series {
            name: "saturation point".into(),
            points: vec![(400.0, 300.0)],
            labels: vec!["saturates at 400/s".into()],
            errors: Vec::new(),
            kind: SeriesKind::Highlight,
        });
        c.series.push(Series {
            name: "second".into(),
            points: vec![(100.0, 50.0)],
            labels: Vec::new(),
            errors: Vec::new(),
            kind: SeriesKind::Markers,
        });
        let styles = c.styles();
        // The data series take the palette's first two colours, whatever lies between them.
        assert_eq!(styles[0].0.color, PALETTE[0].to_rgba());
        assert_eq!(styles[4].0.color, PALETTE[1].to_rgba());
        assert_eq!(styles[1].0.color, REFERENCE_GREY.to_rgba());
        assert_eq!(styles[3].0.color, BLACK.to_rgba());
        assert_eq!(c.dashes()[1], REFERENCE_DASHES[0]);
        assert_eq!(c.dashes()[2], REFERENCE_DASHES[1]);
        let svg = c.to_svg().unwrap();
        for name in ["ideal", "threshold", "saturation point", "second"] {
            assert_eq!(text_y(&svg, name).len(), 1, "{name} in the legend");
        }
        assert_eq!(text_y(&svg, "saturates at 400/s").len(), 1);
        // The ring: a hollow circle of radius 10 at the point, and one in the legend.
        let radii = attrs(&svg, "circle", "r");
        assert_eq!(radii.iter().filter(|&&r| r == 10.0).count(), 1, "{radii:?}");
        // Ticks at powers of two across 100..400/s.
        for t in ["128", "256"] {
            assert_eq!(text_y(&svg, t).len(), 1, "tick {t}");
        }
        assert!(c.to_png().is_ok());
    }
}
