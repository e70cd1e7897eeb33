//! The text layouts (SPEC R6.5): execution, planning, aggregation and minimal.
//!
//! `formatted` is a pure function of an `AgentTaskInput`'s other fields ([`format_input`]), so
//! the text and the items can never disagree (reference B9). The builder measures the same
//! framing strings this module renders, so its budget arithmetic and the text agree too. The
//! layouts are documented with examples in `docs/context-building.md` and pinned by snapshot
//! tests; changing a byte here is a visible change.
//!
//! Full layouts are paragraphs joined by one blank line:
//!
//! 1. `Overall Objective: …` (reference B7),
//! 2. the parent hierarchy, root-most first (reference §10.1, B8),
//! 3. the current task (id, type, layer, goal),
//! 4. item sections `=== Title ===` in a fixed order, each item a paragraph.
//!
//! The minimal layout is ROMA's minimal text: one line each for the current task, type, layer,
//! parent task and objective.

use std::fmt::Write as _;

use taskctx_domain::{TaskStatus, TaskType};

use super::types::{
    AgentTaskInput, ContentSelection, ContextItem, HierarchyEntry, Layout, SourceKind,
};

/// Joins paragraphs of the full layouts.
pub(crate) const PARAGRAPH_SEPARATOR: &str = "\n\n";

/// The item sections in the order they are rendered.
pub(crate) const SECTION_ORDER: [SourceKind; 13] = [
    SourceKind::ReplanDetails,
    SourceKind::OriginalPlan,
    SourceKind::ModificationInstructions,
    SourceKind::GlobalConstraints,
    SourceKind::Dependency,
    SourceKind::ParentOutput,
    SourceKind::PriorSibling,
    SourceKind::GoalReference,
    SourceKind::LaterSibling,
    SourceKind::Child,
    SourceKind::Similar,
    SourceKind::Additional,
    SourceKind::AuxData,
];

/// Position of `kind`'s section in [`SECTION_ORDER`] (header kinds sort last; they never head
/// a section).
pub(crate) fn section_rank(kind: SourceKind) -> usize {
    SECTION_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(SECTION_ORDER.len())
}

/// The heading paragraph of an item section.
pub(crate) fn section_heading(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::ReplanDetails => {
            "=== Re-plan Details (CRITICAL: the previous attempt failed; plan to avoid it) ==="
        }
        SourceKind::OriginalPlan => "=== Original Plan ===",
        SourceKind::ModificationInstructions => "=== Modification Instructions ===",
        SourceKind::GlobalConstraints => "=== Global Constraints / Preferences ===",
        SourceKind::Dependency => "=== Task Dependencies ===",
        SourceKind::ParentOutput => "=== Parent Output ===",
        SourceKind::PriorSibling => "=== Prior Sibling Results ===",
        SourceKind::GoalReference => "=== Referenced Tasks ===",
        SourceKind::LaterSibling => "=== Later Sibling Results ===",
        SourceKind::Child => "=== Child Task Results ===",
        SourceKind::Similar => "=== Similar Completed Tasks ===",
        SourceKind::Additional => "=== Additional Context ===",
        SourceKind::AuxData => "=== Task Data ===",
        SourceKind::CurrentTask | SourceKind::OverallObjective | SourceKind::Ancestor => "",
    }
}

/// Writes a layer number, or `unknown`.
fn write_layer(out: &mut String, layer: Option<u32>) {
    let Some(mut n) = layer else {
        out.push_str("unknown");
        return;
    };
    // Decimal digits without the formatting machinery: this runs for every framing line.
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

/// Writes the text before the current task's goal.
fn write_current_prefix(
    out: &mut String,
    layout: Layout,
    task_id: &str,
    task_type: TaskType,
    layer: Option<u32>,
) {
    let (title, layer_name) = match layout {
        Layout::Minimal => {
            out.push_str("Current Task: ");
            return;
        }
        Layout::Execution => ("Current Task:", "Layer"),
        Layout::Planning => ("Task To Plan:", "Planning Depth"),
        Layout::Aggregation => ("Aggregating Task:", "Layer"),
    };
    out.push_str(title);
    out.push_str("\nTask ID: ");
    out.push_str(task_id);
    out.push_str("\nType: ");
    out.push_str(task_type.as_str());
    out.push('\n');
    out.push_str(layer_name);
    out.push_str(": ");
    write_layer(out, layer);
    out.push_str("\nGoal: ");
}

/// Writes the text after the current task's goal (the minimal layout's type and layer lines).
fn write_current_suffix(out: &mut String, layout: Layout, task_type: TaskType, layer: Option<u32>) {
    if layout == Layout::Minimal {
        out.push_str("\nTask Type: ");
        out.push_str(task_type.as_str());
        out.push_str("\nLayer: ");
        write_layer(out, layer);
    }
}

/// The text around the current task's goal: `(prefix, suffix)`.
pub(crate) fn current_framing(
    layout: Layout,
    task_id: &str,
    task_type: TaskType,
    layer: Option<u32>,
) -> (String, String) {
    let mut prefix = String::new();
    write_current_prefix(&mut prefix, layout, task_id, task_type, layer);
    let mut suffix = String::new();
    write_current_suffix(&mut suffix, layout, task_type, layer);
    (prefix, suffix)
}

/// The text before the overall objective.
pub(crate) fn objective_prefix(layout: Layout) -> &'static str {
    match layout {
        Layout::Minimal => "\nOverall Objective: ",
        _ => "Overall Objective: ",
    }
}

