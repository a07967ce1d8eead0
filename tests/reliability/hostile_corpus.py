#!/usr/bin/env python3
"""A reproducible corpus of hostile insight documents, and what bondhu must make of it.

Writes one INSERT per document (so a document Postgres refuses at input fails alone)
and the expected outcome: how many documents are stored, applied and rejected, and how
many Postgres refuses at input. The oracle is bondhu's rule: a document counts when it
is a JSON object whose Big Five keys, where present, hold numbers of magnitude at most
100; jsonb keeps the last of duplicate keys. Numbers are compared exactly (Decimal).
"""
import argparse
import json
import random
import sys
from decimal import Decimal

TRAITS = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
USER = "00000000-0000-0000-0000-0000000000ee"


def counts(text):
    """Whether bondhu applies a document Postgres stored (parsed as jsonb would)."""
    doc = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    if not isinstance(doc, dict):
        return False
    for trait in TRAITS:
        if trait in doc:
            value = doc[trait]
            if isinstance(value, bool) or not isinstance(value, Decimal) or abs(value) > 100:
                return False
    return True


def nested(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


def stored_document(rng):
    """Text of a document that jsonb accepts."""
    trait = rng.choice(TRAITS)
    kind = rng.randrange(14)
    if kind == 0:
        return json.dumps({t: round(rng.uniform(-5, 5), 2) for t in rng.sample(TRAITS, 3)})
    if kind == 1:  # magnitudes at and around the limit, and enormous ones
        value = rng.choice(["100", "-100", "100.0000000000000000001", "-100.5", "1e300", "-1e100000", "1E2", "0.1e3"])
        return '{"%s": %s}' % (trait, value)
    if kind == 2:  # NaN-like and other non-numbers
        value = rng.choice(['"NaN"', '"Infinity"', '"-inf"', '"1e3"', '"2"', "true", "false", "null", "{}", "[]"])
        return '{"%s": %s}' % (trait, value)
    if kind == 3:  # not an object
        return rng.choice(["[1, 2]", '"openness"', "3", "null", "true", '[{"openness": 1}]'])
    if kind == 4:  # deep nesting under an unknown key (ignored) or as a trait (rejected)
        key = rng.choice(["deep", trait])
        return '{"%s": %s, "agreeableness": 1}' % (key, nested(rng.choice([10, 500, 2000])))
    if kind == 5:  # duplicate keys: the last one counts
        a, b = rng.choice([("500", "1"), ("1", "500"), ('"x"', "2"), ("2", '"x"')])
        return '{"%s": %s, "%s": %s}' % (trait, a, trait, b)
    if kind == 6:  # large: a huge ignored value, or a huge array as a trait; 1 in 10 about 1 MB
        size = 1_000_000 if rng.random() < 0.1 else 50_000
        if rng.random() < 0.5:
            return '{"%s": 1, "blob": "%s"}' % (trait, "x" * size)
        return '{"%s": [%s]}' % (trait, ",".join(["1"] * (size // 3)))
    if kind == 7:  # escapes that are valid: a key spelled with escapes is the key
        return rng.choice(['{"open\\u006eess": 1}', '{"\\u00e9": 1, "neuroticism": -1}', '{"openness": 1, "note": "\\ud83d\\ude00"}'])
    if kind == 8:  # keys that are almost traits: ignored
        return '{"Openness": 50, " openness": 50, "openness ": 50, "extraversion": 0}'
    if kind == 9:  # many keys
        return json.dumps({f"k{i}": i for i in range(rng.randrange(1, 5000))} | {trait: 1})
    if kind == 10:  # SQL and control characters in strings
        return json.dumps({trait: 1, "note": "'); DROP TABLE chat_personality_insights; --\t\n\"\\"})
    if kind == 11:  # numbers in every JSON spelling
        return '{"%s": %s}' % (trait, rng.choice(["-0", "0.0", "1e-400", "-1E+2", "99.9999999999999999999"]))
    if kind == 12:  # empty object: an insight with nothing in it
        return "{}"
    return json.dumps({t: None for t in TRAITS})


def refused_document(rng):
    """Text that jsonb refuses at input: the insert fails, nothing is stored."""
    return rng.choice([
        '{"openness": NaN}', '{"openness": 1,}', '{"openness": Infinity}', "{'openness': 1}",
        '{"openness": "\\u0000"}', '{"openness": "\\ud800"}', '{"openness": 1e200000}',
        '{"deep": %s}' % nested(20000), '{"openness": 1', "",
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--sql", required=True)
    parser.add_argument("--expect", required=True)
    args = parser.parse_args()
    sys.setrecursionlimit(100_000)  # the oracle parses 2,000-deep documents
    rng = random.Random(args.seed)
    stored = applied = refused = 0
    with open(args.sql, "wb") as sql:
        for _ in range(args.count):
            roll = rng.random()
            if roll < 0.1:
                text = refused_document(rng).encode()
                refused += 1
            elif roll < 0.12:  # bytes that are not UTF-8: refused before jsonb sees them
                text = b'{"openness": "\xff\xfe"}'
                refused += 1
            else:
                text = stored_document(rng).encode()
                stored += 1
                applied += counts(text.decode())
            sql.write(b"INSERT INTO chat_personality_insights (user_id, adjustments) VALUES ('"
                      + USER.encode() + b"', $doc$" + text + b"$doc$);\n")
    with open(args.expect, "w") as out:
        out.write(f"stored={stored} applied={applied} rejected={stored - applied}\n")
    with open(args.expect + ".input", "w") as out:
        out.write(f"refused_at_input={refused}\n")


if __name__ == "__main__":
    main()
