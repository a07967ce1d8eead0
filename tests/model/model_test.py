#!/usr/bin/python3
"""Model-based randomized tester for bondhu's exactly-once contract.

Several psycopg2 sessions run a seeded random program against a real database with
CREATE EXTENSION bondhu. A single-threaded driver executes one statement at a time; a
Python model (exact decimal.Decimal oracle) predicts every profile and the history.
A failing program is shrunk (delta debugging) and printed as SQL. See README.md.
"""
import argparse
import io
import json
import random
import sys
import time
from collections import namedtuple
from decimal import Decimal

import psycopg2
import psycopg2.extensions

USERS = ['00000000-0000-4000-8000-%012d' % i for i in range(1, 7)]
TRAITS = ('openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism')
SESSIONS = ('s1', 's2', 's3', 's4')
LOCK_TIMEOUT = '300ms'
TOLERANCE = 1e-9
CHAT = 'chat_personality_insights'
ENT = 'entertainment_interactions'

# A self-service update as PostgREST makes it for a signed-in user: the role
# authenticated (SET role, undone when the function returns, error or not) and the
# user's id as the JWT's sub. The rate limit is off (self_update_min_interval 0): a call
# may still be refused (PT429) when another session's update started later.
SIGNED_IN_SQL = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT bondhu.grant_privileges();
UPDATE bondhu.settings SET self_update_min_interval = '0';
CREATE FUNCTION public.model_signed_in_update(target uuid) RETURNS jsonb LANGUAGE plpgsql SET role = authenticated AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', target, 'role', 'authenticated')::text, true);
    RETURN bondhu_update_personality(target);
END $$;
"""

APP_TRIGGER_SQL = """
CREATE FUNCTION public.app_analyse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- the application's own analysis step: a finished analysis in interaction_data
    -- becomes the interaction's personality insight
    IF NEW.interaction_data ? 'analysis' THEN
        NEW.personality_insights := NEW.interaction_data -> 'analysis';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER app_analyse BEFORE INSERT OR UPDATE ON public.entertainment_interactions
    FOR EACH ROW EXECUTE FUNCTION public.app_analyse();
