//! #[pg_test]s: the Postgres glue against the pure Rust it wraps, inside a Postgres
//! with bondhu installed (`cargo pgrx test`, run by scripts/test.sh). Each test runs in
//! a connection of its own, in a transaction rolled back at its end.

#[pgrx::pg_schema]
mod tests {
    use crate::decimal::{self, Fixed, ONE};
    use crate::insight::{self, Value, MAX_MAGNITUDE, TRAITS};
    use pgrx::prelude::*;
    use pgrx::AnyNumeric;
    use std::str::FromStr;

    /// A deterministic generator (xorshift64), so that a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// A number of magnitude up to `whole` (+ a fraction), with 0 to 24 decimals.
        fn number(&mut self, whole: u64) -> i128 {
            let decimals = self.below(25) as u32;
            let unit = 10i128.pow(24 - decimals);
            let steps = (i128::from(whole) * ONE / unit) as u128;
            let magnitude = (u128::from(self.next()) << 64 | u128::from(self.next())) % (steps + 1);
            self.signed(magnitude as i128 * unit)
        }

        /// `magnitude`, negated half of the time.
        fn signed(&mut self, magnitude: i128) -> i128 {
            if self.below(2) == 0 {
                -magnitude
            } else {
                magnitude
            }
        }
    }

    /// An insight the test writes: its JSON text, and what the pure Rust rule sees in
    /// it (None: not an object).
    struct Insight {
        json: String,
        values: Option<[Value<Fixed>; 5]>,
        keys: usize,
        fresh: bool,
        from_chat: bool,
    }

    impl Insight {
        /// The insight as a row of VALUES (doc, fresh, from_chat).
        fn values_row(&self) -> String {
            format!(
                "('{}'::jsonb, {}, {})",
                self.json, self.fresh, self.from_chat
            )
        }
    }

    fn generate(rng: &mut Rng) -> Insight {
        let (fresh, from_chat) = (rng.below(8) != 0, rng.below(2) == 0);
        let not_an_object = match rng.below(12) {
            0 => Some("[1, 2]"),
            1 => Some("7"),
            _ => None,
        };
        if let Some(json) = not_an_object {
            return Insight {
                json: json.into(),
                values: None,
                keys: 0,
                fresh,
                from_chat,
            };
        }
        let mut members = Vec::new();
        let values = TRAITS.map(|key| {
            let number = match rng.below(20) {
                0..=7 => return Value::Absent,
                8 => None,
                // over the limit, by as little as 10^-24
                9 => {
                    let over = i128::from(MAX_MAGNITUDE) * ONE + 1 + rng.number(50).abs();
                    Some(rng.signed(over))
                }
                // at the limit
                10 => Some(rng.signed(i128::from(MAX_MAGNITUDE) * ONE)),
                _ => Some(rng.number(MAX_MAGNITUDE as u64 - 1)),
            };
            let (text, value) = match number {
                Some(n) => (
                    decimal::to_decimal_string(n),
                    Value::Number(Fixed::Exact(n)),
                ),
                None => ("\"high\"".to_string(), Value::NotANumber),
            };
            members.push(format!("\"{key}\": {text}"));
            value
        });
        for unknown in ["mood", "Openness", "openness "] {
            if rng.below(4) == 0 {
                members.push(format!("\"{unknown}\": 1"));
            }
        }
        Insight {
            keys: members.len(),
            json: format!("{{{}}}", members.join(", ")),
            values: Some(values),
            fresh,
            from_chat,
        }
    }

    /// The aggregates over generated documents (stale and fresh, from both sources,
    /// objects and not, numbers to 10^-24, at and over the limit, unknown keys) count
    /// and add up exactly what src/insight.rs and src/decimal.rs compute for them.
    #[pg_test]
    fn the_aggregates_equal_the_rust_rule() {
        let mut rng = Rng(0x5EED_B0D4);
        let insights: Vec<Insight> = (0..400).map(|_| generate(&mut rng)).collect();
        let (mut counts, mut sums) = ([0i32; 9], [0i128; 5]);
        for insight in &insights {
            if !insight.fresh {
                counts[4] += 1;
                continue;
            }
            let adjustments = insight::adjustments(insight.values, Fixed::Exact(0), |n| {
                decimal::within(*n, MAX_MAGNITUDE)
            });
            let (Some(adjustments), Some(values)) = (adjustments, insight.values) else {
                counts[3] += 1;
                counts[match insight::rejection(insight.values.as_ref()) {
                    insight::Rejection::NotAnObject => 6,
                    insight::Rejection::NotANumber => 7,
                    insight::Rejection::OverTheLimit => 8,
                }] += 1;
                continue;
            };
            counts[0] += 1;
            counts[if insight.from_chat { 1 } else { 2 }] += 1;
            counts[5] += insight::unknown_keys(insight.keys, &values) as i32;
            for (sum, adjustment) in sums.iter_mut().zip(adjustments) {
                let Fixed::Exact(v) = adjustment else {
                    unreachable!("every generated number is exact")
                };
                *sum += v;
            }
        }
        assert!(counts[0] > 100 && counts[3] > 50 && counts[4] > 20 && counts[5] > 20);
        assert!(
            counts[6] > 0 && counts[7] > 0 && counts[8] > 0,
            "the generator makes each kind of rejection"
        );

        let rows = insights
            .iter()
            .map(Insight::values_row)
            .collect::<Vec<_>>()
            .join(",\n");
        let (got_counts, got_sums) = Spi::get_two::<Vec<i32>, Vec<AnyNumeric>>(&format!(
            "SELECT bondhu.insight_counts(doc, fresh, from_chat), bondhu.insight_sums(doc, fresh, from_chat)
             FROM (VALUES {rows}) AS d(doc, fresh, from_chat)"
        ))
        .expect("the aggregates run");
        assert_eq!(got_counts, Some(counts.to_vec()));
        let expected: Vec<AnyNumeric> = sums
            .iter()
            .map(|&s| AnyNumeric::from_str(&decimal::to_decimal_string(s)).expect("a numeric"))
            .collect();
        assert_eq!(got_sums, Some(expected));
    }

    /// A JSON value for the document reader's test: mostly numbers (to 10^-30, so that
    /// some are finer than the fixed point), else a string (long enough, now and then,
    /// for the document to be compressed, or stored out of line when it does not
    /// compress), a boolean, null, or a nested container.
    fn json_value(rng: &mut Rng) -> String {
        match rng.below(10) {
            0..=4 => decimal::to_decimal_string(rng.number(150)),
            5 => {
                let digits = rng.below(1000) as i128;
                format!("{}e-30", rng.signed(digits))
            }
            6 => match rng.below(5) {
                4 => format!(
                    "\"{}\"",
                    (0..3000)
                        .map(|_| char::from(b'!' + rng.below(90) as u8))
                        .filter(|c| !matches!(c, '"' | '\\'))
                        .collect::<String>()
                ),
                n => format!("\"{}\"", "x".repeat([0, 3, 40, 5000][n as usize])),
            },
            7 => ["true", "false", "null"][rng.below(3) as usize].into(),
            _ => ["[1, 2]", "{\"openness\": 1}", "[]"][rng.below(3) as usize].into(),
        }
    }

    /// bondhu's jsonb reader (src/jsonb.rs) sees in stored documents what Postgres's
    /// own operators see: each trait's value a number or not, each number exactly, and
    /// the count of keys. Documents of 0 to 45 keys (an object stores the end offset
    /// instead of a length in every 32nd entry, of keys and of values), keys near the
    /// traits' names (the same length, a prefix, other case), values of every kind;
    /// stored in a table, so that small ones keep a 1-byte header (read unaligned, in
    /// place) and large ones are compressed or stored out of line (read from a copy).
    /// Roots that are not objects too.
    #[pg_test]
    fn the_document_reader_equals_postgres() {
        let mut rng = Rng(0x0B1E_C7ED);
        let names = [
            "openness",
            "conscientiousness",
            "extraversion",
            "agreeableness",
            "neuroticism",
            "opennesz",
            "Openness",
            "open",
            "neuroticisms",
            "a",
            "",
            "mood",
            "zz",
        ];
        let mut docs: Vec<String> = ["[1, 2]", "7", "\"openness\"", "null", "{}", "[]"]
            .map(String::from)
            .to_vec();
        for _ in 0..600 {
            let keys = [rng.below(6), rng.below(20), rng.below(46)][rng.below(3) as usize];
            let members: Vec<String> = (0..keys)
                .map(|k| {
                    // in the larger objects mostly keys of their own: over 32 of them
                    // put stored offsets among the keys' entries too
                    let key = if rng.below(3) == 0 || keys > 30 && rng.below(4) != 0 {
                        format!("k{k}")
                    } else {
                        names[rng.below(names.len() as u64) as usize].to_string()
                    };
                    format!("\"{key}\": {}", json_value(&mut rng))
                })
                .collect();
            docs.push(format!("{{{}}}", members.join(", ")));
        }
        let docs_len = docs.len() as i64;
        Spi::run_with_args(
            "CREATE TABLE reader_docs AS
             SELECT o AS id, d::jsonb AS doc FROM unnest($1::text[]) WITH ORDINALITY AS u(d, o)",
            &[docs.into()],
        )
        .expect("the documents are stored");
        // the stored documents reach each path of the reader
        let coverage = Spi::get_one::<Vec<i64>>(
            "SELECT ARRAY[count(*) FILTER (WHERE pg_column_size(doc) < 127),
                          count(*) FILTER (WHERE pg_column_compression(doc) IS NOT NULL),
                          count(*) FILTER (WHERE pg_column_compression(doc) IS NULL
                                             AND octet_length(doc::text) > 2500),
                          count(*) FILTER (WHERE jsonb_typeof(doc) = 'object'
                                             AND (SELECT count(*) FROM jsonb_object_keys(doc)) > 32),
                          count(*) FILTER (WHERE doc::text ~ 'e-|0{24}')]
             FROM reader_docs",
        )
        .expect("the documents are counted")
        .expect("not NULL");
        assert!(coverage.iter().all(|&n| n > 5), "coverage: {coverage:?}");
        // what Postgres's operators see in each document, under the pipeline's rule
        let (compared, differing) = Spi::get_two_with_args::<i64, Vec<i64>>(
            "WITH seen AS (
                 SELECT d.id, d.doc, jsonb_typeof(d.doc) = 'object' AS object,
                        ARRAY(SELECT jsonb_typeof(d.doc -> t.name)
                              FROM unnest($1::text[]) WITH ORDINALITY t(name, i) ORDER BY t.i) AS types,
                        ARRAY(SELECT CASE WHEN jsonb_typeof(d.doc -> t.name) = 'number'
                                          THEN (d.doc ->> t.name)::numeric END
                              FROM unnest($1::text[]) WITH ORDINALITY t(name, i) ORDER BY t.i) AS numbers
                 FROM reader_docs d
             ), judged AS (
                 SELECT s.*, CASE WHEN NOT s.object THEN 7
                                  WHEN EXISTS (SELECT FROM unnest(s.types) t WHERE t <> 'number') THEN 8
                                  WHEN EXISTS (SELECT FROM unnest(s.numbers) n WHERE abs(n) > 100) THEN 9
                             END AS reason
                 FROM seen s
             ), expected AS (
                 SELECT j.id,
                        CASE WHEN j.reason IS NULL
                             THEN ARRAY[1, 1, 0, 0, 0, (SELECT count(*) FROM jsonb_object_keys(j.doc) k
                                                        WHERE k <> ALL ($1::text[])), 0, 0, 0]::integer[]
                             ELSE ARRAY[0, 0, 0, 1, 0, 0, (j.reason = 7)::int, (j.reason = 8)::int,
                                        (j.reason = 9)::int] END AS n,
                        CASE WHEN j.reason IS NULL THEN ARRAY(SELECT coalesce(n, 0) FROM unnest(j.numbers) n)
                             ELSE '{0,0,0,0,0}'::numeric[] END AS d
                 FROM judged j
             ), got AS (
                 SELECT d.id, bondhu.insight_counts(d.doc, true, true) AS n,
                        bondhu.insight_sums(d.doc, true, true) AS d
                 FROM reader_docs d GROUP BY d.id
             )
             SELECT count(*), array_agg(e.id ORDER BY e.id) FILTER (WHERE g.n IS DISTINCT FROM e.n
                                                                       OR g.d IS DISTINCT FROM e.d)
             FROM expected e JOIN got g USING (id)",
            &[TRAITS.map(String::from).to_vec().into()],
        )
        .expect("the documents are read");
        assert_eq!(compared, Some(docs_len));
        assert_eq!(
            differing, None,
            "documents read otherwise than Postgres reads them"
        );
        let accepted = Spi::get_one::<i64>(
            "SELECT count(*) FROM (SELECT bondhu.insight_counts(doc, true, true) AS n
                                   FROM reader_docs GROUP BY id) x WHERE n[1] = 1",
        );
        assert!(
            matches!(accepted, Ok(Some(n)) if n > 100),
            "accepted: {accepted:?}"
        );
    }

    /// The numerics the sums are made of, built from the fixed point directly
    /// (decimal::to_numeric_data), are byte for byte what numeric_in makes of the
    /// decimal literal: same value, same display scale, same digits.
    #[pg_test]
    fn fixed_point_numerics_equal_numeric_in() {
        let mut rng = Rng(0xD161_7500);
        let mut values: Vec<i128> = (0..2000)
            .map(|i| rng.number([1, 100, 10_000, 100_000_000_000_000][i % 4]))
            .collect();
        values.extend([0, 1, -1, ONE, -ONE, i128::MAX, i128::MIN, i128::MIN + 1]);
        let built: Vec<AnyNumeric> = values
            .iter()
            .map(|&v| crate::aggregate::fixed_numeric(v))
            .collect();
        let literals: Vec<String> = values
            .iter()
            .map(|&v| decimal::to_decimal_string(v))
            .collect();
        let (compared, differing) = Spi::get_two_with_args::<i64, Vec<String>>(
            "SELECT count(*), array_agg(x ORDER BY o) FILTER
                        (WHERE numeric_send(n) IS DISTINCT FROM numeric_send(x::numeric))
             FROM unnest($1::numeric[], $2::text[]) WITH ORDINALITY AS u(n, x, o)",
            &[built.into(), literals.into()],
        )
        .expect("numeric_in reads every literal");
        assert_eq!(compared, Some(values.len() as i64));
        assert_eq!(differing, None);
    }

    /// The trait math in integers (bondhu.adjusted_trait_fixed_point) gives, bit for
    /// bit, the double that defines bondhu.adjusted_trait (the numeric expression, or
    /// for a sum of 0 the current value as it is, clamped), wherever it gives one; and
    /// adjusted_trait, which takes it first, always does.
    /// 120,000 seeded cases: random values at every precision, exact ties at the 15th
    /// digit (50 + an odd multiple of 2^-14), tiny and huge magnitudes, the limits of
    /// the integer computation, specials and NULLs, and totals finer than 10^-24, of
    /// 10,000 and more, or in numeric's long form; dampening from 10^-24 to 1 with up to
    /// 22 digits, and one in the long form.
    #[pg_test]
    fn the_trait_math_in_integers_equals_numeric() {
        Spi::run(
            "SELECT setseed(0.4711);
             CREATE TABLE trait_cases AS
             SELECT c.current, t.total, d.dampening,
                    CASE WHEN t.total = 0 THEN least(100, greatest(0, coalesce(c.current, 50)))
                         ELSE least(100, greatest(0, coalesce(c.current, 50)::numeric + d.dampening * t.total))::float8
                    END AS by_numeric
             FROM generate_series(1, 120000) g
             CROSS JOIN LATERAL (SELECT CASE g % 8
                 WHEN 0 THEN random() * 100
                 WHEN 1 THEN round((random() * 100)::numeric, g / 8 % 16)::float8
                 WHEN 2 THEN 50 + (2 * floor(random() * 32768) + 1) / 16384
                 WHEN 3 THEN (random() - 0.5) * 10 ^ (floor(random() * 46) - 23)
                 WHEN 4 THEN NULL
                 WHEN 5 THEN ('{0, -0, 100, NaN, Infinity, -Infinity, 1e-300, 99.99999999999999,
                                100.00000000000001, 1e20, 1e21, 9.9e-23, 1e-22, -1e-22, 1.7976931348623157e308,
                                1.23456789012345e-23}'::float8[])[1 + g / 8 % 16]
                 WHEN 6 THEN random() * 200 - 50
                 ELSE round((random() * 100)::numeric, 2)::float8 END AS current) c
             CROSS JOIN LATERAL (SELECT CASE g % 13
                 WHEN 0 THEN 1e-25 + g % 7
                 WHEN 1 THEN 10000 + g % 5
                 WHEN 2 THEN 0
                 WHEN 3 THEN NULL
                 WHEN 4 THEN (100 - round(c.current::numeric)) * 10
                 -- 70 decimals: numeric.c's long form (a display scale over 63)
                 WHEN 5 THEN round(((random() - 0.5) * 600)::numeric, 3)::numeric(100, 70)
                 ELSE round(((random() - 0.5) * 6000)::numeric, (random() * 24)::int) END AS total) t
             CROSS JOIN LATERAL (SELECT ('{0.1, 1, 0.05, 0.123456789, 0.3333333333333333333333, 1e-24, 0.5,
                                           0.25}'::numeric[] || 0.1::numeric(90, 70))[1 + g % 9] AS dampening) d;",
        )
        .expect("the cases are made");
        let (decided, differing) = Spi::get_two::<i64, i64>(
            "SELECT count(*) FILTER (WHERE f IS NOT NULL),
                    count(*) FILTER (WHERE float8send(f) <> float8send(by_numeric))
             FROM (SELECT bondhu.adjusted_trait_fixed_point(current, total, dampening) AS f, by_numeric
                   FROM trait_cases) x",
        )
        .expect("compared");
        assert_eq!(differing, Some(0), "the integers' double is numeric's");
        assert!(
            decided.unwrap_or(0) > 80_000,
            "most cases are decided in integers: {decided:?}"
        );
        let (ties, wrong) = Spi::get_two::<i64, i64>(
            "SELECT count(*) FILTER (WHERE bondhu.adjusted_trait_fixed_point(current, total, dampening) IS NOT NULL
                                       AND current > 50 AND current < 54 AND (current * 16384)::bigint % 2 = 1
                                       AND current * 16384 = floor(current * 16384)),
                    count(*) FILTER (WHERE float8send(bondhu.adjusted_trait(current, total, dampening))
                                           IS DISTINCT FROM float8send(by_numeric))
             FROM trait_cases",
        )
        .expect("compared");
        assert!(
            ties.unwrap_or(0) > 5_000,
            "ties at the 15th digit: {ties:?}"
        );
        assert_eq!(
            wrong,
            Some(0),
            "adjusted_trait is the numeric expression, or keeps the value"
        );
        // a sum of 0 keeps the value even with a dampening of 40 digits, which the
        // integers do not hold
        let kept = Spi::get_one::<bool>(
            "SELECT float8send(bondhu.adjusted_trait(50.012345678901234, 0,
                                                     0.1000000000000000000000000000000000000001))
                    = float8send(50.012345678901234::float8)",
        )
        .expect("compared");
        assert_eq!(
            kept,
            Some(true),
            "a sum of 0 keeps the value whatever the dampening"
        );
    }

    /// A parallel aggregate (workers' partial states serialized, handed to the leader,
    /// combined) gives what the serial one does, group by group: over the generated
    /// documents and ones finer than the fixed point (the numeric sums of the state).
    #[pg_test]
    fn a_parallel_aggregate_equals_a_serial_one() {
        let mut rng = Rng(0xC0DE_5EED);
        let mut values: Vec<String> = (0..400).map(|_| generate(&mut rng).values_row()).collect();
        values.push("('{\"openness\": 1e-30, \"neuroticism\": -3e-29}'::jsonb, true, true)".into());
        Spi::run(&format!(
            "CREATE TABLE parallel_docs AS
             SELECT g % 37 AS grp, d.doc, d.fresh, d.from_chat
             FROM (VALUES {}) AS d(doc, fresh, from_chat), generate_series(1, 60) g;
             ANALYZE parallel_docs;
             SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
             SET LOCAL min_parallel_table_scan_size = 0; SET LOCAL max_parallel_workers_per_gather = 2;",
            values.join(",\n")
        ))
        .expect("the documents are written");
        let query = "SELECT grp, bondhu.insight_counts(doc, fresh, from_chat) AS n,
                            bondhu.insight_sums(doc, fresh, from_chat) AS d
                     FROM parallel_docs GROUP BY grp";
        let explain = Spi::connect(|client| {
            client
                .select(&format!("EXPLAIN (COSTS OFF) {query}"), None, &[])
                .expect("EXPLAIN runs")
                .map(|row| row.get::<String>(1).ok().flatten().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(
            explain.contains("Partial"),
            "the aggregate runs in parallel: {explain}"
        );
        Spi::run(&format!("CREATE TABLE parallel_totals AS {query}")).expect("in parallel");
        Spi::run(&format!(
            "SET LOCAL max_parallel_workers_per_gather = 0; CREATE TABLE serial_totals AS {query}"
        ))
        .expect("serially");
        let differing = Spi::get_one::<i64>(
            "SELECT count(*) FROM ((TABLE parallel_totals EXCEPT TABLE serial_totals)
                                   UNION ALL (TABLE serial_totals EXCEPT TABLE parallel_totals)) x",
        );
        assert_eq!(differing, Ok(Some(0)));
        let finer = Spi::get_one::<bool>(
            "SELECT bool_or(d[1] <> round(d[1], 24) AND d[5] <> round(d[5], 24)) FROM parallel_totals",
        );
        assert_eq!(
            finer,
            Ok(Some(true)),
            "sums finer than the fixed point were combined"
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM serial_totals"),
            Ok(Some(37))
        );
    }

    fn position() -> i64 {
        Spi::get_one::<i64>("SELECT bondhu.ingest_position()")
            .expect("a position")
            .expect("not NULL")
    }

    fn stored_incarnation() -> i64 {
        Spi::get_one::<i32>("SELECT incarnation FROM bondhu.pipeline_state")
            .expect("the pipeline state")
            .map(i64::from)
            .expect("one row")
    }

    /// A backend reads the incarnation once and keeps it. An UPDATE of the state's
    /// row that keeps the incarnation does not reach the cache (it invalidates no
    /// relation; one that changes it does: tests/isolation/incarnation); once the
    /// table changes (DROP EXTENSION, or here ALTER TABLE, after the row was made to
    /// say another cluster as a restored one does), the cache forgets it and the next
    /// position has the new incarnation.
    #[pg_test]
    fn the_incarnation_is_cached_until_the_state_table_changes() {
        let first = position();
        assert_eq!(position(), first, "the same transaction, the same position");
        let incarnation = first >> 48;
        assert_eq!(incarnation, stored_incarnation());
        Spi::run("UPDATE bondhu.pipeline_state SET system_identifier = system_identifier + 1")
            .expect("the state changes");
        assert_eq!(
            position() >> 48,
            incarnation,
            "the row alone does not reach the cache"
        );
        Spi::run("ALTER TABLE bondhu.pipeline_state ALTER COLUMN advanced_at SET DEFAULT NULL")
            .expect("the state table changes");
        assert_eq!(position() >> 48, incarnation + 1, "a new incarnation");
        assert_eq!(stored_incarnation(), incarnation + 1);
        assert_eq!(
            position(),
            (incarnation + 1) << 48 | (first & ((1 << 48) - 1))
        );
    }
}
