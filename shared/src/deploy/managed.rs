//! A deploy's Managed Instances part: the daemon task definition checked against the
//! providers before anything is created, then ECS's managed daemon declared (CreateDaemon,
//! or UpdateDaemon for a change) with a rollout record of the same shape as on EC2.
//!
//! The record is written before ECS is asked, naming the rollout whose call is pending; the
//! call goes out with that rollout's client token, then the record is confirmed. A deploy
//! killed in between is finished by the next one: CreateDaemon with the same token answers
//! the same daemon, and an UpdateDaemon ECS already took is recognised by its deployment.

use super::*;
use crate::ecs::{DaemonChange, DaemonDeclaration};
use crate::managed::{self as rules, ManagedDaemon};
use crate::model::CapacityProvider;

/// What a deploy declared to ECS on Managed Instances providers.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAnswer {
    pub daemon_task_definition: String,
    pub capacity_providers: Vec<String>,
    /// `created`, `updated`, `unchanged` or `rollout` (a new revision rolls out).
    pub recorded: &'static str,
    pub daemon_arn: Option<String>,
    /// ECS's deployment of this change (none when unchanged).
    pub deployment_arn: Option<String>,
    pub rollout: Option<Rollout>,
    pub warnings: Vec<String>,
}

/// A deploy's Managed Instances part, checked and ready to record.
pub(super) struct PreparedManaged {
    record: ManagedDaemon,
    existing: Option<Versioned<ManagedDaemon>>,
    declaration: DaemonDeclaration,
    warnings: Vec<String>,
    /// Instances per provider, as ECS counts the daemon's (empty before it exists).
    instances: BTreeMap<String, usize>,
}

/// Every check of the Managed Instances part. Reads only.
pub(super) async fn prepare<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &DeployRequest,
    pinned: &str,
    providers: Vec<CapacityProvider>,
    now: DateTime<Utc>,
) -> Result<PreparedManaged, DeployError> {
    let definition = engine
        .ecs()
        .describe_daemon_task_definition(pinned)
        .await
        .map_err(|error| match error.kind {
            EcsErrorKind::NotFound => DeployError::DaemonTaskDefinitionNotFound(pinned.into()),
            _ => DeployError::Ecs(error),
        })?;
    check_definition(pinned, &definition, &engine.config().daemon_role_arns)?;
    crate::launch::check_execute_command(
        &request.launch,
        pinned,
        definition.task_role_arn.as_deref(),
    )
    .map_err(invalid)?;
    let mut warnings = check_fits(
        &request.daemon,
        &definition,
        &providers,
        request.warn_share.unwrap_or(DEFAULT_WARN_SHARE),
    )?;
    let existing = engine
        .managed_daemon(&request.cluster, &request.daemon)
        .await?;
    let launch = crate::launch::for_managed(&request.launch);
    check_tags_kept(existing.as_ref().map(|e| &e.record), &launch)?;
    let rollout = request
        .rollout
        .clone()
        .or_else(|| existing.as_ref().map(|e| e.record.rollout.clone()))
        .unwrap_or_default();
    warnings.extend(rules::unsupported_settings(&rollout));
    warnings.push(
        "on Managed Instances ECS rolls a new revision out by draining and replacing instances: \
         application tasks there move to new instances"
            .to_string(),
    );
    // What ECS and earlier deploys established carries over.
    let base = carried_over(engine, existing.as_ref())
        .await?
        .unwrap_or_else(|| ManagedDaemon::new(&request.cluster, &request.daemon, now));
    let record = ManagedDaemon {
        daemon_task_definition: pinned.into(),
        capacity_providers: providers.iter().map(|p| p.name.clone()).collect(),
        critical: request.critical.unwrap_or(true),
        rollout,
        launch,
        updated_at: now,
        ..base
    };
    let instances = match &record.daemon_arn {
        Some(arn) => instances_of(engine, arn, &providers).await?,
        None => BTreeMap::new(),
    };
    let declaration = DaemonDeclaration {
        daemon_name: request.daemon.clone(),
        cluster_arn: cluster_arn(engine, &request.cluster, &providers),
        daemon_task_definition_arn: definition.arn.clone(),
        capacity_provider_arns: providers.iter().map(|p| p.arn.clone()).collect(),
        deployment: rules::deployment_settings(&record.rollout, instances.values().sum()),
        critical: record.critical,
        tags: record
            .launch
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        launch: crate::ecs::DaemonLaunch {
            propagate_tags: crate::launch::managed_propagate_tags(&record.launch)
                .map(str::to_string),
            enable_ecs_managed_tags: record.launch.enable_ecs_managed_tags,
            enable_execute_command: record.launch.enable_execute_command,
        },
    };
    Ok(PreparedManaged {
        record,
        existing,
        declaration,
        warnings,
        instances,
    })
}

