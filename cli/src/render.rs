//! What the CLI prints for people: the status tables, one summary of each answer, and the
//! line a rollout's progress takes where no live bar can be drawn.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Table};
use serde_json::Value;

use crate::watch::Progress;

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn list(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(header);
    table
}

/// The rollout column: kind, target, state and how far.
fn rollout_cell(rollout: &Value) -> String {
    if !rollout.is_object() {
        return "-".into();
    }
    let counts = rollout.get("counts").cloned().unwrap_or_default();
    let mut cell = format!(
        "{} → {} {}",
        text(rollout, "kind"),
        text(rollout, "toTaskDefinition"),
        text(rollout, "state"),
    );
    // Counted from the first reconcile on (a rollout just recorded has none yet).
    if counts.get("total").and_then(Value::as_u64).unwrap_or(0) > 0 {
        cell.push_str(&format!(
            " {}/{}",
            text(&counts, "done"),
            text(&counts, "total")
        ));
    }
    if rollout.get("paused").is_some_and(Value::is_object) {
        cell.push_str(" (paused)");
    }
    if rollout.get("awaitingPromote").and_then(Value::as_bool) == Some(true) {
        cell.push_str(" (awaiting promote)");
    }
    cell
}

/// The status answer as tables: one row per daemon and capacity provider kind (its EC2
/// providers together, as ecs-daemons counts their coverage; each Managed Instances provider
/// as ECS counts it), then every instance in trouble with ECS's reason.
pub fn status(status: &Value) -> String {
    let daemons: Vec<&Value> = status
        .get("daemons")
        .and_then(Value::as_array)
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    if daemons.is_empty() {
        return format!("no daemon declared in {}", text(status, "cluster"));
    }
    let mut coverage = table(&[
        "daemon",
        "capacity providers",
        "revision",
        "covered",
        "starting",
        "missing",
        "crash-looping",
        "rollout",
    ]);
    let mut trouble = table(&["daemon", "instance", "state", "reason"]);
    for daemon in &daemons {
        let name = text(daemon, "daemon");
        let undeployed = daemon.get("undeployedAt").is_some_and(|u| !u.is_null());
        let providers = list(daemon, "capacityProviders");
        if !providers.is_empty() || undeployed {
            let counts = daemon.get("coverage").cloned().unwrap_or_default();
            coverage.add_row(vec![
                Cell::new(&name),
                Cell::new(providers.join(", ")),
                Cell::new(if undeployed {
                    "undeployed".to_string()
                } else {
                    text(daemon, "taskDefinition")
                }),
                Cell::new(format!(
                    "{}/{}",
                    text(&counts, "covered"),
                    text(&counts, "targeted")
                )),
                Cell::new(text(&counts, "starting")),
                Cell::new(text(&counts, "missing")),
                Cell::new(text(&counts, "crashLooping")),
                Cell::new(rollout_cell(daemon.get("rollout").unwrap_or(&Value::Null))),
            ]);
            for item in daemon
                .get("coverage")
                .and_then(|c| c.get("trouble"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                trouble.add_row(vec![
                    name.clone(),
                    text(item, "instanceId"),
                    text(item, "state"),
                    text(item, "reason"),
                ]);
            }
        }
        if let Some(managed) = daemon.get("managed").filter(|m| m.is_object()) {
            let deployment = managed.get("deployment").cloned().unwrap_or_default();
            for provider in managed
                .get("providers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let running = provider.get("running").and_then(Value::as_i64).unwrap_or(0);
                let without = provider
                    .get("withoutDaemon")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                coverage.add_row(vec![
                    name.clone(),
                    format!("{} (Managed Instances)", text(provider, "capacityProvider")),
                    text(managed, "daemonTaskDefinition"),
                    format!("{running}/{}", running + without),
                    "-".into(),
                    without.to_string(),
                    "-".into(),
                    format!("ECS deployment {}", text(&deployment, "status")),
                ]);
            }
            for start in managed
                .get("impairedStarts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                trouble.add_row(vec![
                    name.clone(),
                    text(start, "containerInstanceId"),
                    text(start, "failureType"),
                    text(start, "reason"),
                ]);
            }
        }
    }
    let mut out = coverage.to_string();
    if trouble.row_count() > 0 {
        out.push_str("\ninstances in trouble:\n");
        out.push_str(&trouble.to_string());
    }
    out
}

/// The few lines that say what an answer did (the full answer: `--json`).
pub fn answer(command: &str, answer: &Value) -> String {
    let mut lines = Vec::new();
    if answer.get("dryRun").and_then(Value::as_bool) == Some(true) {
        let would = ["wouldRecord", "recorded"]
            .iter()
            .map(|k| text(answer, k))
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        let would = if would.starts_with("would") {
            would
        } else {
            format!("would record {would}")
        };
        lines.push(format!("dry run of {command}: {would} (nothing changed)"));
        if let Some(batches) = answer
            .get("rollout")
            .and_then(|r| r.get("batches"))
            .and_then(Value::as_array)
        {
            lines.push(format!(
                "{} batch(es), about {} s",
                batches.len(),
                text(answer, "expectedWallSeconds")
            ));
        }
        if let Some(stops) = answer.get("wouldStop").and_then(Value::as_u64) {
            lines.push(format!("would stop {stops} cop(ies)"));
        }
    } else {
        let recorded = text(answer, "recorded");
        let what = match (recorded.as_str(), text(answer, "fromTaskDefinition")) {
            ("", from) if !from.is_empty() => {
                format!("{from} → {}", text(answer, "taskDefinition"))
            }
            ("", _) => text(answer, "taskDefinition"),
            (recorded, _) => {
                let definition = text(answer, "taskDefinition");
                if definition.is_empty() {
                    format!("recorded {recorded}")
                } else {
                    format!("recorded {recorded} ({definition})")
                }
            }
        };
        lines.push(format!("{command} {}: {what}", text(answer, "daemon")));
        for rollout in [
            answer.get("rollout"),
            answer.get("managed").and_then(|m| m.get("rollout")),
        ]
        .into_iter()
        .flatten()
        .filter(|r| r.is_object())
        {
            lines.push(format!(
                "rollout {}: {}",
                text(rollout, "id"),
                rollout_cell(rollout)
            ));
        }
    }
    for warning in list(answer, "warnings") {
        lines.push(format!("warning: {warning}"));
    }
    lines.join("\n")
}

