//! Dry runs of deploy and rollback: their checks, then the planner's answer for the
//! cluster as it would be. No ECS call that mutates, no table write.

use super::*;

/// The planner's answer for the cluster as it would be with `spec` (and `rollout`) recorded.
#[allow(clippy::too_many_arguments)]
pub(super) async fn dry_run_of<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    cluster: &str,
    mut spec: DaemonSpec,
    rollout: Option<Rollout>,
    would_record: &'static str,
    warnings: Vec<String>,
    now: DateTime<Utc>,
) -> Result<DryRunAnswer, DeployError> {
    let daemon = spec.daemon.clone();
    let task_definition = spec.task_definition.clone();
    let (cpu, memory_mib) = (spec.cpu, spec.memory_mib);
    let config = spec.rollout.clone();
    let from = rollout
        .as_ref()
        .and_then(|r| r.from_task_definition.clone());
    if let Some(rollout) = &rollout {
        spec.active_rollout = Some(rollout.id.clone());
    }
    let rolling = rollout.is_some();
    let observation = engine
        .observe_cluster_as(cluster, now, Some((spec, rollout)))
        .await?;
    let planned = crate::plan::plan(&observation);
    Ok(crate::dry_run::report(crate::dry_run::DryRunInput {
        observation: &observation,
        plan: &planned,
        daemon: &daemon,
        task_definition: &task_definition,
        from_task_definition: from.as_deref(),
        would_record,
        warnings,
        cpu,
        memory_mib,
        rollout: rolling.then_some(&config),
        pacing: crate::pacing::Pacing::share("coverage-check"),
    }))
}

/// A deploy with `"dryRun": true`: every check of the real one, then what it would do.
/// No ECS call that mutates, no table write.
pub async fn deploy_dry_run<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: DeployRequest,
    now: DateTime<Utc>,
) -> Result<DryRunAnswer, DeployError> {
    let (pins, targets) = check_targets(engine, &request).await?;
    let request = resolve_alarms(engine, request).await?;
    let managed = match &pins.daemon {
        Some(definition) => {
            let prepared =
                super::managed::prepare(engine, &request, definition, targets.managed, now).await?;
            Some(super::managed::preview(engine, prepared).await?)
        }
        None => None,
    };
    let Some(task_definition) = pins.task else {
        let managed = managed.ok_or_else(|| invalid("the deploy targets no capacity provider"))?;
        let task_definition = request.daemon_task_definition.clone().unwrap_or_default();
        return Ok(super::managed::dry_run_answer(
            &request.cluster,
            &request.daemon,
            &task_definition,
            managed,
        ));
    };
    let narrowed = request.for_providers(&targets.ec2);
    let PreparedDeploy {
        warnings,
        existing,
        spec,
        retries_failed,
        ..
    } = prepare_deploy(engine, &narrowed, task_definition, &targets.services, now).await?;
    let would_record = what_deploy_records(existing.as_ref(), &spec, retries_failed, now);
    let rollout = existing
        .as_ref()
        .filter(|_| would_record == "rollout")
        .map(|current| {
            new_rollout(
                &current.record,
                &spec,
                RolloutKind::Update,
                DRY_RUN_ID.into(),
                now,
            )
        });
    let mut answer = dry_run_of(
        engine,
        &request.cluster,
        spec,
        rollout,
        would_record,
        warnings,
        now,
    )
    .await?;
    answer.managed = managed;
    Ok(answer)
}

/// A rollback with `"dryRun": true`: its checks, then what it would do. Changes nothing.
pub async fn rollback_dry_run<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: RollbackRequest,
    now: DateTime<Utc>,
) -> Result<DryRunAnswer, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    check_name("daemon", &request.daemon, 64)?;
    engine.check_cluster(&request.cluster)?;
    let current = engine
        .managed_daemon(&request.cluster, &request.daemon)
        .await?;
    // The parts the rollback itself would roll back.
    let parts = super::rollback::prepare_parts(engine, &request, current, now).await?;
    let managed = match parts.managed {
        Some(prepared) => {
            let mut preview = super::managed::preview(engine, prepared).await?;
            preview.would_record = "rollback";
            Some(preview)
        }
        None => None,
    };
    let (current, spec, managed) = match (parts.tasks, managed) {
        (Some(PreparedRollback { current, spec, .. }), managed) => (current, spec, managed),
        (None, Some(preview)) => {
            let task_definition = preview
                .request
                .daemon_task_definition_arn
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut answer = super::managed::dry_run_answer(
                &request.cluster,
                &request.daemon,
                &task_definition,
                preview,
            );
            answer.would_record = "rollback";
            return Ok(answer);
        }
        // prepare_parts answers at least one part or an error.
        (None, None) => {
            return Err(DeployError::UnknownDaemon {
                cluster: request.cluster.clone(),
                daemon: request.daemon.clone(),
            })
        }
    };
    let rollout = new_rollout(
        &current.record,
        &spec,
        RolloutKind::Rollback,
        DRY_RUN_ID.into(),
        now,
    );
    let mut answer = dry_run_of(
        engine,
        &request.cluster,
        spec,
        Some(rollout),
        "rollback",
        Vec::new(),
        now,
    )
    .await?;
    answer.managed = managed;
    Ok(answer)
}