/// A daemon ECS holds keeps the tags it was created with: UpdateDaemon takes no tags, and
/// TagResource does not name daemons among the resources it tags (API reference,
/// *UpdateDaemon*, *TagResource*).
fn check_tags_kept(
    existing: Option<&ManagedDaemon>,
    launch: &crate::launch::LaunchOptions,
) -> Result<(), DeployError> {
    let Some(current) = existing.filter(|e| e.daemon_arn.is_some() && e.retired_at.is_none())
    else {
        return Ok(());
    };
    if current.launch.tags == launch.tags {
        return Ok(());
    }
    let shown = |tags: &BTreeMap<String, String>| {
        serde_json::to_string(tags).unwrap_or_else(|_| "?".into())
    };
    Err(invalid(format!(
        "`launch.tags`: ECS's managed daemon {} keeps the tags it was created with ({}); UpdateDaemon takes none and TagResource does not tag daemons. Deploy with those tags, or undeploy it and deploy it afresh with {}",
        current.daemon,
        shown(&current.launch.tags),
        shown(&launch.tags)
    )))
}

/// The daemon's instances per targeted provider, from ECS's counts (running or without the
/// daemon, every current revision).
async fn instances_of<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    daemon_arn: &str,
    providers: &[CapacityProvider],
) -> Result<BTreeMap<String, usize>, DeployError> {
    let state = match engine.ecs().describe_daemon(daemon_arn).await {
        Ok(state) => state,
        // Deleted outside ecs-daemons: drift, reported by status; the deploy creates it again.
        Err(error) if error.kind == EcsErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(error.into()),
    };
    let mut counts = BTreeMap::new();
    for revision in &state.current_revisions {
        for counted in &revision.providers {
            let name = counted
                .capacity_provider_arn
                .rsplit('/')
                .next()
                .unwrap_or_default();
            if let Some(provider) = providers.iter().find(|p| p.name == name) {
                *counts.entry(provider.name.clone()).or_insert(0) +=
                    (counted.running + counted.without_daemon).max(0) as usize;
            }
        }
    }
    Ok(counts)
}

#[path = "managed_preview.rs"]
mod preview;
pub(super) use preview::{dry_run_answer, preview};

/// The cluster's ARN: as the stack names it when it does, else beside a provider's ARN
/// (`arn:…:capacity-provider/NAME` → `arn:…:cluster/CLUSTER`), else the name, which ECS
/// takes in place of an ARN elsewhere.
fn cluster_arn<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    cluster: &str,
    providers: &[CapacityProvider],
) -> String {
    let named = engine
        .config()
        .clusters
        .iter()
        .find(|c| c.starts_with("arn:") && crate::arn::cluster_name(c) == cluster);
    if let Some(arn) = named {
        return arn.clone();
    }
    providers
        .iter()
        .find_map(|p| p.arn.split_once(":capacity-provider/"))
        .map_or_else(
            || cluster.to_string(),
            |(prefix, _)| format!("{prefix}:cluster/{cluster}"),
        )
}

