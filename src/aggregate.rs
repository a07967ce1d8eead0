//! The state of the aggregates bondhu.insight_counts and bondhu.insight_sums
//! (sql/pipeline.sql): one pass over a user's pending insights, with exact sums.
//! The state's raw memory lives here: the aggregate's memory context
//! ([`AggregateMemory`]), the state in it, and the numeric sums kept there
//! ([`NumericSum`]).
use crate::decimal;
use crate::insight;
use crate::jsonb::{Document, Numeric};
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::prelude::*;
use pgrx::{AnyElement, AnyNumeric, Internal, PgMemoryContexts};
use std::str::FromStr;

/// What the pending insights of one user add up to: the state of the aggregates
/// bondhu.insight_counts and bondhu.insight_sums, which share it.
#[derive(Default)]
struct InsightTotals {
    /// applied, from chat, from entertainment, rejected, stale, ignored keys, and the
    /// rejected by reason: not an object, a trait not a number, a trait over the limit
    counts: [i32; 9],
    /// the sum of each trait's adjustments in fixed point
    fixed: [i128; 5],
    /// the sum of each trait's adjustments finer than the fixed point
    finer: [Option<NumericSum>; 5],
}
// Kept in Postgres memory, which is freed without running Rust destructors.
const _: () = assert!(!std::mem::needs_drop::<InsightTotals>());

const APPLIED: usize = 0;
const FROM_CHAT: usize = 1;
const FROM_ENTERTAINMENT: usize = 2;
const REJECTED: usize = 3;
const STALE: usize = 4;
const IGNORED_KEYS: usize = 5;
const REJECTED_NOT_AN_OBJECT: usize = 6;
const REJECTED_NOT_A_NUMBER: usize = 7;
const REJECTED_OVER_THE_LIMIT: usize = 8;

/// The memory context of the aggregate calling: it lives as long as the aggregate's
/// state, and the aggregate's memory accounting sees what is allocated there (a hash
/// aggregate then spills to disk rather than outgrow work_mem).
#[derive(Clone, Copy)]
struct AggregateMemory(pg_sys::MemoryContext);

impl AggregateMemory {
    /// The memory context of the aggregate that calls through `fcinfo`; 0A000 when no
    /// aggregate does.
    ///
    /// # Safety
    ///
    /// `fcinfo` is the FunctionCallInfo of the current call.
    unsafe fn of(fcinfo: pg_sys::FunctionCallInfo) -> Self {
        let mut context = std::ptr::null_mut();
        // SAFETY: fcinfo is this call's (the caller's promise); context is a local.
        if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "bondhu: insight totals can only be computed by an aggregate"
            );
        }
        AggregateMemory(context)
    }

    /// A new state, zero. palloc aligns to 8 bytes; the i128 sums need 16.
    fn new_totals(self) -> pg_sys::Datum {
        let align = std::mem::align_of::<InsightTotals>();
        let size = std::mem::size_of::<InsightTotals>() + align - 1;
        // SAFETY: the context is the aggregate's (AggregateMemory::of); the allocation
        // has room for an aligned InsightTotals, written before use.
        unsafe {
            let raw = pg_sys::MemoryContextAlloc(self.0, size) as usize;
            let totals = ((raw + align - 1) & !(align - 1)) as *mut InsightTotals;
            totals.write(InsightTotals::default());
            pg_sys::Datum::from(totals)
        }
    }

    /// f's result, with this context current (what f allocates lives here).
    fn run<T>(self, f: impl FnOnce() -> T) -> T {
        // SAFETY: the context is the aggregate's (AggregateMemory::of), live for the
        // whole aggregate.
        unsafe { PgMemoryContexts::For(self.0).switch_to(|_| f()) }
    }
}

/// An exact sum of numerics: a numeric in the aggregate's memory, made only by
/// NumericSum::add, so live as long as the state that holds it.
#[derive(Clone, Copy)]
struct NumericSum(pg_sys::Datum);

impl NumericSum {
    /// `sum` + `numeric` (a copy of `numeric` when there is no sum yet), in the
    /// aggregate's memory.
    fn add(sum: Option<NumericSum>, numeric: Numeric<'_>, memory: AggregateMemory) -> NumericSum {
        NumericSum(memory.run(|| {
            match sum {
                // SAFETY: both are numeric datums, live: the sum in the aggregate's
                // memory, `numeric` in its document.
                Some(sum) => unsafe {
                    direct_function_call_as_datum(
                        pg_sys::numeric_add,
                        &[Some(sum.0), Some(numeric.datum())],
                    )
                }
                .expect("numeric_add returns a value"),
                // SAFETY: `numeric` is a numeric varlena in its live document.
                None => pg_sys::Datum::from(unsafe {
                    pg_sys::pg_detoast_datum_copy(numeric.datum().cast_mut_ptr())
                }),
            }
        }))
    }

    fn value(self) -> AnyNumeric {
        // SAFETY: a numeric datum in the aggregate's memory, live with the state.
        unsafe { AnyNumeric::from_datum(self.0, false) }.expect("not null")
    }
}

