//! bondhu: the Bondhu personality update pipeline inside PostgreSQL.
//!
//! The data model and the set-based pipeline live in `sql/`; Rust keeps the pure
//! logic (positions, cron schedules) and the functions that need to be fast per row.
use pgrx::prelude::*;

pub mod position;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/pipeline.sql", name = "pipeline", finalize);

#[pg_schema]
mod bondhu {
    use crate::position;
    use pgrx::prelude::*;
    use std::cell::Cell;

    thread_local! {
        /// This backend's incarnation, once read and known to be committed.
        static INCARNATION: Cell<Option<i64>> = const { Cell::new(None) };
    }

    fn incarnation() -> i64 {
        if let Some(known) = INCARNATION.get() {
            return known;
        }
        let (incarnation, cacheable) = Spi::get_two::<i32, bool>(
            "SELECT incarnation, cacheable FROM bondhu.resolve_incarnation()",
        )
        .unwrap_or_else(|e| error!("bondhu: cannot read the pipeline state: {e}"));
        let incarnation = i64::from(incarnation.expect("resolve_incarnation returns a row"));
        if cacheable == Some(true) {
            INCARNATION.set(Some(incarnation));
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
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries='pg_cron'", "cron.database_name='pgrx_tests'"]
    }
}
