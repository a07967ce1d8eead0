//! bondhu: the Bondhu personality update pipeline inside PostgreSQL.
//!
//! The data model and the set-based pipeline live in `sql/` (loaded in the order below);
//! Rust keeps the pure logic (positions, cron schedules, decimals, the document rule,
//! the trait math) and what must be fast per row or see Postgres's internals (the
//! aggregate, the row triggers, the incarnation cache, DROP EXTENSION's parse tree), one
//! module each. This file holds only the SQL-callable wrappers.
use pgrx::prelude::*;

mod aggregate;
mod backend;
pub mod cron;
pub mod decimal;
mod drop_extension;
mod incarnation;
pub mod insight;
mod jsonb;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;
pub mod position;
mod row_triggers;
pub mod trait_math;

::pgrx::pg_module_magic!(name, version);

// The install script: these files in this order (CONTRIBUTING.md).
pgrx::extension_sql_file!(
    "../sql/settings.sql",
    name = "settings",
    requires = [bondhu::ingest_position]
);
pgrx::extension_sql_file!(
    "../sql/cursors.sql",
    name = "cursors",
    requires = [
        "settings",
        bondhu::incarnation_changed,
        bondhu::ignore_replicated
    ]
);
pgrx::extension_sql_file!(
    "../sql/data_tables.sql",
    name = "data_tables",
    requires = [
        "cursors",
        bondhu::position_insight,
        bondhu::guard_profile_cursor
    ]
);
pgrx::extension_sql_file!(
    "../sql/run_log.sql",
    name = "run_log",
    requires = ["data_tables", bondhu::in_transaction_block]
);
pgrx::extension_sql_file!(
    "../sql/apply.sql",
    name = "apply",
    requires = [
        "run_log",
        bondhu::insight_totals_step,
        bondhu::insight_counts_final,
        bondhu::insight_sums_final,
        bondhu::insight_totals_combine,
        bondhu::insight_totals_serialize,
        bondhu::insight_totals_deserialize,
        bondhu::adjusted_trait_fixed_point
    ]
);
pgrx::extension_sql_file!("../sql/update.sql", name = "update", requires = ["apply"]);
pgrx::extension_sql_file!(
    "../sql/profiles.sql",
    name = "profiles",
    requires = ["update"]
);
pgrx::extension_sql_file!(
    "../sql/cleanup.sql",
    name = "cleanup",
    requires = ["profiles"]
);
pgrx::extension_sql_file!(
    "../sql/scheduling.sql",
    name = "scheduling",
    requires = ["cleanup", bondhu::cron_next_run_epoch, bondhu::cron_check]
);
pgrx::extension_sql_file!(
    "../sql/health.sql",
    name = "health",
    requires = ["scheduling"]
);
pgrx::extension_sql_file!(
    "../sql/metrics.sql",
    name = "metrics",
    requires = ["health"]
);
pgrx::extension_sql_file!(
    "../sql/install.sql",
    name = "install",
    requires = ["metrics"]
);
pgrx::extension_sql_file!(
    "../sql/drop_extension.sql",
    name = "drop_extension",
    requires = ["install", bondhu::on_drop_extension]
);
pgrx::extension_sql_file!("../sql/security.sql", name = "security", finalize);

#[pg_schema]
mod bondhu {
    use crate::cron::Schedule;
    use chrono::{DateTime, Utc};
    use pgrx::datum::TryFromDatumError;
    use pgrx::heap_tuple::PgHeapTuple;
    use pgrx::prelude::*;
    use pgrx::trigger_support::PgTrigger;
    use pgrx::{AllocatedByPostgres, AllocatedByRust, AnyElement, AnyNumeric, Internal};

    /// The ingest position of the current transaction (sql/cursors.sql, data_tables.sql).
    #[pg_extern(volatile, parallel_unsafe)]
    fn ingest_position() -> i64 {
        crate::incarnation::transaction_position()
    }

    /// Positions an insight (src/row_triggers.rs).
    #[pg_trigger]
    fn position_insight<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, TryFromDatumError> {
        crate::row_triggers::position_insight(trigger)
    }

    /// Keeps the pipeline state this database's (src/row_triggers.rs).
    #[pg_trigger]
    fn ignore_replicated<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, TryFromDatumError> {
        Ok(crate::row_triggers::ignore_replicated(trigger))
    }

    /// Has every backend forget its cached incarnation when it changes
    /// (src/incarnation.rs).
    #[pg_trigger]
    fn incarnation_changed<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, TryFromDatumError> {
        crate::incarnation::incarnation_changed(
            trigger.relation().expect("a trigger's relation").oid(),
        );
        Ok(None)
    }

    /// Keeps a profile's cursor bondhu's (src/row_triggers.rs).
    #[pg_trigger]
    fn guard_profile_cursor<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, TryFromDatumError> {
        crate::row_triggers::guard_profile_cursor(trigger)
    }

    /// The event trigger of DROP EXTENSION: when the command drops bondhu, removes its
    /// pg_cron jobs and detaches the application's tables (bondhu.prepare_drop()).
    #[pg_extern(sql = r#"
        CREATE FUNCTION bondhu.on_drop_extension() RETURNS event_trigger
        LANGUAGE c AS 'MODULE_PATHNAME', 'on_drop_extension_wrapper';
    "#)]
    fn on_drop_extension(fcinfo: pg_sys::FunctionCallInfo) {
        // SAFETY: fcinfo is this call's, as pgrx passes it.
        if unsafe { crate::drop_extension::drops_bondhu(fcinfo) } {
            Spi::run("SELECT bondhu.prepare_drop()")
                .unwrap_or_else(|e| error!("bondhu: cannot prepare DROP EXTENSION: {e}"));
        }
    }

