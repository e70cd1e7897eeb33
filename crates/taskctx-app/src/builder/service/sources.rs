//! Gathering the sources of R6.1 for a build: the strategy's plan executed against the store.

use super::*;

impl ContextBuilderService {
    /// Gathers the sources of the strategy's plan and assembles the context.
    pub(super) async fn build_full(
        &self,
        current: &Arc<TaskRecord>,
        request: &ContextRequest,
        log: &mut ReadLog,
    ) -> StoreResult<AgentTaskInput> {
        let store = self.store.as_ref();
        let plan =
            self.strategies[request.context_type.index()].plan(current, request, &self.options);
        let mut warnings: Vec<BuildWarning> = Vec::new();
        note_ignored_inputs(&plan, request, &mut warnings);
        let redact = |s: &str| self.redact(s);
        let needs_chain = plan.uses(Source::Hierarchy)
            || plan.uses(Source::GoalReferences)
            || plan.uses(Source::Similar);
        let needs_parent = [
            Source::Dependencies,
            Source::PriorSiblings,
            Source::LaterSiblings,
            Source::ParentOutput,
            Source::ParentGoal,
        ]
        .iter()
        .any(|s| plan.uses(*s));
        // The objective is inherited from the nearest ancestor that has one: walk the chain when
        // the task has none of its own.
        let own_objective = has_objective(current);
        let limit = if needs_chain || !own_objective {
            MAX_ANCESTOR_HOPS
        } else if needs_parent {
            1
        } else {
            0
        };
        let ancestry =
            gather::ancestors(store, log, current, limit, &mut warnings, &redact).await?;
        let parent = ancestry.chain.first().cloned();
        let prepared = self.prepare(current);
        let objective = match objective_source(current, &ancestry) {
            Some(ObjectiveSource::Own(record)) if Arc::ptr_eq(record, current) => {
                self.objective_of(&prepared)
            }
            Some(ObjectiveSource::Own(record)) => self.objective_of(&self.prepare(record)),
            Some(ObjectiveSource::RootGoal(root)) => {
                let p = self.prepare(root);
                Some(Text {
                    text: p.goal.as_str().into(),
                    tokens: self.goal_tokens(&p),
                })
            }
            None => None,
        };

        // Sized for a typical plan: a few dependencies and siblings, `max_similar` similar tasks.
        let mut candidates: Vec<Candidate> = Vec::with_capacity(16);
        let mut used = RecordSet::with_capacity_and_hasher(16, Default::default());
        used.insert(ById(Arc::clone(current)));
        self.request_sections(&plan, request, &mut candidates);

        // Siblings, through the parent's plan (indexed reads only).
        let wants_siblings = plan.uses(Source::PriorSiblings)
            || plan.uses(Source::LaterSiblings)
            || plan.uses(Source::Dependencies);
        let mut siblings: Vec<Option<Arc<TaskRecord>>> = Vec::new();
        let mut position: Option<usize> = None;
        if let (Some(parent), true) = (&parent, wants_siblings) {
            siblings = log.get_many(store, &parent.child_task_ids).await?;
            position = parent.plan_position(&current.task_id);
            if position.is_none()
                && (plan.uses(Source::PriorSiblings) || plan.uses(Source::LaterSiblings))
            {
                warnings.push(BuildWarning::new(
                    WarningKind::NotInParentPlan,
                    Some(redact(current.task_id.as_str())),
                    format!(
                        "the task is not listed in the plan of its parent `{}`; no sibling \
                         context",
                        redact(parent.task_id.as_str())
                    ),
                ));
            }
        }

        // 2. Explicit dependencies: pinned; not DONE ones are warnings.
        if plan.uses(Source::Dependencies) {
            let deps = gather::declared_dependencies(
                current,
                parent.as_deref(),
                position,
                &mut warnings,
                &redact,
            );
            let records = log.get_many(store, &deps).await?;
            for (id, record) in deps.iter().zip(records) {
                if used.contains(id.as_str()) {
                    continue;
                }
                let Some(record) = record else {
                    warnings.push(BuildWarning::new(
                        WarningKind::MissingRecord,
                        Some(redact(id.as_str())),
                        format!("dependency `{}` is not in the store", redact(id.as_str())),
                    ));
                    continue;
                };
                if record.status != TaskStatus::Done {
                    warnings.push(BuildWarning::new(
                        WarningKind::PendingDependency,
                        Some(redact(id.as_str())),
                        format!(
                            "pending dependency `{}` is {}",
                            redact(id.as_str()),
                            record.status
                        ),
                    ));
                    continue;
                }
                self.note_compressed(&record, &mut warnings);
                let order = candidates.len();
                let candidate = gather::record_candidate(
                    SourceKind::Dependency,
                    &record,
                    RELEVANCE_PINNED,
                    true,
                    "explicit_dependency_output",
                    order,
                )
                .unwrap_or_else(|| {
                    note_candidate(SourceKind::Dependency, &self.prepare(&record), order)
                });
                used.insert(ById(record));
                candidates.push(candidate);
            }
        }

        // 3. Prior DONE siblings.
        if plan.uses(Source::PriorSiblings)
            && let Some(pos) = position
        {
            for sibling in siblings[..pos].iter().flatten() {
                self.push_record(
                    &mut candidates,
                    &mut used,
                    &mut warnings,
                    sibling,
                    SourceKind::PriorSibling,
                    RELEVANCE_PRIOR_SIBLING,
                    "prerequisite_sibling_output",
                );
            }
        }

        // The parent's own output (planning).
        if plan.uses(Source::ParentOutput)
            && let Some(parent) = &parent
            && matches!(parent.status, TaskStatus::Done | TaskStatus::PlanDone)
        {
            self.push_record(
                &mut candidates,
                &mut used,
                &mut warnings,
                parent,
                SourceKind::ParentOutput,
                RELEVANCE_PARENT_OUTPUT,
                gather::parent_output_label(parent),
            );
        }

        // 5. Goal references, in the same plan tree only (reference B15).
        if plan.uses(Source::GoalReferences) {
            self.goal_references(
                current,
                &ancestry,
                log,
                &mut candidates,
                &mut used,
                &mut warnings,
            )
            .await?;
        }

        // 4. Later DONE siblings (the strategy only asks for WRITE and THINK tasks).
        if plan.uses(Source::LaterSiblings)
            && let Some(pos) = position
        {
            for sibling in siblings[pos + 1..].iter().flatten() {
                self.push_record(
                    &mut candidates,
                    &mut used,
                    &mut warnings,
                    sibling,
                    SourceKind::LaterSibling,
                    RELEVANCE_LATER_SIBLING,
                    "later_sibling_output",
                );
            }
        }

        // Children with their real status (aggregation).
        if plan.uses(Source::Children) {
            self.children(current, log, &mut candidates, &mut warnings)
                .await?;
        }

        // 6. Similar completed tasks.
        if plan.uses(Source::Similar) && self.options.max_similar > 0 && !self.similarity.is_empty()
        {
            self.similar(
                current,
                &ancestry,
                log,
                &mut candidates,
                &mut used,
                &mut warnings,
            )
            .await?;
        }

        // 7. Additional context, then allow-listed aux_data.
        if plan.uses(Source::Additional) {
            for (key, value) in &request.additional_context {
                let order = candidates.len();
                candidates.push(self.provided_text(SourceKind::Additional, key, value, order));
            }
        }
        if plan.uses(Source::AuxData) {
            for key in &self.options.aux_data_allow_list {
                if let Some(value) = current.aux_data.get(key) {
                    let order = candidates.len();
                    candidates.push(self.provided_text(SourceKind::AuxData, key, value, order));
                }
            }
        }

        // The hierarchy to render: nearest `max_depth` ancestors (atomization: the parent).
        let (ancestors, hidden) = if plan.uses(Source::Hierarchy) {
            let shown = ancestry.chain.len().min(self.options.max_depth);
            (
                ancestry.chain[..shown]
                    .iter()
                    .map(|r| self.prepare(r))
                    .collect(),
                ancestry.chain.len() - shown,
            )
        } else if plan.uses(Source::ParentGoal) {
            (parent.iter().map(|r| self.prepare(r)).collect(), 0)
        } else {
            (Vec::new(), 0)
        };

        let assembly = Assembly {
            context_type: request.context_type,
            layout: plan.layout,
            task_type: plan.task_type.unwrap_or(current.task_type),
            current: prepared,
            objective,
            ancestors,
            hidden_ancestors: hidden,
            candidates,
            budget: request.budget_tokens.unwrap_or(self.options.budget_tokens),
            max_items: request.max_items.or(plan.max_items),
        };
        let mut context = self.assemble(&assembly).await;
        warnings.append(&mut context.warnings);
        // Messages quote record data (an invalid dependency entry, an id): redact them too.
        for warning in &mut warnings {
            if let Cow::Owned(redacted) = self.redactor.redact_text(&warning.message) {
                warning.message = redacted;
            }
        }
        context.warnings = warnings;
        Ok(context)
    }

