//! Assembling a context: the budget packer's decisions turned into items, shortened text and the
//! rendered layout, counted exactly.

use super::*;

impl ContextBuilderService {
    /// Primary tokens and, for outputs, the alternative summary's tokens.
    fn sizes(&self, candidate: &Candidate, p: Option<&Prepared>) -> (usize, Option<usize>) {
        match (&candidate.body, p) {
            (Body::Record { primary, .. }, Some(p)) => {
                let main = self.primary_of(p, *primary).map_or(0, |t| t.tokens);
                let summary = (*primary == Primary::Output)
                    .then(|| self.summary_of(p).map(|t| t.tokens))
                    .flatten();
                (main, summary)
            }
            (Body::Text { text, .. }, _) => (self.counter.count(text), None),
            (Body::Record { .. }, None) => (0, None),
        }
    }

    /// Budgets, selects, renders and counts; retries with a smaller effective budget in the rare
    /// case where joining the pieces costs more tokens than the pieces did.
    pub(super) async fn assemble(&self, a: &Assembly) -> AgentTaskInput {
        let mut effective = a.budget;
        for attempt in 0..6usize {
            let context = self.assemble_once(a, effective).await;
            if context.token_count <= a.budget {
                return context;
            }
            let excess = context.token_count - a.budget;
            effective = effective.saturating_sub(excess + 1 + attempt * attempt * 4);
        }
        self.assemble_once(a, 0).await
    }

