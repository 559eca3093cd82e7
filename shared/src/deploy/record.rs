//! Recording a deploy: the declaration and the rollout it starts in one transaction, the
//! rollout it supersedes, the history kept.

use super::*;

/// Validates and records a daemon: on EC2 providers its spec (then a reconcile, so coverage
/// starts at once), on Managed Instances providers ECS's managed daemon. Every check of both
/// parts runs before either is written.
pub async fn deploy<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: DeployRequest,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<DeployAnswer, DeployError> {
    let (pins, targets) = check_targets(engine, &request).await?;
    let request = resolve_alarms(engine, request).await?;
    let managed = match &pins.daemon {
        Some(definition) => {
            // The rollout in flight recorded as ECS left it, before anything is decided
            // (a dry run reads without this write).
            engine
                .managed_daemon_now(&request.cluster, &request.daemon, now)
                .await?;
            Some(super::managed::prepare(engine, &request, definition, targets.managed, now).await?)
        }
        None => None,
    };
    let tasks = match pins.task {
        Some(task_definition) => {
            let narrowed = request.for_providers(&targets.ec2);
            Some(prepare_deploy(engine, &narrowed, task_definition, &targets.services, now).await?)
        }
        None => None,
    };
    let mut answer = match tasks {
        Some(prepared) => record_tasks(engine, &request, prepared, now, invocation).await?,
        None => DeployAnswer {
            daemon: request.daemon.clone(),
            task_definition: None,
            recorded: "unchanged",
            rollout: None,
            warnings: Vec::new(),
            reconcile: None,
            first_reconcile_by: None,
            managed: None,
        },
    };
    if let Some(prepared) = managed {
        let declared = super::managed::declare(engine, prepared, now, invocation, None).await?;
        if answer.task_definition.is_none() {
            answer.recorded = declared.recorded;
        }
        answer.warnings.extend(declared.warnings.iter().cloned());
        answer.managed = Some(declared);
    }
    Ok(answer)
}

/// Records a deploy's EC2 part and runs the first reconcile (a rollout's is the
/// coverage-check's).
async fn record_tasks<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &DeployRequest,
    prepared: PreparedDeploy,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<DeployAnswer, DeployError> {
    let PreparedDeploy {
        task_definition,
        warnings,
        existing,
        replaces_retired,
        spec,
        retries_failed,
    } = prepared;
    let recorded = what_deploy_records(existing.as_ref(), &spec, retries_failed, now);
    let rollout = match (recorded, &existing) {
        ("rollout", Some(current)) => {
            Some(start_rollout(engine, current, spec, RolloutKind::Update, now, invocation).await?)
        }
        ("unchanged", _) => None,
        (_, current) => {
            let expected = match (current, replaces_retired) {
                (Some(current), _) => current.expected(),
                (None, Some(version)) => Expected::Version(version),
                (None, None) => Expected::Absent,
            };
            let mut spec = spec;
            // The same revision (or a first one): the services run it before it is declared.
            super::services::ensure_services(engine, &mut spec, &[], invocation).await?;
            conflict_for(
                &request.daemon,
                engine.write_declaration(&spec, expected).await,
            )?;
            None
        }
    };
    // A new rollout's first wave is the coverage-check's (its insert wakes it).
    let reconcile = match rollout {
        Some(_) => None,
        None => Some(
            engine
                .reconcile_cluster(&request.cluster, now, invocation)
                .await?,
        ),
    };
    Ok(DeployAnswer {
        daemon: request.daemon.clone(),
        task_definition: Some(task_definition),
        recorded,
        first_reconcile_by: rollout.as_ref().map(|_| ROLLOUT_STARTED_BY),
        rollout,
        warnings,
        reconcile,
        managed: None,
    })
}

/// The id of the rollout a dry run plans with (never stored).
pub(super) const DRY_RUN_ID: &str = "dry-run";

/// What a deploy of `spec` records: `rollout` (another revision, a placement move, or the
/// revision whose rollout failed, tried again), `unchanged`, `updated` or `created`. The
/// real run and the dry run decide it here.
pub(super) fn what_deploy_records(
    existing: Option<&Versioned<DaemonSpec>>,
    spec: &DaemonSpec,
    retries_failed: bool,
    now: DateTime<Utc>,
) -> &'static str {
    match existing {
        Some(current)
            if current.record.task_definition != spec.task_definition
                || retries_failed
                || super::services::placement_moves(&current.record, spec) =>
        {
            "rollout"
        }
        Some(current)
            if DaemonSpec {
                updated_at: now,
                ..current.record.clone()
            } == *spec =>
        {
            "unchanged"
        }
        Some(_) => "updated",
        None => "created",
    }
}