#[path = "managed_checks.rs"]
mod checks;
use checks::{check_definition, check_fits};

/// What a deploy of `record` changes: `created`, `rollout` (another revision), `updated`
/// (other settings: ECS deploys those too) or `unchanged`.
fn what_changes(existing: Option<&ManagedDaemon>, record: &ManagedDaemon) -> &'static str {
    match existing {
        None => "created",
        Some(current) if current.daemon_arn.is_none() || current.retired_at.is_some() => "created",
        Some(current) if current.daemon_task_definition != record.daemon_task_definition => {
            "rollout"
        }
        Some(current)
            if ManagedDaemon {
                updated_at: record.updated_at,
                ..current.clone()
            } == *record =>
        {
            "unchanged"
        }
        Some(_) => "updated",
    }
}

/// Records and declares the Managed Instances part.
/// `kind` names a rollback; a deploy's rollout is an initial one or an update.
pub(super) async fn declare<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    prepared: PreparedManaged,
    now: DateTime<Utc>,
    invocation: &str,
    kind: Option<RolloutKind>,
) -> Result<ManagedAnswer, DeployError> {
    let PreparedManaged {
        mut record,
        existing,
        declaration,
        warnings,
        ..
    } = prepared;
    // A call a killed deploy left unconfirmed is finished first.
    let existing = match existing {
        Some(current) if current.record.pending_rollout.is_some() => {
            Some(finish_pending(engine, current, &declaration, now).await?)
        }
        other => other,
    };
    if let Some(current) = existing.as_ref().filter(|e| e.record.retired_at.is_none()) {
        record.daemon_arn = current.record.daemon_arn.clone();
        record.deployment_arn = current.record.deployment_arn.clone();
        record.active_rollout = current.record.active_rollout.clone();
        record.pending_rollout = None;
    }
    let recorded = what_changes(existing.as_ref().map(|e| &e.record), &record);
    let mut warnings = warnings;
    if recorded == "updated" {
        // Whether UpdateDaemon with the same revision redeploys is not documented: the
        // pessimistic reading is said before it happens.
        warnings.push(
            "only settings changed, but ECS gets them by UpdateDaemon, which starts a deployment: \
             expect ECS to drain and replace the instances as for a new revision"
                .to_string(),
        );
    }
    let answer = |record: &ManagedDaemon, rollout: Option<Rollout>| ManagedAnswer {
        daemon_task_definition: record.daemon_task_definition.clone(),
        capacity_providers: record.capacity_providers.clone(),
        recorded,
        daemon_arn: record.daemon_arn.clone(),
        deployment_arn: rollout.as_ref().and_then(|r| r.deployment_arn.clone()),
        rollout,
        warnings: warnings.clone(),
    };
    if recorded == "unchanged" {
        return Ok(answer(&record, None));
    }
    let kind = match (kind, recorded) {
        (Some(kind), _) => kind,
        (None, "created") => RolloutKind::Initial,
        (None, _) => RolloutKind::Update,
    };
    let previous = existing
        .as_ref()
        .filter(|e| e.record.daemon_arn.is_some() && e.record.retired_at.is_none())
        .map(|e| e.record.daemon_task_definition.clone());
    let expected = existing
        .as_ref()
        .map_or(Expected::Absent, Versioned::expected);
    let mut rollout = switch(
        engine,
        &mut record,
        expected,
        previous,
        kind,
        now,
        invocation,
    )
    .await?;
    let version = expected.next_version();
    confirm(engine, &mut record, version, &declaration, &mut rollout).await?;
    prune_history(engine, &record.cluster, &record.daemon).await?;
    Ok(answer(&record, Some(rollout)))
}