    /// The caller's sections: pinned, gathered first so they are the last pinned items dropped.
    fn request_sections(
        &self,
        plan: &SourcePlan,
        request: &ContextRequest,
        candidates: &mut Vec<Candidate>,
    ) {
        let mut push = |kind: SourceKind, id: &str, label: &str, text: String| {
            let order = candidates.len();
            candidates.push(Candidate {
                kind,
                source_id: id.to_string(),
                label_goal: Some(label.to_string()),
                default_label: kind.as_str(),
                forced_label: None,
                status: None,
                relevance: RELEVANCE_PINNED,
                pinned: true,
                order,
                body: Body::Text {
                    text,
                    selection: ContentSelection::Provided,
                },
            });
        };
        if let (Some(replan), true) = (&request.replan, plan.uses(Source::ReplanDetails)) {
            let mut text = format!(
                "Failed sub-goal: {}\nReason: {}",
                self.redact(&replan.failed_sub_goal),
                self.redact(&replan.reason)
            );
            if let Some(previous) = &replan.previous_attempt_summary {
                text.push_str("\nPrevious attempt: ");
                text.push_str(&self.redact(previous));
            }
            if let Some(guidance) = &replan.guidance {
                text.push_str("\nGuidance: ");
                text.push_str(&self.redact(guidance));
            }
            push(
                SourceKind::ReplanDetails,
                "replan_details",
                "Re-plan details",
                text,
            );
        }
        if let (Some(plan_value), true) = (&request.original_plan, plan.uses(Source::OriginalPlan))
        {
            let redacted = self.redactor.redact_json(plan_value);
            let text = self.redact(&render_plan(&redacted));
            push(
                SourceKind::OriginalPlan,
                "original_plan",
                "Original plan to modify",
                text,
            );
        }
        if let (Some(instructions), true) = (
            &request.modification_instructions,
            plan.uses(Source::ModificationInstructions),
        ) {
            push(
                SourceKind::ModificationInstructions,
                "modification_instructions",
                "Modification instructions",
                self.redact(instructions),
            );
        }
        if plan.uses(Source::GlobalConstraints) && !request.global_constraints.is_empty() {
            let text = request
                .global_constraints
                .iter()
                .map(|c| format!("- {}", self.redact(c)))
                .collect::<Vec<_>>()
                .join("\n");
            push(
                SourceKind::GlobalConstraints,
                "global_constraints",
                "Global constraints or preferences",
                text,
            );
        }
    }

