//! Token counts of framing texts, memoised by what a text is made of instead of by the text.
//!
//! The budget needs the tokens of every heading, framing line and record field before anything is
//! rendered. Counting them through the [`MemoCounter`](super::MemoCounter) means formatting each
//! line and hashing it on every build; here a fixed text is named by its shape (a heading of a
//! kind, an item framing of a kind and status) and a record's texts by the prepared record they
//! belong to, which is replaced when the record's revision changes. The counts are the same the
//! counter gives for the rendered text: each is computed once, by counting exactly the string the
//! formatter writes.

use super::*;

/// A text that depends only on its shape, not on any record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Shape {
    /// The blank line between paragraphs.
    Separator,
    /// The heading of an item section.
    SectionHeading(SourceKind),
    /// The first line(s) of the hierarchy paragraph with `n` ancestors not shown.
    HierarchyHeading(Layout, usize),
    /// The text before the overall objective.
    ObjectivePrefix(Layout),
    /// The minimal layout's text before the parent's goal.
    MinimalParentPrefix,
    /// An item's framing with every field empty (a label shown as one character).
    ItemFraming {
        kind: SourceKind,
        status: Option<TaskStatus>,
        selection: ContentSelection,
        labelled: bool,
    },
    /// A default content type.
    Label(&'static str),
}

impl Shape {
    fn text(self) -> Cow<'static, str> {
        match self {
            Shape::Separator => Cow::Borrowed(PARAGRAPH_SEPARATOR),
            Shape::SectionHeading(kind) => Cow::Borrowed(section_heading(kind)),
            Shape::HierarchyHeading(layout, n) => Cow::Owned(hierarchy_heading(layout, n)),
            Shape::ObjectivePrefix(layout) => Cow::Borrowed(objective_prefix(layout)),
            Shape::MinimalParentPrefix => {
                let entry = HierarchyEntry {
                    task_id: String::new(),
                    goal: String::new(),
                    layer: None,
                    task_type: TaskType::Think,
                    node_type: None,
                    status: TaskStatus::Pending,
                    summary: None,
                };
                Cow::Owned(ancestor_framing(Layout::Minimal, &entry, true, None).0)
            }
            Shape::ItemFraming {
                kind,
                status,
                selection,
                labelled,
            } => Cow::Owned(item_framing(&ContextItem {
                source_task_id: String::new(),
                source_task_goal: String::new(),
                content: String::new(),
                content_type: if labelled {
                    "_".to_string()
                } else {
                    String::new()
                },
                relevance: 0.0,
                tokens: 0,
                kind,
                pinned: false,
                status,
                selection,
            })),
            Shape::Label(label) => Cow::Borrowed(label),
        }
    }
}

/// Counts of fixed texts by shape. Bounded: every shape is made of small enums, a static label
/// or an ancestor count below [`MAX_ANCESTOR_HOPS`].
#[derive(Default)]
pub(super) struct ShapeCounts {
    counts: Mutex<FastMap<Shape, usize>>,
    /// The section headings in [`SECTION_ORDER`], which every build of a full layout charges.
    headings: OnceLock<[usize; SECTION_ORDER.len()]>,
}

/// Counts of a prepared record's texts at its revision, each computed on first use.
#[derive(Default)]
pub(super) struct RecordCounts {
    id: OnceLock<usize>,
    goal: OnceLock<usize>,
    label: OnceLock<usize>,
    /// The full layouts' `[Ln] id: ` before the record's goal as an ancestor.
    ancestor_prefix: OnceLock<usize>,
    /// The text after its goal as an ancestor, by (immediate parent, with its outcome line).
    ancestor_suffix: [OnceLock<usize>; 4],
    /// The text around its goal as the current task, by layout and shown task type.
    current: Mutex<Vec<(Layout, TaskType, usize)>>,
}

impl ContextBuilderService {
    /// Tokens of a fixed text.
    pub(super) fn shape_tokens(&self, shape: Shape) -> usize {
        let counts = &self.shapes.counts;
        if let Some(&n) = counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&shape)
        {
            return n;
        }
        let n = self.counter.count(&shape.text());
        counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(shape, n);
        n
    }

    /// Tokens of every section heading, in [`SECTION_ORDER`].
    pub(super) fn heading_tokens(&self) -> &[usize; SECTION_ORDER.len()] {
        self.shapes.headings.get_or_init(|| {
            SECTION_ORDER.map(|kind| self.shape_tokens(Shape::SectionHeading(kind)))
        })
    }

    /// Tokens of a record's redacted id.
    pub(super) fn id_tokens(&self, p: &Prepared) -> usize {
        *p.counts.id.get_or_init(|| self.counter.count(&p.id))
    }

    /// Tokens of a record's redacted goal.
    pub(super) fn goal_tokens(&self, p: &Prepared) -> usize {
        *p.counts.goal.get_or_init(|| self.counter.count(&p.goal))
    }

    /// Tokens of a record's redacted `output_type_description` (0 without one).
    pub(super) fn label_tokens(&self, p: &Prepared) -> usize {
        *p.counts
            .label
            .get_or_init(|| p.label.as_deref().map_or(0, |l| self.counter.count(l)))
    }

    /// Tokens of the framing of a record as an ancestor: `(with the outcome line, without)`; the
    /// two are equal when the record has no specific summary.
    pub(super) fn ancestor_framing_tokens(
        &self,
        layout: Layout,
        p: &Prepared,
        entry: &HierarchyEntry,
        immediate: bool,
    ) -> (usize, usize) {
        if layout == Layout::Minimal {
            // The minimal layout shows neither the outcome nor the parent marker.
            let prefix = self.shape_tokens(Shape::MinimalParentPrefix);
            return (prefix, prefix);
        }
        let prefix = *p.counts.ancestor_prefix.get_or_init(|| {
            let (prefix, _) = ancestor_framing(layout, entry, immediate, None);
            self.counter.count(&prefix)
        });
        let suffix = |summary: Option<&str>| {
            let slot = usize::from(immediate) * 2 + usize::from(summary.is_some());
            *p.counts.ancestor_suffix[slot].get_or_init(|| {
                let (_, suffix) = ancestor_framing(layout, entry, immediate, summary);
                self.counter.count(&suffix)
            })
        };
        (
            prefix + suffix(entry.summary.as_deref()),
            prefix + suffix(None),
        )
    }

    /// Tokens of the text around the current task's goal.
    pub(super) fn current_framing_tokens(
        &self,
        layout: Layout,
        p: &Prepared,
        task_type: TaskType,
    ) -> usize {
        let known = |memo: &[(Layout, TaskType, usize)]| {
            memo.iter()
                .find(|(l, t, _)| *l == layout && *t == task_type)
                .map(|(_, _, n)| *n)
        };
        if let Some(n) = known(
            &p.counts
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            return n;
        }
        let record = &p.record;
        let (prefix, suffix) =
            current_framing(layout, record.task_id.as_str(), task_type, record.layer);
        let n = self.counter.count(&prefix) + self.counter.count(&suffix);
        let mut memo = p
            .counts
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known(&memo).is_none() {
            memo.push((layout, task_type, n));
        }
        n
    }
}
