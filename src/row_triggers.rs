//! The row triggers that keep positions bondhu's alone (sql/data.sql creates them):
//! bondhu.position_insight on both insight tables, bondhu.guard_profile_cursor on the
//! profiles.
use crate::incarnation::transaction_position;
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::heap_tuple::PgHeapTuple;
use pgrx::prelude::*;
use pgrx::trigger_support::PgTrigger;
use pgrx::{AllocatedByPostgres, AllocatedByRust};

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
    if !replica {
        // every ordinary write: no setting to look up
        return false;
    }
    // SAFETY: GetConfigOption returns NULL (missing_ok) or a string owned by the GUC
    // machinery, valid until the setting changes; it is read at once.
    let marking = unsafe {
        let value = pg_sys::GetConfigOption(c"bondhu.marking_applied".as_ptr(), true, false);
        !value.is_null() && std::ffi::CStr::from_ptr(value).to_bytes() == b"on"
    };
    !marking
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
pub fn position_insight<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, pgrx::datum::TryFromDatumError> {
    let document = trigger
        .extra_args()
        .ok()
        .and_then(|args| args.into_iter().next())
        .unwrap_or_else(|| error!("bondhu.position_insight needs the document column as argument"));
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
        None => row.set_by_name("ingest_pos", transaction_position())?,
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
pub fn guard_profile_cursor<'a>(
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
