//! Insight documents read in place: the jsonb container, a key's value, a numeric's
//! digits, without copying them or going through text (pgrx's JsonB would go through
//! text, which costs more than the whole check). The raw reads live here, behind
//! three types made only from a live jsonb value: a [`Document`], its [`Object`], and
//! a [`Numeric`] stored in it. Each borrows the value it was read from. A numeric
//! argument (the trait math's) is read the same way ([`numeric_data`]).
use crate::decimal;
use crate::insight::Value;
use pgrx::prelude::*;
use pgrx::AnyElement;
use std::ffi::{c_char, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// A jsonb document, detoasted: its root container.
#[derive(Clone, Copy)]
pub struct Document<'a> {
    /// In the detoasted jsonb, which lives at least as long as the value borrowed.
    root: NonNull<pg_sys::JsonbContainer>,
    value: PhantomData<&'a AnyElement>,
}

/// A jsonb object: a [`Document`] whose root is an object.
#[derive(Clone, Copy)]
pub struct Object<'a> {
    root: NonNull<pg_sys::JsonbContainer>,
    value: PhantomData<&'a AnyElement>,
}

/// A number stored in a [`Document`]: the numeric in the document, not copied.
#[derive(Clone, Copy)]
pub struct Numeric<'a> {
    /// A numeric varlena inside the detoasted document.
    numeric: NonNull<pg_sys::varlena>,
    value: PhantomData<&'a AnyElement>,
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
        // the call's argument and that argument's type), here a jsonb varlena;
        // detoasting gives a Jsonb in memory that lives until the end of the call at
        // least, and its root is a field of it.
        let root = unsafe {
            let jsonb =
                pg_sys::pg_detoast_datum(doc.datum().cast_mut_ptr()).cast::<pg_sys::Jsonb>();
            NonNull::new(&raw mut (*jsonb).root)
        }
        .expect("a detoasted jsonb");
        Document {
            root,
            value: PhantomData,
        }
    }

    /// The document as an object; None when it is an array or a scalar.
    pub fn object(self) -> Option<Object<'a>> {
        (header(self.root) & pg_sys::JB_FOBJECT != 0).then_some(Object {
            root: self.root,
            value: PhantomData,
        })
    }
}

/// The header of a container of a live document: its kind and its size.
fn header(root: NonNull<pg_sys::JsonbContainer>) -> u32 {
    // SAFETY: every container held by a Document or an Object is the root of a
    // detoasted jsonb that outlives them.
    unsafe { root.as_ref() }.header
}

impl<'a> Object<'a> {
    /// How many keys the object has.
    pub fn len(self) -> usize {
        (header(self.root) & pg_sys::JB_CMASK) as usize
    }

    /// The value under `key` (a binary search in the container, into a value on the
    /// stack: no allocation a lookup).
    pub fn get(self, key: &str) -> Value<Numeric<'a>> {
        let mut found = pg_sys::JsonbValue::default();
        // SAFETY: root is an object container of a live document; the key's bytes
        // outlive the call, which only reads them; `found` is written only when the key
        // is there, and a numeric value points into the document.
        unsafe {
            if pg_sys::getKeyJsonValueFromContainer(
                self.root.as_ptr(),
                key.as_ptr() as *const c_char,
                key.len() as c_int,
                &mut found,
            )
            .is_null()
            {
                Value::Absent
            } else if found.type_ == pg_sys::jbvType::jbvNumeric {
                Value::Number(Numeric {
                    numeric: NonNull::new(found.val.numeric.cast()).expect("a numeric"),
                    value: PhantomData,
                })
            } else {
                Value::NotANumber
            }
        }
    }
}

impl Numeric<'_> {
    /// The numeric as a datum, valid while the document is: for Postgres's numeric
    /// functions.
    pub fn datum(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.numeric.as_ptr())
    }

    /// Its value in fixed point (src/decimal.rs reads numeric.c's layout).
    pub fn fixed(self) -> decimal::Fixed {
        // SAFETY: numeric is a numeric varlena inside a live detoasted document (a
        // number in a jsonb is never toasted on its own).
        decimal::from_numeric_data(unsafe { varlena_data(self.numeric.as_ptr()) })
    }
}

/// The data of a numeric datum (a function's numeric argument), after its varlena
/// header, as src/decimal.rs reads it: in place, copied only if it is toasted.
///
/// # Safety
///
/// `datum` is a numeric, not NULL, that outlives the data's use ('a).
pub unsafe fn numeric_data<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: (the caller's) a numeric; detoasting a packed one returns it as it is, a
    // toasted one as a copy in the current memory context.
    unsafe { varlena_data(pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr())) }
}

/// The data of an untoasted varlena, after its (1- or 4-byte) header.
///
/// # Safety
///
/// `varlena` is an untoasted varlena that outlives the data's use ('a).
unsafe fn varlena_data<'a>(varlena: *const pg_sys::varlena) -> &'a [u8] {
    // SAFETY: (the caller's) its data is varsize_any_exhdr bytes long.
    unsafe {
        std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(varlena).cast::<u8>(),
            pgrx::varlena::varsize_any_exhdr(varlena),
        )
    }
}