    /// Adds a DONE record with content as a ranked candidate, unless already used.
    #[allow(clippy::too_many_arguments)]
    fn push_record(
        &self,
        candidates: &mut Vec<Candidate>,
        used: &mut RecordSet,
        warnings: &mut Vec<BuildWarning>,
        record: &Arc<TaskRecord>,
        kind: SourceKind,
        relevance: f64,
        default_label: &'static str,
    ) {
        if used.contains(record.task_id.as_str())
            || (kind != SourceKind::ParentOutput && record.status != TaskStatus::Done)
        {
            return;
        }
        let order = candidates.len();
        if let Some(candidate) =
            gather::record_candidate(kind, record, relevance, false, default_label, order)
        {
            self.note_compressed(record, warnings);
            used.insert(ById(Arc::clone(record)));
            candidates.push(candidate);
        }
    }

    fn note_compressed(&self, record: &TaskRecord, warnings: &mut Vec<BuildWarning>) {
        if marked_compressed(&record.aux_data) && record.output_content.is_some() {
            warnings.push(BuildWarning::new(
                WarningKind::CompressedOutput,
                Some(self.redact(record.task_id.as_str())),
                format!(
                    "the output of `{}` is stored compressed and is not shown",
                    self.redact(record.task_id.as_str())
                ),
            ));
        }
    }

