//! A trait's new value, as bondhu.adjusted_trait defines it in numeric arithmetic,
//! computed in 128-bit integers instead:
//!
//!   new = least(100, greatest(0, current::numeric + dampening * total))::float8
//!
//! (with nothing to add, a total of 0, the current value as it is, clamped: see
//! adjusted_trait).
//!
//! Each step is Postgres's own: a double becomes the decimal of its 15 significant
//! digits (float8_numeric prints it with "%.15g"), numeric multiplication and addition
//! are exact, and a numeric becomes the double nearest to it (numeric_float8 prints it
//! and reads it back with strtod). Here the decimal of 15 digits is the short decimal
//! the double is nearest to, when there is one (short_decimal), or else Rust's exact
//! formatting (rounded to nearest, ties to even, as glibc's printf); the arithmetic is
//! on integer mantissas (src/decimal.rs); and the double is a correctly rounded division
//! or Rust's correctly rounded parse. A value this cannot hold exactly (digits past
//! 10^-36, a mantissa past 2^127, a current value not finite or of 10^21 or more in
//! magnitude, for a total other than 0) gives None: the caller then computes it in
//! numeric. The SQL function uses this first and numeric after (sql/apply.sql); a
//! #[pg_test] compares the two on random and edge values. No 128-bit division: that
//! would cost what numeric does.
use crate::decimal::Decimal;
use std::fmt::Write;

/// The largest scale kept: 100 × 10^36 still fits an i128 (< 1.7 × 10^38).
const MAX_SCALE: u32 = 36;

/// clamp(current + dampening × total, 0, 100) as the double Postgres's numeric
/// arithmetic gives (see the module's comment); a missing current value counts as 50.
/// With nothing to add (a total of 0) the current value is kept as it is, clamped:
/// through numeric it would lose its digits past the 15th at every update of the
/// profile's other traits; the dampening is then not needed (None: one beyond what
/// the integers hold, which a total of 0 must not leave to numeric). None where the
/// values are beyond this computation: the caller uses numeric.
pub fn adjusted_trait(
    current: Option<f64>,
    total: Decimal,
    dampening: Option<Decimal>,
) -> Option<f64> {
    if total.mantissa == 0 {
        return Some(kept(current));
    }
    let dampening = dampening?;
    let current = match current {
        Some(x) => of_double(x)?,
        None => Decimal {
            mantissa: 50,
            scale: 0,
        },
    };
    let new = current.checked_add(dampening.checked_mul(total)?)?;
    if new.scale > MAX_SCALE {
        return None;
    }
    let hundred = Decimal {
        mantissa: 100,
        scale: 0,
    }
    .mantissa_at(new.scale)?;
    if new.mantissa <= 0 {
        Some(0.0)
    } else if new.mantissa >= hundred {
        Some(100.0)
    } else {
        nearest_double(new)
    }
}

/// A value with nothing to add: least(100, greatest(0, coalesce(current, 50))) on
/// doubles, as Postgres compares them (NaN above every number, -0 not below 0).
fn kept(current: Option<f64>) -> f64 {
    match current {
        None => 50.0,
        Some(x) if x.is_nan() || x >= 100.0 => 100.0,
        Some(x) if x <= 0.0 => 0.0,
        Some(x) => x,
    }
}

/// 10^k for k in 0..=22: each exact in a double.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The decimal Postgres makes of a double (float8_numeric): its 15 significant
/// digits, rounded to nearest, ties to even; trailing zeros after the point trimmed.
fn of_double(x: f64) -> Option<Decimal> {
    if !x.is_finite() {
        return None;
    }
    if x == 0.0 {
        return Some(Decimal {
            mantissa: 0,
            scale: 0,
        });
    }
    short_decimal(x).or_else(|| fifteen_digits(x))
}

/// The fewest decimals D = m × 10^-s (s <= 22, |m| < 10^15) that a double x is the
/// nearest double to, if there are such: then D is x's 15 significant digits. (x is
/// within half an ulp of D, 2^-53 of x, and 15-digit decimals near x are more than
/// 10^-15 of x apart: D is the one nearest to x, and no tie.) A profile's value, which
/// the last update made the nearest double of a short decimal, is found in a few
/// multiplications, without formatting: m / 10^s is one correctly rounded division
/// of two doubles that hold m and 10^s exactly.
fn short_decimal(x: f64) -> Option<Decimal> {
    for (scale, &power) in POWERS_OF_TEN.iter().enumerate() {
        let scaled = (x * power).round();
        if scaled.abs() >= 1e15 {
            return None;
        }
        if scaled / power == x {
            return Some(Decimal {
                mantissa: scaled as i128,
                scale: scale as u32,
            });
        }
    }
    None
}

