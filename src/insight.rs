//! Insight documents: which ones count, and what they adjust.
//!
//! A document counts when it is a JSON object whose Big Five keys, where present, hold
//! numbers of magnitude at most 100; an absent trait adjusts by 0. Any other document is
//! rejected whole. Other keys are ignored (and counted). Numbers stay exact: the caller
//! supplies the number type and the magnitude check.

pub const TRAITS: [&str; 5] = [
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
];
pub const MAX_MAGNITUDE: i32 = 100;

/// What a document holds under one key.
#[derive(Clone, Copy)]
pub enum Value<N> {
    Absent,
    Number(N),
    NotANumber,
}

impl<N> Value<N> {
    /// The same value with its number mapped.
    pub fn map<M>(self, f: impl FnOnce(N) -> M) -> Value<M> {
        match self {
            Value::Absent => Value::Absent,
            Value::Number(n) => Value::Number(f(n)),
            Value::NotANumber => Value::NotANumber,
        }
    }
}

/// The five adjustments of a document, in `TRAITS` order, or None when it is rejected.
/// `values` are what the document holds under each of `TRAITS`, or None when it is not
/// an object.
pub fn adjustments<N: Copy>(
    values: Option<[Value<N>; 5]>,
    zero: N,
    within_limit: impl Fn(&N) -> bool,
) -> Option<[N; 5]> {
    let values = values?;
    let mut adjustments = [zero; 5];
    for (adjustment, value) in adjustments.iter_mut().zip(values) {
        *adjustment = match value {
            Value::Absent => zero,
            Value::Number(n) if within_limit(&n) => n,
            Value::Number(_) | Value::NotANumber => return None,
        };
    }
    Some(adjustments)
}

/// Why a document is rejected, in the order the checks that reject it come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    NotAnObject,
    NotANumber,
    OverTheLimit,
}

/// Why `adjustments` rejected the document with these `values` (None: not an object):
/// a trait that is not a number comes before one over the limit.
pub fn rejection<N>(values: Option<&[Value<N>; 5]>) -> Rejection {
    match values {
        None => Rejection::NotAnObject,
        Some(v) if v.iter().any(|x| matches!(x, Value::NotANumber)) => Rejection::NotANumber,
        Some(_) => Rejection::OverTheLimit,
    }
}

/// How many of an object's `keys` are not Big Five traits, given its `values` under TRAITS.
pub fn unknown_keys<N>(keys: usize, values: &[Value<N>; 5]) -> usize {
    keys - values
        .iter()
        .filter(|v| !matches!(v, Value::Absent))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(doc: &[(&str, Option<f64>)]) -> Option<[f64; 5]> {
        let map: HashMap<&str, Option<f64>> = doc.iter().cloned().collect();
        adjustments(Some(values(&map)), 0.0, |n| n.abs() <= MAX_MAGNITUDE as f64)
    }

    fn values(map: &HashMap<&str, Option<f64>>) -> [Value<f64>; 5] {
        TRAITS.map(|key| match map.get(key) {
            None => Value::Absent,
            Some(Some(n)) => Value::Number(*n),
            Some(None) => Value::NotANumber,
        })
    }

    #[test]
    fn absent_traits_adjust_by_zero() {
        assert_eq!(
            check(&[("openness", Some(2.0))]),
            Some([2.0, 0.0, 0.0, 0.0, 0.0])
        );
        assert_eq!(check(&[]), Some([0.0; 5]));
        assert_eq!(
            check(&[("neuroticism", Some(-0.5)), ("extraversion", Some(1.5))]),
            Some([0.0, 0.0, 1.5, 0.0, -0.5])
        );
    }

    #[test]
    fn the_limit_is_inclusive() {
        assert!(check(&[("openness", Some(100.0)), ("neuroticism", Some(-100.0))]).is_some());
        assert!(check(&[("openness", Some(100.5))]).is_none());
        assert!(check(&[("agreeableness", Some(-1e300))]).is_none());
    }

    #[test]
    fn a_trait_that_is_not_a_number_rejects_the_document() {
        assert!(check(&[("openness", Some(1.0)), ("conscientiousness", None)]).is_none());
    }

    #[test]
    fn only_objects_count() {
        assert!(adjustments(None, 0.0, |_: &f64| true).is_none());
    }

    #[test]
    fn each_rejection_has_its_reason() {
        assert_eq!(rejection::<f64>(None), Rejection::NotAnObject);
        let not_a_number = values(&HashMap::from([
            ("openness", Some(500.0)),
            ("neuroticism", None),
        ]));
        assert_eq!(rejection(Some(&not_a_number)), Rejection::NotANumber);
        let over = values(&HashMap::from([("openness", Some(500.0))]));
        assert_eq!(rejection(Some(&over)), Rejection::OverTheLimit);
    }

    #[test]
    fn unknown_keys_are_the_rest() {
        let map = HashMap::from([("openness", Some(1.0)), ("neuroticism", None)]);
        assert_eq!(unknown_keys(4, &values(&map)), 2);
        assert_eq!(unknown_keys(0, &values(&HashMap::new())), 0);
    }
}