    /// A text given by the caller (additional context) or by the task (allow-listed `aux_data`)
    /// under `key`: key and value redacted, never pinned.
    fn provided_text(
        &self,
        kind: SourceKind,
        key: &str,
        value: &taskctx_domain::Value,
        order: usize,
    ) -> Candidate {
        let (id_prefix, heading, default_label) = match kind {
            SourceKind::AuxData => ("aux_data", "Task data", "aux_data"),
            _ => ("additional", "Additional context", "additional_context"),
        };
        let key = self.redact(key);
        Candidate {
            kind,
            source_id: format!("{id_prefix}:{key}"),
            label_goal: Some(format!("{heading}: {key}")),
            default_label,
            forced_label: None,
            status: None,
            relevance: RELEVANCE_ADDITIONAL,
            pinned: false,
            order,
            body: Body::Text {
                text: self.render_value(value),
                selection: ContentSelection::Provided,
            },
        }
    }

    /// Renders a caller's JSON value: strings as they are, anything else by the extraction rules.
    fn render_value(&self, value: &taskctx_domain::Value) -> String {
        let redacted = self.redactor.redact_json(value);
        let text = match redacted.as_ref() {
            taskctx_domain::Value::String(s) => {
                render::compressed_note(s).unwrap_or_else(|| s.clone())
            }
            other => extract_output(other),
        };
        self.redact(&text)
    }

    async fn goal_references(
        &self,
        current: &Arc<TaskRecord>,
        ancestry: &gather::Ancestry,
        log: &mut ReadLog,
        candidates: &mut Vec<Candidate>,
        used: &mut RecordSet,
        warnings: &mut Vec<BuildWarning>,
    ) -> StoreResult<()> {
        let store = self.store.as_ref();
        let mut references = gather::goal_references(&current.goal);
        references.retain(|id| id != &current.task_id);
        if references.len() > self.options.max_goal_references {
            warnings.push(BuildWarning::new(
                WarningKind::GoalReference,
                None,
                format!(
                    "the goal references {} tasks; only the first {} are followed",
                    references.len(),
                    self.options.max_goal_references
                ),
            ));
            references.truncate(self.options.max_goal_references);
        }
        if references.is_empty() {
            return Ok(());
        }
        let records = log.get_many(store, &references).await?;
        // The plan tree of the current task: itself and its ancestors.
        let mut tree: FastSet<TaskId> = ancestry.chain.iter().map(|r| r.task_id.clone()).collect();
        tree.insert(current.task_id.clone());
        let root = ancestry
            .chain
            .last()
            .map_or(&current.task_id, |r| &r.task_id)
            .clone();
        for (id, record) in references.iter().zip(records) {
            let shown = self.redact(id.as_str());
            let Some(record) = record else {
                if gather::looks_like_roma_id(id.as_str()) {
                    warnings.push(BuildWarning::new(
                        WarningKind::MissingRecord,
                        Some(shown.clone()),
                        format!("referenced task `{shown}` is not in the store"),
                    ));
                }
                continue;
            };
            if used.contains(id.as_str()) {
                continue;
            }
            if !self.same_tree(&record, &tree, &root, log).await? {
                warnings.push(BuildWarning::new(
                    WarningKind::GoalReference,
                    Some(shown.clone()),
                    format!("referenced task `{shown}` belongs to another plan tree; ignored"),
                ));
                continue;
            }
            if record.status != TaskStatus::Done {
                warnings.push(BuildWarning::new(
                    WarningKind::GoalReference,
                    Some(shown.clone()),
                    format!(
                        "referenced task `{shown}` is {}; no output yet",
                        record.status
                    ),
                ));
                continue;
            }
            self.push_record(
                candidates,
                used,
                warnings,
                &record,
                SourceKind::GoalReference,
                RELEVANCE_GOAL_REFERENCE,
                "explicit_goal_reference",
            );
        }
        Ok(())
    }

