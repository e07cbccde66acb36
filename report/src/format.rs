//! How numbers are written in every report format: one place, so that
//! Markdown, HTML and the shared tables agree.

use std::fmt::Write as _;

use crate::insights::MB;

/// Mebibytes with two decimals, `-` when unknown.
pub(crate) fn opt_mb(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.2}", b as f64 / MB))
        .unwrap_or_else(|| "-".to_string())
}

/// `prec` decimals, `-` when unknown. Non-finite values are unknown too: a
/// report never prints NaN or inf (the wire refuses them, but a report can
/// also be rendered from a file written by hand).
pub(crate) fn opt_f(v: Option<f64>, prec: usize) -> String {
    v.filter(|v| v.is_finite())
        .map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "-".to_string())
}

/// One GPU of a host in a report's system section, e.g. "NVIDIA H100 80GB
/// HBM3 (80 GiB, compute 9.0, driver 550.54, CUDA 12.4, PCIe gen 5 x16,
/// power limit 700 W)".
pub(crate) fn gpu_line(g: &fleetbench_common::GpuInfo) -> String {
    let or_dash = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "{} ({:.0} GiB, compute {}, driver {}, CUDA {}, PCIe gen {} x{}, power limit {} W)",
        g.name,
        g.memory_total_bytes as f64 / (MB * 1024.0),
        g.compute_capability.as_deref().unwrap_or("-"),
        g.driver_version,
        g.cuda_version.as_deref().unwrap_or("-"),
        or_dash(g.pcie_generation),
        or_dash(g.pcie_width),
        opt_f(g.power_limit_watts, 0)
    )
}

/// 53,264,538 for 53264538.4.
pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Columns separated by two spaces, padded to their widest cell; `right`
/// says which columns are right-aligned. Trailing spaces are trimmed.
pub fn text_table(rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let w = widths[c];
            if right.get(c).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_non_finite_figures_are_a_dash() {
        assert_eq!(opt_f(Some(1.234), 1), "1.2");
        assert_eq!(opt_f(None, 1), "-");
        assert_eq!(opt_f(Some(f64::NAN), 1), "-");
        assert_eq!(opt_f(Some(f64::INFINITY), 1), "-");
        assert_eq!(opt_mb(Some(3 << 20)), "3.00");
        assert_eq!(thousands(53_264_538.4), "53,264,538");
    }
}

/// Text from an agent, for Markdown: the characters that would start a link,
/// an image, raw HTML, code, emphasis, strike-through, an entity or a new
/// table cell are backslash-escaped, so a GPU named `<img src=x onerror=...>`
/// or `[update](https://evil.example)` reads as what it is. `_` inside a word
/// is left alone (it emphasises nothing there, and host names use it).
pub(crate) fn md_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_alphanumeric = false;
    for c in text.chars() {
        let escape = match c {
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '|' | '~' | '&' => true,
            '_' => !after_alphanumeric,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
        after_alphanumeric = c.is_alphanumeric();
    }
    out
}

#[cfg(test)]
mod md_tests {
    use super::md_text;

    #[test]
    fn agent_text_cannot_make_markdown() {
        assert_eq!(md_text("NVIDIA H100 80GB HBM3"), "NVIDIA H100 80GB HBM3");
        assert_eq!(md_text("gpu_01"), "gpu_01");
        assert_eq!(
            md_text("[update](https://evil.example)"),
            "\\[update\\](https://evil.example)"
        );
        assert_eq!(
            md_text("<img src=x onerror=alert(1)>"),
            "\\<img src=x onerror=alert(1)\\>"
        );
        assert_eq!(md_text("a|b"), "a\\|b");
        assert_eq!(md_text("_x_ *y*"), "\\_x_ \\*y\\*");
    }
}
