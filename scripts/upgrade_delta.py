#!/usr/bin/env python3
"""Drafts an upgrade script: what changed between two full install scripts.

    python3 scripts/upgrade_delta.py sql/archive/bondhu--OLD.sql NEW.sql

NEW.sql is `cargo pgrx schema pg15 -o NEW.sql` of the working tree. Prints, on stdout,
the generated part of sql/bondhu--OLD--NEW.sql (CONTRIBUTING.md):
  - a routine (function, procedure) or view that is new: its CREATE;
  - one whose body changed: CREATE OR REPLACE;
  - one whose arguments or result changed: DROP, then CREATE (a view: DROP VIEW);
  - one that is gone: DROP;
  - a new or changed COMMENT ON a routine or view: the new one.
Everything else that differs (tables, types, triggers, aggregates, DO blocks, grants)
is listed at the end as "-- by hand:" lines: write those statements yourself. The
catalog-fingerprint test (scripts/test.sh) then shows anything the delta still misses.
"""
import re
import sys

ROUTINE = re.compile(r'^CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+([\w."]+)\s*\(', re.S)
VIEW = re.compile(r'^CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+([\w."]+)', re.S)
COMMENT = re.compile(r'^COMMENT\s+ON\s+(FUNCTION|PROCEDURE|VIEW)\s+([\w."]+)', re.S)
# pgrx's own marker comments, not ours
MARKER = re.compile(r'^(/\*|\*/|-- (bondhu::|requires|src/|\.\./sql/)|--   |This file is auto|The ordering of)')


def statements(text):
    """The top-level statements of an SQL file, with their leading comments, split at
    semicolons outside strings, comments and dollar quotes."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        if text.startswith('--', i):
            j = text.find('\n', i)
            i = n if j < 0 else j + 1
        elif text.startswith('/*', i):
            j = text.find('*/', i)
            i = n if j < 0 else j + 2
        elif text[i] == "'":
            j = i + 1
            while j < n and not (text[j] == "'" and not text.startswith("''", j)):
                j += 2 if text.startswith("''", j) else 1
            i = j + 1
        elif text[i] == '$' and (m := re.match(r'\$[A-Za-z_]*\$', text[i:])):
            j = text.find(m.group(0), i + len(m.group(0)))
            i = n if j < 0 else j + len(m.group(0))
        elif text[i] == ';':
            out.append(text[start:i + 1])
            start = i = i + 1
        else:
            i += 1
    return [clean(s) for s in out if clean(s)]


def clean(statement):
    """The statement with pgrx's marker lines dropped, and its code apart from comments."""
    lines = [l for l in statement.strip('\n').split('\n') if not MARKER.match(l.strip())]
    return '\n'.join(lines).strip('\n')


def code(statement):
    """The statement without its leading comment lines."""
    lines = statement.split('\n')
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith('--')):
        lines.pop(0)
    return '\n'.join(lines)


def head(statement):
    """A routine's name, arguments and result: what CREATE OR REPLACE cannot change."""
    c = code(statement)
    m = re.search(r'\b(LANGUAGE|AS)\b', c)
    return re.sub(r'\s+', ' ', c[:m.start()] if m else c)


def drop_signature(statement):
    """The routine's name and argument list for DROP (without defaults)."""
    c = code(statement)
    m = ROUTINE.match(c)
    depth, i = 1, m.end()
    while depth:
        depth += {'(': 1, ')': -1}.get(c[i], 0)
        i += 1
    args = re.sub(r'\s+DEFAULT\s+[^,]+', '', c[m.end():i - 1])
    args = re.sub(r'\s+', ' ', args).strip()
    return f'{m.group(1)} {m.group(2)}({args})'


def index(stmts):
    """Routines, views and routine comments by name; the rest by their code."""
    objects, others = {}, {}
    for s in stmts:
        c = code(s)
        if m := ROUTINE.match(c):
            objects[('routine', m.group(2))] = s
        elif m := VIEW.match(c):
            objects[('view', m.group(1))] = s
        elif m := COMMENT.match(c):
            objects[('comment', m.group(2))] = s
        else:
            others[re.sub(r'\s+', ' ', c)] = s
    return objects, others


def or_replace(statement):
    return re.sub(r'CREATE\s+(FUNCTION|PROCEDURE|VIEW)', r'CREATE OR REPLACE \1', statement, count=1)


def main(old_path, new_path):
    old, old_others = index(statements(open(old_path).read()))
    new, new_others = index(statements(open(new_path).read()))
    drops, creates = [], []
    for key, s in old.items():
        kind, name = key
        if key not in new and kind == 'routine':
            drops.append(f'DROP {drop_signature(s)};')
        elif key not in new and kind == 'view':
            drops.append(f'DROP VIEW {name};')
    for key, s in new.items():
        kind, name = key
        before = old.get(key)
        if before is not None and code(before) == code(s):
            continue
        if kind == 'routine' and before is not None and head(before) != head(s):
            drops.append(f'DROP {drop_signature(before)};')
            creates.append(s)
        elif kind in ('routine', 'view') and before is not None:
            creates.append(or_replace(s))
        else:
            creates.append(s)
    print('-- Generated by scripts/upgrade_delta.py: routines and views.')
    for d in reversed(drops):
        print(d)
    print()
    for c in creates:
        print(c)
        print()
    for key in old_others.keys() - new_others.keys():
        print('-- by hand: gone:', key[:110])
    for key in new_others.keys() - old_others.keys():
        print('-- by hand: new or changed:', key[:110])


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