    /// Whether `record` is in the plan tree of the current task: its ancestor walk meets the
    /// current task's chain, or ends at the same root.
    async fn same_tree(
        &self,
        record: &Arc<TaskRecord>,
        tree: &FastSet<TaskId>,
        root: &TaskId,
        log: &mut ReadLog,
    ) -> StoreResult<bool> {
        if tree.contains(&record.task_id) {
            return Ok(true);
        }
        let mut seen: Vec<TaskId> = vec![record.task_id.clone()];
        let mut next = record.parent_task_id.clone();
        while let Some(id) = next {
            if tree.contains(&id) {
                return Ok(true);
            }
            if seen.len() > MAX_ANCESTOR_HOPS || seen.contains(&id) {
                return Ok(false);
            }
            match log.get(self.store.as_ref(), &id).await? {
                Some(parent) => {
                    next = parent.parent_task_id.clone();
                    seen.push(id);
                }
                None => return Ok(false),
            }
        }
        Ok(seen.last() == Some(root))
    }

    async fn children(
        &self,
        current: &Arc<TaskRecord>,
        log: &mut ReadLog,
        candidates: &mut Vec<Candidate>,
        warnings: &mut Vec<BuildWarning>,
    ) -> StoreResult<()> {
        let children = log.children(self.store.as_ref(), &current.task_id).await?;
        for planned in &current.child_task_ids {
            if !children.iter().any(|c| &c.task_id == planned) {
                let shown = self.redact(planned.as_str());
                warnings.push(BuildWarning::new(
                    WarningKind::MissingRecord,
                    Some(shown.clone()),
                    format!("planned child `{shown}` is not in the store"),
                ));
            }
        }
        for child in &children {
            let order = candidates.len();
            let status = child.status;
            let label = format!("child_{}_output", status.as_str().to_ascii_lowercase());
            let body = match status {
                TaskStatus::Done => match gather::primary_of(child) {
                    Some(primary) => {
                        self.note_compressed(child, warnings);
                        Body::Record {
                            record: Arc::clone(child),
                            primary,
                        }
                    }
                    None => Body::Text {
                        text: status_note(status).to_string(),
                        selection: ContentSelection::Note,
                    },
                },
                TaskStatus::Failed if self.error_of(&self.prepare(child)).is_some() => {
                    Body::Record {
                        record: Arc::clone(child),
                        primary: Primary::Error,
                    }
                }
                _ => {
                    if !status.is_terminal() {
                        let shown = self.redact(child.task_id.as_str());
                        warnings.push(BuildWarning::new(
                            WarningKind::UnfinishedChild,
                            Some(shown.clone()),
                            format!("child `{shown}` has not finished ({status})"),
                        ));
                    }
                    Body::Text {
                        text: status_note(status).to_string(),
                        selection: ContentSelection::Note,
                    }
                }
            };
            let (source_id, label_goal) = match &body {
                Body::Text { .. } => {
                    let p = self.prepare(child);
                    (p.id.clone(), Some(p.goal.clone()))
                }
                Body::Record { .. } => (String::new(), None),
            };
            candidates.push(Candidate {
                kind: SourceKind::Child,
                source_id,
                label_goal,
                default_label: "child_done_output",
                forced_label: (status != TaskStatus::Done).then_some(label),
                status: Some(status),
                relevance: RELEVANCE_PINNED,
                pinned: true,
                order,
                body,
            });
        }
        Ok(())
    }

    async fn similar(
        &self,
        current: &Arc<TaskRecord>,
        ancestry: &gather::Ancestry,
        log: &mut ReadLog,
        candidates: &mut Vec<Candidate>,
        used: &mut RecordSet,
        warnings: &mut Vec<BuildWarning>,
    ) -> StoreResult<()> {
        let mut excluded: FastSet<&TaskId> = ancestry.chain.iter().map(|r| &r.task_id).collect();
        excluded.insert(&current.task_id);
        let limit = self.options.max_similar + excluded.len() + used.len();
        log.similarity = Some(self.similarity.generation());
        let hits = match self.similarity.search(&current.goal, limit).await {
            Ok(hits) => hits,
            Err(error) => {
                warnings.push(BuildWarning::new(
                    WarningKind::Collaborator,
                    None,
                    format!("similar tasks skipped: {error}"),
                ));
                return Ok(());
            }
        };
        let mut ids: Vec<TaskId> = Vec::with_capacity(hits.len());
        let mut scores: Vec<f64> = Vec::with_capacity(hits.len());
        for hit in hits {
            if !excluded.contains(&hit.task_id) && !used.contains(hit.task_id.as_str()) {
                ids.push(hit.task_id);
                scores.push(hit.score);
            }
        }
        // Read only as many hits as may be needed, in batches: usually one batch of
        // `max_similar` records, more only when some hits are no longer DONE.
        let mut taken = 0;
        let mut start = 0;
        while taken < self.options.max_similar && start < ids.len() {
            let end = (start + self.options.max_similar - taken).min(ids.len());
            let records = log.get_many(self.store.as_ref(), &ids[start..end]).await?;
            for (score, record) in scores[start..end].iter().zip(records) {
                // The index may lag the store: only what the store says is DONE now counts.
                let Some(record) = record.filter(|r| r.status == TaskStatus::Done) else {
                    continue;
                };
                let before = candidates.len();
                self.push_record(
                    candidates,
                    used,
                    warnings,
                    &record,
                    SourceKind::Similar,
                    similar_relevance(*score),
                    "similar_task_output",
                );
                if candidates.len() > before {
                    taken += 1;
                }
            }
            start = end;
        }
        Ok(())
    }
}

