//! Exact sums of insight adjustments in fixed point.
//!
//! An adjustment is a JSON number, stored by Postgres as a numeric: base-10000 digits
//! and a weight. Every adjustment that counts is at most 100 in magnitude, so almost
//! all of them are exact in units of 10^-24, and sums of them fit in an i128 with room
//! for 10^12 insights a user. Summing there costs a few instructions per value where
//! numeric addition allocates. A value with digits finer than 10^-24 is left to
//! numeric arithmetic by the caller.

/// Base-10000 digits after the decimal point that the fixed point keeps: units of 10^-24.
pub const FRACTION_DIGITS: i32 = 6;
/// 10^24, one in fixed point.
pub const ONE: i128 = 10i128.pow(4 * FRACTION_DIGITS as u32);
/// 10000^k for k in 0..=FRACTION_DIGITS: a digit's value in fixed point.
const DIGIT_UNIT: [i128; FRACTION_DIGITS as usize + 1] = {
    let mut units = [1i128; FRACTION_DIGITS as usize + 1];
    let mut k = 1;
    while k < units.len() {
        units[k] = units[k - 1] * 10_000;
        k += 1;
    }
    units
};

/// A numeric's value, in fixed point where it can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixed {
    /// The exact value, in units of 10^-24.
    Exact(i128),
    /// Digits finer than 10^-24: the value truncated toward zero, in units of 10^-24
    /// (its magnitude is strictly larger).
    Finer(i128),
    /// 10000 or more in magnitude.
    Large,
}

/// The value of a numeric given as its sign, weight (the power of 10000 of its first
/// digit) and base-10000 digits.
pub fn from_base10000(negative: bool, weight: i32, digits: impl IntoIterator<Item = u16>) -> Fixed {
    let mut value: i128 = 0;
    let mut finer = false;
    for (i, digit) in digits.into_iter().enumerate() {
        if digit == 0 {
            continue;
        }
        let power = weight - i as i32;
        if power >= 1 {
            return Fixed::Large;
        }
        let shift = power + FRACTION_DIGITS;
        if shift < 0 {
            finer = true;
        } else {
            // power <= 0: the value stays below 10^28.
            value += i128::from(digit) * DIGIT_UNIT[shift as usize];
        }
    }
    let value = if negative { -value } else { value };
    if finer {
        Fixed::Finer(value)
    } else {
        Fixed::Exact(value)
    }
}

// The bits of a numeric's 2-byte header (numeric.c): its form and sign, and the short
// form's sign, display scale and weight.
const SIGN_MASK: u16 = 0xC000;
const NEGATIVE: u16 = 0x4000;
const SHORT: u16 = 0x8000;
const SPECIAL: u16 = 0xC000;
const SHORT_NEGATIVE: u16 = 0x2000;
const SHORT_DSCALE_SHIFT: u16 = 7;
const SHORT_WEIGHT_NEGATIVE: u16 = 0x0040;
const SHORT_WEIGHT_MASK: u16 = 0x003F;

/// A numeric's data, as numeric.c lays it out: a 2-byte header, for the long form a
/// 2-byte weight, then base-10000 digits (native byte order). Gives its sign, weight
/// and digits; None for NaN and infinities (which JSON cannot hold) and for data too
/// short for its header.
fn numeric_parts(data: &[u8]) -> Option<(bool, i32, impl Iterator<Item = u16> + '_)> {
    let (&[h0, h1], rest) = data.split_first_chunk::<2>()?;
    let header = u16::from_ne_bytes([h0, h1]);
    let (negative, weight, digits) = match header & SIGN_MASK {
        SPECIAL => return None,
        SHORT => {
            let magnitude = i32::from(header & SHORT_WEIGHT_MASK);
            let weight = if header & SHORT_WEIGHT_NEGATIVE != 0 {
                magnitude - i32::from(SHORT_WEIGHT_MASK) - 1
            } else {
                magnitude
            };
            (header & SHORT_NEGATIVE != 0, weight, rest)
        }
        sign => {
            let (&[w0, w1], digits) = rest.split_first_chunk::<2>()?;
            (
                sign == NEGATIVE,
                i32::from(i16::from_ne_bytes([w0, w1])),
                digits,
            )
        }
    };
    let digits = digits
        .chunks_exact(2)
        .map(|d| u16::from_ne_bytes([d[0], d[1]]));
    Some((negative, weight, digits))
}

