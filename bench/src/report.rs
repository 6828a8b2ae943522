//! Compact text output (tables, ratio lines with targets) next to the JSON that is saved.

use crate::stats::{Summary, round3};
use serde_json::{Value, json};

/// A target a figure is compared against.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Informational, no target.
    Info,
    /// Met when the value is <= the bound.
    AtMost(f64),
    /// Met when the value is < the bound.
    Below(f64),
}

/// Prints the table header.
pub fn header(extra: &str) {
    println!(
        "  {:<7} {:<4} {:>5} {:>10} {:>10}{}",
        "plugin", "op", "n", "median ms", "p95 ms", extra
    );
}

/// Prints one table row.
pub fn row(plugin: &str, op: &str, s: &Summary, extra: &str) {
    println!(
        "  {:<7} {:<4} {:>5} {:>10.3} {:>10.3}{}",
        plugin, op, s.n, s.median_ms, s.p95_ms, extra
    );
}

/// Prints `<label> = <value><unit> (target ...) ok|MISSED` and returns it as JSON.
pub fn figure(label: &str, value: f64, unit: &str, target: Target) -> Value {
    let (text, met, bound) = match target {
        Target::Info => ("(info)".to_string(), None, None),
        Target::AtMost(b) => (
            format!("(target <= {b:.2}{unit})"),
            Some(value <= b),
            Some(b),
        ),
        Target::Below(b) => (format!("(target < {b:.2}{unit})"), Some(value < b), Some(b)),
    };
    let verdict = match met {
        Some(true) => " ok",
        Some(false) => " MISSED",
        None => "",
    };
    println!("  {label} = {value:.2}{unit} {text}{verdict}");
    json!({
        "label": label,
        "value": round3(value),
        "unit": unit.trim(),
        "target": bound,
        "target_kind": match target {
            Target::Info => "info",
            Target::AtMost(_) => "<=",
            Target::Below(_) => "<",
        },
        "met": met,
    })
}

/// `YYYYMMDDTHHMMSSZ` for the current UTC time (no date crate: civil-from-days).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-since-epoch to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn figure_verdicts() {
        assert_eq!(
            figure("x", 0.2, "", Target::AtMost(0.3))["met"],
            json!(true)
        );
        assert_eq!(
            figure("x", 1.0, " ms", Target::Below(1.0))["met"],
            json!(false)
        );
        assert_eq!(figure("x", 1.0, "", Target::Info)["met"], Value::Null);
    }
}