"""


# ---------------------------------------------------------------------------------
# JSON documents, judged exactly as the contract says
# ---------------------------------------------------------------------------------
def _loads(text):
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def _dumps(v):
    if isinstance(v, dict):
        return '{' + ', '.join(json.dumps(k) + ': ' + _dumps(x) for k, x in v.items()) + '}'
    if isinstance(v, list):
        return '[' + ', '.join(_dumps(x) for x in v) + ']'
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, Decimal):
        return str(v)
    if v is None:
        return 'null'
    return json.dumps(v)


def canon(v):
    """A value that compares like jsonb equality (numbers by value, keys unordered)."""
    if isinstance(v, dict):
        return ('o', frozenset((k, canon(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ('a', tuple(canon(x) for x in v))
    if isinstance(v, bool):
        return ('b', v)
    if isinstance(v, Decimal):
        return ('n', v)
    if isinstance(v, str):
        return ('s', v)
    return ('z',)


class Doc:
    """A jsonb document: its text, jsonb-equality key, validity and adjustments."""
    __slots__ = ('text', 'canon', 'jnull', 'valid', 'delta')

    def __init__(self, text):
        v = _loads(text)
        self.text = text
        self.canon = canon(v)
        self.jnull = v is None
        self.valid, self.delta = False, {}
        if isinstance(v, dict):
            delta = {}
            for t in TRAITS:
                if t in v:
                    x = v[t]
                    if isinstance(x, bool) or not isinstance(x, Decimal) or abs(x) > 100:
                        return
                    delta[t] = x
            self.valid, self.delta = True, delta

    def __eq__(self, other):
        return isinstance(other, Doc) and self.canon == other.canon

    def __hash__(self):
        return hash(self.canon)


def is_insight(doc):
    """SQL NULL (None) and JSON null mean 'no insight'."""
    return doc is not None and not doc.jnull


class IData:
    """interaction_data, and what the app_analyse trigger reads from it."""
    __slots__ = ('text', 'canon', 'analysis')

    def __init__(self, text):
        v = _loads(text)
        self.text = text
        self.canon = canon(v)
        self.analysis = Doc(_dumps(v['analysis'])) if isinstance(v, dict) and 'analysis' in v else None


# ---------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------
Row = namedtuple('Row', 'user doc idata ver')  # doc: Doc | None (SQL NULL); chat rows: idata None
Version = namedtuple('Version', 'vid user doc tid step key')
Stmt = namedtuple('Stmt', 'sid tid time scope eligible')  # an update statement that applied (not skipped)
PDel = namedtuple('PDel', 'pid tid time user')


class Txn:
    def __init__(self, tid, session, implicit):
        self.tid, self.session, self.implicit = tid, session, implicit
        self.state = 'open'  # open, prepared, committed, aborted
        self.overlay = {}  # key -> Row, or None when deleted: this transaction's own writes
        self.touched = set()  # keys whose rows this transaction holds locks on
        self.stmts = []  # update statements (ids) that survive so far
        self.pdels = []  # profile deletes (ids)
        self.claimed = set()  # versions its statements applied (for the per-step prediction)
        self.run_lock = False  # holds update_all's run lock (a row lock for the transaction)
        self.replica = False  # SET LOCAL session_replication_role = replica
        self.savepoints = []
        self.gid = None
        self.commit_time = None

    def snap(self):
        return (dict(self.overlay), set(self.touched), list(self.stmts), list(self.pdels),
                set(self.claimed), self.run_lock, self.replica)

    def restore(self, sn):
        self.overlay, self.touched = dict(sn[0]), set(sn[1])
        self.stmts, self.pdels, self.claimed = list(sn[2]), list(sn[3]), set(sn[4])
        self.run_lock, self.replica = sn[5], sn[6]


class Model:
    def __init__(self):
        self.rows = {}  # committed rows: (table, id) -> Row
        self.versions = {}
        self.txns = {}
        self.stmts = {}
        self.pdels = {}
        self.sess = {s: None for s in SESSIONS}  # session -> its open explicit transaction
        self.prepared = {}  # gid -> transaction
        self.applied_online = set()  # versions claimed by committed transactions
        self.installed = True
        self.time = 0  # the step number of the last statement executed
        self._n = 0

    def nid(self):
        self._n += 1
        return self._n

    def begin(self, session, implicit):
        t = Txn(self.nid(), session, implicit)
        self.txns[t.tid] = t
        if not implicit:
            self.sess[session] = t
        return t

    def live_txns(self):
        return [t for t in self.txns.values() if t.state in ('open', 'prepared')]

    def quiet(self):
        return all(t is None for t in self.sess.values()) and not self.prepared

    def view_all(self, txn):
        d = dict(self.rows)
        if txn is not None:
            for k, r in txn.overlay.items():
                if r is None:
                    d.pop(k, None)
                else:
                    d[k] = r
        return d

    def view(self, txn, key):
        if txn is not None and key in txn.overlay:
            return txn.overlay[key]
        return self.rows.get(key)

    def other_toucher(self, txn, key):
        for t in self.live_txns():
            if t is not txn and key in t.touched:
                return t
        return None

    def blocks(self, txn, key, mode):
        """Would a write of key wait for another transaction's row lock or index entry?
        mode 'modify': UPDATE/DELETE ... WHERE id (an invisible row is simply not found);
        mode 'insert': INSERT, ON CONFLICT, MERGE, COPY (the unique index waits)."""
        if self.other_toucher(txn, key) is None:
            return False
        return key in self.rows if mode == 'modify' else True

    def put(self, txn, key, row):
        txn.overlay[key] = row
        txn.touched.add(key)

    def new_version(self, txn, key, user, doc, step):
        v = Version(self.nid(), user, doc, txn.tid, step, key)
        self.versions[v.vid] = v
        return v.vid

    def _detach(self, txn):
        if self.sess.get(txn.session) is txn:
            self.sess[txn.session] = None
        if txn.gid is not None:
            self.prepared.pop(txn.gid, None)

    def commit(self, txn, when):
        for k, r in txn.overlay.items():
            if r is None:
                self.rows.pop(k, None)
            else:
                self.rows[k] = r
        txn.state = 'committed'
        txn.commit_time = when
        self.applied_online |= txn.claimed
        self._detach(txn)

    def abort(self, txn):
        txn.state = 'aborted'
        self._detach(txn)

    def prepare(self, txn, gid):
        txn.state = 'prepared'
        txn.gid = gid
        self.prepared[gid] = txn
        self.sess[txn.session] = None

    def run_lock_elsewhere(self, txn):
        return any(t.run_lock for t in self.live_txns() if t is not txn)

    def update(self, txn, scope, step, failed=frozenset()):
        """An update statement that ran (was not skipped), for every user but the `failed`
        ones (an update_all's users whose profile lock timed out: their insights stay
        pending). Returns how many valid versions it should report as insights_processed."""
        elig = set()
        for r in self.view_all(txn).values():
            if r.ver is None:
                continue
            v = self.versions[r.ver]
            if v.tid == txn.tid:  # never versions of its own transaction
                continue
            if scope is not None and v.user != scope:
                continue
            if v.user in failed:
                continue
            elig.add(r.ver)
        pred = sum(1 for x in elig if self.versions[x].doc.valid
                   and x not in self.applied_online and x not in txn.claimed)
        st = Stmt(self.nid(), txn.tid, step, scope, frozenset(elig))
        self.stmts[st.sid] = st
        txn.stmts.append(st.sid)
        txn.claimed |= elig
        return pred

    def pending_for(self, txn, user):
        """The versions of `user` a statement of txn finds pending: those it may apply that
        no committed statement, nor txn itself, has applied."""
        return {r.ver for r in self.view_all(txn).values()
                if r.ver is not None and self.versions[r.ver].user == user
                and self.versions[r.ver].tid != txn.tid
                and r.ver not in self.applied_online and r.ver not in txn.claimed}

    def profile_delete(self, txn, user, step):
        p = PDel(self.nid(), txn.tid, step, user)
        self.pdels[p.pid] = p
        txn.pdels.append(p.pid)

    def locked_users(self, txn):
        """Users whose profile another live transaction has (probably) locked."""
        out = set()
        for t in self.live_txns():
            if t is txn:
                continue
            for sid in t.stmts:
                st = self.stmts[sid]
                if st.scope is not None:
                    out.add(st.scope)
                else:
                    out |= {self.versions[v].user for v in st.eligible}
            out |= {self.pdels[p].user for p in t.pdels}
        return out

    def expected(self):
        """The contract, applied to the whole history: each version is applied by the first
        (in execution order) surviving update statement it was eligible for."""
        committed = [t for t in self.txns.values() if t.state == 'committed']
        surviving = sorted((self.stmts[sid] for t in committed for sid in t.stmts), key=lambda s: s.time)
        pdels = [self.pdels[p] for t in committed for p in t.pdels]
        applier = {}
        for st in surviving:
            for v in st.eligible:
                applier.setdefault(v, st)
        sums = {u: {t: Decimal(0) for t in TRAITS} for u in USERS}
        counts = {u: 0 for u in USERS}
        explain = {u: [] for u in USERS}
        for vid in sorted(applier):
            st = applier[vid]
            v = self.versions[vid]
            erased = None
            for d in pdels:
                if d.user == v.user and ((d.tid == st.tid and st.time < d.time) or
                                         (d.tid != st.tid and self.txns[st.tid].commit_time < d.time)):
                    erased = d
            if v.doc.valid:
                counts[v.user] += 1
                if erased is None:
                    for t, x in v.doc.delta.items():
                        sums[v.user][t] += x
            explain[v.user].append('version written at step %d (%s) applied at step %d%s%s' % (
                v.step, v.doc.text, st.time, '' if v.doc.valid else ', rejected (invalid)',
                ', erased by the profile delete at step %d' % erased.time if erased and v.doc.valid else ''))
        for vid, v in self.versions.items():
            if vid not in applier and self.txns[v.tid].state == 'committed':
                explain[v.user].append('version written at step %d (%s) never applied' % (v.step, v.doc.text))
        profiles = {u: {t: Decimal(50) + Decimal('0.1') * sums[u][t] for t in TRAITS} for u in USERS}
        return profiles, counts, explain


# ---------------------------------------------------------------------------------
# SQL rendering of operations
# ---------------------------------------------------------------------------------
def q(s):
    return "'" + s.replace("'", "''") + "'"


def jlit(text):
    return 'NULL::jsonb' if text is None else q(text) + '::jsonb'


def copy_field(text):
    return '\\N' if text is None else text


def render(op):
    """(sql, copy data or None) of an operation that is a statement."""
    k = op['k']
    if k == 'chat_insert':
        vals = ', '.join('(%s, %s, %s)' % (q(r['id']), q(r['user']), jlit(r['doc'])) for r in op['rows'])
        return 'INSERT INTO %s (id, user_id, adjustments) VALUES %s' % (CHAT, vals), None
    if k == 'chat_set':
        return 'UPDATE %s SET adjustments = %s WHERE id = %s' % (CHAT, jlit(op['doc']), q(op['id'])), None
    if k == 'chat_move':
        return 'UPDATE %s SET user_id = %s WHERE id = %s' % (CHAT, q(op['user']), q(op['id'])), None
    if k == 'chat_delete':
        return 'DELETE FROM %s WHERE id = %s' % (CHAT, q(op['id'])), None
    if k == 'ent_insert':
        vals = ', '.join("(%s, %s, 'video', %s, %s)" % (q(r['id']), q(r['user']), jlit(r['idata']), jlit(r['doc']))
                         for r in op['rows'])
        return ('INSERT INTO %s (id, user_id, content_type, interaction_data, personality_insights) VALUES %s'
                % (ENT, vals)), None
    if k == 'ent_set':
        if op['via'] == 'plain':
            return 'UPDATE %s SET personality_insights = %s WHERE id = %s' % (ENT, jlit(op['doc']), q(op['id'])), None
        if op['via'] == 'merge':
            return ('MERGE INTO %s t USING (VALUES (%s::uuid, %s::uuid, %s)) AS s(id, user_id, doc) ON t.id = s.id '
                    'WHEN MATCHED THEN UPDATE SET personality_insights = s.doc '
                    "WHEN NOT MATCHED THEN INSERT (id, user_id, content_type, personality_insights) "
                    "VALUES (s.id, s.user_id, 'merge', s.doc)"
                    % (ENT, q(op['id']), q(op['user']), jlit(op['doc']))), None
        return ("INSERT INTO %s (id, user_id, content_type, personality_insights) VALUES (%s, %s, 'upsert', %s) "
                'ON CONFLICT (id) DO UPDATE SET personality_insights = EXCLUDED.personality_insights'
                % (ENT, q(op['id']), q(op['user']), jlit(op['doc']))), None
    if k == 'ent_analyse':
        return 'UPDATE %s SET interaction_data = %s WHERE id = %s' % (ENT, jlit(op['idata']), q(op['id'])), None
    if k == 'ent_move':
        return 'UPDATE %s SET user_id = %s WHERE id = %s' % (ENT, q(op['user']), q(op['id'])), None
    if k == 'ent_delete':
        return 'DELETE FROM %s WHERE id = %s' % (ENT, q(op['id'])), None
    if k == 'copy':
        if op['table'] == CHAT:
            data = ''.join('%s\t%s\t%s\n' % (r['id'], r['user'], r['doc']) for r in op['rows'])
            return 'COPY %s (id, user_id, adjustments) FROM STDIN' % CHAT, data
        data = ''.join('%s\t%s\tvideo\t%s\t%s\n' % (r['id'], r['user'], r['idata'], copy_field(r['doc']))
                       for r in op['rows'])
        return ('COPY %s (id, user_id, content_type, interaction_data, personality_insights) FROM STDIN' % ENT), data
    if k == 'profile_delete':
        return 'DELETE FROM user_personality_profiles WHERE user_id = %s' % q(op['user']), None
    if k == 'self_update':
        if op.get('signed_in'):
            return 'SELECT model_signed_in_update(%s)' % q(op['user']), None
        return 'SELECT bondhu_update_personality(%s)' % q(op['user']), None
    if k == 'update_all':
        return 'SELECT bondhu_update_all()', None
    if k == 'run_update_all':
        return 'CALL bondhu_run_update_all(%d)' % op['batch'], None
    if k == 'begin':
        return 'BEGIN', None
    if k == 'commit':
        return 'COMMIT', None
    if k == 'rollback':
        return 'ROLLBACK', None
    if k == 'savepoint':
        return 'SAVEPOINT %s' % op['name'], None
    if k == 'rollback_to':
        return 'ROLLBACK TO SAVEPOINT %s' % op['name'], None
    if k == 'release':
        return 'RELEASE SAVEPOINT %s' % op['name'], None
    if k == 'prepare':
        return 'PREPARE TRANSACTION %s' % q(op['gid']), None
    if k == 'commit_prepared':
        return 'COMMIT PREPARED %s' % q(op['gid']), None
    if k == 'rollback_prepared':
        return 'ROLLBACK PREPARED %s' % q(op['gid']), None
    if k == 'replica':
        return 'SET LOCAL session_replication_role = %s' % ('replica' if op['on'] else 'origin'), None
    if k == 'drop_ext':
        return 'DROP EXTENSION bondhu', None
    if k == 'create_ext':
        return op.get('sql', 'CREATE EXTENSION bondhu'), None
    raise ValueError(k)


WRITE_KINDS = {'chat_insert', 'chat_set', 'chat_move', 'chat_delete', 'ent_insert', 'ent_set', 'ent_analyse',
               'ent_move', 'ent_delete', 'copy'}


# ---------------------------------------------------------------------------------
# The database side
# ---------------------------------------------------------------------------------
class Failure(Exception):
    def __init__(self, category, message):
        super().__init__(message)
        self.category = category
        self.message = message


Result = namedtuple('Result', 'ok rows rowcount code msg')


class Cluster:
    def __init__(self, host, port, dbname, ext_version=None):
        self.host, self.port, self.dbname = host, port, dbname
        self.create_ext = 'CREATE EXTENSION bondhu' + (' VERSION %s' % q(ext_version) if ext_version else '')
        self.template = dbname + '_template'
        self._admin = None
        self.prepared_ok = True

    def connect(self, dbname, application_name='model_test'):
        conn = psycopg2.connect(host=self.host, port=self.port, dbname=dbname, user='postgres',
                                application_name=application_name)
        conn.autocommit = True
        return conn

    def admin(self):
        if self._admin is None or self._admin.closed:
            self._admin = self.connect('postgres')
        return self._admin

    def finish_prepared(self, dbs):
        """ROLLBACK PREPARED every prepared transaction left in these databases."""
        cur = self.admin().cursor()
        cur.execute('SELECT gid, database FROM pg_prepared_xacts WHERE database = ANY (%s)', (list(dbs),))
        for gid, db in cur.fetchall():
            c = self.connect(db)
            try:
                c.cursor().execute('ROLLBACK PREPARED %s' % q(gid))
            finally:
                c.close()

    def recreate(self, name, template=None):
        self.finish_prepared([name])
        cur = self.admin().cursor()
        cur.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)
        cur.execute('CREATE DATABASE %s%s' % (name, ' TEMPLATE %s' % template if template else ''))

    def make_template(self):
        self.recreate(self.template)
        c = self.connect(self.template)
        try:
            cur = c.cursor()
            cur.execute(self.create_ext)
            cur.execute(APP_TRIGGER_SQL)
            cur.execute(SIGNED_IN_SQL)
        finally:
            c.close()

    def fresh_db(self):
        self.recreate(self.dbname, self.template)

    def drop_all(self):
        self.finish_prepared([self.dbname, self.template])
        cur = self.admin().cursor()
        cur.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % self.template)


class Sessions:
    def __init__(self, cluster):
        self.conns = {}
        for s in SESSIONS:
            c = cluster.connect(cluster.dbname, 'model_test_' + s)
            c.cursor().execute("SET lock_timeout = '%s'; SET statement_timeout = '60s'; "
                               "SET client_min_messages = warning" % LOCK_TIMEOUT)
            self.conns[s] = c

    def run(self, s, sql, copy=None):
        cur = self.conns[s].cursor()
        try:
            if copy is not None:
                cur.copy_expert(sql, io.StringIO(copy))
            else:
                cur.execute(sql)
            rows = cur.fetchall() if cur.description else None
            return Result(True, rows, cur.rowcount, None, None)
        except psycopg2.Error as e:
            return Result(False, None, None, e.pgcode or 'connection', (str(e).strip() or repr(e)).splitlines()[0])

    def quiet(self, s, sql):
        """An internal statement (not part of the program)."""
        self.conns[s].cursor().execute(sql)

    def close(self):
        for c in self.conns.values():
            try:
                if not c.closed:
                    if c.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                        c.cursor().execute('ROLLBACK')
                    c.close()
            except psycopg2.Error:
                pass


# ---------------------------------------------------------------------------------
# Generation, execution, checking
# ---------------------------------------------------------------------------------
def rand_value(rng):
    return Decimal(rng.randint(-1000, 1000)) / Decimal(1000)


INVALID_DOCS = ['[]', '[{"openness": 0.5}]', '7', '"openness"', 'true', '{"openness": "0.5"}',
                '{"openness": 150}', '{"extraversion": -100.5}', '{"openness": null}',
                '{"openness": {"value": 1}}', '{"openness": true}', '{"openness": 100.001}']


def reformat(text):
    """The same jsonb value, written differently (keys reversed, a trailing zero)."""
    v = _loads(text)
    if isinstance(v, dict):
        v = {k: (Decimal(str(x) + '0') if isinstance(x, Decimal) and '.' in str(x) and 'E' not in str(x) else x)
             for k, x in reversed(list(v.items()))}
    return _dumps(v)


class Runner:
    def __init__(self, cluster, seed=None, ops=None, n_ops=150, step_checks=True):
        self.cluster = cluster
        self.step_checks = step_checks
        self.seed = seed
        self.ops_in = ops
        self.n_ops = n_ops
        self.rng = random.Random(seed)
        self.model = Model()
        self.ops_out = []  # the operations that executed
        self.log = []  # [step, session, sql, copy data, note]
        self.unexpected_blocks = 0
        self.blocks = 0
        # generator state
        self.counter = {'chat': 0, 'ent': 0, 'gid': 0}
        self.known = {CHAT: [], ENT: []}
        self.doc_history = {}
        self.drops = 0
        self.quiesce = None
        self.ending = False  # in the fixed end of every program (not shrunk away)
        self.uninstalled_left = 0
        self.db = None

    # ----- plumbing
    def sql(self, s, op_or_sql, copy=None):
        if isinstance(op_or_sql, dict):
            text, copy = render(op_or_sql)
        else:
            text = op_or_sql
        self.model.time += 1
        res = self.db.run(s, text, copy)
        entry = [self.model.time, 'end' if self.ending else s, text, copy, '']
        self.log.append(entry)
        if not res.ok:
            entry[4] = 'ERROR %s: %s' % (res.code, res.msg)
        return self.model.time, res, entry

    def note(self, entry, text):
        entry[4] = (entry[4] + '; ' if entry[4] else '') + text

    def txn_for(self, s):
        t = self.model.sess[s]
        if t is not None:
            return t, False
        return self.model.begin(s, implicit=True), True

    def finish_stmt(self, txn, implicit, step):
        if implicit:
            self.model.commit(txn, step + 0.5)

    def lock_timed_out_users(self, s, out, step):
        """The users an update_all run that completed with errors failed, read from its run
        log row in session s (the run may be in s's open transaction); a Failure unless
        every error was a lock timeout."""
        cur = self.db.conns[s].cursor()
        cur.execute("SELECT metadata -> 'errors', metadata -> 'failed_user_ids' FROM bondhu.task_runs "
                    "WHERE id = %s", (out.get('task_id'),))
        errors, users = cur.fetchone()
        if not users or any(not k.startswith('55P03') for k in errors):
            raise Failure('step:status', 'step %d %s: update_all returned %s, errors %s'
                          % (step, s, json.dumps(out), json.dumps(errors)))
        return frozenset(users)

    def failed_stmt(self, s, txn, implicit, res, entry, allowed=('55P03',)):
        """A statement failed: a lock timeout (or an error the model predicted) rolls the
        session's transaction back; anything else is a failure of the test."""
        if res.code not in allowed:
            raise Failure('error:%s' % res.code, '%s: %s\n    %s' % (s, entry[2], res.msg))
        if res.code == '55P03':
            self.blocks += 1
        if not implicit:
            _, r2, _ = self.sql(s, 'ROLLBACK')
            if not r2.ok:
                raise Failure('error:%s' % r2.code, '%s: ROLLBACK: %s' % (s, r2.msg))
        self.model.abort(txn)
        self.note(entry, 'transaction rolled back')

    # ----- executing one operation (False: not applicable in this state, skipped)
    def apply(self, op):
        m = self.model
        k, s = op['k'], op['s']
        open_txn = m.sess[s]
        if k == 'begin':
            if open_txn is not None or not m.installed:
                return False
            _, res, e = self.sql(s, op)
            self.expect_ok(s, res, e)
            m.begin(s, implicit=False)
            return True
        if k in ('commit', 'rollback'):
            if open_txn is None:
                return False
            step, res, e = self.sql(s, op)
            self.expect_ok(s, res, e)
            if k == 'commit':
                m.commit(open_txn, step)
            else:
                m.abort(open_txn)
            return True
        if k in ('savepoint', 'rollback_to', 'release'):
            if open_txn is None:
                return False
            names = [n for n, _ in open_txn.savepoints]
            if k != 'savepoint' and op['name'] not in names:
                return False
            _, res, e = self.sql(s, op)
            self.expect_ok(s, res, e)
            if k == 'savepoint':
                open_txn.savepoints.append((op['name'], open_txn.snap()))
            else:
                i = len(names) - 1 - names[::-1].index(op['name'])
                if k == 'rollback_to':
                    open_txn.restore(open_txn.savepoints[i][1])
                    del open_txn.savepoints[i + 1:]
                else:
                    del open_txn.savepoints[i:]
            return True
        if k == 'prepare':
            if open_txn is None or op['gid'] in m.prepared:
                return False
            _, res, e = self.sql(s, op)
            self.expect_ok(s, res, e)
            m.prepare(open_txn, op['gid'])
            return True
        if k in ('commit_prepared', 'rollback_prepared'):
            if open_txn is not None or op['gid'] not in m.prepared:
                return False
            txn = m.prepared[op['gid']]
            step, res, e = self.sql(s, op)
            self.expect_ok(s, res, e)
            if k == 'commit_prepared':
                m.commit(txn, step)
            else:
                m.abort(txn)
            return True
        if k == 'replica':
            if open_txn is None:
                return False
            _, res, e = self.sql(s, op)
            self.expect_ok(s, res, e)
            open_txn.replica = op['on']
            return True
        if k in ('drop_ext', 'create_ext'):
            if (k == 'drop_ext') != m.installed or not m.quiet():
                return False
            self.db.quiet(s, "SET lock_timeout = '10s'")
            _, res, e = self.sql(s, op)
            self.db.quiet(s, "SET lock_timeout = '%s'" % LOCK_TIMEOUT)
            self.expect_ok(s, res, e)
            m.installed = k == 'create_ext'
            return True
        if k == 'run_update_all':
            if not m.installed or not m.quiet():
                return False
            step, res, e = self.sql(s, op)
            self.expect_ok(s, res, e)
            cur = self.db.conns[s].cursor()
            cur.execute("SELECT status, error_message FROM system_tasks WHERE task_name = 'personality_update' "
                        "ORDER BY executed_at DESC LIMIT 1")
            status = cur.fetchone()
            self.note(e, 'status %s' % (status[0] if status else None))
            if status is None or status[0] != 'completed':
                raise Failure('step:status', 'step %d %s: the run of %s is %s' % (step, s, e[2], status))
            txn = m.begin(s, implicit=True)
            m.update(txn, None, step)
            m.commit(txn, step + 0.5)
            return True
        if k in ('self_update', 'update_all'):
            if not m.installed:
                return False
            txn, implicit = self.txn_for(s)
            # a signed-in user's update that finds nothing pending does nothing: no lock,
            # no profile, no rate-limit slot
            quiet_call = op.get('signed_in') and not m.pending_for(txn, op['user'])
            step, res, e = self.sql(s, op)
            if not res.ok:
                self.failed_stmt(s, txn, implicit, res, e,
                                 allowed=('55P03', 'PT429') if op.get('signed_in') else ('55P03',))
                return True
            out = res.rows[0][0]
            if not isinstance(out, dict):
                raise Failure('step:result', 'step %d %s: %s returned %r' % (step, s, e[2], out))
            if k == 'update_all':
                status = out.get('status')
                elsewhere = m.run_lock_elsewhere(txn)
                self.note(e, 'status %s' % status)
                if status == 'skipped':
                    if not elsewhere:
                        raise Failure('step:skipped', 'step %d %s: update_all returned skipped, but no other '
                                      'transaction holds the run lock' % (step, e[1]))
                    self.finish_stmt(txn, implicit, step)
                    return True
                if elsewhere:
                    raise Failure('step:not-skipped', 'step %d %s: update_all ran (%s) while another open '
                                  'transaction holds the run lock' % (step, s, status))
                if status == 'failed' and 'lock timeout' in (out.get('error_message') or ''):
                    # bondhu catches the lock timeout of a run that would wait, logs the run
                    # failed and returns: a statement that would block (its work is undone)
                    self.blocks += 1
                    if implicit:
                        m.abort(txn)
                    else:
                        _, r2, _ = self.sql(s, 'ROLLBACK')
                        self.expect_ok(s, r2, e)
                        m.abort(txn)
                        self.note(e, 'a lock timeout inside the run: transaction rolled back')
                    return True
                failed = frozenset()
                if status == 'completed_with_errors':
                    # users whose profile another transaction holds, past lock_timeout: each
                    # fails alone (55P03), the others are applied
                    failed = self.lock_timed_out_users(s, out, step)
                    unlocked = failed - m.locked_users(txn)
                    if unlocked:
                        raise Failure('step:failed-users', 'step %d %s: update_all failed users %s, whose profile '
                                      'no other transaction holds' % (step, s, sorted(unlocked)))
                    self.blocks += len(failed)
                    self.note(e, 'lock timeouts of users %s' % ', '.join(sorted(u[-2:] for u in failed)))
                elif status != 'completed':
                    raise Failure('step:status', 'step %d %s: update_all returned %s' % (step, s, json.dumps(out)))
                txn.run_lock = True
                pred = m.update(txn, None, step, failed)
            elif quiet_call:
                pred = 0
                self.note(e, 'signed in, nothing pending')
            else:
                pred = m.update(txn, op['user'], step)
            got = out.get('insights_processed')
            self.note(e, 'insights_processed %s (model: %d)' % (got, pred))
            if got != pred and self.step_checks:
                raise Failure('step:insights_processed', 'step %d %s: %s reported insights_processed = %s, the '
                              'model expects %d' % (step, e[1], k, got, pred))
            self.finish_stmt(txn, implicit, step)
            return True
        if k == 'profile_delete':
            txn, implicit = self.txn_for(s)
            step, res, e = self.sql(s, op)
            if not res.ok:
                self.failed_stmt(s, txn, implicit, res, e)
                return True
            m.profile_delete(txn, op['user'], step)
            self.finish_stmt(txn, implicit, step)
            return True
        if k in WRITE_KINDS:
            txn, implicit = self.txn_for(s)
            outcome, effects, rowcount = self.plan_write(txn, op)
            step, res, e = self.sql(s, op)
            if not res.ok:
                if res.code == '55P03' and outcome != 'block':
                    self.unexpected_blocks += 1
                    self.note(e, 'lock wait the model did not predict')
                self.failed_stmt(s, txn, implicit, res, e,
                                 allowed=('55P03', outcome) if outcome != 'ok' else ('55P03',))
                return True
            if outcome != 'ok':
                raise Failure('model:%s' % outcome, 'step %d %s: the model predicted %s, the statement '
                              'succeeded: %s' % (step, s, outcome, e[2]))
            if rowcount is not None and res.rowcount != rowcount:
                raise Failure('model:rowcount', 'step %d %s: %d rows affected, the model expects %d: %s'
                              % (step, s, res.rowcount, rowcount, e[2]))
            for key, row, newver in effects:
                if row is not None and newver:
                    row = row._replace(ver=m.new_version(txn, key, row.user, row.doc, step))
                m.put(txn, key, row)
            self.finish_stmt(txn, implicit, step)
            return True
        raise ValueError(k)

    def expect_ok(self, s, res, entry):
        if not res.ok:
            raise Failure('error:%s' % res.code, '%s: %s\n    %s' % (s, entry[2], res.msg))

    # ----- what a write does, per the model
    def ent_row(self, txn, old, user, doc, idata, insert):
        """The row an INSERT/UPDATE of entertainment_interactions leaves, and whether it is a
        new insight version."""
        if not txn.replica and idata is not None and idata.analysis is not None:
            doc = idata.analysis  # the app_analyse trigger
        row = Row(user, doc, idata, None)
        if not is_insight(doc):
            return row, False
        if insert or old.ver is None or old.doc != doc or old.user != user:
            return row, True
        return row._replace(ver=old.ver), False

    def plan_write(self, txn, op):
        """(outcome 'ok' | 'block' | '23505', effects [(key, row or None, new version?)],
        expected rowcount or None)."""
        m = self.model
        k = op['k']
        if k in ('chat_insert', 'ent_insert', 'copy'):
            table = op.get('table', CHAT if k == 'chat_insert' else ENT)
            effects = []
            for r in op['rows']:
                key = (table, r['id'])
                if m.blocks(txn, key, 'insert'):
                    return 'block', None, None
                if m.view(txn, key) is not None:
                    return '23505', None, None
                if table == CHAT:
                    effects.append((key, Row(r['user'], Doc(r['doc']), None, None), True))
                else:
                    doc = Doc(r['doc']) if r['doc'] is not None else None
                    row, newver = self.ent_row(txn, None, r['user'], doc, IData(r['idata']), True)
                    effects.append((key, row, newver))
            return 'ok', effects, (len(effects) if k != 'copy' else None)
        table = CHAT if k.startswith('chat') else ENT
        key = (table, op['id'])
        if k == 'ent_set' and op['via'] != 'plain':
            if m.blocks(txn, key, 'insert'):
                return 'block', None, None
            old = m.view(txn, key)
            doc = Doc(op['doc']) if op['doc'] is not None else None
            if old is None:
                row, newver = self.ent_row(txn, None, op['user'], doc, IData('{}'), True)
            else:
                row, newver = self.ent_row(txn, old, old.user, doc, old.idata, False)
            return 'ok', [(key, row, newver)], None
        if m.blocks(txn, key, 'modify'):
            return 'block', None, None
        old = m.view(txn, key)
        if old is None:
            return 'ok', [], 0
        if k in ('chat_delete', 'ent_delete'):
            return 'ok', [(key, None, False)], 1
        if k == 'chat_set':
            doc = Doc(op['doc'])
            return 'ok', [(key, Row(old.user, doc, None, old.ver), doc != old.doc)], 1
        if k == 'chat_move':
            return 'ok', [(key, Row(op['user'], old.doc, None, old.ver), op['user'] != old.user)], 1
        if k == 'ent_set':
            doc = Doc(op['doc']) if op['doc'] is not None else None
            row, newver = self.ent_row(txn, old, old.user, doc, old.idata, False)
        elif k == 'ent_analyse':
            row, newver = self.ent_row(txn, old, old.user, old.doc, IData(op['idata']), False)
        else:  # ent_move
            row, newver = self.ent_row(txn, old, op['user'], old.doc, old.idata, False)
        return 'ok', [(key, row, newver)], 1

    # ----- the program
    def run(self):
        """Runs the program (generated from the seed, or the given operations); returns a
        Failure or None."""
        self.cluster.fresh_db()
        try:
            self.db = Sessions(self.cluster)
            if self.ops_in is None:
                for _ in range(self.n_ops):
                    op = self.generate()
                    self.ops_out.append(op)
                    self.apply(op)
                for op in self.tail():
                    self.ops_out.append(op)
                    self.apply(op)
            else:
                for op in self.ops_in:
                    self.ops_out.append(op)  # kept when it fails
                    if not self.apply(op):
                        self.ops_out.pop()  # not applicable here: skipped
            self.finish()
            return None
        except Failure as f:
            return f
        except psycopg2.Error as e:
            return Failure('error:%s' % (e.pgcode or 'connection'), str(e).strip())
        finally:
            if self.db is not None:
                self.db.close()
            self.cluster.finish_prepared([self.cluster.dbname])

    def finish(self):
        """Rolls back what is open, installs bondhu if needed, runs update_all once, compares."""
        m = self.model
        self.ending = True
        for s in SESSIONS:
            if m.sess[s] is not None:
                self.apply({'k': 'rollback', 's': s})
        for gid in list(m.prepared):
            self.apply({'k': 'rollback_prepared', 's': 's1', 'gid': gid})
        if not m.installed:
            self.apply({'k': 'create_ext', 's': 's1', 'sql': self.cluster.create_ext})
        self.apply({'k': 'update_all', 's': 's1'})
        profiles, counts, explain = m.expected()
        cur = self.db.conns['s1'].cursor()
        self.check_rows(cur)
        cur.execute('SELECT user_id::text, %s FROM user_personality_profiles' % ', '.join(TRAITS))
        got_profiles = {r[0]: dict(zip(TRAITS, r[1:])) for r in cur.fetchall()}
        cur.execute('SELECT user_id::text, sum(insights_processed) FROM personality_profile_history GROUP BY 1')
        got_counts = {r[0]: int(r[1]) for r in cur.fetchall()}
        problems = []
        bad_users = set()
        for u in USERS:
            gp = got_profiles.get(u)
            for t in TRAITS:
                want = profiles[u][t]
                got = gp[t] if gp is not None else 50.0
                if abs(float(want) - got) > TOLERANCE:
                    problems.append('user %s: %s is %r%s, the model expects %s'
                                    % (u, t, got, '' if gp else ' (no profile)', want))
                    bad_users.add(u)
            if got_counts.get(u, 0) != counts[u]:
                problems.append('user %s: the history counts %d insights processed, the model expects %d'
                                % (u, got_counts.get(u, 0), counts[u]))
                bad_users.add(u)
        if problems:
            lines = list(problems)
            for u in sorted(bad_users):
                lines.append('model, user %s:' % u)
                lines += ['    ' + x for x in explain[u]] or ['    (no insight versions)']
            raise Failure('final:mismatch', '\n  '.join(lines))

    def check_rows(self, cur):
        """The model's own check: the insight rows are what the model thinks they are."""
        want = {}
        for (table, id_), r in self.model.rows.items():
            want[(table, id_)] = (r.user, r.doc.canon if r.doc else None, r.idata.canon if r.idata else None)
        got = {}
        cur.execute('SELECT id::text, user_id::text, adjustments::text FROM %s' % CHAT)
        for id_, u, d in cur.fetchall():
            got[(CHAT, id_)] = (u, Doc(d).canon, None)
        cur.execute('SELECT id::text, user_id::text, personality_insights::text, interaction_data::text FROM %s' % ENT)
        for id_, u, d, i in cur.fetchall():
            got[(ENT, id_)] = (u, Doc(d).canon if d is not None else None, IData(i).canon if i is not None else None)
        if want != got:
            diff = ['%s %s: table has %s, model has %s' % (k[0], k[1], got.get(k), want.get(k))
                    for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
            raise Failure('model:rows', 'the insight rows differ from the model:\n  ' + '\n  '.join(diff[:10]))

    # ----- generation (uses the model's state; the recorded operations replay without it)
    def new_id(self, table):
        kind = 'chat' if table == CHAT else 'ent'
        self.counter[kind] += 1
        prefix = 'c0000000' if table == CHAT else 'e0000000'
        i = '%s-0000-4000-8000-%012d' % (prefix, self.counter[kind])
        self.known[table].append(i)
        return i

    def rand_doc(self):
        rng = self.rng
        if rng.random() < 0.2:
            return rng.choice(INVALID_DOCS)
        r = rng.random()
        v, w = rand_value(rng), rand_value(rng)
        if r < 0.55:
            return '{"openness": %s}' % v
        if r < 0.7:
            return '{"openness": %s, "extraversion": %s}' % (v, w)
        if r < 0.8:
            return '{"extraversion": %s}' % w
        if r < 0.9:
            return '{"openness": %s, "mood": "curious"}' % v
        if r < 0.95:
            return '{"Openness": 1}'
        return '{}'

    def remember(self, id_, doc):
        if doc is not None:
            self.doc_history.setdefault(id_, []).append(doc)

    def pick_row(self, txn, table):
        """A row of table visible to the session, usually one no other transaction holds."""
        m, rng = self.model, self.rng
        if rng.random() < 0.05 and self.known[table]:
            return rng.choice(self.known[table])
        rows = [k for k in m.view_all(txn) if k[0] == table]
        free = [k for k in rows if m.other_toucher(txn, k) is None]
        pool = free if free and rng.random() < 0.92 else rows
        return rng.choice(pool)[1] if pool else None

    def doc_choice(self, txn, id_):
        """A new value of an interaction's personality_insights."""
        m, rng = self.model, self.rng
        cur = m.view(txn, (ENT, id_)) if id_ else None
        r = rng.random()
        if r < 0.45:
            d = self.rand_doc()
        elif r < 0.62 and cur is not None and cur.doc is not None:
            d = cur.doc.text if rng.random() < 0.7 else reformat(cur.doc.text)  # the same document again
        elif r < 0.74:
            d = None
        elif r < 0.84:
            d = 'null'
        elif self.doc_history.get(id_):
            d = rng.choice(self.doc_history[id_])  # a value it had before
        else:
            d = self.rand_doc()
        self.remember(id_, d)
        return d

    def idata_choice(self, txn, id_, insert=False):
        rng = self.rng
        r = rng.random()
        if insert and r < 0.75:
            return '{}'
        r = rng.random()
        if r < 0.7:
            d = self.doc_choice(txn, id_)
            if d is None:
                d = 'null'
            return '{"analysis": %s, "progress": 100}' % d
        if r < 0.9:
            return '{"progress": %d}' % rng.randint(1, 99)
        return '{}'

    def gen_write(self, s, txn):
        m, rng = self.model, self.rng
        choices = [('chat_insert', 14), ('chat_set', 6), ('chat_move', 3), ('chat_delete', 2.5),
                   ('ent_insert', 14), ('ent_set:plain', 11), ('ent_set:merge', 5), ('ent_set:upsert', 5),
                   ('ent_analyse', 10), ('ent_move', 3), ('ent_delete', 2.5), ('copy', 5)]
        k = weighted(rng, choices)
        user = rng.choice(USERS)
        if k in ('chat_insert', 'copy') and (k == 'chat_insert' or rng.random() < 0.5):
            table = CHAT
            rows = [{'id': self.new_id(CHAT), 'user': rng.choice(USERS) if i else user, 'doc': self.rand_doc()}
                    for i in range(rng.choice((1, 1, 1, 2, 3)))]
            return {'k': k, 's': s, 'table': table, 'rows': rows}
        if k in ('ent_insert', 'copy'):
            rows = []
            for i in range(rng.choice((1, 1, 1, 2, 3))):
                id_ = self.new_id(ENT)
                doc = self.doc_choice(txn, None)
                if doc is None and k == 'copy' and rng.random() < 0.5:
                    doc = self.rand_doc()
                rows.append({'id': id_, 'user': rng.choice(USERS) if i else user, 'doc': doc,
                             'idata': self.idata_choice(txn, None, insert=True)})
                self.remember(id_, doc)
            return {'k': k, 's': s, 'table': ENT, 'rows': rows}
        table = CHAT if k.startswith('chat') else ENT
        id_ = self.pick_row(txn, table)
        if k == 'ent_set:upsert' or k == 'ent_set:merge':
            if id_ is None or rng.random() < 0.3:
                id_ = self.new_id(ENT)
            return {'k': 'ent_set', 's': s, 'via': k.split(':')[1], 'id': id_, 'user': user,
                    'doc': self.doc_choice(txn, id_)}
        if id_ is None:
            return self.gen_write(s, txn) if rng.random() < 0.9 else {
                'k': 'chat_insert', 's': s, 'rows': [{'id': self.new_id(CHAT), 'user': user, 'doc': self.rand_doc()}]}
        if k == 'ent_set:plain':
            return {'k': 'ent_set', 's': s, 'via': 'plain', 'id': id_, 'doc': self.doc_choice(txn, id_)}
        if k == 'chat_set':
            cur = m.view(txn, (CHAT, id_))
            doc = cur.doc.text if cur is not None and rng.random() < 0.25 else self.rand_doc()
            return {'k': k, 's': s, 'id': id_, 'doc': doc}
        if k in ('chat_move', 'ent_move'):
            return {'k': k, 's': s, 'id': id_, 'user': user}
        if k == 'ent_analyse':
            return {'k': k, 's': s, 'id': id_, 'idata': self.idata_choice(txn, id_)}
        return {'k': k, 's': s, 'id': id_}

    def gen_update(self, s, txn, kind):
        m, rng = self.model, self.rng
        locked = m.locked_users(txn)
        if kind == 'update_all':
            if locked and not m.run_lock_elsewhere(txn) and rng.random() < 0.6:
                return self.gen_write(s, txn)
            return {'k': 'update_all', 's': s}
        free = [u for u in USERS if u not in locked]
        if kind == 'profile_delete':
            return {'k': kind, 's': s, 'user': rng.choice(free if free and rng.random() < 0.9 else USERS)}
        # self-update: usually a user with something pending
        pending = {m.versions[r.ver].user for r in m.view_all(txn).values() if r.ver is not None}
        pool = [u for u in free if u in pending] or free
        return {'k': kind, 's': s, 'user': rng.choice(pool if pool and rng.random() < 0.9 else USERS),
                'signed_in': rng.random() < 0.5}

    def generate(self):
        m, rng = self.model, self.rng
        if not m.installed:
            if self.uninstalled_left > 0:
                self.uninstalled_left -= 1
                return self.gen_write(rng.choice(SESSIONS), None)
            return {'k': 'create_ext', 's': rng.choice(SESSIONS), 'sql': self.cluster.create_ext}
        if self.quiesce is None and self.drops < 2 and rng.random() < 0.012:
            # drive to a moment without open transactions: that is when DROP EXTENSION and
            # CALL bondhu_run_update_all() may run
            self.quiesce = 'drop_ext' if rng.random() < 0.6 else 'run_update_all'
        if self.quiesce is not None:
            for s in SESSIONS:
                if m.sess[s] is not None:
                    return {'k': 'commit' if rng.random() < 0.7 else 'rollback', 's': s}
            if m.prepared:
                return {'k': 'commit_prepared' if rng.random() < 0.7 else 'rollback_prepared',
                        's': rng.choice(SESSIONS), 'gid': sorted(m.prepared)[0]}
            k, self.quiesce = self.quiesce, None
            if k == 'drop_ext':
                self.drops += 1
                self.uninstalled_left = rng.randint(2, 7)
                return {'k': k, 's': rng.choice(SESSIONS)}
            return {'k': k, 's': rng.choice(SESSIONS), 'batch': rng.choice((1, 2, 3, 1000))}
        s = rng.choice(SESSIONS)
        txn = m.sess[s]
        if txn is None:
            choices = [('begin', 30), ('write', 25), ('self_update', 7), ('update_all', 4), ('profile_delete', 1.5)]
            if m.prepared:
                choices.append(('finish_prepared', 12))
            if m.quiet():
                choices.append(('run_update_all', 2.5))
                if self.drops < 2:
                    choices.append(('drop_ext', 1.5))
            k = weighted(rng, choices)
            if k == 'begin':
                return {'k': 'begin', 's': s}
            if k == 'write':
                return self.gen_write(s, None)
            if k == 'finish_prepared':
                gid = rng.choice(sorted(m.prepared))
                return {'k': 'commit_prepared' if rng.random() < 0.7 else 'rollback_prepared', 's': s, 'gid': gid}
            if k == 'run_update_all':
                return {'k': k, 's': s, 'batch': rng.choice((1, 2, 3, 1000))}
            if k == 'drop_ext':
                self.drops += 1
                self.uninstalled_left = rng.randint(2, 7)
                return {'k': k, 's': s}
            return self.gen_update(s, None, k)
        choices = [('write', 45), ('self_update', 9), ('update_all', 5), ('profile_delete', 2.5),
                   ('savepoint', 5), ('commit', 12), ('rollback', 4), ('replica', 3 if txn.replica else 2)]
        if len(m.prepared) < 3 and self.cluster.prepared_ok:
            choices.append(('prepare', 2.5))
        if txn.savepoints:
            choices += [('rollback_to', 8), ('release', 1.5)]
        k = weighted(rng, choices)
        if k == 'write':
            return self.gen_write(s, txn)
        if k in ('commit', 'rollback'):
            return {'k': k, 's': s}
        if k == 'savepoint':
            return {'k': k, 's': s, 'name': 'sp%d' % rng.randint(1, 3)}
        if k in ('rollback_to', 'release'):
            return {'k': k, 's': s, 'name': rng.choice(txn.savepoints)[0]}
        if k == 'replica':
            return {'k': k, 's': s, 'on': not txn.replica}
        if k == 'prepare':
            self.counter['gid'] += 1
            return {'k': k, 's': s, 'gid': '%s_%d' % (self.cluster.dbname, self.counter['gid'])}
        return self.gen_update(s, txn, k)

    def tail(self):
        """The end of a generated program: finish what is open (commit or roll back)."""
        m, rng = self.model, self.rng
        ops = []
        for s in SESSIONS:
            if m.sess[s] is not None:
                ops.append({'k': 'commit' if rng.random() < 0.7 else 'rollback', 's': s})
        for gid in sorted(m.prepared):
            ops.append({'k': 'commit_prepared' if rng.random() < 0.7 else 'rollback_prepared',
                        's': rng.choice(SESSIONS), 'gid': gid})
        return ops

    def program_text(self):
        out = []
        for step, s, text, copy, note in self.log:
            line = '  %4d  %-3s %s;' % (step, s, text)
            if copy:
                line += '\n' + ''.join('              %s\n' % l for l in copy.splitlines()) + '              \\.'
            if note:
                line += '   -- ' + note
            out.append(line)
        return '\n'.join(out)


def weighted(rng, choices):
    total = sum(w for _, w in choices)
    x = rng.random() * total
    for k, w in choices:
        x -= w
        if x < 0:
            return k
    return choices[-1][0]


# ---------------------------------------------------------------------------------
# Shrinking (delta debugging)
# ---------------------------------------------------------------------------------
def shrink(cluster, ops, category, deadline, step_checks=True):
    """The shortest program found that still fails with the same category: first without
    whole sessions, then delta debugging (halves, quarters, ... single operations).
    Returns (operations, (runner, failure) of the last failing replay or None, replays,
    finished within the deadline)."""
    runs = [0]
    best = [None]

    def fails(candidate):
        if time.time() > deadline:
            return None
        runs[0] += 1
        r = Runner(cluster, ops=candidate, step_checks=step_checks)
        f = r.run()
        if f is not None and f.category == category:
            best[0] = (r, f)
            return r.ops_out  # only what executed, up to the failure
        return None

    got = fails(ops)
    if got is None:
        return ops, None, runs[0], time.time() <= deadline
    ops = got
    for s in SESSIONS:
        cand = [op for op in ops if op['s'] != s]
        if len(cand) < len(ops):
            got = fails(cand)
            if got is not None:
                ops = got
    n = 2
    while len(ops) >= 2 and time.time() < deadline:
        chunk = -(-len(ops) // n)
        reduced = False
        for i in range(0, len(ops), chunk):
            got = fails(ops[:i] + ops[i + chunk:])
            if got is not None:
                ops = got
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunk <= 1:
                break
            n = min(len(ops), n * 2)
    return ops, best[0], runs[0], time.time() <= deadline


# ---------------------------------------------------------------------------------
def strip_seeds(argv):
    """The command line without --seeds/--soak (for a reproduction hint)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ('--seeds', '--soak'):
            skip = True
            continue
        if a.startswith('--seeds=') or a.startswith('--soak='):
            continue
        out.append(a)
    return out


def parse_seeds(text):
    seeds = []
    for part in text.split(','):
        if '-' in part:
            a, b = part.split('-', 1)
            seeds += list(range(int(a), int(b) + 1))
        elif part.strip():
            seeds.append(int(part))
    return seeds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--host', required=True, help='socket directory (or host name)')
    ap.add_argument('--port', type=int, default=5432)
    ap.add_argument('--dbname', default='bondhu_model', help='database to (re)create (also <dbname>_template)')
    ap.add_argument('--seeds', default='1-20', help='e.g. 1-20, 7, 3,5,9')
    ap.add_argument('--ops', type=int, default=150, help='operations per program')
    ap.add_argument('--soak', type=float, default=0, help='run new random seeds for this many seconds')
    ap.add_argument('--shrink-budget', type=float, default=90,
                    help='seconds spent shrinking, over all failing seeds (0: do not shrink)')
    ap.add_argument('--ext-version', help='CREATE EXTENSION bondhu VERSION this (default: the default version)')
    ap.add_argument('--final-only', action='store_true',
                    help='do not fail on the insights_processed a call reports, only on the final state')
    ap.add_argument('--verbose', action='store_true', help='print every program, passing or not')
    args = ap.parse_args()

    cluster = Cluster(args.host, args.port, args.dbname, args.ext_version)
    try:
        cluster.finish_prepared([cluster.dbname, cluster.template])
        cluster.make_template()
        cur = cluster.admin().cursor()
        cur.execute("SELECT current_setting('max_prepared_transactions')::int")
        if cur.fetchone()[0] < 5:
            cluster.prepared_ok = False
            print('model: max_prepared_transactions < 5 on this cluster: prepared transactions are not tested')
    except psycopg2.Error as e:
        print('model: setup failed: %s' % str(e).strip())
        print('model: 0 passed, 1 failed')
        return 2

    passed = failed = 0
    shrink_left = args.shrink_budget
    categories_shown = set()
    start = time.time()
    if args.soak > 0:
        sysrng = random.SystemRandom()
        seeds = iter(lambda: sysrng.randrange(1, 2 ** 31), None)
    else:
        seeds = iter(parse_seeds(args.seeds))
    try:
        for seed in seeds:
            if args.soak > 0 and time.time() - start > args.soak:
                break
            t0 = time.time()
            r = Runner(cluster, seed=seed, n_ops=args.ops, step_checks=not args.final_only)
            f = r.run()
            took = time.time() - t0
            if args.verbose:
                print(r.program_text())
            if f is None:
                passed += 1
                print('seed %d: ok (%d steps, %d lock timeouts%s, %.1fs)' % (
                    seed, r.model.time, r.blocks,
                    ' (%d the model did not predict)' % r.unexpected_blocks if r.unexpected_blocks else '', took))
                sys.stdout.flush()
                continue
            failed += 1
            print('seed %d: FAILED [%s] at step %d (%.1fs)\n  %s' % (seed, f.category, r.model.time, took, f.message))
            sys.stdout.flush()
            if shrink_left <= 0 or f.category in categories_shown and shrink_left < args.shrink_budget / 2:
                print('  (not shrunk: %s; rerun with --seeds %d)' % (
                    'shrink budget used up' if shrink_left <= 0 else 'a failure of this kind was shown already', seed))
                continue
            t1 = time.time()
            ops, best, runs, finished = shrink(cluster, r.ops_out, f.category, t1 + shrink_left, not args.final_only)
            shrink_left -= time.time() - t1
            categories_shown.add(f.category)
            if best is None:
                print('  (could not reproduce the failure for shrinking: nondeterministic?)')
                continue
            br, bf = best
            print('  shrunk from %d operations to %d in %d runs (%.1fs%s); seed %d, the shortest failing program:'
                  % (len(r.ops_out), len(br.ops_out), runs, time.time() - t1,
                     '' if finished else ', stopped by the shrink budget', seed))
            print(br.program_text())
            print('  failure [%s]:\n  %s' % (bf.category, bf.message))
            print('  (reproduce: %s --seeds %d)' % (' '.join(sys.argv[:1] + [a for a in strip_seeds(sys.argv[1:])]), seed))
            sys.stdout.flush()
    finally:
        try:
            cluster.drop_all()
        except psycopg2.Error:
            pass
    print('model: %d passed, %d failed' % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