    /// Is the caller inside a transaction block (BEGIN ... COMMIT)? A procedure that
    /// commits cannot run there.
    #[pg_extern(volatile, parallel_unsafe)]
    fn in_transaction_block() -> bool {
        crate::backend::in_transaction_block()
    }

    // The aggregate's state (src/aggregate.rs). Postgres gives insight_totals_step
    // and the two final functions below the state insight_totals_step returned
    // before for the group (none at first): they are the functions of the aggregates
    // bondhu.insight_counts and bondhu.insight_sums (sql/pipeline.sql, STYPE
    // internal). Only a superuser may create another aggregate with an internal
    // state, and SQL cannot make an internal value (Postgres's rule for the type: a
    // function that returns one must take one).

    /// One insight into a user's totals (src/aggregate.rs).
    #[pg_extern(immutable, parallel_safe)]
    fn insight_totals_step(
        state: Internal,
        doc: Option<AnyElement>,
        fresh: Option<bool>,
        from_chat: Option<bool>,
        fcinfo: pg_sys::FunctionCallInfo,
    ) -> Internal {
        // SAFETY: fcinfo is this call's, as pgrx passes it; the state is the
        // aggregate's (see above).
        unsafe { crate::aggregate::step(state, doc, fresh, from_chat, fcinfo) }
    }

    /// Two partial states of a parallel aggregate into one (src/aggregate.rs). Not
    /// strict: Postgres requires that of a combine function of an internal state.
    #[pg_extern(immutable, parallel_safe)]
    fn insight_totals_combine(
        state: Internal,
        other: Internal,
        fcinfo: pg_sys::FunctionCallInfo,
    ) -> Internal {
        // SAFETY: fcinfo is this call's, as pgrx passes it; the states are the
        // aggregate's (see above).
        unsafe { crate::aggregate::combine(state, other, fcinfo) }
    }

    /// A partial state as bytes, from a parallel worker to the leader.
    #[pg_extern(immutable, parallel_safe, strict)]
    fn insight_totals_serialize(state: Internal) -> Vec<u8> {
        // SAFETY: the state is the aggregate's (see above), not NULL (strict).
        unsafe { crate::aggregate::serialize(state) }
    }

    /// The state insight_totals_serialize wrote.
    #[pg_extern(immutable, parallel_safe, strict)]
    fn insight_totals_deserialize(
        bytes: &[u8],
        _unused: Internal,
        fcinfo: pg_sys::FunctionCallInfo,
    ) -> Internal {
        // SAFETY: fcinfo is this call's, as pgrx passes it.
        unsafe { crate::aggregate::deserialize(bytes, fcinfo) }
    }

    /// bondhu.insight_counts: {applied, from chat, from entertainment, rejected, stale,
    /// ignored keys}.
    #[pg_extern(immutable, parallel_safe)]
    fn insight_counts_final(state: Internal) -> Option<Vec<i32>> {
        // SAFETY: the state is the aggregate's (see above insight_totals_step).
        unsafe { crate::aggregate::counts(state) }
    }

    /// bondhu.insight_sums: each trait's adjustments added up, exactly.
    #[pg_extern(immutable, parallel_safe)]
    fn insight_sums_final(state: Internal) -> Option<Vec<AnyNumeric>> {
        // SAFETY: the state is the aggregate's (see above insight_totals_step).
        unsafe { crate::aggregate::sums(state) }
    }

    /// bondhu.adjusted_trait's value, computed in integers (src/trait_math.rs); NULL
    /// where the values are beyond that computation (or total or dampening is NULL),
    /// and then bondhu.adjusted_trait computes it in numeric (sql/apply.sql).
    #[pg_extern(sql = r#"
        CREATE FUNCTION bondhu.adjusted_trait_fixed_point(current double precision, total numeric,
                                                          dampening numeric)
        RETURNS double precision IMMUTABLE PARALLEL SAFE
        LANGUAGE c AS 'MODULE_PATHNAME', 'adjusted_trait_fixed_point_wrapper';
    "#)]
    fn adjusted_trait_fixed_point(fcinfo: pg_sys::FunctionCallInfo) -> Option<f64> {
        use pgrx::fcinfo::{pg_arg_is_null, pg_getarg, pg_getarg_datum_raw};
        // SAFETY: fcinfo is this call's, as pgrx passes it, with the SQL signature's
        // three arguments: a double, then two numerics, read only when not NULL.
        unsafe {
            if pg_arg_is_null(fcinfo, 1) || pg_arg_is_null(fcinfo, 2) {
                return None;
            }
            let numeric = |n| {
                crate::decimal::mantissa_and_scale(crate::jsonb::varlena_data(pg_getarg_datum_raw(
                    fcinfo, n,
                )))
            };
            crate::trait_math::adjusted_trait(pg_getarg::<f64>(fcinfo, 0), numeric(1)?, numeric(2))
        }
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

/// What `cargo pgrx test` asks of the crate for the #[pg_test]s (src/pg_tests.rs):
/// they need no setting and no set-up (bondhu works without pg_cron).
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
