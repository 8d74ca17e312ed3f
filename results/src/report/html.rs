//! The report as one self-contained HTML page: inline CSS, the bundled font as a data URI,
//! the charts as inline SVG. It references nothing outside itself, so it opens offline and
//! survives being mailed around.

use base64::Engine;

use super::{Report, TextTable};
use crate::report::plot::{FONT, FONT_FAMILY, SIZE};

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
th, td { border: 1px solid #d0d0d0; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; }
svg.plot { width: 100%; height: auto; max-width: 960px; border: 1px solid #e5e5e5; }
figcaption { color: #555; font-size: 0.9em; }
"#;

/// An SVG document made fit for inline use: the outer tag loses its fixed size and its XML
/// namespace (HTML parsers supply it), gains a class and an accessible label.
fn inline_svg(svg: &str, label: &str) -> String {
    let (w, h) = SIZE;
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

fn is_number(cell: &str) -> bool {
    cell.parse::<f64>().is_ok()
}

fn table(out: &mut String, t: &TextTable) {
    out.push_str(&format!("<h2>{}</h2>\n", escape(&t.title)));
    if t.rows.is_empty() {
        out.push_str("<p>None.</p>\n");
        return;
    }
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for h in &t.header {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for cell in row {
            let class = if is_number(cell) {
                " class=\"num\""
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
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
