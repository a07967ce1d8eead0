//! The state of the aggregates bondhu.insight_counts and bondhu.insight_sums
//! (sql/pipeline.sql): one pass over a user's pending insights, with exact sums.
use crate::decimal;
use crate::insight;
use crate::jsonb::{is_object, jsonb_root, lookup, numeric_fixed};
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::prelude::*;
use pgrx::{AnyElement, AnyNumeric, Internal, PgMemoryContexts};
use std::str::FromStr;

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
pub fn step(
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
                None => pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(numeric.cast_mut_ptr())),
            })
        };
        totals.finer[i] = Some(sum);
    }
    state
}

/// The counts of bondhu.insight_counts: {applied, from chat, from entertainment,
/// rejected, stale, ignored keys}.
pub fn counts(state: Internal) -> Option<Vec<i32>> {
    // SAFETY: see insight_totals_step.
    let totals = unsafe { state.get::<InsightTotals>() }?;
    Some(totals.counts.to_vec())
}

/// The sums of bondhu.insight_sums: each trait's adjustments added up, exactly, in
/// the order of src/insight.rs's TRAITS.
pub fn sums(state: Internal) -> Option<Vec<AnyNumeric>> {
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