/// Where the overall objective comes from: the task's own, else the nearest ancestor's, else
/// the goal of the root the walk reached.
enum ObjectiveSource<'a> {
    /// A record's own `overall_objective`.
    Own(&'a Arc<TaskRecord>),
    /// The goal of the root.
    RootGoal(&'a Arc<TaskRecord>),
}

fn objective_source<'a>(
    current: &'a Arc<TaskRecord>,
    ancestry: &'a gather::Ancestry,
) -> Option<ObjectiveSource<'a>> {
    if has_objective(current) {
        return Some(ObjectiveSource::Own(current));
    }
    if let Some(r) = ancestry.chain.iter().find(|r| has_objective(r)) {
        return Some(ObjectiveSource::Own(r));
    }
    ancestry
        .chain
        .last()
        .filter(|r| ancestry.reached_root && !r.goal.trim().is_empty())
        .map(ObjectiveSource::RootGoal)
}

/// Whether a record states an overall objective.
pub(super) fn has_objective(record: &TaskRecord) -> bool {
    record
        .overall_objective
        .as_deref()
        .is_some_and(|o| !o.trim().is_empty())
}

/// A DONE record without content, as a note item (dependencies are shown even when empty, so
/// the agent knows the dependency produced nothing).
fn note_candidate(kind: SourceKind, p: &Prepared, order: usize) -> Candidate {
    // The redacted id and goal: a note item shows them as they are.
    Candidate {
        kind,
        source_id: p.id.clone(),
        label_goal: Some(p.goal.clone()),
        default_label: "explicit_dependency_output",
        forced_label: None,
        status: Some(p.record.status),
        relevance: RELEVANCE_PINNED,
        pinned: true,
        order,
        body: Body::Text {
            text: render::NO_OUTPUT.to_string(),
            selection: ContentSelection::Note,
        },
    }
}

/// Warns about caller inputs the context type does not use.
fn note_ignored_inputs(
    plan: &SourcePlan,
    request: &ContextRequest,
    warnings: &mut Vec<BuildWarning>,
) {
    let checks: [(bool, Source, &str); 5] = [
        (
            request.replan.is_some(),
            Source::ReplanDetails,
            "replan details",
        ),
        (
            !request.global_constraints.is_empty(),
            Source::GlobalConstraints,
            "global constraints",
        ),
        (
            request.original_plan.is_some(),
            Source::OriginalPlan,
            "the original plan",
        ),
        (
            request.modification_instructions.is_some(),
            Source::ModificationInstructions,
            "modification instructions",
        ),
        (
            !request.additional_context.is_empty(),
            Source::Additional,
            "additional context",
        ),
    ];
    for (given, source, what) in checks {
        if given && !plan.uses(source) {
            warnings.push(BuildWarning::new(
                WarningKind::IgnoredInput,
                None,
                format!(
                    "{what}: not used by {} contexts; ignored",
                    request.context_type
                ),
            ));
        }
    }
}

/// Relevance of a similar task: the normalised score × 0.6, rounded to 4 decimals so that
/// the last bits of a logarithm never change an order or a snapshot between platforms.
fn similar_relevance(score: f64) -> f64 {
    (score.clamp(0.0, 1.0) * RELEVANCE_SIMILAR_SCALE * 10_000.0).round() / 10_000.0
}
