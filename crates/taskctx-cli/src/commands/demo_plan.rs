//! The research plan `taskctx demo` stores: a root with sub-plans, dependencies, one failed step,
//! one very long output and one planted secret, as a ROMA-style planner would have left it.

use serde_json::json;
use taskctx::{TaskId, TaskRecord, TaskStatus, TaskType, Timestamp, domain::NodeType};

const OBJECTIVE: &str =
    "Write a market report: European EV battery cell capacity versus demand up to 2030";

/// Credentials planted in the plan's records; none may reach a built context.
pub(crate) const PLANTED_SECRETS: [&str; 3] = [
    "Sup3rS3cretPw",
    "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.c2lnbmF0dXJlLWRlbW8",
];

/// The records of the plan, parents before children.
pub(crate) fn research_plan() -> anyhow::Result<Vec<TaskRecord>> {
    let at = |s: f64| Timestamp::from_secs(1_790_000_000.0 + s).unwrap_or_default();
    let task = |id: &str| TaskId::new(id);
    let node = |id: &str,
                parent: Option<&str>,
                goal: &str,
                task_type: TaskType,
                layer: u32|
     -> anyhow::Result<TaskRecord> {
        let mut record = TaskRecord::new(task(id)?, goal, task_type);
        record.parent_task_id = parent.map(task).transpose()?;
        record.layer = Some(layer);
        record.overall_objective = Some(OBJECTIVE.to_owned());
        record.created_at = at(f64::from(layer));
        record.updated_at = record.created_at;
        Ok(record)
    };
    let ids = |list: &[&str]| -> anyhow::Result<Vec<TaskId>> {
        list.iter().map(|id| Ok(task(id)?)).collect()
    };

    let mut root = node("root", None, OBJECTIVE, TaskType::Write, 0)?;
    root.node_type = Some(NodeType::Plan);
    root.status = TaskStatus::PlanDone;
    root.child_task_ids = ids(&["root.1", "root.2", "root.3", "root.4"])?;
    root.output_summary = Some("Generated 4 sub-tasks".to_owned());

    let mut capacity = node(
        "root.1",
        Some("root"),
        "Collect announced EU gigafactory cell capacity for 2024-2030",
        TaskType::Search,
        1,
    )?;
    capacity.node_type = Some(NodeType::Execute);
    capacity.status = TaskStatus::Done;
    capacity.output_type_description = Some("search_results".to_owned());
    capacity.output_content = Some(json!({
        "query_used": "EU gigafactory announced cell capacity 2030 GWh",
        "results": [
            {"title": "Battery plant tracker 2025", "snippet": "30 announced plants; 1.2 TWh of annual capacity by 2030 if all are built."},
            {"title": "Delays in European cell manufacturing", "snippet": "About 40% of announced capacity is delayed or at risk of cancellation."},
            {"title": "Top producers in Europe", "snippet": "CATL, LG Energy Solution and Northvolt lead announced volumes."},
            {"title": "Analyst dashboard export", "snippet": "Raw plant list exported from postgres://analyst:Sup3rS3cretPw@db.internal:5432/plants"}
        ]
    }));
    capacity.output_summary = Some(
        "Announced EU cell capacity: 1.2 TWh/year by 2030 across 30 plants; about 40% delayed or at risk."
            .to_owned(),
    );

    let mut demand = node(
        "root.2",
        Some("root"),
        "Project 2030 EV battery demand in Europe",
        TaskType::Think,
        1,
    )?;
    demand.node_type = Some(NodeType::Plan);
    demand.status = TaskStatus::Done;
    demand.child_task_ids = ids(&["root.2.1", "root.2.2", "root.2.3"])?;
    demand.output_content = Some(json!(
        "Aggregated projection: European EV battery demand reaches 0.9-1.1 TWh/year in 2030 \
         (central case 1.0 TWh), from 9-10 million new EVs at a fallback 60 kWh average pack."
    ));
    demand.output_type_description = Some("aggregated_result".to_owned());

    let mut sales = node(
        "root.2.1",
        Some("root.2"),
        "Find 2030 EV sales forecasts for the EU",
        TaskType::Search,
        2,
    )?;
    sales.status = TaskStatus::Done;
    sales.output_content = Some(json!(long_forecast_report()));
    sales.output_summary = Some(
        "Forecasts for 2030 EU EV sales range from 8.1 to 11.4 million vehicles; the median of 14 sources is 9.6 million."
            .to_owned(),
    );
    // Run metadata a tool left behind: never rendered (aux_data is allow-listed) — and the
    // secret inside it would be redacted anyway.
    sales.aux_data.insert(
        "execution_details".to_owned(),
        json!({"api_key": PLANTED_SECRETS[1]}),
    );

    let mut pack = node(
        "root.2.2",
        Some("root.2"),
        "Estimate the average battery pack size per new EV (kWh)",
        TaskType::Think,
        2,
    )?;
    pack.status = TaskStatus::Failed;
    pack.error_message =
        Some("source paywalled: the ICCT fleet dataset requires a licence".to_owned());

    let mut estimate = node(
        "root.2.3",
        Some("root.2"),
        "Estimate 2030 demand from sales times pack size, with a fallback pack size",
        TaskType::Think,
        2,
    )?;
    estimate.status = TaskStatus::Done;
    estimate
        .aux_data
        .insert("depends_on_indices".to_owned(), json!([0, 1]));
    estimate.output_content = Some(json!(
        "With 9.6 million EVs and a fallback average pack of 60 kWh (the pack-size estimate \
         failed), 2030 demand is about 0.58 TWh for cars alone; adding vans, buses and trucks \
         gives 0.9-1.1 TWh."
    ));

    let mut section = node(
        "root.3",
        Some("root"),
        "Write the capacity-versus-demand section, comparing `root.1` with `root.2`",
        TaskType::Write,
        1,
    )?;
    section.status = TaskStatus::Ready;
    section
        .aux_data
        .insert("depends_on_indices".to_owned(), json!([0, 1]));

    let mut summary = node(
        "root.4",
        Some("root"),
        "Write the executive summary",
        TaskType::Write,
        1,
    )?;
    summary
        .aux_data
        .insert("depends_on_indices".to_owned(), json!([2]));

    Ok(vec![
        root, capacity, demand, sales, pack, estimate, section, summary,
    ])
}

/// A long search output (about four thousand tokens) that cannot fit an item as it is — with a
/// credential a careless tool pasted into it.
fn long_forecast_report() -> String {
    let sources = [
        ("IEA Global EV Outlook", 9.8),
        ("BloombergNEF EVO", 10.4),
        ("ACEA scenario", 8.1),
        ("ICCT baseline", 9.1),
        ("McKinsey battery report", 11.4),
        ("T&E market monitor", 10.1),
        ("Rho Motion forecast", 9.6),
    ];
    let mut text = String::from("EU EV sales forecasts for 2030, source by source.\n\n");
    for round in 0..12 {
        for (source, millions) in sources {
            text.push_str(&format!(
                "{source} (revision {round}): {millions} million battery-electric and plug-in hybrid cars \
                 sold in the EU in 2030, assuming the 2035 zero-emission mandate holds, charging \
                 infrastructure keeps pace and cell prices fall below 80 USD/kWh.\n"
            ));
        }
    }
    text.push_str(&format!(
        "\nRetrieved with Authorization: Bearer {}\n",
        PLANTED_SECRETS[2]
    ));
    text
}
