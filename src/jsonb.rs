//! Insight documents read in place: the jsonb container, a key's value, a numeric's
//! digits, without copying them or going through text (pgrx's JsonB would go through
//! text, which costs more than the whole check). The raw reads live here: a document's
//! bytes and a numeric argument's ([`varlena_data`]). The rest reads those bytes as
//! Postgres lays out a jsonb container (src/include/utils/jsonb.h), with bounds-checked
//! slices and no call into Postgres: Postgres's own lookup
//! (getKeyJsonValueFromContainer) needs a small document copied to an aligned varlena
//! first, and each call into Postgres sets up an error boundary: reading in place takes
//! ~15 % off the CPU time of summing insights (2 M of them, 2.49 -> 2.04 s, median of 4).
use crate::decimal;
use crate::insight::Value;
use pgrx::prelude::*;
use pgrx::AnyElement;

// The varlena headers below are read as a little-endian machine lays them out.
const _: () = assert!(cfg!(target_endian = "little"));

/// A jsonb document: the bytes of its root container.
#[derive(Clone, Copy)]
pub struct Document<'a> {
    root: &'a [u8],
}

/// A jsonb object: a [`Document`] whose root is an object with `count` keys.
#[derive(Clone, Copy)]
pub struct Object<'a> {
    root: &'a [u8],
    count: usize,
}

/// A number stored in a [`Document`]: the numeric varlena in the document (header
/// included), not copied. It may be unaligned.
#[derive(Clone, Copy)]
pub struct Numeric<'a> {
    varlena: &'a [u8],
}

impl<'a> Document<'a> {
    /// The document in `doc`; 42804 when `doc` is not jsonb.
    pub fn of(doc: &'a AnyElement) -> Self {
        if doc.oid() != pg_sys::JSONBOID {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                "bondhu: an insight document must be jsonb"
            );
        }
        // SAFETY: an AnyElement holds a datum of type doc.oid() (pgrx makes it from
        // the call's argument and that argument's type), here a jsonb varlena, which
        // lives until the end of the call at least, as does a detoasted copy.
        let root = unsafe { varlena_data(doc.datum()) };
        Document { root }
    }

    /// The document as an object; None when it is an array or a scalar.
    pub fn object(self) -> Option<Object<'a>> {
        let header = read_u32(self.root, 0);
        (header & pg_sys::JB_FOBJECT != 0).then_some(Object {
            root: self.root,
            count: (header & pg_sys::JB_CMASK) as usize,
        })
    }
}

impl<'a> Object<'a> {
    /// How many keys the object has.
    pub fn len(self) -> usize {
        self.count
    }

    /// The value under `key`: a binary search of the keys, which a jsonb object keeps
    /// sorted by length, then bytes (as getKeyJsonValueFromContainer searches).
    pub fn get(self, key: &str) -> Value<Numeric<'a>> {
        let key = key.as_bytes();
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = low + (high - low) / 2;
            let candidate = &self.data()[self.span(middle)];
            match candidate
                .len()
                .cmp(&key.len())
                .then_with(|| candidate.cmp(key))
            {
                std::cmp::Ordering::Equal => return self.value(middle + self.count),
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
            }
        }
        Value::Absent
    }

    /// Child `index`'s JEntry.
    fn entry(self, index: usize) -> u32 {
        read_u32(self.root, 4 + 4 * index)
    }

    /// The children's data, which follows the 2 * count JEntries (keys, then values).
    fn data(self) -> &'a [u8] {
        &self.root[4 + 8 * self.count..]
    }

    /// Where child `index`'s bytes are in the children's data (a key's are its text; a
    /// numeric's start with padding to a 4-byte offset). Each JEntry holds its child's
    /// length, or every JB_OFFSET_STRIDE-th its end offset (getJsonbOffset).
    fn span(self, index: usize) -> std::ops::Range<usize> {
        let mut start = 0;
        for i in (0..index).rev() {
            let entry = self.entry(i);
            start += (entry & pg_sys::JENTRY_OFFLENMASK) as usize;
            if entry & pg_sys::JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        let entry = self.entry(index);
        let field = (entry & pg_sys::JENTRY_OFFLENMASK) as usize;
        start..if entry & pg_sys::JENTRY_HAS_OFF != 0 {
            field
        } else {
            start + field
        }
    }

    /// Child `index`, a value, as a number or not one (a string, a boolean, null, an
    /// array or an object).
    fn value(self, index: usize) -> Value<Numeric<'a>> {
        if self.entry(index) & pg_sys::JENTRY_TYPEMASK != pg_sys::JENTRY_ISNUMERIC {
            return Value::NotANumber;
        }
        let span = self.span(index);
        // the numeric starts at the next 4-byte offset (fillJsonbValue's INTALIGN)
        let start = span.start.next_multiple_of(4);
        Value::Number(Numeric {
            varlena: &self.data()[start..span.end],
        })
    }
}

impl<'a> Numeric<'a> {
    /// The numeric's data, after its (1- or 4-byte) varlena header.
    fn data(self) -> &'a [u8] {
        let first = self.varlena[0];
        if first & 0x01 == 0x01 {
            // a 1-byte header: its length, header included, in the upper 7 bits
            &self.varlena[1..(first >> 1) as usize]
        } else {
            &self.varlena[4..(read_u32(self.varlena, 0) >> 2) as usize]
        }
    }

    /// Its value in fixed point (src/decimal.rs reads numeric.c's layout).
    pub fn fixed(self) -> decimal::Fixed {
        decimal::from_numeric_data(self.data())
    }

    /// A copy of the numeric as a datum, aligned, in the current memory context: for
    /// Postgres's numeric functions, which read the varlena header in place.
    pub fn to_datum(self) -> pg_sys::Datum {
        // SAFETY: a buffer of the numeric's size, written in full before it is read.
        unsafe {
            let copy = pg_sys::palloc(self.varlena.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(self.varlena.as_ptr(), copy, self.varlena.len());
            pg_sys::Datum::from(copy)
        }
    }
}

/// The u32 at `at` in `bytes`, which need not be aligned.
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The data of a varlena datum (a document, a function's numeric argument) after its
/// (1- or 4-byte) header: in place when it is neither compressed nor stored apart (a
/// short one is not copied to a 4-byte header), otherwise a copy in the current memory
/// context.
///
/// # Safety
///
/// `datum` is a varlena, not NULL, that outlives the data's use ('a).
pub unsafe fn varlena_data<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: (the caller's) a varlena; detoasting a packed one returns it as it is,
    // a toasted one as a copy in the current memory context; its data is then
    // varsize_any_exhdr bytes long.
    unsafe {
        let varlena = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(varlena).cast::<u8>(),
            pgrx::varlena::varsize_any_exhdr(varlena),
        )
    }
}
