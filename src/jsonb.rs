//! Insight documents read in place: the jsonb container, a key's value, a numeric's
//! digits, without copying them or going through text.
use crate::decimal;
use crate::insight::Value;
use pgrx::prelude::*;
use pgrx::AnyElement;
use std::ffi::{c_char, c_int};

/// The root container of a jsonb value, read in place (pgrx's JsonB would go through
/// text, which costs more than the whole check).
pub fn jsonb_root(doc: &AnyElement) -> *mut pg_sys::JsonbContainer {
    if doc.oid() != pg_sys::JSONBOID {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            "bondhu: an insight document must be jsonb"
        );
    }
    // SAFETY: the datum is a jsonb varlena; detoasting gives a Jsonb in memory that
    // lives until the end of this call.
    unsafe {
        let jsonb = pg_sys::pg_detoast_datum(doc.datum().cast_mut_ptr()).cast::<pg_sys::Jsonb>();
        &raw mut (*jsonb).root
    }
}

pub fn is_object(root: *mut pg_sys::JsonbContainer) -> bool {
    // SAFETY: root points into a detoasted jsonb (jsonb_root).
    unsafe { (*root).header & pg_sys::JB_FOBJECT != 0 }
}

/// The value under key in a jsonb object (a binary search in the container): a
/// number as the datum of the numeric stored in the document, not copied.
pub fn lookup(root: *mut pg_sys::JsonbContainer, key: &str) -> Value<pg_sys::Datum> {
    // SAFETY: root is an object container (checked by the caller); the key's bytes
    // outlive the call; the numeric found lives in the detoasted document.
    unsafe {
        let mut wanted: pg_sys::JsonbValue = std::mem::zeroed();
        wanted.type_ = pg_sys::jbvType::jbvString;
        wanted.val.string.len = key.len() as c_int;
        wanted.val.string.val = key.as_ptr() as *mut c_char;
        let found = pg_sys::findJsonbValueFromContainer(root, pg_sys::JB_FOBJECT, &mut wanted);
        if found.is_null() {
            Value::Absent
        } else if (*found).type_ == pg_sys::jbvType::jbvNumeric {
            Value::Number(pg_sys::Datum::from((*found).val.numeric))
        } else {
            Value::NotANumber
        }
    }
}

/// A numeric stored in a document, decoded to fixed point without copying it (the
/// layout is numeric.c's: a 2-byte header, for the long form a 2-byte weight, then
/// base-10000 digits). NaN and infinities, which JSON cannot hold, count as large.
pub fn numeric_fixed(numeric: pg_sys::Datum) -> decimal::Fixed {
    const SIGN_MASK: u16 = 0xC000;
    const NEGATIVE: u16 = 0x4000;
    const SHORT: u16 = 0x8000;
    const SPECIAL: u16 = 0xC000;
    const SHORT_NEGATIVE: u16 = 0x2000;
    const SHORT_WEIGHT_NEGATIVE: u16 = 0x0040;
    const SHORT_WEIGHT_MASK: u16 = 0x003F;
    // SAFETY: numeric points to a numeric varlena inside a detoasted jsonb; every
    // read stays within its size.
    unsafe {
        let varlena = numeric.cast_mut_ptr::<pg_sys::varlena>();
        let data = pgrx::varlena::vardata_any(varlena).cast::<u8>();
        let size = pgrx::varlena::varsize_any_exhdr(varlena);
        if size < 2 {
            return decimal::Fixed::Large;
        }
        let header = data.cast::<u16>().read_unaligned();
        let (negative, weight, digits_at) = match header & SIGN_MASK {
            SPECIAL => return decimal::Fixed::Large,
            SHORT => {
                let magnitude = i32::from(header & SHORT_WEIGHT_MASK);
                let weight = if header & SHORT_WEIGHT_NEGATIVE != 0 {
                    magnitude - i32::from(SHORT_WEIGHT_MASK) - 1
                } else {
                    magnitude
                };
                (header & SHORT_NEGATIVE != 0, weight, 2)
            }
            sign => {
                if size < 4 {
                    return decimal::Fixed::Large;
                }
                let weight = i32::from(data.add(2).cast::<i16>().read_unaligned());
                (sign == NEGATIVE, weight, 4)
            }
        };
        let digits = (size - digits_at) / 2;
        let first = data.add(digits_at).cast::<u16>();
        decimal::from_base10000(
            negative,
            weight,
            (0..digits).map(|i| first.add(i).read_unaligned()),
        )
    }
}