/// The totals in an aggregate's state; None when there is no state yet.
///
/// # Safety
///
/// `state` is NULL or an InsightTotals made by AggregateMemory::new_totals, live: the
/// state `step` returned for the aggregate's group.
unsafe fn totals(state: &Internal) -> Option<&InsightTotals> {
    // SAFETY: the caller's promise.
    unsafe { state.get::<InsightTotals>() }
}

/// Adds one insight to a user's totals: a stale one is only counted; a fresh one
/// counts or is rejected whole (src/insight.rs has the rule), its adjustments exact.
///
/// # Safety
///
/// `fcinfo` is the FunctionCallInfo of the current call; `state` is NULL or the state
/// this function returned before for the aggregate's group.
pub unsafe fn step(
    state: Internal,
    doc: Option<AnyElement>,
    fresh: Option<bool>,
    from_chat: Option<bool>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    // SAFETY: fcinfo is this call's (the caller's promise).
    let memory = unsafe { AggregateMemory::of(fcinfo) };
    let mut state = state;
    if !state.initialized() {
        state = Internal::from(Some(memory.new_totals()));
    }
    // SAFETY: the state is made just above or the one returned before (the caller's
    // promise): an InsightTotals made by new_totals.
    let totals = unsafe { state.get_mut::<InsightTotals>() }.expect("initialized above");
    if fresh != Some(true) {
        totals.counts[STALE] += 1;
        return state;
    }
    let Some(doc) = doc else {
        totals.counts[REJECTED] += 1;
        totals.counts[REJECTED_NOT_AN_OBJECT] += 1;
        return state;
    };
    let object = Document::of(&doc).object();
    // What the document holds under each trait: numbers in fixed point, with the
    // numeric they came from.
    let values =
        object.map(|o| insight::TRAITS.map(|key| o.get(key).map(|n| (n.fixed(), Some(n)))));
    let adjustments =
        insight::adjustments(values, (decimal::Fixed::Exact(0), None), |(fixed, _)| {
            decimal::within(*fixed, insight::MAX_MAGNITUDE)
        });
    let (Some(adjustments), Some(values), Some(object)) = (adjustments, values, object) else {
        totals.counts[REJECTED] += 1;
        totals.counts[match insight::rejection(values.as_ref()) {
            insight::Rejection::NotAnObject => REJECTED_NOT_AN_OBJECT,
            insight::Rejection::NotANumber => REJECTED_NOT_A_NUMBER,
            insight::Rejection::OverTheLimit => REJECTED_OVER_THE_LIMIT,
        }] += 1;
        return state;
    };
    totals.counts[APPLIED] += 1;
    totals.counts[if from_chat == Some(true) {
        FROM_CHAT
    } else {
        FROM_ENTERTAINMENT
    }] += 1;
    totals.counts[IGNORED_KEYS] += insight::unknown_keys(object.len(), &values) as i32;
    for (i, (fixed, numeric)) in adjustments.into_iter().enumerate() {
        match (fixed, numeric) {
            (decimal::Fixed::Exact(v), _) => {
                let Some(sum) = totals.fixed[i].checked_add(v) else {
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                        "bondhu: the adjustments of one user add up beyond 10^14"
                    );
                };
                totals.fixed[i] = sum;
            }
            // Finer than the fixed point (rare): a numeric sum, in the aggregate's memory.
            (_, Some(numeric)) => {
                totals.finer[i] = Some(NumericSum::add(totals.finer[i], numeric, memory));
            }
            (_, None) => unreachable!("only an absent trait has no numeric, and it is exact"),
        }
    }
    state
}

/// The counts of bondhu.insight_counts: {applied, from chat, from entertainment,
/// rejected, stale, ignored keys, rejected as not an object, rejected for a trait not a
/// number, rejected for a trait over the limit}.
///
/// # Safety
///
/// `state` is NULL or the state `step` returned for the aggregate's group.
pub unsafe fn counts(state: Internal) -> Option<Vec<i32>> {
    // SAFETY: the caller's promise.
    let totals = unsafe { totals(&state) }?;
    Some(totals.counts.to_vec())
}

/// The sums of bondhu.insight_sums: each trait's adjustments added up, exactly, in
/// the order of src/insight.rs's TRAITS.
///
/// # Safety
///
/// `state` is NULL or the state `step` returned for the aggregate's group.
pub unsafe fn sums(state: Internal) -> Option<Vec<AnyNumeric>> {
    // SAFETY: the caller's promise.
    let totals = unsafe { totals(&state) }?;
    let sums = totals
        .fixed
        .iter()
        .zip(&totals.finer)
        .map(|(&fixed, finer)| {
            let sum = AnyNumeric::from_str(&decimal::to_decimal_string(fixed))
                .expect("a decimal literal is a numeric");
            match finer {
                Some(finer) => sum + finer.value(),
                None => sum,
            }
        });
    Some(sums.collect())
}
