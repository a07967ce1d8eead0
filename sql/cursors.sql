-- bondhu: where the exactly-once pipeline stands: insight positions and cursors.
--
-- Every insight row carries an *ingest position*: (incarnation << 48) | the id of the
-- transaction that wrote it. A pipeline run takes a snapshot and turns it into a
-- cursor of positions (xmin, xmax, in-progress list), like PgQ cuts batches. An insight
-- is applied by a cursor when its transaction was committed in that snapshot. Each
-- profile keeps the cursor that last applied it; the pipeline state keeps the cursor up
-- to which every profile is applied. An insight is pending for a user when neither of
-- those cursors covers it. A transaction that commits late is simply not covered yet,
-- so nothing is lost and nothing is rewritten. The incarnation changes when the data
-- moves to another cluster (dump and restore), where transaction ids start again: all
-- positions of the old incarnation sort below the new one.

------------------------------------------------------------------------------------
-- Pipeline state: the incarnation and the global cursor, one row.
------------------------------------------------------------------------------------
CREATE TYPE bondhu.cursor AS (xmin_pos bigint, xmax_pos bigint, xip_pos bigint[]);

CREATE TABLE bondhu.pipeline_state (
    single_row boolean PRIMARY KEY DEFAULT true CONSTRAINT one_row CHECK (single_row),
    incarnation integer NOT NULL CONSTRAINT incarnation_range CHECK (incarnation BETWEEN 1 AND 32767),
    system_identifier bigint NOT NULL,
    applied_xmin bigint NOT NULL,
    applied_xmax bigint NOT NULL,
    applied_xip bigint[] NOT NULL,
    advanced_at timestamptz
);
COMMENT ON TABLE bondhu.pipeline_state IS
    'Where the pipeline stands: every insight below this cursor is applied to every profile.';
SELECT pg_catalog.pg_extension_config_dump('bondhu.pipeline_state', '');

-- CREATE EXTENSION makes the row; a restore's COPY after it (pg_restore, or a data-only
-- script) brings the dumped one, which replaces it and starts a new incarnation.
CREATE FUNCTION bondhu.pipeline_state_keep_single_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM bondhu.pipeline_state) THEN
        -- The restored state starts a new incarnation at once, in the restore's
        -- transaction (every backend forgets the one it knew when it commits): its
        -- positions and cursors may be another cluster's, or those of a copy of this
        -- one that ran ahead (a profile's cursor past our next transaction id would
        -- cover the insights we write next). All of them then sort below ours, and so
        -- do any this database wrote before the restore.
        UPDATE bondhu.pipeline_state SET
            incarnation = greatest(incarnation, NEW.incarnation) + 1,
            system_identifier = (SELECT c.system_identifier FROM pg_catalog.pg_control_system() c),
            applied_xmin = NEW.applied_xmin, applied_xmax = NEW.applied_xmax,
            applied_xip = NEW.applied_xip, advanced_at = NEW.advanced_at;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER keep_single_row BEFORE INSERT ON bondhu.pipeline_state
    FOR EACH ROW EXECUTE FUNCTION bondhu.pipeline_state_keep_single_row();
-- also under session_replication_role = replica: a data-only restore (Supabase's
-- recipe sets it) brings the dumped row too
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER keep_single_row;

-- Logical replication's workers leave the state alone (a subscription FOR ALL TABLES
-- includes this table): the publisher's incarnation and cursors would cover the
-- subscriber's own insights. It fires before keep_single_row (name order).
CREATE TRIGGER ignore_replicated BEFORE INSERT OR UPDATE OR DELETE ON bondhu.pipeline_state
    FOR EACH ROW EXECUTE FUNCTION bondhu.ignore_replicated();
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER ignore_replicated;

-- A backend caches the incarnation (src/incarnation.rs); a change of it, however it is
-- made (replica role included), has every backend forget it once committed.
CREATE TRIGGER incarnation_changed AFTER UPDATE ON bondhu.pipeline_state
    FOR EACH ROW WHEN (OLD.incarnation IS DISTINCT FROM NEW.incarnation)
    EXECUTE FUNCTION bondhu.incarnation_changed();
CREATE TRIGGER incarnation_deleted AFTER DELETE ON bondhu.pipeline_state
    FOR EACH ROW EXECUTE FUNCTION bondhu.incarnation_changed();
-- also under session_replication_role = replica (a hand-made data-only restore)
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER incarnation_changed;
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER incarnation_deleted;

