//! bondhu: the Bondhu personality update pipeline inside PostgreSQL.
//!
//! The data model and the set-based pipeline live in `sql/`; Rust keeps the pure
//! logic (positions, cron schedules) and the functions that need to be fast per row.
use pgrx::prelude::*;

pub mod cron;
pub mod decimal;
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
    requires = [
        "data",
        bondhu::insight_totals_step,
        bondhu::insight_counts_final,
        bondhu::insight_sums_final
    ]
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
    use crate::decimal;
    use crate::insight::{self, Value};
    use crate::position;
    use chrono::{DateTime, Utc};
    use pgrx::fcinfo::direct_function_call_as_datum;
    use pgrx::prelude::*;
    use pgrx::{AnyElement, AnyNumeric, Internal, PgMemoryContexts};
    use std::cell::Cell;
    use std::ffi::{c_char, c_int};
    use std::str::FromStr;

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

    /// A numeric stored in a document, decoded to fixed point without copying it (the
    /// layout is numeric.c's: a 2-byte header, for the long form a 2-byte weight, then
    /// base-10000 digits). NaN and infinities, which JSON cannot hold, count as large.
    fn numeric_fixed(numeric: pg_sys::Datum) -> decimal::Fixed {
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

    /// What the pending insights of one user add up to: the state of the aggregates
    /// bondhu.insight_counts and bondhu.insight_sums, which share it.
    #[derive(Default)]
    struct InsightTotals {
        /// applied, from chat, from entertainment, rejected, stale, ignored keys
        counts: [i32; 6],
        /// the sum of each trait's adjustments in fixed point
        fixed: [i128; 5],
        /// the sum of each trait's adjustments finer than the fixed point, a numeric in
        /// the aggregate's memory
        finer: [Option<pg_sys::Datum>; 5],
    }
    // Kept in Postgres memory, which is freed without running Rust destructors.
    const _: () = assert!(!std::mem::needs_drop::<InsightTotals>());

    /// A new state in the aggregate's memory context, where the aggregate's memory
    /// accounting sees it (a hash aggregate then spills to disk rather than outgrow
    /// work_mem). palloc aligns to 8 bytes; the i128 sums need 16.
    fn new_totals(context: pg_sys::MemoryContext) -> *mut InsightTotals {
        let align = std::mem::align_of::<InsightTotals>();
        let size = std::mem::size_of::<InsightTotals>() + align - 1;
        // SAFETY: the allocation has room for an aligned InsightTotals, written before use.
        unsafe {
            let raw = pg_sys::MemoryContextAlloc(context, size) as usize;
            let totals = ((raw + align - 1) & !(align - 1)) as *mut InsightTotals;
            totals.write(InsightTotals::default());
            totals
        }
    }
    const APPLIED: usize = 0;
    const FROM_CHAT: usize = 1;
    const FROM_ENTERTAINMENT: usize = 2;
    const REJECTED: usize = 3;
    const STALE: usize = 4;
    const IGNORED_KEYS: usize = 5;

    fn aggregate_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
        let mut context = std::ptr::null_mut();
        // SAFETY: fcinfo is this call's.
        if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "bondhu: insight totals can only be computed by an aggregate"
            );
        }
        context
    }

    fn numeric_add(a: pg_sys::Datum, b: pg_sys::Datum) -> pg_sys::Datum {
        // SAFETY: both are numeric datums.
        unsafe { direct_function_call_as_datum(pg_sys::numeric_add, &[Some(a), Some(b)]) }
            .expect("numeric_add returns a value")
    }

    /// Adds one insight to a user's totals: a stale one is only counted; a fresh one
    /// counts or is rejected whole (src/insight.rs has the rule), its adjustments exact.
    #[pg_extern(immutable, parallel_safe)]
    fn insight_totals_step(
        state: Internal,
        doc: Option<AnyElement>,
        fresh: Option<bool>,
        from_chat: Option<bool>,
        fcinfo: pg_sys::FunctionCallInfo,
    ) -> Internal {
        let context = aggregate_context(fcinfo);
        let mut state = state;
        // SAFETY: the state is only ever an InsightTotals made by new_totals.
        let totals = unsafe {
            if !state.initialized() {
                state = Internal::from(Some(pg_sys::Datum::from(new_totals(context))));
            }
            state.get_mut::<InsightTotals>().expect("initialized above")
        };
        if fresh != Some(true) {
            totals.counts[STALE] += 1;
            return state;
        }
        let Some(doc) = doc else {
            totals.counts[REJECTED] += 1;
            return state;
        };
        let root = jsonb_root(&doc);
        // What the document holds under each trait: numbers in fixed point, with the
        // numeric they came from.
        let values = is_object(root)
            .then(|| insight::TRAITS.map(|key| lookup(root, key).map(|n| (numeric_fixed(n), n))));
        let adjustments = insight::adjustments(
            values,
            (decimal::Fixed::Exact(0), pg_sys::Datum::from(0usize)),
            |(fixed, _)| decimal::within(*fixed, insight::MAX_MAGNITUDE),
        );
        let (Some(adjustments), Some(values)) = (adjustments, values) else {
            totals.counts[REJECTED] += 1;
            return state;
        };
        totals.counts[APPLIED] += 1;
        totals.counts[if from_chat == Some(true) {
            FROM_CHAT
        } else {
            FROM_ENTERTAINMENT
        }] += 1;
        // SAFETY: root is an object container.
        let keys = unsafe { (*root).header & pg_sys::JB_CMASK } as usize;
        totals.counts[IGNORED_KEYS] += insight::unknown_keys(keys, &values) as i32;
        for (i, (fixed, numeric)) in adjustments.into_iter().enumerate() {
            if let decimal::Fixed::Exact(v) = fixed {
                let Some(sum) = totals.fixed[i].checked_add(v) else {
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                        "bondhu: the adjustments of one user add up beyond 10^14"
                    );
                };
                totals.fixed[i] = sum;
                continue;
            }
            // Finer than the fixed point (rare): a numeric sum, kept in the aggregate's memory.
            // SAFETY: the aggregate's context outlives the state; numeric is a numeric
            // datum in the document, copied out of it.
            let sum = unsafe {
                PgMemoryContexts::For(context).switch_to(|_| match totals.finer[i] {
                    Some(sum) => numeric_add(sum, numeric),
                    None => {
                        pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(numeric.cast_mut_ptr()))
                    }
                })
            };
            totals.finer[i] = Some(sum);
        }
        state
    }

    /// The counts of bondhu.insight_counts: {applied, from chat, from entertainment,
    /// rejected, stale, ignored keys}.
    #[pg_extern(immutable, parallel_safe)]
    fn insight_counts_final(state: Internal) -> Option<Vec<i32>> {
        // SAFETY: see insight_totals_step.
        let totals = unsafe { state.get::<InsightTotals>() }?;
        Some(totals.counts.to_vec())
    }

    /// The sums of bondhu.insight_sums: each trait's adjustments added up, exactly, in
    /// the order of src/insight.rs's TRAITS.
    #[pg_extern(immutable, parallel_safe)]
    fn insight_sums_final(state: Internal) -> Option<Vec<AnyNumeric>> {
        // SAFETY: see insight_totals_step.
        let totals = unsafe { state.get::<InsightTotals>() }?;
        let sums = totals
            .fixed
            .iter()
            .zip(&totals.finer)
            .map(|(&fixed, finer)| {
                let sum = AnyNumeric::from_str(&decimal::to_decimal_string(fixed))
                    .expect("a decimal literal is a numeric");
                match finer {
                    // SAFETY: finer is a numeric datum in the aggregate's memory.
                    Some(finer) => {
                        sum + unsafe { AnyNumeric::from_datum(*finer, false) }.expect("not null")
                    }
                    None => sum,
                }
            });
        Some(sums.collect())
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
