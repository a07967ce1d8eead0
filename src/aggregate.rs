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
/// bondhu.insight_counts and bondhu.insight_sums, which share it. 128 bytes (SSPACE in
/// sql/apply.sql), 8-byte aligned as palloc gives: a run's staging holds one for each
/// user with pending insights, so their size decides when its hash aggregate spills.
#[derive(Default)]
#[repr(C)]
struct InsightTotals {
    /// applied, from chat, from entertainment, rejected, stale, ignored keys, and the
    /// rejected by reason: not an object, a trait not a number, a trait over the limit
    counts: [i32; 9],
    /// the sum of each trait's adjustments in fixed point
    fixed: [FixedSum; 5],
    /// the sum of each trait's adjustments finer than the fixed point
    finer: FinerSums,
}
// Kept in Postgres memory, which is freed without running Rust destructors.
const _: () = assert!(!std::mem::needs_drop::<InsightTotals>());
const _: () = assert!(std::mem::size_of::<InsightTotals>() == 128);
const _: () = assert!(std::mem::align_of::<InsightTotals>() <= 8);

/// A sum in fixed point (an i128), stored as bytes: an i128 field would make the state
/// 16-byte aligned, which palloc does not give.
#[derive(Clone, Copy, Default)]
struct FixedSum([u8; 16]);

impl FixedSum {
    fn new(value: i128) -> Self {
        FixedSum(value.to_ne_bytes())
    }

    fn get(self) -> i128 {
        i128::from_ne_bytes(self.0)
    }

    /// Adds `value`; 22003 when the sum goes beyond what fixed point holds.
    fn add(&mut self, value: i128) {
        let Some(sum) = self.get().checked_add(value) else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                "bondhu: the adjustments of one user add up beyond 10^14"
            );
        };
        *self = FixedSum::new(sum);
    }
}

/// Each trait's sum of adjustments finer than the fixed point. Such adjustments are
/// rare, so the sums live out of the state, in the aggregate's memory, made with the
/// first of them (null until then).
struct FinerSums(*mut [Option<NumericSum>; 5]);

impl Default for FinerSums {
    fn default() -> Self {
        FinerSums(std::ptr::null_mut())
    }
}

impl FinerSums {
    /// Trait i's sum, if any.
    fn get(&self, i: usize) -> Option<NumericSum> {
        // SAFETY: null, or made by `sums_mut` in the memory of the state that holds it,
        // live with it.
        unsafe { self.0.as_ref() }.and_then(|sums| sums[i])
    }

    /// The sums, made (all absent) in `memory` when there are none yet.
    fn sums_mut(&mut self, memory: AggregateMemory) -> &mut [Option<NumericSum>; 5] {
        if self.0.is_null() {
            self.0 = memory.alloc([None; 5]);
        }
        // SAFETY: made just above or before, in the memory of the state that holds it.
        unsafe { &mut *self.0 }
    }

    /// Adds `numeric` to trait i's sum.
    fn add(&mut self, i: usize, numeric: Numeric<'_>, memory: AggregateMemory) {
        NumericSum::add(&mut self.sums_mut(memory)[i], numeric, memory);
    }

    /// Adds `sum`, if any, to trait i's sum.
    fn add_sum(&mut self, i: usize, sum: Option<NumericSum>, memory: AggregateMemory) {
        if let Some(sum) = sum {
            NumericSum::add_sum(&mut self.sums_mut(memory)[i], sum, memory);
        }
    }
}

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

    /// The current memory context: where Postgres wants a deserialized state (the
    /// per-tuple context, reset after each input; the combine function copies what it
    /// keeps into the aggregate's memory).
    fn current() -> Self {
        // SAFETY: reading the backend's current memory context, always set.
        AggregateMemory(unsafe { pg_sys::CurrentMemoryContext })
    }

    /// A new state, zero.
    fn new_totals(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.alloc(InsightTotals::default()))
    }

    /// `value`, moved into this context (palloc aligns to 8 bytes, which T must not
    /// exceed).
    fn alloc<T>(self, value: T) -> *mut T {
        const { assert!(std::mem::align_of::<T>() <= 8) };
        // SAFETY: the context is the aggregate's (AggregateMemory::of) or the current
        // one; the allocation has T's size and alignment, and is written before use.
        unsafe {
            let raw = pg_sys::MemoryContextAlloc(self.0, std::mem::size_of::<T>()) as *mut T;
            raw.write(value);
            raw
        }
    }

    /// f's result, with this context current (what f allocates lives here).
    fn run<T>(self, f: impl FnOnce() -> T) -> T {
        // SAFETY: the context is the aggregate's (AggregateMemory::of), live for the
        // whole aggregate.
        unsafe { PgMemoryContexts::For(self.0).switch_to(|_| f()) }
    }
}