/// x's 15 significant digits, from Rust's exact formatting.
fn fifteen_digits(x: f64) -> Option<Decimal> {
    // d.dddddddddddddde±x: 15 significant digits
    let mut text = StackText::default();
    write!(text, "{x:.14e}").ok()?;
    let (digits, exponent) = text.as_str().split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let mut magnitude = digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0u64, |m, d| m * 10 + u64::from(d - b'0'));
    // value = magnitude × 10^(exponent - 14)
    let power = exponent - 14;
    let (magnitude, scale) = if power >= 0 {
        if power > 6 {
            return None;
        }
        (i128::from(magnitude) * 10i128.pow(power as u32), 0)
    } else {
        let mut scale = power.unsigned_abs();
        while scale > 0 && magnitude % 10 == 0 {
            magnitude /= 10;
            scale -= 1;
        }
        if scale > MAX_SCALE {
            return None;
        }
        (i128::from(magnitude), scale)
    };
    let mantissa = if x < 0.0 { -magnitude } else { magnitude };
    Some(Decimal { mantissa, scale })
}

/// The double nearest to the value (numeric_float8: the decimal text read by strtod).
fn nearest_double(value: Decimal) -> Option<f64> {
    // a mantissa below 2^53 and 10^scale (scale <= 22) are exact doubles, and their
    // quotient is correctly rounded
    if value.mantissa.unsigned_abs() < 1 << 53 && value.scale < POWERS_OF_TEN.len() as u32 {
        return Some(value.mantissa as f64 / POWERS_OF_TEN[value.scale as usize]);
    }
    let mut text = StackText::default();
    // a u64 prints without 128-bit divisions
    match u64::try_from(value.mantissa) {
        Ok(mantissa) => write!(text, "{mantissa}e-{}", value.scale),
        Err(_) => write!(text, "{}e-{}", value.mantissa, value.scale),
    }
    .ok()?;
    text.as_str().parse().ok()
}

/// Text of at most 64 bytes, on the stack: a number's digits without an allocation.
struct StackText {
    bytes: [u8; 64],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // only whole &str values are ever written (write_str)
        std::str::from_utf8(&self.bytes[..self.len]).expect("UTF-8")
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(mantissa: i128, scale: u32) -> Decimal {
        Decimal { mantissa, scale }
    }

    #[test]
    fn doubles_become_15_significant_digits() {
        assert_eq!(of_double(50.0), Some(decimal(50, 0)));
        // 0.1 is 0.1000000000000000055...: 15 digits give 0.1
        assert_eq!(of_double(0.1), Some(decimal(1, 1)));
        assert_eq!(of_double(-2.5), Some(decimal(-25, 1)));
        // 50 + 2^-14 = 50.00006103515625 exactly: 16 digits, a tie at 15, to even (…562)
        assert_eq!(
            of_double(50.0 + 1.0 / 16384.0),
            Some(decimal(500000610351562, 13))
        );
        // 50 + 3 × 2^-14 = 50.00018310546875: the tie rounds up to even (…688)
        assert_eq!(
            of_double(50.0 + 3.0 / 16384.0),
            Some(decimal(500001831054688, 13))
        );
        assert_eq!(of_double(1e20), Some(decimal(10i128.pow(20), 0)));
        assert_eq!(of_double(1e21), None);
        assert_eq!(of_double(1e-22), Some(decimal(1, 22)));
        assert_eq!(of_double(1.5e-22), Some(decimal(15, 23)));
        assert_eq!(of_double(9.9e-23), Some(decimal(99, 24)));
        // 15 digits down to 10^-37
        assert_eq!(of_double(1.23456789012345e-23), None);
        assert_eq!(of_double(0.0), Some(decimal(0, 0)));
        assert_eq!(of_double(-0.0), Some(decimal(0, 0)));
        assert_eq!(of_double(f64::NAN), None);
        assert_eq!(of_double(f64::INFINITY), None);
    }

    #[test]
    fn short_decimals_are_the_15_digits() {
        for x in [
            50.1,
            49.775,
            0.3,
            -2.5,
            99.99999999999999,
            1e-20,
            123456789012345.0,
            0.1 + 0.2,
            50.0 + 1.0 / 16384.0,
            std::f64::consts::PI,
        ] {
            let short = short_decimal(x);
            if let Some(short) = short {
                assert_eq!(Some(short), fifteen_digits(x), "{x}");
            }
            assert_eq!(of_double(x), fifteen_digits(x), "{x}");
        }
        assert_eq!(short_decimal(50.1), Some(decimal(501, 1)));
        // 0.1 + 0.2 = 0.30000000000000004: 17 digits, not a short decimal
        assert_eq!(short_decimal(0.1 + 0.2), None);
        assert_eq!(fifteen_digits(0.1 + 0.2), Some(decimal(3, 1)));
        // the division's path and the text's give the same double
        for value in [
            decimal(501, 1),
            decimal(-3, 1),
            decimal(1, 22),
            decimal(7, 0),
        ] {
            let text = format!("{}e-{}", value.mantissa, value.scale);
            assert_eq!(nearest_double(value), text.parse().ok());
        }
    }

