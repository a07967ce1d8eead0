//! bondhu: the Bondhu personality update pipeline inside PostgreSQL.
//!
//! The data model and the set-based pipeline live in `sql/`; Rust keeps the pure
//! logic (positions, cron schedules) and the functions that need to be fast per row.
use pgrx::prelude::*;

pub mod cron;
pub mod insight;
pub mod position;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!(
    "../sql/state.sql",
    name = "state",
    requires = [bondhu::ingest_position]
);
pgrx::extension_sql_file!("../sql/data.sql", name = "data", requires = ["state"]);
pgrx::extension_sql_file!(
    "../sql/pipeline.sql",
    name = "pipeline",
    requires = ["data"]
);
pgrx::extension_sql_file!(
    "../sql/scheduling.sql",
    name = "scheduling",
    requires = ["pipeline", bondhu::cron_next_run_epoch, bondhu::cron_check]
);
pgrx::extension_sql_file!(
    "../sql/uninstall.sql",
    name = "uninstall",
    requires = ["scheduling"]
);
pgrx::extension_sql_file!("../sql/security.sql", name = "security", finalize);

#[pg_schema]
mod bondhu {
    use crate::cron::Schedule;
    use crate::insight::{self, Value};
    use crate::position;
    use chrono::{DateTime, Utc};
    use pgrx::fcinfo::{direct_function_call, direct_function_call_as_datum};
    use pgrx::prelude::*;
    use pgrx::AnyElement;
    use std::cell::Cell;
    use std::ffi::{c_char, c_int};

    thread_local! {
        /// This backend's incarnation, once read and known to be committed, with the
        /// pipeline state table it was read from.
        static INCARNATION: Cell<Option<(i64, pg_sys::Oid)>> = const { Cell::new(None) };
        static FORGET_REGISTERED: Cell<bool> = const { Cell::new(false) };
    }