/// An exact sum of numerics: a numeric in a chunk of its own (made by NumericSum::add or
/// deserialize), which only its state's FinerSums holds, and which lives as long as that
/// state (copies of it are read, never kept).
#[derive(Clone, Copy)]
struct NumericSum(pg_sys::Datum);

impl NumericSum {
    /// Adds `numeric` to the sum in `slot` (a copy of `numeric` when there is none yet),
    /// in the aggregate's memory.
    fn add(slot: &mut Option<NumericSum>, numeric: Numeric<'_>, memory: AggregateMemory) {
        // SAFETY: to_datum makes a numeric varlena, live for this call at least.
        unsafe { Self::add_datum(slot, numeric.to_datum(), memory) }
    }

    /// Adds another state's sum to the sum in `slot`, in the aggregate's memory.
    fn add_sum(slot: &mut Option<NumericSum>, other: NumericSum, memory: AggregateMemory) {
        // SAFETY: other is a numeric datum, live with its state.
        unsafe { Self::add_datum(slot, other.0, memory) }
    }

    /// Adds `numeric` to the sum in `slot`, in the aggregate's memory, and frees the sum
    /// it replaces: keeping each one would grow the aggregate's memory with every
    /// adjustment added (~9 kB a document for sums of 16,000 digits: 555 MB for one
    /// user's 60,000 such insights).
    ///
    /// # Safety
    ///
    /// `numeric` is a live numeric datum, not the one in `slot`.
    unsafe fn add_datum(
        slot: &mut Option<NumericSum>,
        numeric: pg_sys::Datum,
        memory: AggregateMemory,
    ) {
        let total = memory.run(|| match *slot {
            // SAFETY: both are numeric datums, live: the sum with its state, `numeric` by
            // the caller's promise.
            Some(sum) => unsafe {
                direct_function_call_as_datum(pg_sys::numeric_add, &[Some(sum.0), Some(numeric)])
            }
            .expect("numeric_add returns a value"),
            // SAFETY: `numeric` is a numeric varlena (the caller's promise).
            None => pg_sys::Datum::from(unsafe {
                pg_sys::pg_detoast_datum_copy(numeric.cast_mut_ptr())
            }),
        });
        if let Some(old) = slot.replace(NumericSum(total)) {
            // SAFETY: a chunk of its own that only this slot held (NumericSum), and
            // numeric_add made `total` anew: nothing points to it now.
            unsafe { pg_sys::pfree(old.0.cast_mut_ptr()) };
        }
    }

    fn value(self) -> AnyNumeric {
        // SAFETY: a numeric datum in the aggregate's memory, live with the state.
        unsafe { AnyNumeric::from_datum(self.0, false) }.expect("not null")
    }
}