/// The value of a numeric from its data (numeric_parts). NaN and infinities count as
/// large; so does data too short for its header.
pub fn from_numeric_data(data: &[u8]) -> Fixed {
    match numeric_parts(data) {
        Some((negative, weight, digits)) => from_base10000(negative, weight, digits),
        None => Fixed::Large,
    }
}

/// mantissa × 10^-scale, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    pub mantissa: i128,
    pub scale: u32,
}

impl Decimal {
    /// The mantissa of the same value at `scale` (>= self.scale); None past an i128.
    pub fn mantissa_at(self, scale: u32) -> Option<i128> {
        self.mantissa
            .checked_mul(10i128.checked_pow(scale.checked_sub(self.scale)?)?)
    }

    /// The exact product; None past an i128.
    pub fn checked_mul(self, other: Self) -> Option<Self> {
        Some(Decimal {
            mantissa: self.mantissa.checked_mul(other.mantissa)?,
            scale: self.scale.checked_add(other.scale)?,
        })
    }

    /// The exact sum; None past an i128.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        let scale = self.scale.max(other.scale);
        Some(Decimal {
            mantissa: self
                .mantissa_at(scale)?
                .checked_add(other.mantissa_at(scale)?)?,
            scale,
        })
    }
}

/// The exact value of a numeric from its data (numeric_parts) as mantissa × 10^-scale,
/// without trailing zeros after the decimal point (the scale is the fewest decimals
/// that hold it): 12.5 is (125, 1), -300 is (-300, 0). None for NaN, infinities, and a
/// mantissa beyond an i128. Built with multiplications only (no 128-bit division).
pub fn mantissa_and_scale(data: &[u8]) -> Option<Decimal> {
    let (negative, weight, digits) = numeric_parts(data)?;
    // the base-10000 digits as one integer, the last digit, the integer of the ones
    // before it, and how many there are
    let (mut mantissa, mut prefix, mut last, mut count) = (0i128, 0i128, 0u16, 0i32);
    for digit in digits {
        prefix = mantissa;
        mantissa = mantissa
            .checked_mul(10_000)?
            .checked_add(i128::from(digit))?;
        (last, count) = (digit, count + 1);
    }
    let power = weight - (count - 1);
    if mantissa == 0 {
        return Some(Decimal {
            mantissa: 0,
            scale: 0,
        });
    }
    let (mantissa, scale) = if power >= 0 {
        (
            mantissa.checked_mul(10_000i128.checked_pow(power as u32)?)?,
            0,
        )
    } else {
        // the last digit's trailing decimal zeros leave the mantissa (numeric.c
        // stores no trailing zero digit): prefix × 10^(4 - zeros) + last / 10^zeros
        let zeros = (1..4).take_while(|&z| last % 10u16.pow(z) == 0).count() as u32;
        let scale = 4 * power.unsigned_abs() - zeros;
        let mantissa = prefix * 10i128.pow(4 - zeros) + i128::from(last / 10u16.pow(zeros));
        (mantissa, scale)
    };
    let mantissa = if negative { -mantissa } else { mantissa };
    Some(Decimal { mantissa, scale })
}

/// Is the value at most `limit` (a whole number) in magnitude?
pub fn within(value: Fixed, limit: i32) -> bool {
    let limit = i128::from(limit) * ONE;
    match value {
        Fixed::Exact(v) => v.abs() <= limit,
        Fixed::Finer(truncated) => truncated.abs() < limit,
        Fixed::Large => false,
    }
}