/// One line per watched rollout, where no live bar is drawn (not a terminal).
pub fn progress_line(progress: &Progress) -> String {
    let mut line = format!(
        "{} {} {} → {}: {} {}/{} (failures {}/{})",
        progress.daemon,
        progress.id,
        progress.kind,
        progress.to_task_definition,
        progress.state,
        progress.done,
        progress.total,
        progress.failures,
        progress.threshold,
    );
    if let Some(note) = &progress.note {
        line.push_str(&format!(": {note}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_has_a_row_per_daemon_and_provider_kind_and_the_instances_in_trouble() {
        let answer = json!({"cluster": "prod", "daemons": [
            {"daemon": "cwagent", "taskDefinition": "cwagent:2", "capacityProviders": ["asg-general"],
             "coverage": {"targeted": 3, "covered": 2, "starting": 0, "missing": 1, "crashLooping": 1,
                          "trouble": [{"instanceId": "i-1", "state": "CRASH_LOOP", "reason": "CannotPullContainerError"}]},
             "rollout": {"id": "r1", "kind": "UPDATE", "toTaskDefinition": "cwagent:2", "state": "IN_PROGRESS",
                         "counts": {"done": 1, "total": 3}, "paused": {"by": "alice"}},
             "managed": {"daemonTaskDefinition": "cwagent-daemon:4",
                         "providers": [{"capacityProvider": "mi-general", "running": 5, "withoutDaemon": 1}],
                         "deployment": {"status": "SUCCESSFUL"},
                         "impairedStarts": [{"containerInstanceId": "mi-7", "failureType": "TASK_CREATION_FAILED", "reason": "RESOURCE:MEMORY"}]}}
        ]});
        let shown = status(&answer);
        for expected in [
            "cwagent:2",
            "2/3",
            "UPDATE → cwagent:2 IN_PROGRESS 1/3 (paused)",
            "asg-general",
            "mi-general (Managed Instances)",
            "5/6",
            "ECS deployment SUCCESSFUL",
            "instances in trouble",
            "CannotPullContainerError",
            "RESOURCE:MEMORY",
        ] {
            assert!(shown.contains(expected), "{expected} missing in\n{shown}");
        }
        assert_eq!(
            status(&json!({"cluster": "prod", "daemons": []})),
            "no daemon declared in prod"
        );
    }

    #[test]
    fn answers_are_summed_up_in_a_few_lines() {
        let deployed = json!({"daemon": "cwagent", "taskDefinition": "cwagent:3", "recorded": "rollout",
            "rollout": {"id": "r3", "kind": "UPDATE", "toTaskDefinition": "cwagent:3", "state": "IN_PROGRESS",
                        "counts": {"done": 0, "total": 10}},
            "warnings": ["takes 40 % of the smallest instance"]});
        let shown = answer("deploy", &deployed);
        assert!(
            shown.starts_with("deploy cwagent: recorded rollout (cwagent:3)"),
            "{shown}"
        );
        assert!(shown.contains("rollout r3: UPDATE → cwagent:3 IN_PROGRESS 0/10"));
        assert!(shown.contains("warning: takes 40 %"));
        let dry = json!({"dryRun": true, "wouldRecord": "rollout", "expectedWallSeconds": 140,
                         "rollout": {"batches": [["i-1"], ["i-2", "i-3"]]}});
        let shown = answer("deploy", &dry);
        assert!(
            shown.contains("would record rollout") && shown.contains("2 batch(es), about 140 s"),
            "{shown}"
        );
        let gone = json!({"dryRun": true, "daemon": "cwagent", "recorded": "would undeploy", "wouldStop": 3});
        let shown = answer("undeploy", &gone);
        assert!(
            shown.contains("dry run of undeploy: would undeploy") && shown.contains("would stop 3"),
            "{shown}"
        );
        let back = json!({"daemon": "cwagent", "fromTaskDefinition": "cwagent:3", "taskDefinition": "cwagent:2",
                          "rollout": {"id": "r4", "kind": "ROLLBACK", "toTaskDefinition": "cwagent:2",
                                      "state": "IN_PROGRESS", "counts": {"done": 0, "total": 0}}});
        let shown = answer("rollback", &back);
        assert!(
            shown.starts_with("rollback cwagent: cwagent:3 → cwagent:2"),
            "{shown}"
        );
        assert!(
            shown.contains("rollout r4: ROLLBACK → cwagent:2 IN_PROGRESS\n")
                || shown.ends_with("IN_PROGRESS"),
            "{shown}"
        );
    }

    #[test]
    fn a_progress_line_names_the_rollout_and_what_holds_it() {
        let line = progress_line(&Progress {
            daemon: "cwagent".into(),
            id: "r3".into(),
            kind: "UPDATE".into(),
            to_task_definition: "cwagent:3".into(),
            state: "IN_PROGRESS".into(),
            done: 4,
            total: 10,
            failures: 1,
            threshold: 5,
            note: Some("paused by alice at t".into()),
        });
        assert_eq!(
            line,
            "cwagent r3 UPDATE → cwagent:3: IN_PROGRESS 4/10 (failures 1/5): paused by alice at t"
        );
    }
}