/// Starts the change's rollout: the record switched to it (its call pending), the rollout
/// it replaces ended, in one write.
async fn switch<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    record: &mut ManagedDaemon,
    expected: Expected,
    previous: Option<String>,
    kind: RolloutKind,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<Rollout, DeployError> {
    let running = match &record.active_rollout {
        Some(active) => engine
            .rollout(&record.cluster, &record.daemon, active)
            .await?
            .filter(|r| r.record.state == RolloutState::InProgress),
        None => None,
    };
    let rollout = start_rollout_of(record, previous, kind, now, invocation);
    let ended = running.map(|r| (superseded(&r.record, &rollout, now), r.expected()));
    let switched = engine
        .switch_to_rollout_ending(
            record,
            expected,
            &rollout,
            ended.as_ref().map(|(r, e)| (r, *e)),
        )
        .await;
    match switched {
        Ok(()) => Ok(rollout),
        Err(StoreError::Conflict { .. }) => Err(DeployError::Conflict {
            daemon: record.daemon.clone(),
        }),
        Err(error) => Err(error.into()),
    }
}

/// The rollout a change starts, and the record switched to it (its call pending).
fn start_rollout_of(
    record: &mut ManagedDaemon,
    previous: Option<String>,
    kind: RolloutKind,
    now: DateTime<Utc>,
    invocation: &str,
) -> Rollout {
    // Its own id: the EC2 part's rollout of the same invoke has `new_id(now, invocation)`,
    // and both live in the daemon's partition.
    let mut rollout = Rollout::started(
        &record.cluster,
        &record.daemon,
        Rollout::new_id(now, &format!("{invocation}mi")),
        kind,
        previous,
        record.daemon_task_definition.clone(),
        record.rollout.clone(),
        now,
    );
    rollout.managed_instances = true;
    record.pending_rollout = Some(rollout.id.clone());
    record.active_rollout = Some(rollout.id.clone());
    if kind == RolloutKind::Initial && record.last_good.is_none() {
        // The first revision counts as good, as on EC2: where a failed update returns to.
        record.last_good = Some(record.daemon_task_definition.clone());
    }
    rollout
}

/// Sends the recorded change to ECS, then confirms the record (no call pending) and the
/// rollout (ECS's deployment that carries it).
async fn confirm<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    record: &mut ManagedDaemon,
    version: u64,
    declaration: &DaemonDeclaration,
    rollout: &mut Rollout,
) -> Result<(), DeployError> {
    let change = send(engine, record, declaration, &rollout.id).await?;
    record.daemon_arn = Some(change.daemon_arn.clone());
    record.deployment_arn = change.deployment_arn.clone();
    record.pending_rollout = None;
    conflict_for(
        &record.daemon,
        engine
            .write_managed_daemon(record, Expected::Version(version))
            .await,
    )?;
    rollout.deployment_arn = change.deployment_arn.clone();
    carry(engine, record, &rollout.id, change.deployment_arn).await
}

/// Records on rollout `id` the ECS deployment that carries it. (Cut off before this write,
/// the coverage check takes the deployment from the confirmed declaration instead.)
async fn carry<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    record: &ManagedDaemon,
    id: &str,
    deployment_arn: Option<String>,
) -> Result<(), DeployError> {
    let Some(stored) = engine.rollout(&record.cluster, &record.daemon, id).await? else {
        return Ok(());
    };
    if stored.record.deployment_arn == deployment_arn {
        return Ok(());
    }
    let mut rollout = stored.record.clone();
    rollout.deployment_arn = deployment_arn;
    conflict_for(
        &record.daemon,
        engine.write_rollout(&rollout, stored.expected()).await,
    )
}

