//! Truncation by time and active metadata (SPEC R1.5, R1.6).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::time::Timestamp;
use crate::update::ContextUpdate;

/// Keeps the updates with `timestamp <= until` (in their order) and returns how many were removed.
pub fn truncate_history(history: &mut Vec<ContextUpdate>, until: Timestamp) -> usize {
    let before = history.len();
    history.retain(|update| update.timestamp <= until);
    before - history.len()
}

/// The metadata without the keys whose toggle is explicitly `false`; keys without a toggle stay.
pub fn active_metadata(
    metadata: &Map<String, Value>,
    toggles: &BTreeMap<String, bool>,
) -> Map<String, Value> {
    metadata
        .iter()
        .filter(|(key, _)| toggles.get(key.as_str()) != Some(&false))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::UpdateType;
    use serde_json::json;

    #[test]
    fn truncation_keeps_entries_at_or_before_the_time_and_counts_the_rest() {
        let at = |t: f64| {
            ContextUpdate::new(UpdateType::MESSAGE, json!(t)).at(Timestamp::from_secs(t).unwrap())
        };
        let mut history = vec![at(1.0), at(3.0), at(2.0), at(4.0)];
        let removed = truncate_history(&mut history, Timestamp::from_secs(2.0).unwrap());
        assert_eq!(removed, 2);
        assert_eq!(history, vec![at(1.0), at(2.0)]);
        assert_eq!(
            truncate_history(&mut history, Timestamp::from_secs(9.0).unwrap()),
            0
        );
    }

    #[test]
    fn only_an_explicit_false_toggle_hides_a_key() {
        let metadata = json!({"a": 1, "b": 2, "c": 3}).as_object().unwrap().clone();
        let toggles = BTreeMap::from([("a".to_owned(), false), ("b".to_owned(), true)]);
        let active = active_metadata(&metadata, &toggles);
        assert_eq!(Value::Object(active), json!({"b": 2, "c": 3}));
    }
}
