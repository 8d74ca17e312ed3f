//! Numbers as the report shows them: a few significant digits, plain decimals for every
//! magnitude a study produces, so a table cell never holds `2.000e-3` that a browser may break
//! at the `-` and that a reader has to decode.

use crate::row::Cell;

/// Significant digits shown: enough to tell cycles apart, few enough to read a column.
const SIGNIFICANT: i32 = 4;

/// A number with [`SIGNIFICANT`] significant digits, trailing zeros dropped; integers from
/// 1000 up without decimals; exponent notation only outside 1e-6..1e12, where plain digits
/// would be longer than the notation.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-6..1e12).contains(&a) {
        return exponent(v);
    }
    if a >= 1000.0 {
        return format!("{v:.0}");
    }
    let magnitude = a.log10().floor() as i32;
    let decimals = usize::try_from((SIGNIFICANT - 1 - magnitude).max(0)).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    // Rounding can leave "-0".
    if s == "-0" { "0".into() } else { s }
}

/// `1.23e-7`: three significant digits, no padding.
fn exponent(v: f64) -> String {
    let s = format!("{v:.2e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exp}")
        }
        None => s,
    }
}

/// A cell as the report shows it: floats through [`number`], everything else as stored.
pub fn cell(c: &Cell) -> String {
    match c {
        Cell::Float(f) => number(*f),
        other => other.display(),
    }
}

/// An optional number, `-` when absent.
pub fn optional(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_magnitudes_are_plain_decimals_with_four_significant_digits() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(100.5), "100.5");
        assert_eq!(number(12.345_67), "12.35");
        assert_eq!(number(0.6), "0.6");
        assert_eq!(number(0.002_134_9), "0.002135");
        assert_eq!(number(0.000_012_34), "0.00001234");
        assert_eq!(number(-3.5), "-3.5");
        assert_eq!(number(1234.6), "1235");
        assert_eq!(number(987_654_321.0), "987654321");
        assert_eq!(number(7.0), "7");
        for v in [0.002, 0.000_05, 12.0, 0.1234, 99_999.0] {
            assert!(!number(v).contains('e'), "{v}: {}", number(v));
            assert!(
                (number(v).parse::<f64>().unwrap() - v).abs() <= v * 1e-3,
                "{v}"
            );
        }
    }

    #[test]
    fn extreme_magnitudes_use_a_short_exponent() {
        assert_eq!(number(1.5e-9), "1.5e-9");
        assert_eq!(number(2.346e13), "2.35e13");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(cell(&Cell::Float(0.002)), "0.002");
        assert_eq!(cell(&Cell::Int(3)), "3");
        assert_eq!(cell(&Cell::Null), "-");
        assert_eq!(optional(None), "-");
    }
}
