#![doc = include_str!("../README.md")]
// Test support: a failed check is a panic with a message, exactly as in a test body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod checks;
pub mod fixtures;
mod harness;
pub mod props;

pub use harness::{
    Capabilities, Capability, CheckResult, Harness, Skip, Stores, must, open, require, run_check,
};

/// Calls `$callback!` with `$args` followed by `;` and the name of every check in
/// [`checks`]. This list is the single source of the suite; a test compares it with the
/// functions in the source so a new check cannot be forgotten.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_checks {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { $($args)* ;
            history_append_assigns_positions,
            history_load_returns_appends_in_order,
            history_payloads_round_trip_exactly,
            history_unknown_chat_is_empty,
            history_empty_append_is_a_no_op,
            history_load_since_returns_the_tail,
            history_replace_renumbers,
            history_replace_creates_and_empties,
            history_list_reports_chats_in_id_order,
            history_delete_removes_only_that_chat,
            history_stats_count_chats_and_updates,
            history_hostile_ids_are_distinct_and_exact,
            history_concurrent_appends_to_one_chat,
            history_concurrent_appends_to_many_chats,
            history_replace_is_atomic_for_readers,
            history_reopen_keeps_everything,
            records_put_then_get,
            records_round_trip_every_field,
            records_revisions_increase_by_one,
            records_conditional_put_conflicts,
            records_racing_writers_one_wins,
            records_put_many_all_or_nothing_on_conflict,
            records_put_many_rejects_duplicate_ids,
            records_get_many_keeps_order,
            records_children_in_plan_order,
            records_children_follow_changes,
            records_queries_in_id_order,
            records_delete_keeps_children,
            records_delete_subtree,
            records_clear_removes_everything,
            records_stats_per_status_and_layer,
            records_hostile_ids_are_distinct_and_exact,
            records_reopen_keeps_everything,
            records_put_many_writes_every_record,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __check_names {
    (; $($name:ident),* $(,)?) => {
        &[$(stringify!($name)),*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr ; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let harness = $make;
                $crate::run_check(
                    stringify!($name),
                    $crate::checks::$name(&harness),
                );
            }
        )*
    };
}

/// The names of every check, in suite order.
pub const CHECKS: &[&str] = __with_checks!(__check_names!());

/// Expands to the whole conformance suite for the store that `$make` (an expression evaluated
/// afresh for every test, so every check starts with an empty store) opens: one `#[test]` per
/// check in [`checks`], plus the two property checks of [`props`].
///
/// ```text
/// taskctx_testkit::conformance_tests!(MemoryHarness::default());
/// ```
///
/// A check whose capability the store lacks prints `SKIPPED (needs capability …)` on stderr and
/// passes; it is never silently left out.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__with_checks!(__conformance_tests!($make));

        #[test]
        fn property_history_matches_model() {
            $crate::props::history_matches_model(|| $make);
        }

        #[test]
        fn property_records_match_model() {
            $crate::props::records_match_model(|| $make);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::CHECKS;

    /// Every `pub async fn` in the check modules is in the suite's list, and nothing else is.
    #[test]
    fn the_check_list_names_every_check_function() {
        let sources = [
            include_str!("checks/history.rs"),
            include_str!("checks/records.rs"),
        ];
        let mut defined: Vec<&str> = sources
            .iter()
            .flat_map(|s| s.lines())
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split('(').next())
            .collect();
        let mut listed = CHECKS.to_vec();
        defined.sort_unstable();
        listed.sort_unstable();
        assert_eq!(defined, listed);
    }
}
