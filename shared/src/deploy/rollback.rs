//! Rollback: back to the last good revision (or a named one), as a rollout like any other.

use super::*;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    pub cluster: String,
    pub daemon: String,
    /// A revision of the daemon's family; by default the last one whose rollout succeeded.
    #[serde(default)]
    pub to_revision: Option<u32>,
    /// Change nothing: answer with what the rollback would do.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackAnswer {
    pub daemon: String,
    /// The EC2 part (none: the daemon runs on Managed Instances only).
    pub from_task_definition: Option<String>,
    pub task_definition: Option<String>,
    pub rollout: Option<Rollout>,
    /// None: the rollback's first wave is the coverage-check's ([`super::ROLLOUT_STARTED_BY`]).
    pub reconcile: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_reconcile_by: Option<&'static str>,
    /// The Managed Instances part: UpdateDaemon back to its good revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<super::managed::ManagedAnswer>,
    /// A part of a daemon spanning both kinds that was on its target already (a retried
    /// rollback whose other part was cut off): left as it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_alone: Vec<String>,
}

/// A part that is on the rollback's target already is left alone while the other part has
/// work; `None` then.
pub(super) fn unless_already_on<T>(
    prepared: Result<T, DeployError>,
    left_alone: &mut Vec<DeployError>,
) -> Result<Option<T>, DeployError> {
    match prepared {
        Ok(prepared) => Ok(Some(prepared)),
        Err(already @ DeployError::AlreadyOn { .. }) => {
            left_alone.push(already);
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// What a rollback decided before recording anything.
pub(super) struct PreparedRollback {
    pub(super) current: Versioned<DaemonSpec>,
    pub(super) target: String,
    pub(super) spec: DaemonSpec,
}

/// Whether a part's latest rollout (`managed`: of the Managed Instances part) is a rollback to
/// `current`, running or done. A rollback without `toRevision` then goes nowhere: a retried
/// rollback must not undo the first (nor one rollback another); to return to the revision
/// rolled back from, deploy it or name it in `toRevision`.
pub(super) async fn rolled_back_to<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    cluster: &str,
    daemon: &str,
    managed: bool,
    current: &str,
) -> Result<bool, DeployError> {
    let rollouts = engine.rollouts(cluster, daemon).await?;
    let latest = rollouts
        .iter()
        .map(|r| &r.record)
        .filter(|r| r.managed_instances == managed)
        .max_by_key(|r| r.started_at);
    Ok(latest.is_some_and(|r| {
        r.kind == RolloutKind::Rollback
            && r.to_task_definition == current
            && matches!(r.state, RolloutState::InProgress | RolloutState::Succeeded)
    }))
}

/// Every check of a rollback, and the spec it would switch to. Reads only.
pub(super) async fn prepare_rollback<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &RollbackRequest,
) -> Result<PreparedRollback, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    check_name("daemon", &request.daemon, 64)?;
    if request.to_revision == Some(0) {
        return Err(invalid("`toRevision` must be a revision number, 1 or more"));
    }
    engine.check_cluster(&request.cluster)?;
    let Some(current) = engine
        .declaration(&request.cluster, &request.daemon)
        .await?
    else {
        return Err(DeployError::UnknownDaemon {
            cluster: request.cluster.clone(),
            daemon: request.daemon.clone(),
        });
    };
    let family = current
        .record
        .task_definition
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let target = match request.to_revision {
        Some(revision) => format!("{family}:{revision}"),
        None if rolled_back_to(
            engine,
            &current.record.cluster,
            &current.record.daemon,
            false,
            &current.record.task_definition,
        )
        .await? =>
        {
            return Err(DeployError::AlreadyOn {
                daemon: request.daemon.clone(),
                task_definition: current.record.task_definition.clone(),
            })
        }
        // After a failed or running update: the last good revision. Once the current revision
        // is itself the good one (its rollout succeeded): the good one before it.
        None => {
            let record = &current.record;
            let last_good = record.last_good_task_definition.as_ref();
            let target = if last_good == Some(&record.task_definition) {
                // Nothing good before it: "already on" says so below.
                record.previous_good_task_definition.as_ref().or(last_good)
            } else {
                last_good
            };
            target.cloned().ok_or_else(|| DeployError::NoGoodRevision {
                daemon: request.daemon.clone(),
            })?
        }
    };
    if target == current.record.task_definition {
        return Err(DeployError::AlreadyOn {
            daemon: request.daemon.clone(),
            task_definition: target,
        });
    }
    let definition = runnable_definition(engine, &target).await?;
    let mut spec = current.record.clone();
    spec.task_definition = target.clone();
    spec.has_health_check = definition.has_health_check();
    spec.health_check_grace_seconds = definition.health_check_grace_seconds();
    spec.note_health_check(&target, definition.has_health_check());
    // The revision rolled back from still runs while the rollback rolls out.
    spec.revision_health_checks.insert(
        current.record.task_definition.clone(),
        current
            .record
            .health_check_of(&current.record.task_definition),
    );
    spec.cpu = definition.cpu;
    spec.memory_mib = definition.memory_mib;
    Ok(PreparedRollback {
        current,
        target,
        spec,
    })
}

