-- Everything the extension defines, as text, so that two installs can be compared: a
-- fresh install of the current version, and the previous version plus its upgrade
-- script. Used by scripts/test.sh.
\pset format unaligned
\pset tuples_only on
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'bondhu'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
member_relations AS (
    SELECT objid AS oid FROM members WHERE classid = 'pg_class'::regclass
)
SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
UNION ALL
SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '')
FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid AND p.prokind <> 'a'
UNION ALL
SELECT format('column %s.%s %s notnull=%s default=%s', a.attrelid::regclass, a.attname,
              format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid))
FROM pg_attribute a JOIN member_relations r ON r.oid = a.attrelid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('constraint %s.%s %s validated=%s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid), c.convalidated)
FROM pg_constraint c JOIN member_relations r ON r.oid = c.conrelid
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN member_relations r ON r.oid = i.indrelid
UNION ALL
SELECT 'view ' || c.oid::regclass || E'\n' || pg_get_viewdef(c.oid) FROM pg_class c JOIN member_relations r ON r.oid = c.oid WHERE c.relkind = 'v'
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text FROM pg_trigger t JOIN member_relations r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT format('policy %s.%s %s %s %s %s', p.schemaname, p.tablename, p.policyname, p.roles, p.cmd, p.qual)
FROM pg_policies p JOIN member_relations r ON r.oid = format('%I.%I', p.schemaname, p.tablename)::regclass
UNION ALL
SELECT format('rls %s enabled=%s', c.oid::regclass, c.relrowsecurity) FROM pg_class c JOIN member_relations r ON r.oid = c.oid WHERE c.relkind = 'r'
UNION ALL
SELECT format('acl %s %s', c.oid::regclass, c.relacl) FROM pg_class c JOIN member_relations r ON r.oid = c.oid
UNION ALL
SELECT format('event trigger %s %s %s %s', e.evtname, e.evtevent, e.evttags, e.evtfoid::regproc)
FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
UNION ALL
SELECT format('config %s %s', t.oid::regclass, t.cond) FROM pg_extension e, ext,
    unnest(e.extconfig, e.extcondition) AS t(oid, cond)
WHERE e.oid = ext.oid
ORDER BY 1;