/// A rollback of the Managed Instances part, checked: to `family:to_revision` of the daemon
/// task definition's family, else to the last good revision (the one before it once the
/// current revision is itself the good one), as on EC2.
pub(super) async fn prepare_rollback<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    current: Versioned<ManagedDaemon>,
    to_revision: Option<u32>,
    now: DateTime<Utc>,
) -> Result<PreparedManaged, DeployError> {
    let record = &current.record;
    let family = record
        .daemon_task_definition
        .split(':')
        .next()
        .unwrap_or_default();
    let target = match to_revision {
        Some(revision) => format!("{family}:{revision}"),
        // A retried rollback does not undo the first (`rollback::rolled_back_to`); one whose
        // call to ECS was cut off (pending) is finished.
        None if super::rollback::rolled_back_to(
            engine,
            &record.cluster,
            &record.daemon,
            true,
            &record.daemon_task_definition,
        )
        .await? =>
        {
            if record.pending_rollout.is_none() {
                return Err(DeployError::AlreadyOn {
                    daemon: record.daemon.clone(),
                    task_definition: record.daemon_task_definition.clone(),
                });
            }
            record.daemon_task_definition.clone()
        }
        None => {
            let last_good = record.last_good.as_ref();
            let target = if last_good == Some(&record.daemon_task_definition) {
                record.previous_good.as_ref().or(last_good)
            } else {
                last_good
            };
            target.cloned().ok_or_else(|| DeployError::NoGoodRevision {
                daemon: record.daemon.clone(),
            })?
        }
    };
    // A rollback whose call to ECS was cut off (pending) is finished by the next one.
    if target == record.daemon_task_definition && record.pending_rollout.is_none() {
        return Err(DeployError::AlreadyOn {
            daemon: record.daemon.clone(),
            task_definition: target,
        });
    }
    let described = engine
        .ecs()
        .describe_capacity_providers(&record.cluster, &record.capacity_providers)
        .await?;
    let request = DeployRequest {
        cluster: record.cluster.clone(),
        daemon: record.daemon.clone(),
        task_definition: None,
        daemon_task_definition: Some(target.clone()),
        critical: Some(record.critical),
        max_critical_drains: None,
        capacity_providers: record.capacity_providers.clone(),
        start_order: 0,
        restart: None,
        warn_share: None,
        rollout: Some(record.rollout.clone()),
        placement: PlacementChoice::Auto,
        instance_filter: None,
        launch: record.launch.clone(),
        dry_run: false,
    };
    prepare(engine, &request, &target, described, now).await
}

/// CreateDaemon (with the rollout's client token) when ECS has no daemon yet, else UpdateDaemon.
async fn send<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    record: &ManagedDaemon,
    declaration: &DaemonDeclaration,
    rollout_id: &str,
) -> Result<DaemonChange, DeployError> {
    let sent = match &record.daemon_arn {
        None => {
            engine
                .ecs()
                .create_daemon(declaration, &rules::client_token(rollout_id))
                .await
        }
        Some(arn) => engine.ecs().update_daemon(arn, declaration).await,
    };
    Ok(sent?)
}

/// Finishes the call a killed deploy left pending: CreateDaemon again with its token (ECS
/// answers the same daemon), or, for an update, ECS's latest deployment if it already rolls
/// the recorded revision out, else UpdateDaemon again. Answers the confirmed record.
async fn finish_pending<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    current: Versioned<ManagedDaemon>,
    declaration: &DaemonDeclaration,
    now: DateTime<Utc>,
) -> Result<Versioned<ManagedDaemon>, DeployError> {
    let mut record = current.record.clone();
    let Some(pending) = record.pending_rollout.clone() else {
        return Ok(current);
    };
    // The pending call named the recorded revision, which may not be this deploy's.
    let recorded = DaemonDeclaration {
        daemon_task_definition_arn: beside(
            &declaration.daemon_task_definition_arn,
            &record.daemon_task_definition,
        ),
        ..declaration.clone()
    };
    let change = match &record.daemon_arn {
        Some(arn) => match deployment_of(engine, arn, &record.daemon_task_definition).await? {
            Some(deployment) => DaemonChange {
                daemon_arn: arn.clone(),
                status: "ACTIVE".into(),
                deployment_arn: Some(deployment),
            },
            None => send(engine, &record, &recorded, &pending).await?,
        },
        None => send(engine, &record, &recorded, &pending).await?,
    };
    record.daemon_arn = Some(change.daemon_arn);
    record.deployment_arn = change.deployment_arn.clone();
    record.pending_rollout = None;
    record.updated_at = now;
    let version = conflict_version(
        &record.daemon,
        engine
            .write_managed_daemon(&record, current.expected())
            .await,
    )?;
    carry(engine, &record, &pending, change.deployment_arn).await?;
    Ok(Versioned { record, version })
}

