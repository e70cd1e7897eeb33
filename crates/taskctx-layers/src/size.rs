//! Approximate memory sizes of cached values, and the weigher that turns two bounds (entries and
//! bytes) into the one capacity moka supports.

use std::mem::size_of;

use taskctx_domain::{TaskId, TaskRecord, Value};

/// Reference counts of an `Arc` allocation, which every cached record pays once.
const ARC_HEADER: usize = 2 * size_of::<usize>();

/// Approximate heap bytes held by one record: its fixed-size struct, every string and id, and the
/// JSON payloads (one `Value` per node plus string contents and object keys). Allocator overhead
/// and spare capacity are not counted, so real use is somewhat higher; the figure is for bounding
/// a cache, not for accounting. Walks JSON without recursion, so deep values cannot overflow the
/// stack. O(size of the record).
pub fn approx_record_bytes(record: &TaskRecord) -> u64 {
    let mut bytes = ARC_HEADER + size_of::<TaskRecord>();
    bytes += record.task_id.as_str().len() + record.goal.len();
    for text in [
        &record.output_type_description,
        &record.output_summary,
        &record.error_message,
        &record.sub_graph_id,
        &record.overall_objective,
    ]
    .into_iter()
    .flatten()
    {
        bytes += text.len();
    }
    bytes += record
        .parent_task_id
        .as_ref()
        .map_or(0, |p| p.as_str().len());
    bytes += record
        .child_task_ids
        .iter()
        .map(|c| size_of::<TaskId>() + c.as_str().len())
        .sum::<usize>();
    bytes += json_bytes(
        record
            .input_params
            .iter()
            .chain(record.aux_data.iter())
            // An object entry costs its key too; count it alongside the value.
            .map(|(key, value)| (size_of::<String>() + key.len(), value)),
        record.output_content.as_ref(),
    );
    bytes as u64
}

/// Bytes of JSON values: `entries` are object entries with their key cost, `extra` a lone value.
fn json_bytes<'a>(
    entries: impl Iterator<Item = (usize, &'a Value)>,
    extra: Option<&'a Value>,
) -> usize {
    let mut bytes = 0;
    let mut stack: Vec<&Value> = Vec::new();
    for (key_cost, value) in entries {
        bytes += key_cost;
        stack.push(value);
    }
    stack.extend(extra);
    while let Some(value) = stack.pop() {
        bytes += size_of::<Value>();
        match value {
            Value::String(s) => bytes += s.len(),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (key, item) in map {
                    bytes += size_of::<String>() + key.len();
                    stack.push(item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    bytes
}

/// The most weight units one entry may cost per unit of `max_entries`: finer units waste less
/// of the byte budget to rounding (see [`Weigher`]).
const MAX_GRANULARITY: u64 = 64;

/// Turns the two bounds of the cache into moka's single weighted capacity.
///
/// With `E = max_entries`, `B = max_bytes` and a granularity `K`, the capacity is `E·K` units
/// and an entry of `b` bytes weighs `max(K, ceil(b·E·K / B))` units:
///
/// - every entry weighs at least `K`, so at most `E·K / K = E` entries fit;
/// - every entry weighs at least `b·E·K / B`, so the bytes of all entries are at most
///   `(E·K) · B / (E·K) = B`.
///
/// `K = 1` is the plain scheme `max(1, ceil(b·E/B))`; its rounding can waste up to half the byte
/// budget (entries just over `B/E` bytes weigh 2). `K = 64` cuts that waste to under 2 %, and
/// `K` shrinks only when `E·K` would not fit the `u32` weights moka takes. Without a byte bound
/// every entry weighs 1 and the capacity is `E`. An entry larger than `B` is never cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Weigher {
    max_entries: u64,
    max_bytes: Option<u64>,
    granularity: u64,
}

impl Weigher {
    pub(crate) fn new(max_entries: u64, max_bytes: Option<u64>) -> Self {
        let granularity = match max_bytes {
            None => 1,
            Some(_) => (u64::from(u32::MAX) / max_entries.max(1)).clamp(1, MAX_GRANULARITY),
        };
        Self {
            max_entries,
            max_bytes,
            granularity,
        }
    }

    /// The capacity to give moka, in weight units.
    pub(crate) fn capacity(&self) -> u64 {
        self.max_entries.saturating_mul(self.granularity)
    }

    /// The weight of an entry of `bytes` bytes, or `None` if it must not be cached at all
    /// (caching disabled, or larger than the byte bound).
    pub(crate) fn weight(&self, bytes: u64) -> Option<u32> {
        if self.max_entries == 0 {
            return None;
        }
        let weight = match self.max_bytes {
            None => 1,
            Some(max_bytes) => {
                if bytes > max_bytes {
                    return None;
                }
                let scaled =
                    u128::from(bytes) * u128::from(self.max_entries) * u128::from(self.granularity);
                let units = scaled.div_ceil(u128::from(max_bytes.max(1)));
                units.max(u128::from(self.granularity))
            }
        };
        u32::try_from(weight)
            .ok()
            .filter(|w| u64::from(*w) <= self.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use taskctx_domain::TaskType;

    fn id(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    #[test]
    fn bigger_payloads_weigh_more() {
        let small = TaskRecord::new(id("a"), "g", TaskType::Think);
        let mut big = small.clone();
        big.output_content = Some(json!({"text": "x".repeat(10_000), "list": [1, 2, 3]}));
        let small_bytes = approx_record_bytes(&small);
        let big_bytes = approx_record_bytes(&big);
        assert!(small_bytes >= size_of::<TaskRecord>() as u64);
        assert!(
            big_bytes >= small_bytes + 10_000,
            "{small_bytes} {big_bytes}"
        );
    }

    #[test]
    fn deep_json_does_not_overflow_the_stack() {
        let mut value = json!(null);
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        let mut record = TaskRecord::new(id("deep"), "g", TaskType::Think);
        record.output_content = Some(value);
        assert!(approx_record_bytes(&record) > 100_000 * size_of::<Value>() as u64);
        // Dropping a value this deep recurses inside serde_json; leak it instead of testing that.
        std::mem::forget(record);
    }

    #[test]
    fn weights_bound_entries_and_bytes() {
        let w = Weigher::new(100, Some(10_000));
        assert_eq!(w.capacity(), 100 * 64);
        // Small entries weigh the minimum: 100 of them fill the cache.
        assert_eq!(w.weight(1), Some(64));
        assert_eq!(w.weight(100), Some(64));
        // An entry of B/10 bytes weighs a tenth of the capacity.
        assert_eq!(w.weight(1_000), Some(640));
        // Just over B/E: barely more than the minimum (K = 1 would double it).
        assert_eq!(w.weight(101), Some(65));
        assert_eq!(w.weight(10_000), Some(6_400));
        assert_eq!(w.weight(10_001), None);
    }

    #[test]
    fn no_byte_bound_counts_entries() {
        let w = Weigher::new(5, None);
        assert_eq!(w.capacity(), 5);
        assert_eq!(w.weight(u64::MAX), Some(1));
        assert_eq!(Weigher::new(0, None).weight(1), None);
    }

    #[test]
    fn huge_entry_counts_keep_weights_in_u32() {
        let w = Weigher::new(u64::from(u32::MAX), Some(1 << 40));
        assert_eq!(w.capacity(), u64::from(u32::MAX));
        assert_eq!(w.weight(1), Some(1));
        assert!(w.weight(1 << 40).is_some());
    }
}
