//! The incarnation of this database's insight positions, cached per backend, and the
//! position of the current transaction (see src/position.rs and sql/state.sql).
use crate::backend;
use crate::position;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// This backend's incarnation, once read and known to be committed, with the
    /// pipeline state table it was read from.
    static INCARNATION: Cell<Option<(i64, pg_sys::Oid)>> = const { Cell::new(None) };
    static FORGET_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Forgets the incarnation when the pipeline state table changes or goes (DROP
/// EXTENSION in any backend): a pooled connection must not keep writing positions of
/// an incarnation the state no longer has. A relcache callback (safe: it only touches
/// this backend's cache).
extern "C-unwind" fn forget_incarnation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if let Some((_, state)) = INCARNATION.get() {
        if relid == pg_sys::InvalidOid || relid == state {
            INCARNATION.set(None);
        }
    }
}

/// AFTER UPDATE OR DELETE FOR EACH ROW on the pipeline state, when the incarnation
/// changes (a restore's row replacing the one CREATE EXTENSION made, an operator's
/// UPDATE, a DELETE): every backend forgets its cached incarnation once the change
/// commits (forget_incarnation), so that no pooled connection goes on positioning
/// insights in an incarnation that every cursor now covers.
pub fn incarnation_changed(relation: pg_sys::Oid) {
    backend::invalidate_relcache_at_commit(relation);
}

fn incarnation() -> i64 {
    if let Some((known, _)) = INCARNATION.get() {
        return known;
    }
    // Any role that may write an insight runs this (the position trigger), and needs
    // no privilege on bondhu's internals for it: the state is read as its owner.
    let owner = Spi::get_one::<pg_sys::Oid>(
        "SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'bondhu.pipeline_state'::pg_catalog.regclass",
    )
    .unwrap_or_else(|e| error!("bondhu: cannot find the pipeline state: {e}"))
    .expect("the pipeline state table has an owner");
    let (incarnation, cacheable, state) = backend::as_role(owner, || {
        Spi::get_three::<i32, bool, pg_sys::Oid>(
            "SELECT incarnation, cacheable, 'bondhu.pipeline_state'::pg_catalog.regclass::pg_catalog.oid \
             FROM bondhu.resolve_incarnation()",
        )
    })
    .unwrap_or_else(|e| error!("bondhu: cannot read the pipeline state: {e}"));
    let incarnation = i64::from(incarnation.expect("resolve_incarnation returns a row"));
    // Read through a transaction snapshot, the state may be older than a change whose
    // invalidation this backend has already taken (forget_incarnation): kept, it would
    // outlive the transaction and the change. Only a statement's own snapshot is
    // remembered.
    if let (Some(true), Some(state), false) =
        (cacheable, state, backend::uses_transaction_snapshot())
    {
        if !FORGET_REGISTERED.get() {
            backend::on_relcache_invalidation(forget_incarnation);
            FORGET_REGISTERED.set(true);
        }
        INCARNATION.set(Some((incarnation, state)));
    }
    incarnation
}

/// The ingest position of the current transaction. Assigns the transaction an id if it
/// has none yet.
pub fn transaction_position() -> i64 {
    match position::position(incarnation(), backend::top_transaction_id()) {
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