    async fn assemble_once(&self, a: &Assembly, budget: usize) -> AgentTaskInput {
        let count = |s: &str| self.counter.count(s);
        let separator = self.shape_tokens(Shape::Separator);
        let layout = a.layout;
        let mut warnings: Vec<BuildWarning> = Vec::new();
        let cap = self.options.per_item_tokens.min(a.budget);
        let min_item = self.options.min_item_tokens.max(1);

        // Section costs: 0 = none, 1 = hierarchy heading, 2.. = item sections.
        let mut section_costs = [0usize; 2 + SECTION_ORDER.len()];
        if layout != Layout::Minimal {
            section_costs[1] = self.shape_tokens(Shape::HierarchyHeading(
                layout,
                a.hidden_ancestors + a.ancestors.len(),
            )) + separator;
        }
        for (cost, heading) in section_costs[2..].iter_mut().zip(self.heading_tokens()) {
            *cost = heading + separator;
        }

        // Header blocks: current, objective, ancestors nearest first.
        let header_blocks = 2 + a.ancestors.len();
        let mut blocks: Vec<BlockSpec> = Vec::with_capacity(header_blocks + a.candidates.len());
        let mut parts: Vec<HeaderPart> = Vec::with_capacity(header_blocks);
        let goal_tokens = self.goal_tokens(&a.current);
        blocks.push(BlockSpec {
            group: budget::Group::Header,
            section: 0,
            framing: self.current_framing_tokens(layout, &a.current, a.task_type) + separator,
            lean_framing: None,
            content: goal_tokens,
            min_content: MIN_HEADER_TOKENS,
            is_item: false,
            chain: None,
        });
        parts.push(HeaderPart::Current);
        let objective_tokens = a.objective.as_ref().map(|o| o.tokens);
        if let Some(tokens) = objective_tokens {
            blocks.push(BlockSpec {
                group: Group::Header,
                section: 0,
                framing: self.shape_tokens(Shape::ObjectivePrefix(layout)) + separator,
                lean_framing: None,
                content: tokens,
                min_content: MIN_HEADER_TOKENS,
                is_item: false,
                chain: None,
            });
            parts.push(HeaderPart::Objective);
        }
        let mut ancestor_entries: Vec<HierarchyEntry> = Vec::with_capacity(a.ancestors.len());
        for (i, p) in a.ancestors.iter().enumerate() {
            let entry = hierarchy_entry(p, self.summary_of(p).map(Text::to_owned_text));
            let (framing, lean) = self.ancestor_framing_tokens(layout, p, &entry, i == 0);
            blocks.push(BlockSpec {
                group: Group::Header,
                section: 1,
                framing,
                lean_framing: (entry.summary.is_some()).then_some(lean),
                content: self.goal_tokens(p),
                min_content: MIN_HEADER_TOKENS,
                is_item: false,
                chain: Some(0),
            });
            parts.push(HeaderPart::Ancestor(i));
            ancestor_entries.push(entry);
        }
        let header_count = blocks.len();

        // Items, in placement order: pinned, then by relevance, then gathering order.
        let mut ranked: Vec<&Candidate> = a.candidates.iter().collect();
        ranked.sort_by(|x, y| {
            y.pinned
                .cmp(&x.pinned)
                .then(y.relevance.total_cmp(&x.relevance))
                .then(x.order.cmp(&y.order))
        });
        let prepared: Vec<Option<Arc<Prepared>>> = ranked
            .iter()
            .map(|c| match &c.body {
                Body::Record { record, .. } => Some(self.prepare(record)),
                Body::Text { .. } => None,
            })
            .collect();
        let mut sizes: Vec<(usize, Option<usize>)> = Vec::with_capacity(ranked.len());
        let mut shells: Vec<ContextItem> = Vec::with_capacity(ranked.len());
        for (candidate, p) in ranked.iter().zip(&prepared) {
            let (shell, framing) = self.shell(candidate, p.as_deref());
            let size = self.sizes(candidate, p.as_deref());
            blocks.push(BlockSpec {
                group: if candidate.pinned {
                    Group::Pinned
                } else {
                    Group::Ranked
                },
                section: 2 + section_rank(candidate.kind).min(SECTION_ORDER.len() - 1),
                framing: framing + separator,
                lean_framing: None,
                content: pick_cost(size.0, size.1, cap),
                min_content: min_item,
                is_item: true,
                chain: None,
            });
            sizes.push(size);
            shells.push(shell);
        }
        let cost_at = |i: usize, b: usize| -> usize {
            if i < header_count {
                b
            } else {
                let (main, summary) = sizes[i - header_count];
                pick_cost(main, summary, b)
            }
        };
        let decisions = budget::pack(
            &blocks,
            &section_costs,
            Limits {
                budget,
                max_items: a.max_items,
            },
            &cost_at,
        );

        let mut omitted: Vec<OmittedItem> = Vec::new();
        // Nothing fits if the current task does not: an empty context, everything omitted.
        if matches!(decisions[0], Decision::Drop(_)) {
            omitted.push(omit(
                current_id_shown(a),
                SourceKind::CurrentTask,
                OmitAction::Dropped,
                OmitReason::Budget,
                goal_tokens,
                0,
            ));
            for (i, part) in parts.iter().enumerate().skip(1) {
                let (id, kind) = match part {
                    HeaderPart::Objective => (String::new(), SourceKind::OverallObjective),
                    HeaderPart::Ancestor(k) => {
                        (ancestor_entries[*k].task_id.clone(), SourceKind::Ancestor)
                    }
                    HeaderPart::Current => continue,
                };
                omitted.push(omit(
                    id,
                    kind,
                    OmitAction::Dropped,
                    OmitReason::Budget,
                    blocks[i].content,
                    0,
                ));
            }
            for (shell, size) in shells.iter().zip(&sizes) {
                omitted.push(omit(
                    shell.source_task_id.clone(),
                    shell.kind,
                    OmitAction::Dropped,
                    OmitReason::Budget,
                    size.0,
                    0,
                ));
            }
            warnings.push(BuildWarning::new(
                WarningKind::Budget,
                None,
                format!(
                    "a budget of {} tokens cannot hold the current task; the context is empty",
                    a.budget
                ),
            ));
            return self.finish(
                a,
                String::new(),
                None,
                Vec::new(),
                0,
                Vec::new(),
                omitted,
                warnings,
                budget,
            );
        }

        // Header texts.
        let mut current_goal = a.current.goal.clone();
        let mut objective = a.objective.as_ref().map(Text::to_owned_text);
        let mut hierarchy: Vec<HierarchyEntry> = Vec::with_capacity(ancestor_entries.len());
        let mut dropped_ancestors = 0usize;
        // Parts list the ancestors in order: each entry is moved out once.
        let mut entries = ancestor_entries.into_iter();
        for (i, part) in parts.iter().enumerate() {
            let decision = decisions[i];
            match part {
                HeaderPart::Current => {
                    if let Decision::Keep {
                        content_budget: Some(b),
                        ..
                    } = decision
                    {
                        current_goal =
                            reduce_head_tail(&a.current.goal, goal_tokens, b, &self.counter);
                        omitted.push(omit(
                            current_id_shown(a),
                            SourceKind::CurrentTask,
                            OmitAction::Shortened,
                            OmitReason::Budget,
                            goal_tokens,
                            count(&current_goal),
                        ));
                    }
                }
                HeaderPart::Objective => {
                    let tokens = objective_tokens.unwrap_or(0);
                    match decision {
                        Decision::Keep {
                            content_budget: Some(b),
                            ..
                        } => {
                            let text = objective
                                .as_deref()
                                .map(|o| reduce_head_tail(o, tokens, b, &self.counter))
                                .unwrap_or_default();
                            omitted.push(omit(
                                String::new(),
                                SourceKind::OverallObjective,
                                OmitAction::Shortened,
                                OmitReason::Budget,
                                tokens,
                                count(&text),
                            ));
                            objective = (!text.is_empty()).then_some(text);
                        }
                        Decision::Keep { .. } => {}
                        Decision::Drop(reason) => {
                            omitted.push(omit(
                                String::new(),
                                SourceKind::OverallObjective,
                                OmitAction::Dropped,
                                reason,
                                tokens,
                                0,
                            ));
                            objective = None;
                        }
                    }
                }
                HeaderPart::Ancestor(_) => {
                    let Some(mut entry) = entries.next() else {
                        continue;
                    };
                    let goal_tokens = blocks[i].content;
                    match decision {
                        Decision::Keep {
                            content_budget,
                            lean,
                        } => {
                            if lean {
                                entry.summary = None;
                            }
                            if let Some(b) = content_budget {
                                entry.goal =
                                    reduce_head_tail(&entry.goal, goal_tokens, b, &self.counter);
                            }
                            if lean || content_budget.is_some() {
                                omitted.push(omit(
                                    entry.task_id.clone(),
                                    SourceKind::Ancestor,
                                    OmitAction::Shortened,
                                    OmitReason::Budget,
                                    goal_tokens,
                                    count(&entry.goal),
                                ));
                            }
                            hierarchy.push(entry);
                        }
                        Decision::Drop(reason) => {
                            dropped_ancestors += 1;
                            omitted.push(omit(
                                entry.task_id.clone(),
                                SourceKind::Ancestor,
                                OmitAction::Dropped,
                                reason,
                                goal_tokens,
                                0,
                            ));
                        }
                    }
                }
            }
        }
        hierarchy.reverse();

        // Item contents.
        let mut items: Vec<(usize, usize, ContextItem)> = Vec::with_capacity(ranked.len());
        let mut fallback_warned = false;
        for (k, (candidate, mut shell)) in ranked.iter().zip(shells).enumerate() {
            let decision = decisions[header_count + k];
            let (main, summary) = sizes[k];
            let content_budget = match decision {
                Decision::Drop(reason) => {
                    omitted.push(omit(
                        shell.source_task_id,
                        shell.kind,
                        OmitAction::Dropped,
                        reason,
                        main,
                        0,
                    ));
                    continue;
                }
                Decision::Keep { content_budget, .. } => content_budget.unwrap_or(cap),
            };
            let resolved = self
                .resolve(
                    candidate,
                    prepared[k].as_deref(),
                    main,
                    summary,
                    content_budget,
                    &mut fallback_warned,
                    &mut warnings,
                )
                .await;
            let Some((content, selection, tokens)) = resolved else {
                omitted.push(omit(
                    shell.source_task_id,
                    shell.kind,
                    OmitAction::Dropped,
                    OmitReason::Budget,
                    main,
                    0,
                ));
                continue;
            };
            // Shortened: anything but the item's own primary text (`shell.selection`).
            if selection != shell.selection {
                let reason = if decision
                    == (Decision::Keep {
                        content_budget: None,
                        lean: false,
                    }) {
                    OmitReason::ItemCap
                } else {
                    OmitReason::Budget
                };
                omitted.push(omit(
                    shell.source_task_id.clone(),
                    shell.kind,
                    OmitAction::Shortened,
                    reason,
                    main,
                    tokens,
                ));
            }
            shell.content = content;
            shell.selection = selection;
            shell.tokens = tokens;
            items.push((section_rank(shell.kind), candidate.order, shell));
        }
        items.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        let items: Vec<ContextItem> = items.into_iter().map(|(_, _, item)| item).collect();
        let hidden = if layout == Layout::Minimal {
            0
        } else {
            a.hidden_ancestors + dropped_ancestors
        };
        self.finish(
            a,
            current_goal,
            objective,
            hierarchy,
            hidden,
            items,
            omitted,
            warnings,
            budget,
        )
    }