/// Writes the first line(s) of the hierarchy paragraph.
fn write_hierarchy_heading(out: &mut String, layout: Layout, not_shown: usize) {
    if layout == Layout::Minimal {
        return;
    }
    out.push_str("Parent Tasks (root-most first):");
    if not_shown > 0 {
        let _ = write!(
            out,
            "\n({not_shown} higher ancestor level{} not shown)",
            if not_shown == 1 { "" } else { "s" }
        );
    }
}

/// The first line(s) of the hierarchy paragraph.
pub(crate) fn hierarchy_heading(layout: Layout, not_shown: usize) -> String {
    let mut out = String::new();
    write_hierarchy_heading(&mut out, layout, not_shown);
    out
}

/// Writes the text before an ancestor's goal.
fn write_ancestor_prefix(out: &mut String, layout: Layout, entry: &HierarchyEntry) {
    if layout == Layout::Minimal {
        out.push_str("\nParent Task: ");
        return;
    }
    out.push_str("\n[L");
    write_layer(out, entry.layer);
    out.push_str("] ");
    out.push_str(&entry.task_id);
    out.push_str(": ");
}

/// Writes the text after an ancestor's goal: the immediate parent's mark and the outcome line.
fn write_ancestor_suffix(out: &mut String, layout: Layout, immediate: bool, summary: Option<&str>) {
    if layout == Layout::Minimal {
        return;
    }
    if immediate {
        out.push_str(" (immediate parent)");
    }
    if let Some(summary) = summary {
        out.push_str("\n  Outcome: ");
        out.push_str(summary);
    }
}

/// The text around an ancestor's goal: `(prefix, suffix)`. The immediate parent is marked; a
/// specific summary follows as an `Outcome:` line.
pub(crate) fn ancestor_framing(
    layout: Layout,
    entry: &HierarchyEntry,
    immediate: bool,
    summary: Option<&str>,
) -> (String, String) {
    let mut prefix = String::new();
    write_ancestor_prefix(&mut prefix, layout, entry);
    let mut suffix = String::new();
    write_ancestor_suffix(&mut suffix, layout, immediate, summary);
    (prefix, suffix)
}

/// Writes the text before an item's content (nothing follows the content).
pub(crate) fn write_item_framing(out: &mut String, item: &ContextItem) {
    match item.kind {
        SourceKind::ReplanDetails
        | SourceKind::OriginalPlan
        | SourceKind::ModificationInstructions
        | SourceKind::GlobalConstraints => {}
        SourceKind::Additional => {
            let key = item
                .source_task_id
                .strip_prefix("additional:")
                .unwrap_or(&item.source_task_id);
            out.push_str("Source: ");
            out.push_str(key);
            out.push_str("\nContent:\n");
        }
        SourceKind::AuxData => {
            let key = item
                .source_task_id
                .strip_prefix("aux_data:")
                .unwrap_or(&item.source_task_id);
            out.push_str("Key: ");
            out.push_str(key);
            out.push_str("\nContent:\n");
        }
        _ => {
            out.push_str("Task ID: ");
            out.push_str(&item.source_task_id);
            out.push_str("\nGoal: ");
            out.push_str(&item.source_task_goal);
            out.push('\n');
            if item.kind == SourceKind::Child
                && let Some(status) = item.status
            {
                out.push_str("Status: ");
                out.push_str(status.as_str());
                out.push('\n');
            }
            out.push_str(match item.selection {
                ContentSelection::Error => "Error",
                ContentSelection::Note => "Note",
                _ => "Output",
            });
            if !item.content_type.is_empty() {
                out.push_str(" (");
                out.push_str(&item.content_type);
                out.push(')');
            }
            out.push_str(":\n");
        }
    }
}

/// The text before an item's content, as a string.
pub(crate) fn item_framing(item: &ContextItem) -> String {
    let mut out = String::new();
    write_item_framing(&mut out, item);
    out
}