/// The record of a new rollout from `current` to `spec`'s revision (a dry run's is not stored).
pub(super) fn new_rollout(
    current: &DaemonSpec,
    spec: &DaemonSpec,
    kind: RolloutKind,
    id: String,
    now: DateTime<Utc>,
) -> Rollout {
    Rollout::started(
        &spec.cluster,
        &spec.daemon,
        id,
        kind,
        Some(current.task_definition.clone()),
        spec.task_definition.clone(),
        spec.rollout.clone(),
        now,
    )
}

/// Starts a rollout of `spec.task_definition`: the one in flight (if any) is superseded,
/// the new record written, then the spec switched to it (conditionally).
pub(super) async fn start_rollout<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    current: &Versioned<DaemonSpec>,
    mut spec: DaemonSpec,
    kind: RolloutKind,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<Rollout, DeployError> {
    let daemon = spec.daemon.clone();
    // The revisions copies run now: the declared one, and the one a rollout in flight is
    // moving away from. A DAEMON service running either is not idle.
    let in_flight = match &current.record.active_rollout {
        Some(id) => engine
            .rollout(&spec.cluster, &daemon, id)
            .await?
            .filter(|r| r.record.state == RolloutState::InProgress)
            .and_then(|r| r.record.from_task_definition),
        None => None,
    };
    let busy: Vec<&str> = std::iter::once(current.record.task_definition.as_str())
        .chain(in_flight.as_deref())
        .collect();
    super::services::ensure_services(engine, &mut spec, &busy, invocation).await?;
    let rollout = new_rollout(
        &current.record,
        &spec,
        kind,
        Rollout::new_id(now, invocation),
        now,
    );
    // The spec is the switch: once it names the new rollout, that rollout is the one that
    // runs. Both land in one transaction, so a rollout never runs without its record (the
    // reconcile's rebuild of a missing record stays for tables written before).
    spec.active_rollout = Some(rollout.id.clone());
    spec.updated_at = now;
    match engine
        .switch_to_rollout(&spec, current.expected(), &rollout)
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(DeployError::Conflict {
                daemon: daemon.clone(),
            })
        }
        Err(error) => return Err(error.into()),
    }
    if let Some(active) = &current.record.active_rollout {
        if let Some(running) = engine.rollout(&spec.cluster, &daemon, active).await? {
            if running.record.state == RolloutState::InProgress {
                let mut ended = running.record.clone();
                ended.state = RolloutState::Superseded;
                ended.reason = Some(
                    format!("superseded by a {kind:?} to {}", rollout.to_task_definition)
                        .to_lowercase(),
                );
                ended.finished_at = Some(now);
                ended.updated_at = now;
                // Lost to a reconcile that updated it meanwhile: that reconcile supersedes it too.
                if let Err(error) = conflict_for(
                    &daemon,
                    engine.write_rollout(&ended, running.expected()).await,
                ) {
                    tracing::warn!(rollout = %ended.id, error = %error, "could not mark the superseded rollout");
                }
            }
        }
    }
    prune_history(engine, &spec.cluster, &daemon).await?;
    Ok(rollout)
}

/// A write lost to another writer is the user's conflict ("deployed meanwhile, try again").
pub(super) fn conflict_for(
    daemon: &str,
    written: Result<u64, StoreError>,
) -> Result<(), DeployError> {
    match written {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(DeployError::Conflict {
            daemon: daemon.into(),
        }),
        Err(error) => Err(error.into()),
    }
}

/// Keeps the newest [`Rollout::HISTORY_KEPT`] finished rollouts of a daemon.
pub(super) async fn prune_history<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    cluster: &str,
    daemon: &str,
) -> Result<(), DeployError> {
    let rollouts = engine.rollouts(cluster, daemon).await?;
    let excess = rollouts.len().saturating_sub(Rollout::HISTORY_KEPT);
    for old in rollouts
        .iter()
        .take(excess)
        .filter(|r| r.record.state != RolloutState::InProgress)
    {
        match engine.forget_rollout(old).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