    /// Renders and counts the final context.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        a: &Assembly,
        current_goal: String,
        objective: Option<String>,
        hierarchy: Vec<HierarchyEntry>,
        hidden: usize,
        items: Vec<ContextItem>,
        omitted: Vec<OmittedItem>,
        warnings: Vec<BuildWarning>,
        _effective_budget: usize,
    ) -> AgentTaskInput {
        let (objective, hierarchy, hidden) = if current_goal.is_empty() {
            (None, Vec::new(), 0)
        } else {
            (objective, hierarchy, hidden)
        };
        let mut context = AgentTaskInput {
            current_task_id: a.current.record.task_id.clone(),
            current_goal,
            current_task_type: a.task_type,
            current_layer: a.current.record.layer,
            context_type: a.context_type,
            layout: a.layout,
            overall_project_goal: objective,
            parent_hierarchy: hierarchy,
            ancestors_not_shown: hidden,
            items,
            formatted: String::new(),
            omitted,
            warnings,
            degraded: false,
            token_count: 0,
            budget_tokens: a.budget,
        };
        context.formatted = format::format_input(&context);
        context.token_count = self.finals.count(
            &context.current_task_id,
            &context.formatted,
            self.counter.uncached(),
        );
        context
    }

    /// An item without content (everything the framing needs), and the tokens of its framing,
    /// estimated as the framing with empty fields plus each field counted alone (all memoised,
    /// so a warm build formats nothing here). Joins can make the real text cost a token more or
    /// less; the exact count of the final text is what the budget is checked against.
    fn shell(&self, candidate: &Candidate, p: Option<&Prepared>) -> (ContextItem, usize) {
        let (id, goal, label, selection, field_tokens) = match (&candidate.body, p) {
            (Body::Record { primary, .. }, Some(p)) => {
                let selection = match primary {
                    Primary::Output => ContentSelection::Output,
                    Primary::Summary => ContentSelection::Summary,
                    Primary::Error => ContentSelection::Error,
                };
                let label = p.label.as_ref().map(|l| (l.clone(), self.label_tokens(p)));
                let tokens = (self.id_tokens(p), self.goal_tokens(p));
                (p.id.clone(), p.goal.clone(), label, selection, Some(tokens))
            }
            (Body::Text { selection, .. }, _) => (
                candidate.source_id.clone(),
                candidate.label_goal.clone().unwrap_or_default(),
                None,
                *selection,
                None,
            ),
            (Body::Record { record, .. }, None) => (
                record.task_id.as_str().to_string(),
                candidate.label_goal.clone().unwrap_or_default(),
                None,
                ContentSelection::Note,
                None,
            ),
        };
        let (content_type, label_tokens) = match (&candidate.forced_label, label) {
            (Some(forced), _) => (forced.clone(), None),
            (None, Some((label, tokens))) => (label, Some(tokens)),
            (None, None) => (
                candidate.default_label.to_string(),
                Some(self.shape_tokens(Shape::Label(candidate.default_label))),
            ),
        };
        let item = ContextItem {
            source_task_id: id,
            source_task_goal: goal,
            content: String::new(),
            content_type,
            relevance: candidate.relevance,
            tokens: 0,
            kind: candidate.kind,
            pinned: candidate.pinned,
            status: candidate.status,
            selection,
        };
        let fields = match item.kind {
            SourceKind::ReplanDetails
            | SourceKind::OriginalPlan
            | SourceKind::ModificationInstructions
            | SourceKind::GlobalConstraints => 0,
            SourceKind::Additional | SourceKind::AuxData => {
                self.counter.count(&item.source_task_id)
            }
            _ => {
                let (id, goal) = field_tokens.unwrap_or_else(|| {
                    (
                        self.counter.count(&item.source_task_id),
                        self.counter.count(&item.source_task_goal),
                    )
                });
                id + goal + label_tokens.unwrap_or_else(|| self.counter.count(&item.content_type))
            }
        };
        let template = self.shape_tokens(Shape::ItemFraming {
            kind: item.kind,
            status: item.status,
            selection: item.selection,
            labelled: !item.content_type.is_empty(),
        });
        (item, template + fields)
    }

    /// The content of a kept item within `budget` tokens, and which text it is; `None` when the
    /// budget cannot hold even a reduction.
    #[allow(clippy::too_many_arguments)]
    async fn resolve(
        &self,
        candidate: &Candidate,
        p: Option<&Prepared>,
        main: usize,
        summary: Option<usize>,
        budget: usize,
        fallback_warned: &mut bool,
        warnings: &mut Vec<BuildWarning>,
    ) -> Option<(String, ContentSelection, usize)> {
        match &candidate.body {
            Body::Record { primary, .. } => {
                let p = p?;
                let text = self.primary_of(p, *primary)?.clone();
                let own = match primary {
                    Primary::Output => ContentSelection::Output,
                    Primary::Summary => ContentSelection::Summary,
                    Primary::Error => ContentSelection::Error,
                };
                match pick(main, summary, budget) {
                    Pick::Primary => Some((text.to_owned_text(), own, text.tokens)),
                    Pick::Summary => self
                        .summary_of(p)
                        .map(|s| (s.to_owned_text(), ContentSelection::Summary, s.tokens)),
                    Pick::Reduce(b) => {
                        let reduced = self
                            .reduce_record(p, *primary, &text, b, fallback_warned, warnings)
                            .await?;
                        Some((
                            reduced.to_owned_text(),
                            ContentSelection::Summarized,
                            reduced.tokens,
                        ))
                    }
                }
            }
            Body::Text { text, selection } => {
                if main <= budget {
                    return Some((text.clone(), *selection, main));
                }
                let reduced = self
                    .summarize(text, main, budget, None, fallback_warned, warnings)
                    .await?;
                Some((
                    reduced.to_owned_text(),
                    ContentSelection::Summarized,
                    reduced.tokens,
                ))
            }
        }
    }

    /// A reduction of a record's text, memoised per (record revision, text, budget).
    async fn reduce_record(
        &self,
        p: &Prepared,
        primary: Primary,
        text: &Text,
        budget: usize,
        fallback_warned: &mut bool,
        warnings: &mut Vec<BuildWarning>,
    ) -> Option<Text> {
        {
            let memo = p.reductions.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, _, hit)) = memo.iter().find(|(w, b, _)| *w == primary && *b == budget) {
                return hit.clone();
            }
        }
        let reduced = self
            .summarize(
                &text.text,
                text.tokens,
                budget,
                Some((&p.id, &p.goal)),
                fallback_warned,
                warnings,
            )
            .await;
        let mut memo = p.reductions.lock().unwrap_or_else(PoisonError::into_inner);
        if memo.len() >= REDUCTIONS_PER_RECORD {
            memo.remove(0);
        }
        memo.push((primary, budget, reduced.clone()));
        reduced
    }

    /// Asks the summariser, then checks its answer: redacted again, within budget, not empty;
    /// otherwise the extractive reduction is used instead.
    async fn summarize(
        &self,
        text: &str,
        tokens: usize,
        budget: usize,
        source: Option<(&str, &str)>,
        fallback_warned: &mut bool,
        warnings: &mut Vec<BuildWarning>,
    ) -> Option<Text> {
        self.metrics.summary();
        let mut request = SummaryRequest::new(text, tokens, budget, &self.counter);
        if let Some((id, goal)) = source {
            request = request.with_source(id, goal);
        }
        let answer = self.summarizer.summarize(request).await;
        let checked = match answer {
            Ok(summary) => {
                let summary = self.redact(&summary);
                let n = self.counter.count(&summary);
                (n > 0 && n <= budget).then_some(Text {
                    text: summary.into(),
                    tokens: n,
                })
            }
            Err(_) => None,
        };
        let result = match checked {
            Some(text) => text,
            None => {
                self.metrics.summarizer_fallback();
                if !*fallback_warned {
                    *fallback_warned = true;
                    warnings.push(BuildWarning::new(
                        WarningKind::Collaborator,
                        None,
                        format!(
                            "the summariser `{}` failed or exceeded its budget; the extractive \
                             reduction was used",
                            self.summarizer.name()
                        ),
                    ));
                }
                let reduced = reduce_head_tail(text, tokens, budget, &self.counter);
                let n = self.counter.count(&reduced);
                Text {
                    text: reduced.into(),
                    tokens: n,
                }
            }
        };
        (result.tokens > 0).then_some(result)
    }
}

fn hierarchy_entry(p: &Prepared, summary: Option<String>) -> HierarchyEntry {
    HierarchyEntry {
        task_id: p.id.clone(),
        goal: p.goal.clone(),
        layer: p.record.layer,
        task_type: p.record.task_type,
        node_type: p.record.node_type,
        status: p.record.status,
        summary,
    }
}

fn current_id_shown(a: &Assembly) -> String {
    a.current.id.clone()
}

fn omit(
    source_task_id: String,
    kind: SourceKind,
    action: OmitAction,
    reason: OmitReason,
    original_tokens: usize,
    kept_tokens: usize,
) -> OmittedItem {
    OmittedItem {
        source_task_id,
        kind,
        action,
        reason,
        original_tokens,
        kept_tokens,
    }
}