    /// Forgets the incarnation when the pipeline state table changes or goes (DROP
    /// EXTENSION in any backend): a pooled connection must not keep writing positions of
    /// an incarnation the state no longer has.
    unsafe extern "C-unwind" fn forget_incarnation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
        if let Some((_, state)) = INCARNATION.get() {
            if relid == pg_sys::InvalidOid || relid == state {
                INCARNATION.set(None);
            }
        }
    }

    fn incarnation() -> i64 {
        if let Some((known, _)) = INCARNATION.get() {
            return known;
        }
        let (incarnation, cacheable, state) = Spi::get_three::<i32, bool, pg_sys::Oid>(
            "SELECT incarnation, cacheable, 'bondhu.pipeline_state'::regclass::oid FROM bondhu.resolve_incarnation()",
        )
        .unwrap_or_else(|e| error!("bondhu: cannot read the pipeline state: {e}"));
        let incarnation = i64::from(incarnation.expect("resolve_incarnation returns a row"));
        if let (Some(true), Some(state)) = (cacheable, state) {
            if !FORGET_REGISTERED.get() {
                // SAFETY: registers a callback that only touches this backend's cache.
                unsafe {
                    pg_sys::CacheRegisterRelcacheCallback(
                        Some(forget_incarnation),
                        pg_sys::Datum::from(0usize),
                    )
                };
                FORGET_REGISTERED.set(true);
            }
            INCARNATION.set(Some((incarnation, state)));
        }
        incarnation
    }

    /// The ingest position of the current transaction: the default of every insight's
    /// `ingest_pos`. Assigns the transaction an id if it has none yet.
    #[pg_extern(volatile, parallel_unsafe)]
    fn ingest_position() -> i64 {
        let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
        match position::position(incarnation(), xid) {
            Ok(position) => position,
            Err(e) => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    format!("bondhu: cannot position this insight: {e}")
                );
            }
        }
    }

    /// The root container of a jsonb value, read in place (pgrx's JsonB would go through
    /// text, which costs more than the whole check).
    fn jsonb_root(doc: &AnyElement) -> *mut pg_sys::JsonbContainer {
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
            let jsonb =
                pg_sys::pg_detoast_datum(doc.datum().cast_mut_ptr()).cast::<pg_sys::Jsonb>();
            &raw mut (*jsonb).root
        }
    }

    fn is_object(root: *mut pg_sys::JsonbContainer) -> bool {
        // SAFETY: root points into a detoasted jsonb (jsonb_root).
        unsafe { (*root).header & pg_sys::JB_FOBJECT != 0 }
    }

    /// The value under key in a jsonb object (a binary search in the container): a
    /// number as the datum of the numeric stored in the document, not copied.
    fn lookup(root: *mut pg_sys::JsonbContainer, key: &str) -> Value<pg_sys::Datum> {
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

    fn numeric_cmp(a: pg_sys::Datum, b: pg_sys::Datum) -> i32 {
        // SAFETY: both are numeric datums.
        unsafe { direct_function_call::<i32>(pg_sys::numeric_cmp, &[Some(a), Some(b)]) }
            .expect("numeric_cmp returns a value")
    }

    /// Does an insight document count? (src/insight.rs has the rule.) The limit is
    /// checked on the exact numbers stored in the document.
    #[pg_extern(immutable, parallel_safe)]
    fn insight_is_valid(doc: AnyElement) -> bool {
        let root = jsonb_root(&doc);
        let numeric = |n: i32| {
            // SAFETY: int4_numeric of an int4 datum.
            unsafe { direct_function_call_as_datum(pg_sys::int4_numeric, &[n.into_datum()]) }
                .expect("int4_numeric returns a value")
        };
        let (limit, negative_limit) = (
            numeric(insight::MAX_MAGNITUDE),
            numeric(-insight::MAX_MAGNITUDE),
        );
        // An absent trait is None: it adjusts by 0.
        insight::adjustments(
            is_object(root),
            |key| match lookup(root, key) {
                Value::Number(n) => Value::Number(Some(n)),
                Value::Absent => Value::Absent,
                Value::NotANumber => Value::NotANumber,
            },
            || None,
            |n| n.is_none_or(|n| numeric_cmp(n, limit) <= 0 && numeric_cmp(n, negative_limit) >= 0),
        )
        .is_some()
    }

    /// How many keys of an insight document are not Big Five traits (they are ignored).
    #[pg_extern(immutable, parallel_safe)]
    fn unknown_key_count(doc: AnyElement) -> i32 {
        let root = jsonb_root(&doc);
        if !is_object(root) {
            return 0;
        }
        // SAFETY: root points into a detoasted jsonb (jsonb_root).
        let keys = unsafe { (*root).header & pg_sys::JB_CMASK } as usize;
        let present = insight::TRAITS
            .iter()
            .filter(|t| !matches!(lookup(root, t), Value::Absent))
            .count();
        insight::unknown_keys(true, keys, present) as i32
    }

    /// Refuses an invalid cron schedule given as argument `argument`, with 22023.
    #[pg_extern(immutable, parallel_safe)]
    fn cron_check(argument: &str, schedule: Option<&str>) {
        let Some(schedule) = schedule else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("{argument} must not be NULL")
            );
        };
        if let Err(why) = Schedule::parse(schedule) {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("{argument} \"{schedule}\" is not a valid cron schedule: {why}")
            );
        }
    }

    /// Seconds since the epoch of the next time `schedule` fires after `after_epoch`
    /// (GMT); NULL when it never fires. SQL callers use bondhu.cron_next_run().
    #[pg_extern(immutable, parallel_safe)]
    fn cron_next_run_epoch(schedule: &str, after_epoch: f64) -> Option<i64> {
        let schedule = Schedule::parse(schedule).ok()?;
        let after = DateTime::<Utc>::from_timestamp(after_epoch.floor() as i64, 0)?;
        Some(schedule.next_after(after)?.timestamp())
    }
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries='pg_cron'",
            "cron.database_name='pgrx_tests'",
        ]
    }
}
