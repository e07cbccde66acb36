//! How numbers are written in every report format: one place, so that
//! Markdown, HTML and the shared tables agree.

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
