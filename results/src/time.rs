//! Wall-clock times as calendar dates in UTC, for tables and reports (no time-zone database:
//! UTC is all a results file needs).

/// A UTC calendar date and time, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// Month, 1–12.
    pub month: i64,
    /// Day of the month, 1–31.
    pub day: i64,
    /// Hour, 0–23.
    pub hour: i64,
    /// Minute, 0–59.
    pub minute: i64,
    /// Second, 0–59.
    pub second: i64,
    /// Millisecond, 0–999.
    pub millis: i64,
}

impl UtcTime {
    /// The calendar time `unix_s` seconds after the Unix epoch (rounded to the millisecond).
    pub fn from_unix_s(unix_s: f64) -> UtcTime {
        let total_ms = (unix_s * 1000.0).round() as i64;
        let (secs, millis) = (total_ms.div_euclid(1000), total_ms.rem_euclid(1000));
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            millis,
        }
    }

    /// ISO 8601 with milliseconds: `2026-12-06T04:29:18.250Z`.
    pub fn iso8601(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }

    /// For people: `2026-12-06 04:29:18 UTC`.
    pub fn readable(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_the_gregorian_calendar() {
        let iso = |s: f64| UtcTime::from_unix_s(s).iso8601();
        assert_eq!(iso(0.0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1796531358 +%FT%T` → 2026-12-06T04:29:18.
        assert_eq!(iso(1_796_531_358.25), "2026-12-06T04:29:18.250Z");
        // A leap day of a century year divisible by 400, and the millisecond carry.
        assert_eq!(iso(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso(1_709_164_799.999_6), "2024-02-29T00:00:00.000Z");
        assert_eq!(
            UtcTime::from_unix_s(1_735_689_599.0).readable(),
            "2024-12-31 23:59:59 UTC"
        );
    }
}
