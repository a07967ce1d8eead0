//! Cron schedules as pg_cron reads them: five fields (minute, hour, day of month, month,
//! day of week; `$` for the last day of the month, pg_cron 1.6+),
//! @yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly/@reboot/@restart, or
//! "N seconds" (1-59, pg_cron 1.5+), and the next time such a schedule fires. pg_cron
//! does not store that time, so health computes it here. Times here are UTC; the
//! caller shifts them to pg_cron's zone. What an older pg_cron refuses, pg_cron itself
//! refuses when bondhu hands it the schedule.
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(CronFields),
    /// every N seconds since the scheduler started: next within N seconds
    EverySeconds(u32),
    /// when the server starts: no next time to tell
    AtStartup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronFields {
    minutes: u64,       // bit n: minute n
    hours: u32,         // bit n: hour n
    days_of_month: u32, // bit n: day n (1..=31)
    months: u16,        // bit n: month n (1..=12)
    days_of_week: u8,   // bit n: weekday n, 0 = Sunday
    // Vixie cron, as pg_cron: when either day field starts with '*' ("*", "*/2"), a
    // day must match both; otherwise it matches either.
    day_of_month_starred: bool,
    day_of_week_starred: bool,
    // "$" as the day of month: the last day of each month
    last_day_of_month: bool,
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_start: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_start: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_start: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_start: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        names_start: 1,
    },
    // 7 is Sunday too, as in cron.
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAY_NAMES,
        names_start: 0,
    },
];

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.names_start + i as u32);
        }
        let v: u32 = text
            .parse()
            .map_err(|_| format!("{} field: \"{text}\" is not a number", self.name))?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} field: {v} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The set of values of one field as a bit mask, and whether it starts with '*'.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut mask = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("{} field: bad step \"{s}\"", self.name))?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{} field: range {range} is backwards", self.name));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // "5/15" means from 5 to the end, every 15.
                (a, if step > 1 { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                mask |= 1 << v;
                v += step;
            }
        }
        Ok((mask, text.starts_with('*')))
    }
}

/// "N seconds" or "N second" with N in 1..=59, as pg_cron reads it.
fn every_seconds(expression: &str) -> Option<u32> {
    let lower = expression.trim().to_ascii_lowercase();
    let (number, unit) = lower.split_once(char::is_whitespace)?;
    let unit = unit.trim();
    let seconds: u32 = number.parse().ok()?;
    ((unit == "second" || unit == "seconds") && (1..=59).contains(&seconds)).then_some(seconds)
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Schedule, String> {
        if let Some(seconds) = every_seconds(expression) {
            return Ok(Schedule::EverySeconds(seconds));
        }
        let expanded = match expression.trim().to_ascii_lowercase().as_str() {
            "@reboot" | "@restart" => return Ok(Schedule::AtStartup),
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            other if other.starts_with('@') => {
                return Err(format!("unknown schedule \"{expression}\""))
            }
            _ => expression.trim().to_string(),
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "\"{expression}\" has {} fields; a cron schedule has 5: minute hour day-of-month month day-of-week",
                parts.len()
            ));
        }
        let mut masks = [(0u64, false); 5];
        let last_day_of_month = parts[2] == "$";
        for (i, (field, text)) in FIELDS.iter().zip(&parts).enumerate() {
            if i != 2 || !last_day_of_month {
                masks[i] = field.parse(text)?;
            }
        }
        let mut days_of_week = masks[4].0 as u8;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & 0x7f) | 1;
        }
        Ok(Schedule::Cron(CronFields {
            minutes: masks[0].0,
            hours: masks[1].0 as u32,
            days_of_month: masks[2].0 as u32,
            months: masks[3].0 as u16,
            days_of_week,
            day_of_month_starred: masks[2].1,
            day_of_week_starred: masks[4].1,
            last_day_of_month,
        }))
    }

    /// The first time strictly after `after` at which the schedule fires, or None when
    /// it never does (e.g. 30 February) within the next five years, or cannot be told
    /// (@reboot). For "N seconds": the latest it can be.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(fields) => fields.next_after(after),
            Schedule::EverySeconds(n) => after.checked_add_signed(Duration::seconds(i64::from(*n))),
            Schedule::AtStartup => None,
        }
    }
}