/// A fixed-point value as numeric.c stores it (the bytes after the varlena header),
/// byte for byte what numeric_in makes of `to_decimal_string(value)`: the short form
/// (every fixed-point value fits it: display scale at most 24, weight -6 to 3), whose
/// 2-byte header holds the sign, the display scale (the literal's decimals, trailing
/// zeros trimmed) and the weight, then the base-10000 digits without leading or
/// trailing zero digits (native byte order). Zero has no digits, scale 0, weight 0.
/// Building it directly spares the numeric's text and its parsing.
pub fn to_numeric_data(value: i128) -> Vec<u8> {
    // base-10000 digits, least significant first: digit i has weight i - FRACTION_DIGITS.
    // The magnitude (< 2^127) in three u64 parts of 16 decimal digits each: two u128
    // divisions instead of one for each digit.
    const PART: u128 = 10_000_000_000_000_000;
    let magnitude = value.unsigned_abs();
    let parts = [
        magnitude % PART,
        magnitude / PART % PART,
        magnitude / PART / PART,
    ]
    .map(|p| p as u64);
    let mut digits = [0u16; 12];
    for (k, mut part) in parts.into_iter().enumerate() {
        for digit in &mut digits[4 * k..4 * k + 4] {
            *digit = (part % 10_000) as u16;
            part /= 10_000;
        }
    }
    let Some(top) = digits.iter().rposition(|&d| d != 0) else {
        return SHORT.to_ne_bytes().to_vec();
    };
    let bottom = digits
        .iter()
        .position(|&d| d != 0)
        .expect("a digit is not zero");
    let weight = top as i32 - FRACTION_DIGITS;
    // decimals: down to the last one not zero, in the lowest digit not zero
    let scale = if bottom >= FRACTION_DIGITS as usize {
        0
    } else {
        let mut decimals = 4 * (FRACTION_DIGITS as u16 - bottom as u16);
        let mut last = digits[bottom];
        while last.is_multiple_of(10) {
            last /= 10;
            decimals -= 1;
        }
        decimals
    };
    let header = SHORT
        | if value < 0 { SHORT_NEGATIVE } else { 0 }
        | scale << SHORT_DSCALE_SHIFT
        | if weight < 0 { SHORT_WEIGHT_NEGATIVE } else { 0 }
        | (weight as u16 & SHORT_WEIGHT_MASK);
    let mut data = header.to_ne_bytes().to_vec();
    data.extend(
        digits[bottom..=top]
            .iter()
            .rev()
            .flat_map(|d| d.to_ne_bytes()),
    );
    data
}