-- The incarnation of this database's insight positions; starts a new one when the state
-- is not this cluster's own: made in another cluster (another system_identifier), or in
-- a copy of this one (a base backup or a disk snapshot keeps the system_identifier)
-- whose transactions ran ahead: its cursor, in its own incarnation, is past the next
-- transaction id here, so it would cover positions this cluster has yet to give. (A
-- restore that replaces the row starts a new one at once: keep_single_row.)
-- cacheable is false when this call changed the state (the change is not committed
-- yet, so a backend must not remember it).
CREATE FUNCTION bondhu.resolve_incarnation(OUT incarnation integer, OUT cacheable boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    this_cluster bigint := (SELECT c.system_identifier FROM pg_catalog.pg_control_system() c);
    known bondhu.pipeline_state;
BEGIN
    SELECT * INTO known FROM bondhu.pipeline_state;
    -- (a standby, which cannot write, takes the state as it is: its snapshots may lag
    -- behind the transaction ids of the state it has replayed)
    IF FOUND AND (pg_is_in_recovery()
                  OR known.system_identifier = this_cluster
                     AND NOT (known.applied_xmax >> 48 = known.incarnation
                              AND known.applied_xmax - (known.applied_xmax >> 48 << 48)
                                  > pg_snapshot_xmax(pg_current_snapshot())::text::bigint)) THEN
        incarnation := known.incarnation;
        cacheable := true;
        RETURN;
    END IF;
    IF NOT FOUND THEN
        -- Positions already in the tables (adopted or surviving data) stay below ours,
        -- and so do the profiles' cursors, which outlive the insights they applied (a
        -- purge, then a reinstall): a cursor above our positions would cover them.
        INSERT INTO bondhu.pipeline_state
            (incarnation, system_identifier, applied_xmin, applied_xmax, applied_xip)
        SELECT greatest(1, (max(p) >> 48) + 1), this_cluster, 3, 3, '{}'
        FROM (SELECT max(ingest_pos) AS p FROM public.chat_personality_insights
              UNION ALL
              SELECT max(ingest_pos) FROM public.entertainment_interactions
              UNION ALL
              SELECT max(applied_xmax) FROM public.user_personality_profiles) existing
        ON CONFLICT (single_row) DO NOTHING;
    ELSE
        -- (the row as read: a concurrent call that started the new one first leaves
        -- nothing to do)
        UPDATE bondhu.pipeline_state s
        SET incarnation = s.incarnation + 1, system_identifier = this_cluster
        WHERE s.incarnation = known.incarnation;
    END IF;
    SELECT s.incarnation INTO STRICT incarnation FROM bondhu.pipeline_state s;
    cacheable := false;
END $$;

-- The current snapshot as a cursor of positions. A snapshot never lists its own
-- transaction as in progress, so the cursor adds it: an update never counts insights
-- its own transaction writes, before or after it, as covered. They are applied by the
-- first update that starts after this transaction commits.
CREATE FUNCTION bondhu.current_cursor() RETURNS bondhu.cursor
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ROW(q.base + least(q.xmin, q.own), q.base + q.xmax,
               ARRAY(SELECT q.base + x.x
                     FROM (SELECT x::text::bigint FROM pg_snapshot_xip(q.s) AS x
                           UNION
                           SELECT q.own WHERE q.own < q.xmax) AS x(x)
                     ORDER BY 1))::bondhu.cursor
    FROM (SELECT s, pg_snapshot_xmin(s)::text::bigint AS xmin, pg_snapshot_xmax(s)::text::bigint AS xmax,
                 pg_current_xact_id_if_assigned()::text::bigint AS own, base
          FROM pg_current_snapshot() AS s,
               (SELECT CAST(r.incarnation AS bigint) << 48 FROM bondhu.resolve_incarnation() AS r) AS b(base)) AS q
$$;

-- Is the insight at position pos covered by the cursor (xmin, xmax, xip)? NULL when
-- there is no cursor.
CREATE FUNCTION bondhu.position_applied(pos bigint, xmin_pos bigint, xmax_pos bigint, xip_pos bigint[])
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pos < xmin_pos OR (pos < xmax_pos AND pos <> ALL (xip_pos))
$$;

-- Is the insight at position pos pending in a run that applies what `snapshot` covers
-- and `covered` does not? (Its first condition lets the planner use the BRIN indexes on
-- ingest_pos: a nightly run reads only the newest insights.)
CREATE FUNCTION bondhu.position_pending(pos bigint, covered bondhu.cursor, snapshot bondhu.cursor)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pos >= (covered).xmin_pos
       AND NOT bondhu.position_applied(pos, (covered).xmin_pos, (covered).xmax_pos, (covered).xip_pos)
       AND bondhu.position_applied(pos, (snapshot).xmin_pos, (snapshot).xmax_pos, (snapshot).xip_pos)
$$;

-- Does the cursor (xmin, xmax, xip) cover nothing that `outer` does not? True when it
-- is absent, equal to outer, or below outer's xmin; false when that cannot be shown
-- this cheaply (the caller then checks position by position).
CREATE FUNCTION bondhu.cursor_within(xmin_pos bigint, xmax_pos bigint, xip_pos bigint[], outer_cursor bondhu.cursor)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT xmin_pos IS NULL
        OR xmax_pos <= (outer_cursor).xmin_pos
        OR (xmin_pos = (outer_cursor).xmin_pos AND xmax_pos = (outer_cursor).xmax_pos
            AND xip_pos = (outer_cursor).xip_pos)
$$;

-- The global cursor, as last advanced.
CREATE FUNCTION bondhu.global_cursor() RETURNS bondhu.cursor
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ROW(s.applied_xmin, s.applied_xmax, s.applied_xip)::bondhu.cursor
    FROM bondhu.pipeline_state s
$$;