/// What a rollback does to each part of a daemon: the parts with work, checked; the parts
/// already on their targets (a retried rollback whose other part was cut off), left alone.
pub(super) struct RollbackParts {
    pub(super) managed: Option<super::managed::PreparedManaged>,
    pub(super) tasks: Option<PreparedRollback>,
    pub(super) left_alone: Vec<String>,
}

/// Checks both parts of a rollback (`managed`: the Managed Instances part as read). Reads
/// only. An undeployed part is not there; if no part has work, the first part's `AlreadyOn`.
pub(super) async fn prepare_parts<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &RollbackRequest,
    managed: Option<Versioned<crate::managed::ManagedDaemon>>,
    now: DateTime<Utc>,
) -> Result<RollbackParts, DeployError> {
    let unknown = || DeployError::UnknownDaemon {
        cluster: request.cluster.clone(),
        daemon: request.daemon.clone(),
    };
    let has_tasks = engine
        .declaration(&request.cluster, &request.daemon)
        .await?
        .is_some();
    let mut already = Vec::new();
    let managed = match managed.filter(|m| m.record.retired_at.is_none()) {
        Some(current) => unless_already_on(
            super::managed::prepare_rollback(engine, current, request.to_revision, now).await,
            &mut already,
        )?,
        None if has_tasks => None,
        None => return Err(unknown()),
    };
    let tasks = match has_tasks {
        true => unless_already_on(prepare_rollback(engine, request).await, &mut already)?,
        false => None,
    };
    if tasks.is_none() && managed.is_none() {
        return Err(already.remove(0));
    }
    Ok(RollbackParts {
        managed,
        tasks,
        left_alone: already.iter().map(ToString::to_string).collect(),
    })
}

/// Rolls a daemon back to its last good revision (or a named one), as a rollout like any
/// other: its EC2 part by a rollout of its copies, its Managed Instances part by UpdateDaemon
/// (ECS has no rollback call). Both parts are checked before either changes; `toRevision`
/// names a revision of each part's own family.
pub async fn rollback<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: RollbackRequest,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<RollbackAnswer, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    check_name("daemon", &request.daemon, 64)?;
    engine.check_cluster(&request.cluster)?;
    let current = engine
        .managed_daemon_now(&request.cluster, &request.daemon, now)
        .await?;
    let RollbackParts {
        managed,
        tasks,
        left_alone,
    } = prepare_parts(engine, &request, current, now).await?;
    let mut answer = RollbackAnswer {
        daemon: request.daemon.clone(),
        from_task_definition: None,
        task_definition: None,
        rollout: None,
        reconcile: None,
        first_reconcile_by: None,
        managed: None,
        left_alone,
    };
    if let Some(PreparedRollback {
        current,
        target,
        spec,
    }) = tasks
    {
        let rollout = start_rollout(
            engine,
            &current,
            spec,
            RolloutKind::Rollback,
            now,
            invocation,
        )
        .await?;
        answer.first_reconcile_by = Some(super::ROLLOUT_STARTED_BY);
        answer.from_task_definition = Some(current.record.task_definition);
        answer.task_definition = Some(target);
        answer.rollout = Some(rollout);
    }
    if let Some(prepared) = managed {
        answer.managed = Some(
            super::managed::declare(
                engine,
                prepared,
                now,
                invocation,
                Some(RolloutKind::Rollback),
            )
            .await?,
        );
    }
    Ok(answer)
}