/// The ARN of revision `pinned` (`family:revision`), beside `arn` of another revision.
fn beside(arn: &str, pinned: &str) -> String {
    match arn.rsplit_once('/') {
        Some((prefix, _)) => format!("{prefix}/{pinned}"),
        None => pinned.to_string(),
    }
}

/// ECS's latest deployment of the daemon, if it rolls out `pinned`.
async fn deployment_of<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    daemon_arn: &str,
    pinned: &str,
) -> Result<Option<String>, DeployError> {
    let state = engine.ecs().describe_daemon(daemon_arn).await?;
    let Some(deployment_arn) = state.deployment_arn else {
        return Ok(None);
    };
    let deployments = engine
        .ecs()
        .describe_daemon_deployments(std::slice::from_ref(&deployment_arn))
        .await?;
    let Some(target) = deployments
        .first()
        .and_then(|d| d.target_revision_arn.clone())
    else {
        return Ok(None);
    };
    let revisions = engine.ecs().describe_daemon_revisions(&[target]).await?;
    let rolls_out_pinned = revisions.first().is_some_and(|r| {
        r.daemon_task_definition_arn
            .ends_with(&format!("/{pinned}"))
    });
    Ok(rolls_out_pinned.then_some(deployment_arn))
}

fn conflict_version(daemon: &str, written: Result<u64, StoreError>) -> Result<u64, DeployError> {
    match written {
        Ok(version) => Ok(version),
        Err(StoreError::Conflict { .. }) => Err(DeployError::Conflict {
            daemon: daemon.into(),
        }),
        Err(error) => Err(error.into()),
    }
}

/// The declaration a deploy builds on: the existing one, unless it was undeployed (then the
/// daemon starts afresh, its rollout history kept, once ECS let it go).
async fn carried_over<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    existing: Option<&Versioned<ManagedDaemon>>,
) -> Result<Option<ManagedDaemon>, DeployError> {
    match existing {
        Some(retired) if retired.record.retired_at.is_some() => {
            still_deleting(engine, &retired.record).await?;
            Ok(None)
        }
        other => Ok(other.map(|e| e.record.clone())),
    }
}

/// Refuses while ECS still holds the undeployed daemon (it keeps the name until it is gone).
async fn still_deleting<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    retired: &ManagedDaemon,
) -> Result<(), DeployError> {
    let Some(arn) = &retired.daemon_arn else {
        return Ok(());
    };
    match engine.ecs().describe_daemon(arn).await {
        Ok(_) => Err(DeployError::DaemonBeingDeleted {
            daemon: retired.daemon.clone(),
            daemon_arn: arn.clone(),
        }),
        Err(error) if error.kind == EcsErrorKind::NotFound => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The rollout in progress that `next` replaces, ended.
fn superseded(running: &Rollout, next: &Rollout, now: DateTime<Utc>) -> Rollout {
    let mut ended = running.clone();
    ended.state = RolloutState::Superseded;
    ended.reason = Some(
        format!(
            "superseded by a {:?} to {}",
            next.kind, next.to_task_definition
        )
        .to_lowercase(),
    );
    ended.finished_at = Some(now);
    ended.updated_at = now;
    ended
}

#[cfg(test)]
#[path = "managed_tests.rs"]
mod tests;
