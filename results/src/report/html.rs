//! The report as one self-contained HTML page: inline CSS, the bundled font as a data URI,
//! the charts as inline SVG. It references nothing outside itself, so it opens offline and
//! survives being mailed around.

use base64::Engine;

use super::{EnvironmentEntry, Report, TextTable};
use crate::report::plot::{FONT, FONT_FAMILY, SIZE};

/// Text cells longer than this may wrap (between words); shorter ones stay on one line.
const LONG_TEXT: usize = 24;

/// Width a table may take on the page, in CSS pixels: the 1100 px body of a 1200 px window.
pub const TABLE_WIDTH_PX: f64 = 1100.0;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1d1d1f; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; margin-top: 0; }
.notes { background: #fff8e1; border-left: 4px solid #e6a700; padding: 0.6em 1em 0.6em 2em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #d0d0d0; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; font-weight: 600; }
td { white-space: nowrap; }
td.long { white-space: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.env th { text-align: left; white-space: nowrap; }
table.env td { white-space: normal; overflow-wrap: anywhere; }
h3.part { font-size: 1em; color: #555; margin: 1em 0 0.3em; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; }
svg.plot { width: 100%; height: auto; max-width: 960px; border: 1px solid #e5e5e5; }
figcaption { color: #555; font-size: 0.9em; }
"#;

/// An SVG document made fit for inline use: the outer tag loses its fixed size and its XML
/// namespace (HTML parsers supply it), gains a class and an accessible label.
fn inline_svg(svg: &str, label: &str) -> String {
    let (w, h) = svg_size(svg).unwrap_or(SIZE);
    let body = match (svg.find("<svg"), svg.find('>')) {
        (Some(0), Some(end)) => &svg[end + 1..],
        // Not what plotters writes: keep the document as is rather than cut it wrongly.
        _ => return svg.replace("http://www.w3.org/2000/svg", ""),
    };
    format!(
        "<svg class=\"plot\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">{body}",
        escape(label)
    )
}

/// Width and height of an SVG document, from its outer tag's `width` and `height`.
fn svg_size(svg: &str) -> Option<(u32, u32)> {
    let tag = &svg[..svg.find('>')?];
    let attr = |name: &str| -> Option<u32> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        tag[start..start + len].parse().ok()
    };
    Some((attr("width")?, attr("height")?))
}

fn is_number(cell: &str) -> bool {
    cell.parse::<f64>().is_ok()
}

/// Estimated rendered width of a column in CSS pixels: numbers never wrap; text and headers
/// wrap between words, so their longest word counts.
fn column_width(t: &TextTable, c: usize) -> f64 {
    // 0.85em DejaVu Sans at a 16 px root: about 8.2 px per character, plus cell padding.
    const CHAR_PX: f64 = 8.2;
    const PADDING_PX: f64 = 18.0;
    let longest_word = |s: &str| {
        s.split_whitespace()
            .map(|w| w.chars().count())
            .max()
            .unwrap_or(0)
    };
    let header = t.header.get(c).map_or(0, |h| longest_word(h));
    let cells = t
        .rows
        .iter()
        .filter_map(|r| r.get(c))
        .map(|cell| {
            if is_number(cell) {
                cell.chars().count()
            } else {
                // Text wraps, but a column of long phrases should not be squeezed to one word.
                longest_word(cell).max(cell.chars().count().min(LONG_TEXT))
            }
        })
        .max()
        .unwrap_or(0);
    header.max(cells) as f64 * CHAR_PX + PADDING_PX
}

/// The column groups a table is shown in: all columns when it fits [`TABLE_WIDTH_PX`], else
/// parts that each repeat the key columns and add as many others as fit.
pub fn column_parts(t: &TextTable) -> Vec<Vec<usize>> {
    let n = t.header.len();
    let keys = t.key_columns.min(n);
    let widths: Vec<f64> = (0..n).map(|c| column_width(t, c)).collect();
    if widths.iter().sum::<f64>() <= TABLE_WIDTH_PX {
        return vec![(0..n).collect()];
    }
    let key_width: f64 = widths[..keys].iter().sum();
    let mut parts: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = (0..keys).collect();
    let mut width = key_width;
    for (c, &w) in widths.iter().enumerate().skip(keys) {
        if current.len() > keys && width + w > TABLE_WIDTH_PX {
            parts.push(std::mem::replace(&mut current, (0..keys).collect()));
            width = key_width;
        }
        current.push(c);
        width += w;
    }
    if current.len() > keys || parts.is_empty() {
        parts.push(current);
    }
    parts
}

fn environment(out: &mut String, entries: &[EnvironmentEntry]) {
    out.push_str("<h2>Environment</h2>\n");
    if entries.is_empty() {
        out.push_str(
            "<p>No machine or build details in runs.parquet (written by an older llmeff).</p>\n",
        );
        return;
    }
    out.push_str("<table class=\"env\">\n<tbody>\n");
    for e in entries {
        out.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            escape(&e.label),
            e.values
                .iter()
                .map(|v| escape(v))
                .collect::<Vec<_>>()
                .join("<br>")
        ));
    }
    out.push_str("</tbody></table>\n");
}

fn table(out: &mut String, t: &TextTable) {
    out.push_str(&format!("<h2>{}</h2>\n", escape(&t.title)));
    if t.rows.is_empty() {
        out.push_str("<p>None.</p>\n");
        return;
    }
    let parts = column_parts(t);
    let count = parts.len();
    for (i, columns) in parts.iter().enumerate() {
        if count > 1 {
            out.push_str(&format!(
                "<h3 class=\"part\">Part {} of {count}</h3>\n",
                i + 1
            ));
        }
        table_part(out, t, columns);
    }
}

fn table_part(out: &mut String, t: &TextTable, columns: &[usize]) {
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for &c in columns {
        out.push_str(&format!(
            "<th>{}</th>",
            escape(t.header.get(c).map_or("", String::as_str))
        ));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for cell in columns
            .iter()
            .map(|&c| row.get(c).map_or("", String::as_str))
        {
            // Only long text (an error, a meter description) may wrap, and only between words:
            // a number or a model name broken across lines is misread.
            let class = if is_number(cell) {
                " class=\"num\""
            } else if cell.chars().count() > LONG_TEXT {
                " class=\"long\""
            } else {
                ""
            };
            out.push_str(&format!("<td{class}>{}</td>", escape(cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let font = base64::engine::general_purpose::STANDARD.encode(FONT);
    let mut out = String::with_capacity(font.len() + 64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>llmeff report: {}</title>\n",
        escape(&report.study)
    ));
    out.push_str(&format!(
        "<style>\n@font-face {{ font-family: \"{FONT_FAMILY}\"; src: url(data:font/ttf;base64,{font}) format(\"truetype\"); }}\n{STYLE}</style>\n"
    ));
    out.push_str("</head>\n<body>\n");
    out.push_str(&format!(
        "<h1>Study {}</h1>\n<p class=\"meta\">Generated {} by llmeff {} from {} run{} in runs.parquet.</p>\n",
        escape(&report.study),
        escape(&report.generated_at),
        escape(env!("CARGO_PKG_VERSION")),
        report.runs,
        if report.runs == 1 { "" } else { "s" }
    ));
    if !report.notes.is_empty() {
        out.push_str("<ul class=\"notes\">\n");
        for note in &report.notes {
            out.push_str(&format!("<li>{}</li>\n", escape(note)));
        }
        out.push_str("</ul>\n");
    }
    environment(&mut out, &report.environment);
    for t in &report.tables {
        table(&mut out, t);
    }
    for plot in &report.plots {
        out.push_str(&format!(
            "<h2>{}</h2>\n<figure>\n{}\n<figcaption>{} (files: {}, {})</figcaption>\n</figure>\n",
            escape(&plot.title),
            inline_svg(&plot.svg, &plot.title),
            escape(&plot.caption),
            escape(&file_name(&plot.svg_path)),
            escape(&file_name(&plot.png_path)),
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x & 'y'")</script>"#),
            "&lt;script&gt;alert(&quot;x &amp; &#39;y&#39;&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain ü"), "plain ü");
    }

    #[test]
    fn inline_svg_drops_size_and_namespace() {
        let svg = "<svg width=\"960\" height=\"600\" viewBox=\"0 0 960 600\" xmlns=\"http://www.w3.org/2000/svg\">\n<rect/>\n</svg>\n";
        let inline = inline_svg(svg, "a \"b\"");
        assert!(inline.starts_with("<svg class=\"plot\" viewBox=\"0 0 960 600\""));
        assert!(inline.contains("aria-label=\"a &quot;b&quot;\""));
        assert!(!inline.contains("http"));
        assert!(inline.contains("<rect/>"));
    }

    #[test]
    fn a_page_escapes_data_and_links_nothing_outside() {
        let report = Report {
            study: "<evil>".into(),
            generated_at: "2025-01-01 00:00:00 UTC".into(),
            runs: 1,
            tables: vec![TextTable {
                title: "Configurations".into(),
                header: vec!["model".into(), "output tokens/s".into()],
                rows: vec![vec!["m<1>".into(), "12.5".into()]],
                key_columns: 1,
            }],
            environment: vec![EnvironmentEntry {
                label: "host".into(),
                values: vec!["a<b> (1 run)".into(), "c (2 runs)".into()],
            }],
            notes: vec!["energy not measured in this study".into()],
            plots: Vec::new(),
            files: Vec::new(),
        };
        let html = render(&report);
        assert!(html.contains("Study &lt;evil&gt;"));
        assert!(html.contains("<td>m&lt;1&gt;</td>"));
        assert!(html.contains("<td class=\"num\">12.5</td>"));
        assert!(!html.contains("<evil>"));
        assert!(html.contains("<tr><th>host</th><td>a&lt;b&gt; (1 run)<br>c (2 runs)</td></tr>"));
        assert!(html.contains("td { white-space: nowrap; }"));
        // The environment's long values (meter descriptions) wrap inside the page.
        assert!(html.contains("table.env td { white-space: normal;"));
        // One part: no part headings.
        assert!(!html.contains("Part 1"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    fn wide(columns: usize) -> TextTable {
        TextTable {
            title: "t".into(),
            header: (0..columns).map(|c| format!("column {c}")).collect(),
            rows: vec![(0..columns).map(|c| format!("{}.25", c * 1000)).collect()],
            key_columns: 2,
        }
    }

    #[test]
    fn wide_tables_split_into_parts_that_repeat_the_key_columns() {
        assert_eq!(column_parts(&wide(4)), vec![vec![0, 1, 2, 3]]);
        let t = wide(40);
        let parts = column_parts(&t);
        assert!(parts.len() > 1, "{parts:?}");
        let mut seen = Vec::new();
        for p in &parts {
            assert_eq!(&p[..2], &[0, 1], "keys lead every part");
            let width: f64 = p.iter().map(|&c| column_width(&t, c)).sum();
            assert!(width <= TABLE_WIDTH_PX, "{width}");
            seen.extend(p[2..].iter().copied());
        }
        assert_eq!(
            seen,
            (2..40).collect::<Vec<_>>(),
            "every column once, in order"
        );
        let html = render(&Report {
            study: "s".into(),
            generated_at: "now".into(),
            runs: 1,
            environment: Vec::new(),
            tables: vec![t],
            notes: Vec::new(),
            plots: Vec::new(),
            files: Vec::new(),
        });
        assert!(html.contains(&format!("Part 1 of {}", parts.len())));
        assert!(html.contains("No machine or build details"));
    }

    #[test]
    fn svg_size_reads_the_outer_tag() {
        assert_eq!(
            svg_size("<svg width=\"960\" height=\"712\" viewBox=\"0 0 960 712\">"),
            Some((960, 712))
        );
        assert_eq!(svg_size("<svg>"), None);
        let inline = inline_svg("<svg width=\"960\" height=\"712\">\n</svg>", "x");
        assert!(inline.contains("viewBox=\"0 0 960 712\""));
    }
}