/// A fixed-point value as a decimal literal, without trailing zeros: "-12.5", "0". The
/// reference to_numeric_data is tested against.
#[cfg(any(test, feature = "pg_test"))]
pub fn to_decimal_string(value: i128) -> String {
    if value == 0 {
        return "0".to_string();
    }
    let sign = if value < 0 { "-" } else { "" };
    let magnitude = value.unsigned_abs();
    // whole < 2^127 / 10^24 fits a u64
    let (whole, fraction) = ((magnitude / ONE as u128) as u64, magnitude % ONE as u128);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    // 24 fraction digits as two u64 halves: formatting a u128 divides by 10 per digit.
    const HALF: u128 = 1_000_000_000_000;
    let (high, low) = ((fraction / HALF) as u64, (fraction % HALF) as u64);
    let digits = format!("{high:012}{low:012}");
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_fractional_values() {
        // 12.5 = 12 + 5000 x 10000^-1
        assert_eq!(
            from_base10000(false, 0, [12, 5000]),
            Fixed::Exact(12 * ONE + ONE / 2)
        );
        // -0.0003 = -3 x 10000^-1
        assert_eq!(
            from_base10000(true, -1, [3]),
            Fixed::Exact(-3 * ONE / 10_000)
        );
        assert_eq!(from_base10000(false, 0, []), Fixed::Exact(0));
        assert_eq!(from_base10000(true, 0, [100]), Fixed::Exact(-100 * ONE));
    }

    #[test]
    fn digits_finer_than_the_fixed_point() {
        // 1 + 10^-28: the last digit is at 10000^-7
        assert_eq!(
            from_base10000(false, 0, [1, 0, 0, 0, 0, 0, 0, 1]),
            Fixed::Finer(ONE)
        );
        assert_eq!(from_base10000(true, -100, [1]), Fixed::Finer(0));
        // the smallest unit is exact
        assert_eq!(from_base10000(false, -6, [1]), Fixed::Exact(1));
    }

    #[test]
    fn large_values_are_not_decoded() {
        assert_eq!(from_base10000(false, 1, [1]), Fixed::Large);
        assert_eq!(from_base10000(true, 75, [1]), Fixed::Large);
        // a leading zero digit at a large weight is still small
        assert_eq!(from_base10000(false, 1, [0, 7]), Fixed::Exact(7 * ONE));
    }

    /// numeric.c's layout of a numeric's data: header, (long form) weight, digits.
    fn data(header: u16, weight: Option<i16>, digits: &[u16]) -> Vec<u8> {
        let mut data = header.to_ne_bytes().to_vec();
        data.extend(weight.iter().flat_map(|w| w.to_ne_bytes()));
        data.extend(digits.iter().flat_map(|d| d.to_ne_bytes()));
        data
    }

    #[test]
    fn numeric_data() {
        // short form, dscale 1: 12.5
        assert_eq!(
            from_numeric_data(&data(0x8000 | 1 << 7, None, &[12, 5000])),
            Fixed::Exact(12 * ONE + ONE / 2)
        );
        // short form, negative, weight -1 (stored as 0x3F with the weight's sign bit): -0.0003
        assert_eq!(
            from_numeric_data(&data(0x8000 | 0x2000 | 4 << 7 | 0x0040 | 0x3F, None, &[3])),
            Fixed::Exact(-3 * ONE / 10_000)
        );
        // zero: a short header and no digits
        assert_eq!(from_numeric_data(&data(0x8000, None, &[])), Fixed::Exact(0));
        // long form, negative, weight 0: -100
        assert_eq!(
            from_numeric_data(&data(0x4000, Some(0), &[100])),
            Fixed::Exact(-100 * ONE)
        );
        // long form, weight 2: 1e8, large
        assert_eq!(
            from_numeric_data(&data(0x0000, Some(2), &[1])),
            Fixed::Large
        );
        // NaN, +Infinity, -Infinity
        for special in [0xC000, 0xD000, 0xF000] {
            assert_eq!(from_numeric_data(&data(special, None, &[])), Fixed::Large);
        }
        // too short for a header, or for the long form's weight
        assert_eq!(from_numeric_data(&[0x80]), Fixed::Large);
        assert_eq!(from_numeric_data(&0u16.to_ne_bytes()), Fixed::Large);
    }

    #[test]
    fn mantissas_and_scales() {
        let decimal = |mantissa, scale| Decimal { mantissa, scale };
        // 12.5: digits 12 and 5000 at weight 0
        assert_eq!(
            mantissa_and_scale(&data(0x8000 | 1 << 7, None, &[12, 5000])),
            Some(decimal(125, 1))
        );
        // -0.0003: the digit 3 at weight -1
        assert_eq!(
            mantissa_and_scale(&data(0x8000 | 0x2000 | 4 << 7 | 0x0040 | 0x3F, None, &[3])),
            Some(decimal(-3, 4))
        );
        // 3e8 (long form, weight 2): a whole number, scale 0
        assert_eq!(
            mantissa_and_scale(&data(0x0000, Some(2), &[3])),
            Some(decimal(300_000_000, 0))
        );
        // 0.1: the digit 1000 at weight -1
        assert_eq!(
            mantissa_and_scale(&data(0x8000 | 1 << 7 | 0x0040 | 0x3F, None, &[1000])),
            Some(decimal(1, 1))
        );
        assert_eq!(
            mantissa_and_scale(&data(0x8000, None, &[])),
            Some(decimal(0, 0))
        );
        // 10^-24 and a whole fixed-point value, as to_numeric_data writes them
        assert_eq!(
            mantissa_and_scale(&to_numeric_data(1)),
            Some(decimal(1, 24))
        );
        assert_eq!(
            mantissa_and_scale(&to_numeric_data(-12 * ONE - ONE / 4)),
            Some(decimal(-1225, 2))
        );
        // NaN, and a mantissa past an i128 (11 digits of 10000: 10^40)
        assert_eq!(mantissa_and_scale(&data(0xC000, None, &[])), None);
        assert_eq!(mantissa_and_scale(&data(0x0000, Some(10), &[1; 11])), None);
    }

    #[test]
    fn the_limit_is_inclusive_and_exact() {
        assert!(within(Fixed::Exact(100 * ONE), 100));
        assert!(within(Fixed::Exact(-100 * ONE), 100));
        assert!(!within(Fixed::Exact(100 * ONE + 1), 100));
        // -100.000...0001 truncates to -100 but is over the limit
        assert!(!within(Fixed::Finer(-100 * ONE), 100));
        assert!(within(Fixed::Finer(99 * ONE), 100));
        assert!(!within(Fixed::Large, 100));
    }

    #[test]
    fn numeric_data_round_trips() {
        for value in [
            0,
            1,
            -1,
            ONE,
            12 * ONE + ONE / 2,
            -3 * ONE / 10_000,
            100 * ONE,
            -9_999 * ONE - 1,
        ] {
            assert_eq!(
                from_numeric_data(&to_numeric_data(value)),
                Fixed::Exact(value)
            );
        }
        // from 10^4 up, a digit has weight 1, which from_numeric_data does not decode
        assert_eq!(
            from_numeric_data(&to_numeric_data(10_000 * ONE)),
            Fixed::Large
        );
    }

    #[test]
    fn numeric_data_headers() {
        // zero: the short header alone
        assert_eq!(to_numeric_data(0), 0x8000u16.to_ne_bytes());
        // 12.5: scale 1, weight 0, digits 12 and 5000
        assert_eq!(
            to_numeric_data(12 * ONE + ONE / 2),
            data(0x8000 | 1 << 7, None, &[12, 5000])
        );
        // -0.0003: negative, scale 4, weight -1, the digit 3
        assert_eq!(
            to_numeric_data(-3 * ONE / 10_000),
            data(0x8000 | 0x2000 | 4 << 7 | 0x0040 | 0x3F, None, &[3])
        );
        // 10^-24: scale 24, weight -6
        assert_eq!(
            to_numeric_data(1),
            data(0x8000 | 24 << 7 | 0x0040 | 0x3A, None, &[1])
        );
        // -7: a whole number has scale 0 and no fraction digits
        assert_eq!(to_numeric_data(-7 * ONE), data(0x8000 | 0x2000, None, &[7]));
    }

    #[test]
    fn decimal_strings() {
        assert_eq!(to_decimal_string(0), "0");
        assert_eq!(to_decimal_string(12 * ONE + ONE / 2), "12.5");
        assert_eq!(to_decimal_string(-3 * ONE / 10_000), "-0.0003");
        assert_eq!(to_decimal_string(1), "0.000000000000000000000001");
        assert_eq!(to_decimal_string(-7 * ONE), "-7");
        assert_eq!(
            to_decimal_string(i128::MIN),
            "-170141183460469.231731687303715884105728"
        );
    }
}