impl CronFields {
    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let last_day = date.succ_opt().is_some_and(|next| next.day() == 1);
        let dom =
            self.days_of_month & (1 << date.day()) != 0 || (self.last_day_of_month && last_day);
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.day_of_month_starred || self.day_of_week_starred {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after
            .with_second(0)?
            .with_nanosecond(0)?
            .checked_add_signed(Duration::minutes(1))?;
        let mut date = start.date_naive();
        for _ in 0..(366 * 5) {
            if self.day_matches(date) {
                let from = if date == start.date_naive() {
                    start.hour() * 60 + start.minute()
                } else {
                    0
                };
                for minute_of_day in from..24 * 60 {
                    let (h, m) = (minute_of_day / 60, minute_of_day % 60);
                    if self.hours & (1 << h) != 0 && self.minutes & (1 << m) != 0 {
                        return Utc.from_utc_datetime(&date.and_hms_opt(h, m, 0)?).into();
                    }
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> String {
        Schedule::parse(expr)
            .unwrap()
            .next_after(at(after))
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn daily_at_two() {
        assert_eq!(
            next("0 2 * * *", "2025-10-01T01:59:00Z"),
            "2025-10-01T02:00:00+00:00"
        );
        assert_eq!(
            next("0 2 * * *", "2025-10-01T02:00:00Z"),
            "2025-10-02T02:00:00+00:00"
        );
        assert_eq!(
            next("@daily", "2025-12-31T23:59:30Z"),
            "2026-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn weekly_on_sunday_including_seven() {
        // 2025-10-01 is a Wednesday.
        assert_eq!(
            next("0 3 * * 0", "2025-10-01T00:00:00Z"),
            "2025-10-05T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * 7", "2025-10-01T00:00:00Z"),
            "2025-10-05T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * sun", "2025-10-05T03:00:00Z"),
            "2025-10-12T03:00:00+00:00"
        );
    }

    #[test]
    fn month_and_year_boundaries() {
        assert_eq!(
            next("30 23 31 * *", "2025-11-01T00:00:00Z"),
            "2025-12-31T23:30:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "2025-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 jan *", "2025-06-15T12:00:00Z"),
            "2026-01-01T00:00:00+00:00"
        );
        assert!(Schedule::parse("0 0 30 2 *")
            .unwrap()
            .next_after(at("2025-01-01T00:00:00Z"))
            .is_none());
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            next("*/15 * * * *", "2025-10-01T10:16:00Z"),
            "2025-10-01T10:30:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * *", "2025-10-01T10:46:00Z"),
            "2025-10-01T11:05:00+00:00"
        );
        assert_eq!(
            next("0 9-17/4 * * mon-fri", "2025-10-03T18:00:00Z"),
            "2025-10-06T09:00:00+00:00"
        );
        assert_eq!(
            next("0 0,12 * * *", "2025-10-01T00:00:00Z"),
            "2025-10-01T12:00:00+00:00"
        );
        assert_eq!(
            next("* * * * *", "2025-10-01T10:16:42Z"),
            "2025-10-01T10:17:00+00:00"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_given() {
        // The 13th or any Friday: Friday 2025-10-03 comes first.
        assert_eq!(
            next("0 0 13 * 5", "2025-10-01T00:00:00Z"),
            "2025-10-03T00:00:00+00:00"
        );
    }

    #[test]
    fn a_starred_day_field_means_both_must_match() {
        // "*/2" is a star: odd days of the month that are also Mondays (not either).
        assert_eq!(
            next("0 0 */2 * 1", "2025-10-01T00:00:00Z"),
            "2025-10-13T00:00:00+00:00"
        );
        // "*" day of month: any Monday.
        assert_eq!(
            next("0 0 * * 1", "2025-10-01T00:00:00Z"),
            "2025-10-06T00:00:00+00:00"
        );
        // "*/10" day of week (Sunday only) with the 5th: both must hold, so the 5th
        // of October 2025 (a Sunday), then 5 April 2026 (the next Sunday the 5th).
        assert_eq!(
            next("0 0 5 * */10", "2025-10-01T00:00:00Z"),
            "2025-10-05T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 5 * */10", "2025-10-05T00:00:00Z"),
            "2026-04-05T00:00:00+00:00"
        );
        // @weekly and @monthly keep their meaning.
        assert_eq!(
            next("@weekly", "2025-10-01T00:00:00Z"),
            "2025-10-05T00:00:00+00:00"
        );
        assert_eq!(
            next("@monthly", "2025-10-01T00:00:00Z"),
            "2025-11-01T00:00:00+00:00"
        );
    }

    #[test]
    fn what_newer_pg_cron_accepts() {
        // "$": the last day of the month (a day field without a star: either rule)
        assert_eq!(
            next("0 3 $ * *", "2026-02-10T00:00:00Z"),
            "2026-02-28T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 $ * *", "2028-02-10T00:00:00Z"),
            "2028-02-29T03:00:00+00:00"
        );
        // seconds: at the latest N seconds on
        assert_eq!(
            next("30 seconds", "2026-02-10T00:00:00Z"),
            "2026-02-10T00:00:30+00:00"
        );
        assert_eq!(Schedule::parse(" 1 second "), Ok(Schedule::EverySeconds(1)));
        // @reboot: fires at startup, no next time
        assert_eq!(Schedule::parse("@reboot"), Ok(Schedule::AtStartup));
        assert_eq!(
            Schedule::AtStartup.next_after(at("2026-02-10T00:00:00Z")),
            None
        );
        for refused in [
            "60 seconds",
            "0 seconds",
            "5 minutes",
            "0 3 $5 * *",
            "0 3 * * $",
        ] {
            assert!(Schedule::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, why) in [
            ("0 2 * *", "has 4 fields"),
            ("60 2 * * *", "minute field: 60 is outside 0-59"),
            ("0 24 * * *", "hour field: 24 is outside 0-23"),
            ("0 2 0 * *", "day of month field: 0 is outside 1-31"),
            ("0 2 * 13 *", "month field: 13"),
            ("0 2 * * 8", "day of week field: 8"),
            ("0 2 * * funday", "is not a number"),
            ("*/0 * * * *", "bad step"),
            ("5-1 * * * *", "backwards"),
            ("@sometimes", "unknown schedule"),
            ("", "has 0 fields"),
        ] {
            let err = Schedule::parse(expr).unwrap_err();
            assert!(err.contains(why), "{expr}: {err}");
        }
    }
}