/// The fields `formatted` is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct FormatView<'a> {
    /// The layout.
    pub layout: Layout,
    /// The current task's id.
    pub current_task_id: &'a str,
    /// Its goal; empty only when the budget could not hold even that (then nothing is rendered).
    pub current_goal: &'a str,
    /// Its type.
    pub current_task_type: TaskType,
    /// Its layer.
    pub current_layer: Option<u32>,
    /// The overall objective.
    pub overall_project_goal: Option<&'a str>,
    /// Ancestors, root-most first.
    pub parent_hierarchy: &'a [HierarchyEntry],
    /// Ancestors above them that are not shown.
    pub ancestors_not_shown: usize,
    /// Items in display order.
    pub items: &'a [ContextItem],
}

/// Renders `view` in its layout. Byte-identical output for equal views.
pub fn format_view(view: &FormatView<'_>) -> String {
    if view.current_goal.is_empty()
        && view.items.is_empty()
        && view.parent_hierarchy.is_empty()
        && view.overall_project_goal.is_none()
    {
        return String::new();
    }
    // One buffer, sized once: this runs on every build.
    let capacity = 512
        + view.current_goal.len()
        + view.overall_project_goal.map_or(0, str::len)
        + view
            .parent_hierarchy
            .iter()
            .map(|e| {
                32 + e.task_id.len() + e.goal.len() + e.summary.as_ref().map_or(0, String::len)
            })
            .sum::<usize>()
        + view
            .items
            .iter()
            .map(|i| {
                96 + i.source_task_id.len()
                    + i.source_task_goal.len()
                    + i.content_type.len()
                    + i.content.len()
            })
            .sum::<usize>();
    let mut out = String::with_capacity(capacity);
    let current = |out: &mut String| {
        write_current_prefix(
            out,
            view.layout,
            view.current_task_id,
            view.current_task_type,
            view.current_layer,
        );
        out.push_str(view.current_goal);
        write_current_suffix(out, view.layout, view.current_task_type, view.current_layer);
    };
    let last = view.parent_hierarchy.len().saturating_sub(1);
    if view.layout == Layout::Minimal {
        current(&mut out);
        if let Some(parent) = view.parent_hierarchy.last() {
            write_ancestor_prefix(&mut out, view.layout, parent);
            out.push_str(&parent.goal);
            write_ancestor_suffix(&mut out, view.layout, true, None);
        }
        if let Some(objective) = view.overall_project_goal {
            out.push_str(objective_prefix(view.layout));
            out.push_str(objective);
        }
    } else {
        if let Some(objective) = view.overall_project_goal {
            out.push_str(objective_prefix(view.layout));
            out.push_str(objective);
        }
        if !view.parent_hierarchy.is_empty() {
            paragraph(&mut out);
            write_hierarchy_heading(&mut out, view.layout, view.ancestors_not_shown);
            for (i, entry) in view.parent_hierarchy.iter().enumerate() {
                write_ancestor_prefix(&mut out, view.layout, entry);
                out.push_str(&entry.goal);
                write_ancestor_suffix(&mut out, view.layout, i == last, entry.summary.as_deref());
            }
        }
        paragraph(&mut out);
        current(&mut out);
    }
    let mut section: Option<SourceKind> = None;
    for item in view.items {
        if section != Some(item.kind) {
            section = Some(item.kind);
            let heading = section_heading(item.kind);
            if !heading.is_empty() {
                paragraph(&mut out);
                out.push_str(heading);
            }
        }
        paragraph(&mut out);
        write_item_framing(&mut out, item);
        out.push_str(&item.content);
    }
    out
}

/// Starts a new paragraph (a blank line after the previous one, if any).
fn paragraph(out: &mut String) {
    if !out.is_empty() {
        out.push_str(PARAGRAPH_SEPARATOR);
    }
}

/// Re-renders `input.formatted` from its other fields: always equal to `input.formatted`.
pub fn format_input(input: &AgentTaskInput) -> String {
    format_view(&FormatView {
        layout: input.layout,
        current_task_id: input.current_task_id.as_str(),
        current_goal: &input.current_goal,
        current_task_type: input.current_task_type,
        current_layer: input.current_layer,
        overall_project_goal: input.overall_project_goal.as_deref(),
        parent_hierarchy: &input.parent_hierarchy,
        ancestors_not_shown: input.ancestors_not_shown,
        items: &input.items,
    })
}

