//! The row triggers that keep positions bondhu's alone (sql/data.sql creates them):
//! bondhu.position_insight on both insight tables, bondhu.guard_profile_cursor on the
//! profiles.
use crate::backend;
use crate::incarnation::transaction_position;
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::heap_tuple::PgHeapTuple;
use pgrx::prelude::*;
use pgrx::trigger_support::PgTrigger;
use pgrx::{AllocatedByPostgres, AllocatedByRust};
use std::marker::PhantomData;
use std::num::NonZeroUsize;

/// Refuses, with 42501, a write that sets a value bondhu alone assigns, unless the
/// writer is a superuser (pg_restore brings positions and cursors along in a dump).
fn refuse_unless_superuser(column: &str) {
    if !backend::is_superuser() {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("bondhu: {column} is assigned by bondhu and cannot be written"),
            "bondhu",
        )
        .set_hint(format!("Leave {column} out of the INSERT or UPDATE."))
        .report(pgrx::PgLogLevel::ERROR);
    }
}

/// What bondhu needs to know of a column of the trigger's table.
#[derive(Clone, Copy)]
struct Column {
    number: NonZeroUsize,
    type_oid: pg_sys::Oid,
    by_value: bool,
    /// the type's length: -1 for a varlena, -2 for a C string
    length: i16,
}

/// A column's value in one of the trigger's rows, as stored (not copied).
#[derive(Clone, Copy)]
struct Stored<'a> {
    datum: pg_sys::Datum,
    column: Column,
    /// the row it is read from, live until the trigger returns
    row: PhantomData<&'a pg_sys::TriggerData>,
}

impl Stored<'_> {
    /// Do two values hold the same value, by the equality of their column's type?
    /// jsonb's equality: the same document written differently is equal; every other
    /// type bondhu compares (uuid, bigint, bigint[]) is equal when its bytes are.
    /// Values of different types are not the same.
    fn same(self, other: Stored<'_>) -> bool {
        let column = self.column;
        if column.type_oid != other.column.type_oid || column.length != other.column.length {
            return false;
        }
        if column.type_oid == pg_sys::JSONBOID {
            // SAFETY: both are jsonb datums of live rows (their column's type), which
            // jsonb_eq compares.
            let same = unsafe {
                direct_function_call_as_datum(
                    pg_sys::jsonb_eq,
                    &[Some(self.datum), Some(other.datum)],
                )
            };
            return same.is_some_and(|d| d.value() != 0);
        }
        if column.by_value {
            return self.datum == other.datum;
        }
        if column.length > 0 {
            // SAFETY: a fixed-length type passed by reference: both datums point at
            // `length` bytes in a live row.
            return unsafe {
                std::slice::from_raw_parts(self.datum.cast_mut_ptr::<u8>(), column.length as usize)
                    == std::slice::from_raw_parts(
                        other.datum.cast_mut_ptr::<u8>(),
                        column.length as usize,
                    )
            };
        }
        if column.length == -1 {
            // SAFETY: both are varlena datums of live rows; detoasting copies them into
            // memory that lives until the end of the call.
            return unsafe {
                let a = pg_sys::pg_detoast_datum_packed(self.datum.cast_mut_ptr());
                let b = pg_sys::pg_detoast_datum_packed(other.datum.cast_mut_ptr());
                let (a_len, b_len) = (
                    pgrx::varlena::varsize_any_exhdr(a),
                    pgrx::varlena::varsize_any_exhdr(b),
                );
                a_len == b_len
                    && std::slice::from_raw_parts(pgrx::varlena::vardata_any(a).cast::<u8>(), a_len)
                        == std::slice::from_raw_parts(
                            pgrx::varlena::vardata_any(b).cast::<u8>(),
                            b_len,
                        )
            };
        }
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "bondhu: cannot compare values of this column's type"
        );
    }
}

/// The trigger's old and new rows, read in place.
struct Rows<'a> {
    trigger: &'a PgTrigger<'a>,
}

impl<'a> Rows<'a> {
    fn of(trigger: &'a PgTrigger<'a>) -> Self {
        Rows { trigger }
    }