    #[test]
    fn the_update_is_clamped_and_rounded_once() {
        let tenth = decimal(1, 1);
        // 50 + 0.1 × 12.5 = 51.25
        assert_eq!(
            adjusted_trait(Some(50.0), decimal(125, 1), Some(tenth)),
            Some(51.25)
        );
        // a missing value starts at 50
        assert_eq!(
            adjusted_trait(None, decimal(-3, 0), Some(tenth)),
            Some(49.7)
        );
        // clamped at both ends, exactly 0 and 100 included
        assert_eq!(
            adjusted_trait(Some(99.0), decimal(20, 0), Some(tenth)),
            Some(100.0)
        );
        assert_eq!(
            adjusted_trait(Some(99.0), decimal(10, 0), Some(tenth)),
            Some(100.0)
        );
        assert_eq!(
            adjusted_trait(Some(1.0), decimal(-20, 0), Some(tenth)),
            Some(0.0)
        );
        assert_eq!(
            adjusted_trait(Some(1.0), decimal(-10, 0), Some(tenth)),
            Some(0.0)
        );
        assert_eq!(
            adjusted_trait(Some(0.5), decimal(-5, 0), Some(tenth)),
            Some(0.0)
        );
        // 0.1 + 0.2 in decimal is 0.3, the double nearest to it (not 0.1 + 0.2 in doubles)
        assert_eq!(
            adjusted_trait(Some(0.1), decimal(2, 0), Some(tenth)),
            Some(0.3)
        );
        // a value outside 0..100 is clamped too (with nothing to add as well: see
        // nothing_to_add_keeps_the_value)
        assert_eq!(
            adjusted_trait(Some(250.0), decimal(1, 0), Some(tenth)),
            Some(100.0)
        );
        assert_eq!(
            adjusted_trait(Some(-5.0), decimal(1, 0), Some(tenth)),
            Some(0.0)
        );
    }

    #[test]
    fn nothing_to_add_keeps_the_value() {
        let tenth = decimal(1, 1);
        // 17 significant digits: numeric would keep 15 (50.0123456789012)
        let stored = 50.012345678901234;
        assert_eq!(
            adjusted_trait(Some(stored), decimal(0, 0), Some(tenth)),
            Some(stored)
        );
        assert_eq!(
            adjusted_trait(Some(stored), decimal(0, 24), Some(tenth)),
            Some(stored)
        );
        assert_eq!(adjusted_trait(None, decimal(0, 0), Some(tenth)), Some(50.0));
        // clamped as least(100, greatest(0, x)) on doubles: NaN above all, -0 is 0
        for (x, kept) in [
            (f64::NAN, 100.0),
            (f64::INFINITY, 100.0),
            (1e21, 100.0),
            (100.5, 100.0),
            (f64::NEG_INFINITY, 0.0),
            (-5.0, 0.0),
        ] {
            assert_eq!(
                adjusted_trait(Some(x), decimal(0, 0), Some(tenth)),
                Some(kept)
            );
        }
        let zero = adjusted_trait(Some(-0.0), decimal(0, 0), Some(tenth)).unwrap();
        assert!(zero == 0.0 && zero.is_sign_positive());
        // a dampening beyond the integers is not needed, and not left to numeric
        assert_eq!(
            adjusted_trait(Some(stored), decimal(0, 0), None),
            Some(stored)
        );
        assert_eq!(adjusted_trait(Some(stored), decimal(1, 0), None), None);
    }

    #[test]
    fn values_beyond_the_integers_are_left_to_numeric() {
        let tenth = decimal(1, 1);
        assert_eq!(
            adjusted_trait(Some(f64::NAN), decimal(1, 0), Some(tenth)),
            None
        );
        assert_eq!(adjusted_trait(Some(1e21), decimal(1, 0), Some(tenth)), None);
        // 10^-24 × 10^-24: a scale of 48
        assert_eq!(
            adjusted_trait(Some(50.0), decimal(1, 24), Some(decimal(1, 24))),
            None
        );
        // a mantissa past 2^127
        assert_eq!(
            adjusted_trait(Some(50.0), decimal(i128::MAX, 0), Some(decimal(3, 0))),
            None
        );
        // the sum's rescaling past 2^127: 10^20 at scale 36
        assert_eq!(
            adjusted_trait(Some(1e20), decimal(1, 36), Some(decimal(1, 0))),
            None
        );
    }
}
