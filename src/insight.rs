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
pub enum Value<N> {
    Absent,
    Number(N),
    NotANumber,
}

/// The five adjustments of a document, in `TRAITS` order, or None when it is rejected.
pub fn adjustments<N>(
    is_object: bool,
    mut lookup: impl FnMut(&str) -> Value<N>,
    zero: impl Fn() -> N,
    within_limit: impl Fn(&N) -> bool,
) -> Option<Vec<N>> {
    if !is_object {
        return None;
    }
    TRAITS
        .iter()
        .map(|trait_name| match lookup(trait_name) {
            Value::Absent => Some(zero()),
            Value::Number(n) if within_limit(&n) => Some(n),
            Value::Number(_) | Value::NotANumber => None,
        })
        .collect()
}

/// How many keys of a document are not Big Five traits.
pub fn unknown_keys(is_object: bool, keys: usize, traits_present: usize) -> usize {
    if is_object {
        keys - traits_present
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(doc: &[(&str, Option<f64>)]) -> Option<Vec<f64>> {
        let map: HashMap<&str, Option<f64>> = doc.iter().cloned().collect();
        adjustments(
            true,
            |key| match map.get(key) {
                None => Value::Absent,
                Some(Some(n)) => Value::Number(*n),
                Some(None) => Value::NotANumber,
            },
            || 0.0,
            |n| n.abs() <= MAX_MAGNITUDE as f64,
        )
    }

    #[test]
    fn absent_traits_adjust_by_zero() {
        assert_eq!(
            check(&[("openness", Some(2.0))]),
            Some(vec![2.0, 0.0, 0.0, 0.0, 0.0])
        );
        assert_eq!(check(&[]), Some(vec![0.0; 5]));
        assert_eq!(
            check(&[("neuroticism", Some(-0.5)), ("extraversion", Some(1.5))]),
            Some(vec![0.0, 0.0, 1.5, 0.0, -0.5])
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
        let never_looked_up = |_: &str| -> Value<f64> { panic!("not an object") };
        assert!(adjustments(false, never_looked_up, || 0.0, |_| true).is_none());
    }

    #[test]
    fn unknown_keys_are_the_rest() {
        assert_eq!(unknown_keys(true, 4, 1), 3);
        assert_eq!(unknown_keys(true, 5, 5), 0);
        assert_eq!(unknown_keys(false, 2, 0), 0);
    }
}