    /// The column called `name`; 42703 when the table has none.
    fn column(&self, name: &str) -> Column {
        let relation = self.trigger.relation().expect("a trigger's relation");
        let found = relation
            .tuple_desc()
            .iter()
            .enumerate()
            .find(|(_, a)| !a.attisdropped && name_is(&a.attname, name))
            .map(|(i, a)| Column {
                number: NonZeroUsize::new(i + 1).expect("numbered from 1"),
                type_oid: a.atttypid,
                by_value: a.attbyval,
                length: a.attlen,
            });
        let Some(column) = found else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("bondhu: the table has no column {name}")
            );
        };
        column
    }

    /// The value of column `name` in the new row (for an INSERT the row inserted) or
    /// the old one, not copied; None when it is NULL.
    fn get(&self, new: bool, name: &str) -> Option<Stored<'a>> {
        let column = self.column(name);
        let data = self.trigger.trigger_data();
        let tuple = if new && !data.tg_newtuple.is_null() {
            data.tg_newtuple
        } else {
            data.tg_trigtuple
        };
        let relation = self.trigger.relation().expect("a trigger's relation");
        // SAFETY: pgrx made the PgTrigger from this call's TriggerData: the tuple is a
        // row of its relation, rd_att that relation's descriptor, and both live until
        // the trigger returns; column.number is a column of that descriptor.
        let datum = unsafe { pgrx::heap_getattr_raw(tuple, column.number, relation.rd_att) }?;
        Some(Stored {
            datum,
            column,
            row: PhantomData,
        })
    }

    /// Did column `name` change between the old and the new row, by the equality of
    /// its type (Stored::same)?
    fn changed(&self, name: &str) -> bool {
        match (self.get(false, name), self.get(true, name)) {
            (None, None) => false,
            (Some(old), Some(new)) => !old.same(new),
            _ => true,
        }
    }
}

/// Is a catalog name (NUL-padded) `wanted`?
fn name_is(name: &pg_sys::NameData, wanted: &str) -> bool {
    name.data
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .eq(wanted.bytes())
}

/// Is this write one that logical replication's workers make as the publisher sent it
/// (not bondhu's own, which its functions mark with bondhu.writing_positions: a
/// profile delete that marks insights applied, a late change positioned again; these
/// run in a worker too when it replicates the write that fires them)?
fn replicated_write() -> bool {
    // an ordinary session looks up no setting
    backend::logical_replication_worker() && !backend::setting_is_on(c"bondhu.writing_positions")
}

/// BEFORE INSERT OR UPDATE OR DELETE FOR EACH ROW on the pipeline state, enabled ALWAYS:
/// logical replication's workers leave it alone (a subscription FOR ALL TABLES includes
/// it), since the publisher's incarnation and cursors would cover the subscriber's own
/// insights. Anyone else's write goes ahead.
pub fn ignore_replicated<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Option<PgHeapTuple<'a, AllocatedByPostgres>> {
    if backend::logical_replication_worker() {
        return None;
    }
    trigger.new().or_else(|| trigger.old())
}

/// BEFORE INSERT OR UPDATE FOR EACH ROW on both insight tables, enabled ALWAYS (it
/// fires for logical replication's apply too). Argument: the document column.
/// bondhu alone positions insights:
/// - INSERT: the row gets this transaction's position;
/// - UPDATE: a row whose document or user changes is a new insight and gets this
///   transaction's position; any other update keeps the row's position;
/// - a position given by the writer is refused with 42501 (superusers excepted:
///   restoring a dump, with pg_restore or as a data-only script under
///   session_replication_role = replica). So nobody hides an insight, re-applies one,
///   or blocks others;
/// - in logical replication's workers (apply, and the initial table copy), which
///   bring the publisher's positions along, a given position is ignored: positions
///   are this database's.
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
    let rows = Rows::of(trigger);
    let given = rows.get(true, "ingest_pos").map(|v| v.datum);
    let replicated = replicated_write();
    let position = if trigger.old().is_none() {
        if given.is_some() && !replicated {
            refuse_unless_superuser("ingest_pos");
            given
        } else {
            None
        }
    } else {
        let stored = rows.get(false, "ingest_pos").map(|v| v.datum);
        if given != stored && !replicated {
            refuse_unless_superuser("ingest_pos");
            given
        } else if rows.changed("user_id") || rows.changed(&document) {
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

/// BEFORE INSERT OR UPDATE FOR EACH ROW on the profiles, enabled ALWAYS: a profile's
/// cursor (applied_xmin, applied_xmax, applied_xip) is written by bondhu alone (its
/// functions run as the extension's owner), and a profile keeps its user; anyone
/// else gets 42501.
pub fn guard_profile_cursor<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    if !backend::is_superuser() {
        let rows = Rows::of(trigger);
        let update = trigger.old().is_some();
        for column in ["applied_xmin", "applied_xmax", "applied_xip"] {
            let changed = if update {
                rows.changed(column)
            } else {
                rows.get(true, column).is_some()
            };
            if changed {
                refuse_unless_superuser(column);
            }
        }
        // the cursor belongs to its user: moved to another, it would cover insights
        // of that user never applied
        if update && rows.changed("user_id") {
            refuse_unless_superuser("user_id");
        }
    }
    Ok(trigger.new())
}
