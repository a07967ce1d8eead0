//! This backend's state as Postgres's C functions and globals keep it (the current
//! user, the transaction, settings, the relation cache), behind safe functions: the
//! calls into Postgres that need no pointer from bondhu's callers.
use pgrx::prelude::*;
use std::ffi::CStr;

/// Is the current user a superuser?
pub fn is_superuser() -> bool {
    // SAFETY: reads the current user's catalog entry; takes no pointers.
    unsafe { pg_sys::superuser() }
}

/// Is the caller inside a transaction block (BEGIN ... COMMIT)?
pub fn in_transaction_block() -> bool {
    // SAFETY: reads the transaction state; takes no pointers.
    unsafe { pg_sys::IsTransactionBlock() }
}

/// The id of the current top-level transaction, assigned now if it has none yet.
pub fn top_transaction_id() -> u64 {
    // SAFETY: reads (or assigns) this transaction's id; takes no pointers.
    unsafe { pg_sys::GetTopFullTransactionId() }.value
}

/// Does the current transaction read through one snapshot (REPEATABLE READ or
/// SERIALIZABLE), not a new one for each statement?
pub fn uses_transaction_snapshot() -> bool {
    // SAFETY: reads a backend-local integer that only this backend writes.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Is this backend one of logical replication's workers (an apply worker, a parallel
/// apply worker, or a table synchronization worker's initial COPY)? Only these write
/// rows as another database sent them; a session that sets session_replication_role
/// = replica (a data-only restore, a migration script) is not one of them.
pub fn logical_replication_worker() -> bool {
    // SAFETY: reads whether this backend's logical replication worker slot is set; takes
    // no pointers. IsLogicalWorker() has this signature from PostgreSQL 11 on.
    unsafe { pg_sys::IsLogicalWorker() }
}

/// Is the setting `name` (a custom one need not exist) `on`?
pub fn setting_is_on(name: &CStr) -> bool {
    // SAFETY: name is a C string; GetConfigOption returns NULL (missing_ok) or a
    // string owned by the GUC machinery, valid until the setting changes: it is read
    // at once.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        !value.is_null() && CStr::from_ptr(value).to_bytes() == b"on"
    }
}

/// Runs f as role `owner`, as a SECURITY DEFINER function would. An error inside
/// is fine: aborting the (sub)transaction restores the caller's role.
pub fn as_role<T>(owner: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
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

/// Has `callback` run with the oid of every relation whose cache entry is invalidated
/// (InvalidOid: all of them), for the rest of the backend's life. A backend holds at
/// most 10 such callbacks in all: register each once.
pub fn on_relcache_invalidation(callback: extern "C-unwind" fn(pg_sys::Datum, pg_sys::Oid)) {
    // SAFETY: callback is a safe function, sound for any argument; the argument given
    // is a plain 0.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(callback), pg_sys::Datum::from(0usize)) }
}

/// Has every backend (this one too) drop its cache entry of relation `relid` once this
/// transaction commits, and so run the relcache callbacks (on_relcache_invalidation)
/// with it; nothing happens if the transaction aborts. An error (42P01) if there is no
/// such relation.
pub fn invalidate_relcache_at_commit(relid: pg_sys::Oid) {
    // SAFETY: takes an oid by value; queues an invalidation message for commit.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) }
}
