//! Serde helpers writing optional durations as whole milliseconds, the unit config files use.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serialises `Some(d)` as its milliseconds (rounded down) and `None` as null.
pub(crate) fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// Reads milliseconds (or null) back into an optional duration.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
}