/// A child's status line text (used by tests and docs).
pub(crate) fn status_note(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Cancelled => "[cancelled]",
        TaskStatus::NeedsReplan => "[needs a new plan]",
        TaskStatus::Failed => "[failed without an error message]",
        TaskStatus::Done => "[No output]",
        _ => "[no result yet]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: SourceKind, id: &str, content: &str) -> ContextItem {
        ContextItem {
            source_task_id: id.into(),
            source_task_goal: format!("goal of {id}"),
            content: content.into(),
            content_type: String::new(),
            relevance: 1.0,
            tokens: 1,
            kind,
            pinned: false,
            status: Some(TaskStatus::Done),
            selection: ContentSelection::Output,
        }
    }

    fn entry(id: &str, layer: u32, summary: Option<&str>) -> HierarchyEntry {
        HierarchyEntry {
            task_id: id.into(),
            goal: format!("goal of {id}"),
            layer: Some(layer),
            task_type: TaskType::Think,
            node_type: None,
            status: TaskStatus::PlanDone,
            summary: summary.map(str::to_string),
        }
    }

    fn view<'a>(
        layout: Layout,
        hierarchy: &'a [HierarchyEntry],
        items: &'a [ContextItem],
    ) -> FormatView<'a> {
        FormatView {
            layout,
            current_task_id: "t",
            current_goal: "do it",
            current_task_type: TaskType::Write,
            current_layer: Some(2),
            overall_project_goal: Some("the project"),
            parent_hierarchy: hierarchy,
            ancestors_not_shown: 1,
            items,
        }
    }

    #[test]
    fn full_layout_orders_objective_hierarchy_task_then_sections() {
        let hierarchy = [entry("r", 0, None), entry("r.1", 1, Some("it went well"))];
        let items = [
            item(SourceKind::Dependency, "r.1.1", "dep output"),
            item(SourceKind::Additional, "additional:notes", "extra"),
        ];
        let text = format_view(&view(Layout::Execution, &hierarchy, &items));
        assert_eq!(
            text,
            "Overall Objective: the project\n\n\
             Parent Tasks (root-most first):\n(1 higher ancestor level not shown)\n\
             [L0] r: goal of r\n[L1] r.1: goal of r.1 (immediate parent)\n  Outcome: it went well\n\n\
             Current Task:\nTask ID: t\nType: WRITE\nLayer: 2\nGoal: do it\n\n\
             === Task Dependencies ===\n\n\
             Task ID: r.1.1\nGoal: goal of r.1.1\nOutput:\ndep output\n\n\
             === Additional Context ===\n\n\
             Source: notes\nContent:\nextra"
        );
    }

    #[test]
    fn minimal_layout_is_one_paragraph() {
        let hierarchy = [entry("r", 0, Some("ignored in minimal"))];
        let text = format_view(&view(Layout::Minimal, &hierarchy, &[]));
        assert_eq!(
            text,
            "Current Task: do it\nTask Type: WRITE\nLayer: 2\nParent Task: goal of r\n\
             Overall Objective: the project"
        );
    }

    #[test]
    fn aggregation_children_show_status_and_errors() {
        let mut failed = item(SourceKind::Child, "c.2", "boom");
        failed.status = Some(TaskStatus::Failed);
        failed.selection = ContentSelection::Error;
        failed.content_type = "child_failed_output".into();
        let items = [item(SourceKind::Child, "c.1", "fine"), failed];
        let text = format_view(&view(Layout::Aggregation, &[], &items));
        assert!(text.contains("Aggregating Task:\nTask ID: t\nType: WRITE"));
        assert!(text.contains("Status: DONE\nOutput:\nfine"));
        assert!(text.contains("Status: FAILED\nError (child_failed_output):\nboom"));
        assert_eq!(text.matches("=== Child Task Results ===").count(), 1);
    }

    #[test]
    fn nothing_to_show_renders_nothing_and_output_is_stable() {
        let mut empty = view(Layout::Execution, &[], &[]);
        empty.current_goal = "";
        empty.overall_project_goal = None;
        assert_eq!(format_view(&empty), "");
        let items = [item(SourceKind::PriorSibling, "s", "x")];
        let v = view(Layout::Planning, &[], &items);
        assert_eq!(format_view(&v), format_view(&v));
        assert!(
            format_view(&v).contains("Task To Plan:\nTask ID: t\nType: WRITE\nPlanning Depth: 2")
        );
    }

    #[test]
    fn sections_follow_the_documented_order() {
        let mut ranks: Vec<usize> = SECTION_ORDER.iter().map(|k| section_rank(*k)).collect();
        let sorted = {
            let mut r = ranks.clone();
            r.sort_unstable();
            r
        };
        assert_eq!(ranks, sorted);
        ranks.dedup();
        assert_eq!(ranks.len(), SECTION_ORDER.len());
        assert_eq!(section_rank(SourceKind::CurrentTask), SECTION_ORDER.len());
        assert!(
            SECTION_ORDER
                .iter()
                .all(|k| !section_heading(*k).is_empty())
        );
    }
}
