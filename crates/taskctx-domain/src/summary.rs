//! Generic-summary detection (SPEC R1.7): summaries that say nothing about the output.
//!
//! ROMA's `is_generic_summary` rules (empty, shorter than 20 characters, or starting with one of
//! its boilerplate prefixes), extended to the summaries ROMA itself writes and its own check
//! missed (reference B17): "Generated N sub-tasks", "Planned N sub-tasks: …" and
//! "Completed with X".

/// Prefixes (lower case) that mark a boilerplate summary.
const GENERIC_PREFIXES: &[&str] = &[
    "planned with",
    "execution completed",
    "data type:",
    "structured output:",
    "aggregation completed",
    "processing complete",
    "task completed",
    "completed with ",
];

/// The shortest summary, in characters after trimming, that can carry information.
pub const MIN_SPECIFIC_SUMMARY_CHARS: usize = 20;

/// Whether `summary` is boilerplate rather than a description of the output.
pub fn is_generic_summary(summary: &str) -> bool {
    let trimmed = summary.trim();
    if trimmed.chars().count() < MIN_SPECIFIC_SUMMARY_CHARS {
        return true;
    }
    let lower = trimmed.to_lowercase();
    GENERIC_PREFIXES
        .iter()
        .any(|prefix| lower.starts_with(prefix))
        || counts_sub_tasks(&lower, "generated ")
        || counts_sub_tasks(&lower, "planned ")
}

/// `"{verb}{N} sub-task…"`, e.g. "generated 4 sub-tasks" or "planned 3 sub-tasks: 1. …".
fn counts_sub_tasks(lower: &str, verb: &str) -> bool {
    let Some(rest) = lower.strip_prefix(verb) else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0
        && rest[digits..]
            .trim_start()
            .strip_prefix("sub")
            .is_some_and(|r| {
                r.starts_with("-task") || r.starts_with("task") || r.starts_with(" task")
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roma_rules_hold() {
        assert!(is_generic_summary(""));
        assert!(is_generic_summary("   \n"));
        assert!(is_generic_summary("Done."));
        assert!(is_generic_summary(
            "Execution completed successfully for the task"
        ));
        assert!(is_generic_summary(
            "Data type: list of strings and more words"
        ));
        assert!(!is_generic_summary(
            "Found 12 peer-reviewed sources on battery chemistry"
        ));
    }

    #[test]
    fn the_summaries_roma_writes_itself_are_generic() {
        assert!(is_generic_summary("Generated 12 sub-tasks"));
        assert!(is_generic_summary(
            "Planned 5 sub-tasks: 1. Find sources...; 2. Read them...; 3. Write...; ... and 2 more tasks"
        ));
        assert!(is_generic_summary("Completed with SearchResultsModel"));
        assert!(!is_generic_summary(
            "Generated a detailed comparison of three vendors"
        ));
        assert!(!is_generic_summary(
            "Planned the migration around two maintenance windows"
        ));
    }
}