/// A fixed-point value as a numeric (decimal::to_numeric_data: the numeric that
/// numeric_in would make of its decimal literal, without the text).
pub(crate) fn fixed_numeric(value: i128) -> AnyNumeric {
    let data = decimal::to_numeric_data(value);
    let size = pg_sys::VARHDRSZ + data.len();
    // SAFETY: a varlena of `size` bytes in the current memory context, its header
    // set and its data written before it is read; AnyNumeric copies it.
    unsafe {
        let varlena = pg_sys::palloc(size).cast::<pg_sys::varlena>();
        pgrx::varlena::set_varsize_4b(varlena, size as i32);
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            varlena.cast::<u8>().add(pg_sys::VARHDRSZ),
            data.len(),
        );
        AnyNumeric::from_datum(pg_sys::Datum::from(varlena), false).expect("not null")
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

/// The totals in an aggregate's state, made (zero, in the aggregate's memory) when
/// there is no state yet: the state the step and combine functions add to.
///
/// # Safety
///
/// `state` is NULL or an InsightTotals made by AggregateMemory::new_totals, live.
unsafe fn totals_mut(state: &mut Internal, memory: AggregateMemory) -> &mut InsightTotals {
    if !state.initialized() {
        *state = Internal::from(Some(memory.new_totals()));
    }
    // SAFETY: made just above or the caller's promise: an InsightTotals.
    unsafe { state.get_mut::<InsightTotals>() }.expect("initialized above")
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
    // SAFETY: the state is NULL or the one returned before (the caller's promise).
    let totals = unsafe { totals_mut(&mut state, memory) };
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
            (decimal::Fixed::Exact(v), _) => totals.fixed[i].add(v),
            // Finer than the fixed point (rare): a numeric sum, in the aggregate's memory.
            (_, Some(numeric)) => totals.finer.add(i, numeric, memory),
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
    let sums = totals.fixed.iter().enumerate().map(|(i, fixed)| {
        let sum = fixed_numeric(fixed.get());
        match totals.finer.get(i) {
            Some(finer) => sum + finer.value(),
            None => sum,
        }
    });
    Some(sums.collect())
}

/// Adds the totals in `other` to those in `state` (a parallel aggregate's partial
/// states of one group); either may be NULL. The result is in the aggregate's memory.
///
/// # Safety
///
/// `fcinfo` is the FunctionCallInfo of the current call; each state is NULL or an
/// InsightTotals of this aggregate (made by `step`, `combine` or `deserialize`).
pub unsafe fn combine(
    state: Internal,
    other: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    // SAFETY: fcinfo is this call's (the caller's promise).
    let memory = unsafe { AggregateMemory::of(fcinfo) };
    // SAFETY: the caller's promise.
    let Some(other) = (unsafe { totals(&other) }) else {
        return state;
    };
    let mut state = state;
    // SAFETY: the state is NULL or an InsightTotals of this aggregate (the caller's
    // promise).
    let totals = unsafe { totals_mut(&mut state, memory) };
    for (count, more) in totals.counts.iter_mut().zip(other.counts) {
        *count += more;
    }
    for i in 0..totals.fixed.len() {
        totals.fixed[i].add(other.fixed[i].get());
        totals.finer.add_sum(i, other.finer.get(i), memory);
    }
    state
}

/// The totals as bytes, for a parallel worker to hand its partial state to the leader:
/// the counts and fixed sums little-endian, then each trait's finer sum as the length
/// and text of its numeric (length 0: none).
///
/// # Safety
///
/// `state` is an InsightTotals of this aggregate, live.
pub unsafe fn serialize(state: Internal) -> Vec<u8> {
    // SAFETY: the caller's promise.
    let totals = unsafe { totals(&state) }.expect("a serialized state is not NULL");
    let mut bytes = Vec::with_capacity(128);
    totals
        .counts
        .iter()
        .for_each(|c| bytes.extend(c.to_le_bytes()));
    totals
        .fixed
        .iter()
        .for_each(|f| bytes.extend(f.get().to_le_bytes()));
    for i in 0..totals.fixed.len() {
        let text = (totals.finer.get(i))
            .map(|f| f.value().to_string())
            .unwrap_or_default();
        bytes.extend((text.len() as u32).to_le_bytes());
        bytes.extend(text.as_bytes());
    }
    bytes
}

/// The totals `serialize` wrote, as a new state in the current memory context (the
/// per-tuple one: a state in the aggregate's memory would stay there until the end of
/// the aggregate, one for each partial state the leader reads).
///
/// # Safety
///
/// `fcinfo` is the FunctionCallInfo of the current call.
pub unsafe fn deserialize(bytes: &[u8], fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    // SAFETY: fcinfo is this call's (the caller's promise): only an aggregate may call.
    let _ = unsafe { AggregateMemory::of(fcinfo) };
    let memory = AggregateMemory::current();
    let mut state = Internal::from(Some(memory.new_totals()));
    // SAFETY: made just above: an InsightTotals.
    let totals = unsafe { state.get_mut::<InsightTotals>() }.expect("made above");
    let mut rest = bytes;
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    };
    for count in totals.counts.iter_mut() {
        *count = i32::from_le_bytes(take(4).try_into().expect("4 bytes"));
    }
    for fixed in totals.fixed.iter_mut() {
        *fixed = FixedSum::new(i128::from_le_bytes(take(16).try_into().expect("16 bytes")));
    }
    for i in 0..totals.fixed.len() {
        let len = u32::from_le_bytes(take(4).try_into().expect("4 bytes")) as usize;
        if len > 0 {
            let text = std::str::from_utf8(take(len)).expect("serialize wrote text");
            let numeric = AnyNumeric::from_str(text).expect("serialize wrote a numeric");
            totals.finer.sums_mut(memory)[i] = Some(NumericSum(
                memory.run(|| numeric.into_datum().expect("a numeric datum")),
            ));
        }
    }
    state
}
