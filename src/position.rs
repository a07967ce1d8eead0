//! Ingest positions: where an insight stands in the order the pipeline applies them.
//!
//! A position is `(incarnation << 48) | transaction id`. Transaction ids (xid8) never
//! wrap and stay far below 2^48 in any real cluster; the incarnation grows when the
//! data moves to another cluster, where transaction ids start again, so every position
//! of an older incarnation sorts below every position of a newer one.

pub const XID_BITS: u32 = 48;
pub const MAX_INCARNATION: i64 = (1 << (63 - XID_BITS)) - 1;

#[derive(Debug, PartialEq, Eq)]
pub enum PositionError {
    IncarnationOutOfRange(i64),
    XidTooLarge(u64),
}

impl std::fmt::Display for PositionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PositionError::IncarnationOutOfRange(i) => {
                write!(f, "bondhu incarnation {i} is outside 1..{MAX_INCARNATION}")
            }
            PositionError::XidTooLarge(x) => {
                write!(f, "transaction id {x} does not fit in {XID_BITS} bits")
            }
        }
    }
}

/// The position of transaction `xid` in `incarnation`.
pub fn position(incarnation: i64, xid: u64) -> Result<i64, PositionError> {
    if !(1..=MAX_INCARNATION).contains(&incarnation) {
        return Err(PositionError::IncarnationOutOfRange(incarnation));
    }
    if xid >= 1 << XID_BITS {
        return Err(PositionError::XidTooLarge(xid));
    }
    Ok((incarnation << XID_BITS) | xid as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_a_later_incarnation_sort_above_all_earlier_ones() {
        let last_of_first = position(1, (1 << XID_BITS) - 1).unwrap();
        let first_of_second = position(2, 3).unwrap();
        assert!(last_of_first < first_of_second);
        assert_eq!(position(1, 1000).unwrap(), (1 << 48) + 1000);
    }

    #[test]
    fn out_of_range_inputs_are_refused() {
        assert_eq!(position(0, 5), Err(PositionError::IncarnationOutOfRange(0)));
        assert_eq!(
            position(MAX_INCARNATION + 1, 5),
            Err(PositionError::IncarnationOutOfRange(MAX_INCARNATION + 1))
        );
        assert_eq!(
            position(1, 1 << 48),
            Err(PositionError::XidTooLarge(1 << 48))
        );
        assert!(position(MAX_INCARNATION, (1 << 48) - 1).unwrap() > 0);
    }
}
