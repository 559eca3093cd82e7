//! The dry run of a deploy's or rollback's Managed Instances part.

use super::*;

/// What the deploy would ask of ECS, and ECS's rollout in steps. Changes nothing.
pub(in crate::deploy) async fn preview<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    prepared: PreparedManaged,
) -> Result<crate::dry_run::ManagedPreview, DeployError> {
    let PreparedManaged {
        record,
        existing,
        declaration,
        instances,
        ..
    } = prepared;
    let would_record = what_changes(existing.as_ref().map(|e| &e.record), &record);
    let call = match would_record {
        "unchanged" => None,
        _ if record.daemon_arn.is_none() => Some("CreateDaemon"),
        _ => Some("UpdateDaemon"),
    };
    let total: usize = instances.values().sum();
    let percent = declaration
        .deployment
        .drain_percent
        .unwrap_or(rules::ECS_DEFAULT_DRAIN_PERCENT);
    let per_step = ((percent / 100.0) * total as f64).ceil().max(1.0) as usize;
    let steps = total.div_ceil(per_step);
    let mut assumptions = vec![format!(
        "ECS drains {percent:.0} % of the instances at once (drainPercent), then waits {} minute(s) after each successful step (bakeTimeInMinutes)",
        declaration.deployment.bake_time_in_minutes.unwrap_or(0)
    )];
    if record.daemon_arn.is_none() {
        assumptions.push(
            "the daemon does not exist yet: ECS's count of its instances is known once it does; \
             instances the providers already run are drained and replaced too"
                .into(),
        );
    }
    let history = engine.rollouts(&record.cluster, &record.daemon).await?;
    let observed = history.iter().rev().find_map(|r| {
        let finished = r.record.finished_at?;
        (r.record.deployment_arn.is_some()
            && r.record.state == RolloutState::Succeeded
            && r.record.counts.total > 0)
            .then(|| {
                (finished - r.record.started_at).num_seconds().max(0) as f64
                    / r.record.counts.total as f64
            })
    });
    let expected_wall_seconds = match observed {
        Some(per_instance) => {
            assumptions.push(format!(
                "{per_instance:.0} s per instance, as the last finished Managed Instances rollout of this daemon took"
            ));
            Some((per_instance * total as f64).ceil() as u64)
        }
        None => {
            assumptions.push(
                "no Managed Instances rollout of this daemon has finished yet: its duration is not estimated".into(),
            );
            None
        }
    };
    Ok(crate::dry_run::ManagedPreview {
        call,
        request: declaration,
        would_record,
        instances,
        instances_per_step: per_step,
        steps,
        expected_wall_seconds,
        assumptions,
    })
}

/// The dry run's answer for a daemon on Managed Instances providers only.
pub(in crate::deploy) fn dry_run_answer(
    cluster: &str,
    daemon: &str,
    daemon_task_definition: &str,
    preview: crate::dry_run::ManagedPreview,
) -> crate::dry_run::DryRunAnswer {
    crate::dry_run::DryRunAnswer {
        dry_run: true,
        cluster: cluster.to_string(),
        daemon: daemon.to_string(),
        task_definition: daemon_task_definition.to_string(),
        from_task_definition: None,
        would_record: preview.would_record,
        warnings: Vec::new(),
        targeted: preview.instances.clone(),
        instances: Vec::new(),
        rollout: None,
        first_step: Vec::new(),
        expected_wall_seconds: preview.expected_wall_seconds.unwrap_or(0),
        ecs_calls: Default::default(),
        assumptions: preview.assumptions.clone(),
        managed: Some(preview),
    }
}
