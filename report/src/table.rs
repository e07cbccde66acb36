//! A Markdown table whose columns line up in plain text too, like the seed's.

pub(crate) struct Table {
    headers: Vec<String>,
    right_aligned: Vec<bool>,
    rows: Vec<Vec<String>>,
    /// Per row, an optional class for formats that can style rows (HTML).
    classes: Vec<Option<&'static str>>,
}

impl Table {
    /// Columns are given as (header, right-aligned).
    pub(crate) fn new(columns: &[(&str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            right_aligned: columns.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
            classes: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.row_with_class(None, cells);
    }

    /// A row with a class (`simulated`, `failed`) that HTML uses for styling.
    pub(crate) fn row_with_class(&mut self, class: Option<&'static str>, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
        self.classes.push(class);
    }

    /// As an HTML table; every cell is escaped.
    pub(crate) fn render_html(&self, o: &mut String) {
        use std::fmt::Write as _;
        let escape = super::svg::escape;
        let cls = |numeric: bool| if numeric { " class=\"num\"" } else { "" };
        o.push_str("<div class=\"table-wrap\"><table>\n<thead><tr>");
        for (h, n) in self.headers.iter().zip(&self.right_aligned) {
            let _ = write!(o, "<th scope=\"col\"{}>{}</th>", cls(*n), escape(h));
        }
        o.push_str("</tr></thead>\n<tbody>\n");
        for (cells, class) in self.rows.iter().zip(&self.classes) {
            match class {
                Some(c) => {
                    let _ = write!(o, "<tr class=\"{c}\">");
                }
                None => o.push_str("<tr>"),
            }
            for (cell, numeric) in cells.iter().zip(&self.right_aligned) {
                let _ = write!(o, "<td{}>{}</td>", cls(*numeric), escape(cell));
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody>\n</table></div>\n");
    }

    pub(crate) fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| super::format::md_text(&r[c]).chars().count())
                    .chain([self.headers[c].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    if self.right_aligned[c] {
                        format!(" {s:>w$} ", w = widths[c])
                    } else {
                        format!(" {s:<w$} ", w = widths[c])
                    }
                })
                .collect();
            format!("|{}|\n", parts.join("|"))
        };
        let mut out = line(&self.headers);
        // Cells hold agent text (host and GPU names, errors): escaped so
        // that none of it becomes Markdown.
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| super::format::md_text(c)).collect())
            .collect();
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(c, w)| {
                if self.right_aligned[c] {
                    format!("{}:", "-".repeat(w + 1))
                } else {
                    format!(":{}", "-".repeat(w + 1))
                }
            })
            .collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for r in &rows {
            out.push_str(&line(r));
        }
        out
    }
}
