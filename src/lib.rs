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
pgrx::extension_sql_file!(
    "../sql/data.sql",
    name = "data",
    requires = [
        "state",
        bondhu::position_insight,
        bondhu::guard_profile_cursor
    ]
);
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
    requires = [
        "pipeline",
        bondhu::cron_next_run_epoch,
        bondhu::cron_check,
        bondhu::in_transaction_block
    ]
);
pgrx::extension_sql_file!(
    "../sql/uninstall.sql",
    name = "uninstall",
    requires = ["scheduling", bondhu::on_drop_extension]
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
    use pgrx::heap_tuple::PgHeapTuple;
    use pgrx::prelude::*;
    use pgrx::trigger_support::PgTrigger;
    use pgrx::{AllocatedByPostgres, AllocatedByRust};
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

    /// Runs f as role `owner`, as a SECURITY DEFINER function would. An error inside
    /// is fine: aborting the (sub)transaction restores the caller's role.
    fn as_role<T>(owner: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
        let (mut caller, mut context) = (pg_sys::InvalidOid, 0);
        // SAFETY: reads and sets this backend's current user, as fmgr_security_definer
        // does; both pointers are to locals.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        let result = f();
        // SAFETY: restores what was read above.
        unsafe { pg_sys::SetUserIdAndSecContext(caller, context) };
        result
    }

    fn incarnation() -> i64 {
        if let Some((known, _)) = INCARNATION.get() {
            return known;
        }
        // Any role that may write an insight runs this (the position trigger), and needs
        // no privilege on bondhu's internals for it: the state is read as its owner.
        let owner = Spi::get_one::<pg_sys::Oid>(
            "SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'bondhu.pipeline_state'::regclass",
        )
        .unwrap_or_else(|e| error!("bondhu: cannot find the pipeline state: {e}"))
        .expect("the pipeline state table has an owner");
        let (incarnation, cacheable, state) = as_role(owner, || {
            Spi::get_three::<i32, bool, pg_sys::Oid>(
                "SELECT incarnation, cacheable, 'bondhu.pipeline_state'::regclass::oid FROM bondhu.resolve_incarnation()",
            )
        })
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

    /// Refuses, with 42501, a write that sets a value bondhu alone assigns, unless the
    /// writer is a superuser (pg_restore brings positions and cursors along in a dump).
    fn refuse_unless_superuser(column: &str) {
        // SAFETY: superuser() reads the current user's catalog entry; no pointers.
        if !unsafe { pg_sys::superuser() } {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("bondhu: {column} is assigned by bondhu and cannot be written"),
                "bondhu",
            )
            .set_hint(format!("Leave {column} out of the INSERT or UPDATE."))
            .report(pgrx::PgLogLevel::ERROR);
        }
    }

    /// The value of attribute `name` of the trigger's old or new row, not copied.
    fn trigger_attribute(trigger: &PgTrigger<'_>, new: bool, name: &str) -> Option<pg_sys::Datum> {
        let data = trigger.trigger_data();
        let tuple = if new && !data.tg_newtuple.is_null() {
            data.tg_newtuple
        } else {
            data.tg_trigtuple
        };
        // SAFETY: the trigger data is Postgres's for this call; the relation and its
        // tuples live until the trigger returns.
        unsafe {
            let tupdesc = (*data.tg_relation).rd_att;
            let number = pg_sys::SPI_fnumber(tupdesc, std::ffi::CString::new(name).ok()?.as_ptr());
            if number <= 0 {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                    format!("bondhu: the table has no column {name}")
                );
            }
            pgrx::heap_getattr_raw(
                tuple,
                std::num::NonZeroUsize::new(number as usize)?,
                tupdesc,
            )
        }
    }

    /// Did attribute `name` change between the trigger's old and new row, by the
    /// equality of its type (jsonb: the same document written differently is equal)?
    fn attribute_changed(
        trigger: &PgTrigger<'_>,
        name: &str,
        equal: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    ) -> bool {
        match (
            trigger_attribute(trigger, false, name),
            trigger_attribute(trigger, true, name),
        ) {
            (None, None) => false,
            (Some(old), Some(new)) => {
                // SAFETY: both are datums of the column's type, which `equal` compares.
                let same = unsafe { direct_function_call_as_datum(equal, &[Some(old), Some(new)]) };
                !same.is_some_and(|d| d.value() != 0)
            }
            _ => true,
        }
    }

    /// Is this write logical replication's apply (session_replication_role = replica),
    /// and not bondhu marking insights applied (bondhu.forget_profiles sets
    /// bondhu.marking_applied for its own writes, which it makes as replica so that the
    /// application's triggers stay out of them)?
    fn replicated_write() -> bool {
        // SAFETY: reads a backend-local setting.
        let replica = unsafe { pg_sys::SessionReplicationRole }
            == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as i32;
        // SAFETY: GetConfigOption returns NULL (missing_ok) or a string owned by the GUC
        // machinery, valid until the setting changes; it is read at once.
        let marking = unsafe {
            let value = pg_sys::GetConfigOption(c"bondhu.marking_applied".as_ptr(), true, false);
            !value.is_null() && std::ffi::CStr::from_ptr(value).to_bytes() == b"on"
        };
        replica && !marking
    }

    /// BEFORE INSERT OR UPDATE FOR EACH ROW on both insight tables, enabled ALWAYS (it
    /// fires for logical replication's apply too). Argument: the document column.
    /// bondhu alone positions insights:
    /// - INSERT: the row gets this transaction's position;
    /// - UPDATE: a row whose document or user changes is a new insight and gets this
    ///   transaction's position; any other update keeps the row's position;
    /// - a position given by the writer is refused with 42501 (superusers excepted:
    ///   restoring a dump). So nobody hides an insight, re-applies one, or blocks others;
    /// - under session_replication_role = replica (logical replication's apply, which
    ///   runs as a superuser and brings the publisher's positions along) a given
    ///   position is ignored: positions are this cluster's.
    #[pg_trigger]
    fn position_insight<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, pgrx::datum::TryFromDatumError> {
        let document = trigger
            .extra_args()
            .ok()
            .and_then(|args| args.into_iter().next())
            .unwrap_or_else(|| {
                error!("bondhu.position_insight needs the document column as argument")
            });
        let mut row = trigger
            .new()
            .expect("a row-level INSERT or UPDATE trigger")
            .into_owned();
        let given = trigger_attribute(trigger, true, "ingest_pos");
        let replica = replicated_write();
        let position = if trigger.old().is_none() {
            if given.is_some() && !replica {
                refuse_unless_superuser("ingest_pos");
                given
            } else {
                None
            }
        } else {
            let stored = trigger_attribute(trigger, false, "ingest_pos");
            if given != stored && !replica {
                refuse_unless_superuser("ingest_pos");
                given
            } else if attribute_changed(trigger, "user_id", pg_sys::uuid_eq)
                || attribute_changed(trigger, &document, pg_sys::jsonb_eq)
            {
                None
            } else {
                stored
            }
        };
        match position {
            Some(kept) if Some(kept) == given => {}
            Some(stored) => row.set_by_name("ingest_pos", stored)?,
            None => row.set_by_name("ingest_pos", ingest_position())?,
        }
        Ok(Some(row))
    }

    /// Do two varlena datums hold the same bytes? (The same value written twice does.)
    fn varlena_bytes_equal(a: pg_sys::Datum, b: pg_sys::Datum) -> bool {
        // SAFETY: both are varlena datums of a live tuple; detoasting copies them into
        // memory that lives until the end of the call.
        unsafe {
            let a = pg_sys::pg_detoast_datum_packed(a.cast_mut_ptr());
            let b = pg_sys::pg_detoast_datum_packed(b.cast_mut_ptr());
            let (a_len, b_len) = (
                pgrx::varlena::varsize_any_exhdr(a),
                pgrx::varlena::varsize_any_exhdr(b),
            );
            a_len == b_len
                && std::slice::from_raw_parts(pgrx::varlena::vardata_any(a).cast::<u8>(), a_len)
                    == std::slice::from_raw_parts(pgrx::varlena::vardata_any(b).cast::<u8>(), b_len)
        }
    }

    /// BEFORE INSERT OR UPDATE FOR EACH ROW on the profiles, enabled ALWAYS: a profile's
    /// cursor (applied_xmin, applied_xmax, applied_xip) is written by bondhu alone (its
    /// functions run as the extension's owner), and a profile keeps its user; anyone
    /// else gets 42501.
    #[pg_trigger]
    fn guard_profile_cursor<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
        // SAFETY: superuser() reads the current user's catalog entry; no pointers.
        if !unsafe { pg_sys::superuser() } {
            for (column, by_value) in [
                ("applied_xmin", true),
                ("applied_xmax", true),
                ("applied_xip", false),
            ] {
                let new = trigger_attribute(trigger, true, column);
                let old = trigger
                    .old()
                    .map(|_| trigger_attribute(trigger, false, column));
                let changed = match (old, new) {
                    (None, new) => new.is_some(),
                    (Some(None), None) => false,
                    // SAFETY: both are datums of the column's type, of that length.
                    (Some(Some(old)), Some(new)) => {
                        if by_value {
                            old != new
                        } else {
                            !varlena_bytes_equal(old, new)
                        }
                    }
                    _ => true,
                };
                if changed {
                    refuse_unless_superuser(column);
                }
            }
            // the cursor belongs to its user: moved to another, it would cover insights
            // of that user never applied
            if trigger.old().is_some() && attribute_changed(trigger, "user_id", pg_sys::uuid_eq) {
                refuse_unless_superuser("user_id");
            }
        }
        Ok(trigger.new())
    }

    /// Does this ddl_command_start event run a DROP EXTENSION that names bondhu? Any
    /// other DROP EXTENSION is none of bondhu's business.
    fn drops_bondhu(fcinfo: pg_sys::FunctionCallInfo) -> bool {
        // SAFETY: fcinfo is this call's; an event trigger's context is EventTriggerData
        // (checked by its node tag), whose parse tree lives for the command.
        unsafe {
            let context = (*fcinfo).context;
            if context.is_null() || !pgrx::is_a(context, pg_sys::NodeTag::T_EventTriggerData) {
                return false;
            }
            let tree = (*context.cast::<pg_sys::EventTriggerData>()).parsetree;
            if tree.is_null() || !pgrx::is_a(tree, pg_sys::NodeTag::T_DropStmt) {
                return false;
            }
            let drop = tree.cast::<pg_sys::DropStmt>();
            if (*drop).removeType != pg_sys::ObjectType::OBJECT_EXTENSION {
                return false;
            }
            pgrx::PgList::<pg_sys::Node>::from_pg((*drop).objects)
                .iter_ptr()
                .any(|name| {
                    pgrx::is_a(name, pg_sys::NodeTag::T_String)
                        && std::ffi::CStr::from_ptr((*name.cast::<pg_sys::String>()).sval)
                            .to_bytes()
                            == b"bondhu"
                })
        }
    }

    /// The event trigger of DROP EXTENSION: when the command drops bondhu, removes its
    /// pg_cron jobs and detaches the application's tables (bondhu.prepare_drop()).
    #[pg_extern(sql = r#"
        CREATE FUNCTION bondhu.on_drop_extension() RETURNS event_trigger
        LANGUAGE c AS 'MODULE_PATHNAME', 'on_drop_extension_wrapper';
    "#)]
    fn on_drop_extension(fcinfo: pg_sys::FunctionCallInfo) {
        if drops_bondhu(fcinfo) {
            Spi::run("SELECT bondhu.prepare_drop()")
                .unwrap_or_else(|e| error!("bondhu: cannot prepare DROP EXTENSION: {e}"));
        }
    }

    /// Is the caller inside a transaction block (BEGIN ... COMMIT)? A procedure that
    /// commits cannot run there.
    #[pg_extern(volatile, parallel_unsafe)]
    fn in_transaction_block() -> bool {
        // SAFETY: reads the transaction state; no pointers.
        unsafe { pg_sys::IsTransactionBlock() }
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
