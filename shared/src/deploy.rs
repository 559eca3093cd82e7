//! `deploy` and `status` invokes: validate a daemon declaration against the
//! cluster before anything runs, record it, and report coverage. Every error a
//! user can cause says what is wrong and how to fix it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dry_run::DryRunAnswer;
use crate::ecs::{Ecs, EcsError, EcsErrorKind};
use crate::engine::{Engine, EngineError, Outcome};
use crate::model::TaskDefinition;
use crate::plan::DaemonCoverage;
use crate::rollout::Rollout;
use crate::rollout::{RolloutConfig, RolloutKind, RolloutState};
use crate::slot::{Slot, SlotState};
use crate::spec::{DaemonSpec, RestartPolicy};
use crate::store::{Expected, ItemKey, PreparedPut, Record, Store, StoreError, Versioned};

/// Share of an instance's registered CPU or memory above which a deploy warns.
pub const DEFAULT_WARN_SHARE: f64 = 0.25;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployRequest {
    pub cluster: String,
    pub daemon: String,
    /// `family:revision`, or its ARN.
    pub task_definition: String,
    pub capacity_providers: Vec<String>,
    #[serde(default)]
    pub start_order: i32,
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// Warn when the daemon takes more than this share of an instance (0–1).
    #[serde(default)]
    pub warn_share: Option<f64>,
    /// How a new revision rolls out (kept for later deploys and rollbacks).
    #[serde(default)]
    pub rollout: Option<RolloutConfig>,
    /// Change nothing: answer with what the deploy would do (see [`crate::dry_run`]).
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusRequest {
    pub cluster: String,
    #[serde(default)]
    pub daemon: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("task definition {0} was not found in this account and region: register it, or fix the family or revision")]
    TaskDefinitionNotFound(String),
    #[error(
        "task definition {0} has no execution role: daemons pull images and write logs with it; \
         register a revision with executionRoleArn set (and list that role in the stack's DaemonRoleArns parameter)"
    )]
    NoExecutionRole(String),
    #[error("cluster {cluster} does not exist in this account and region: check the name")]
    ClusterNotFound { cluster: String },
    #[error(
        "capacity provider {provider} is not attached to cluster {cluster} (attached: {attached}): \
         attach it with PutClusterCapacityProviders, or fix the name"
    )]
    CapacityProviderNotInCluster {
        provider: String,
        cluster: String,
        attached: String,
    },
    #[error("{0}")]
    TooLarge(Box<TooLarge>),
    #[error(
        "daemon {daemon} has no revision whose rollout succeeded yet: name one with toRevision"
    )]
    NoGoodRevision { daemon: String },
    #[error("daemon {daemon} is already on {task_definition}: nothing to roll back to")]
    AlreadyOn {
        daemon: String,
        task_definition: String,
    },
    #[error("daemon {daemon} was changed by someone else meanwhile: read it again with status and retry")]
    Conflict { daemon: String },
    #[error("unknown daemon {daemon} in cluster {cluster}: deploy it first (status lists the declared ones)")]
    UnknownDaemon { cluster: String, daemon: String },
    #[error(transparent)]
    Ecs(#[from] EcsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A daemon that cannot fit on an instance it targets.
#[derive(Debug, thiserror::Error)]
#[error(
    "daemon {daemon} needs {needed} but instance {instance} of capacity provider {provider} registers only {available}: \
     lower the task definition's {resource}, or target larger instances"
)]
pub struct TooLarge {
    pub daemon: String,
    pub instance: String,
    pub provider: String,
    pub resource: &'static str,
    pub needed: String,
    pub available: String,
}

fn invalid(message: impl Into<String>) -> DeployError {
    DeployError::InvalidRequest(message.into())
}

/// Parses an invoke payload, naming the field at fault.
pub fn parse_payload<T: serde::de::DeserializeOwned>(payload: Value) -> Result<T, DeployError> {
    if !payload.is_object() {
        return Err(invalid("the payload must be a JSON object"));
    }
    serde_path_to_error::deserialize(payload).map_err(|error| {
        let path = cut_short(&error.path().to_string(), 200);
        let inner = cut_short(&error.into_inner().to_string(), 400);
        if path == "." {
            invalid(inner)
        } else {
            invalid(format!("`{path}`: {inner}"))
        }
    })
}

/// A value as an error message shows it: quoted, and cut short when it is long (a hostile
/// payload must not turn into a megabyte of log line).
fn shown(value: &str) -> String {
    cut_short(&format!("{value:?}"), 80)
}

fn cut_short(text: &str, keep: usize) -> String {
    match text.char_indices().nth(keep) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

/// Most capacity providers one daemon may target (its spec is one DynamoDB item).
pub const MAX_CAPACITY_PROVIDERS: usize = 50;

fn check_name(field: &str, value: &str, max: usize) -> Result<(), DeployError> {
    let valid = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "`{field}` must be 1 to {max} letters, digits, hyphens or underscores, got {}",
            shown(value)
        )))
    }
}

/// `family:revision` (or its ARN) → `family:revision`; anything not pinned is refused.
pub fn pinned_task_definition(reference: &str) -> Result<String, DeployError> {
    let bare = reference
        .split_once(":task-definition/")
        .map_or(reference, |(_, rest)| rest);
    let pinned = bare.split_once(':').and_then(|(family, revision)| {
        let family_ok = !family.is_empty()
            && family.len() <= 255
            && family
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let revision_ok = revision.parse::<u32>().is_ok_and(|r| r > 0);
        (family_ok && revision_ok).then(|| format!("{family}:{revision}"))
    });
    pinned.ok_or_else(|| {
        invalid(format!(
            "`taskDefinition` must be pinned to a revision as family:revision (for example cloudwatch-agent:3), got {}; \
             daemons never follow the latest revision on their own",
            shown(reference)
        ))
    })
}

impl DeployRequest {
    /// A request with the default restart policy and warning share.
    pub fn new(
        cluster: &str,
        daemon: &str,
        task_definition: &str,
        capacity_providers: &[&str],
        start_order: i32,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            daemon: daemon.into(),
            task_definition: task_definition.into(),
            capacity_providers: capacity_providers.iter().map(|p| p.to_string()).collect(),
            start_order,
            restart: None,
            warn_share: None,
            rollout: None,
            dry_run: false,
        }
    }

    /// Checks that need no AWS call.
    pub fn validate(&self) -> Result<String, DeployError> {
        check_name("cluster", &self.cluster, 255)?;
        check_name("daemon", &self.daemon, 64)?;
        let pinned = pinned_task_definition(&self.task_definition)?;
        if self.capacity_providers.is_empty() {
            return Err(invalid(
                "`capacityProviders` must name at least one capacity provider of the cluster",
            ));
        }
        if self.capacity_providers.len() > MAX_CAPACITY_PROVIDERS {
            return Err(invalid(format!(
                "`capacityProviders` names {} capacity providers; at most {MAX_CAPACITY_PROVIDERS}",
                self.capacity_providers.len()
            )));
        }
        for (index, provider) in self.capacity_providers.iter().enumerate() {
            check_name(&format!("capacityProviders[{index}]"), provider, 255)?;
            if self.capacity_providers[..index].contains(provider) {
                return Err(invalid(format!(
                    "`capacityProviders` names {provider} twice"
                )));
            }
        }
        if !(-1000..=1000).contains(&self.start_order) {
            return Err(invalid(format!(
                "`startOrder` must be between -1000 and 1000, got {}",
                self.start_order
            )));
        }
        if let Some(share) = self.warn_share {
            if !(share > 0.0 && share <= 1.0) {
                return Err(invalid(format!(
                    "`warnShare` must be above 0 and at most 1, got {share}"
                )));
            }
        }
        if let Some(rollout) = &self.rollout {
            rollout.validate().map_err(invalid)?;
        }
        if let Some(restart) = &self.restart {
            if restart.max_consecutive_failures == 0 || restart.max_consecutive_failures > 100 {
                return Err(invalid("`restart.maxConsecutiveFailures` must be 1 to 100"));
            }
            if restart.base_backoff_seconds > restart.max_backoff_seconds
                || restart.max_backoff_seconds > 86_400
            {
                return Err(invalid(
                    "`restart.baseBackoffSeconds` must not exceed `restart.maxBackoffSeconds`, which must be at most 86400",
                ));
            }
        }
        Ok(pinned)
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployAnswer {
    pub daemon: String,
    pub task_definition: String,
    /// `created`, `updated`, `unchanged`, or `rollout` (a new revision rolls out).
    pub recorded: &'static str,
    pub rollout: Option<Rollout>,
    pub warnings: Vec<String>,
    /// The first reconcile, run right away.
    pub reconcile: Outcome,
}

fn describe_error(task_definition: &str, error: EcsError) -> DeployError {
    if error.kind == EcsErrorKind::NotFound {
        DeployError::TaskDefinitionNotFound(task_definition.into())
    } else {
        DeployError::Ecs(error)
    }
}

/// Checks the daemon's size against every targeted instance; returns warnings.
fn check_sizes(
    daemon: &str,
    definition: &TaskDefinition,
    instances: &[crate::model::ContainerInstance],
    warn_share: f64,
) -> Result<Vec<String>, DeployError> {
    let mut warnings = Vec::new();
    if definition.cpu.is_none() {
        warnings.push(format!(
            "{} reserves no CPU: set cpu so the daemon keeps its share",
            definition.family_revision()
        ));
    }
    if definition.memory_mib.is_none() {
        warnings.push(format!(
            "{} reserves no memory: set memory so the daemon keeps its share",
            definition.family_revision()
        ));
    }
    for instance in instances {
        let provider = instance.capacity_provider.clone().unwrap_or_default();
        let checks = [
            ("cpu", definition.cpu, instance.registered.cpu, "CPU units"),
            (
                "memory",
                definition.memory_mib,
                instance.registered.memory_mib,
                "MiB",
            ),
        ];
        for (resource, needed, available, unit) in checks {
            let Some(needed) = needed else { continue };
            if available > 0 && needed > available {
                return Err(DeployError::TooLarge(Box::new(TooLarge {
                    daemon: daemon.into(),
                    instance: instance.id().into(),
                    provider,
                    resource,
                    needed: format!("{needed} {unit}"),
                    available: format!("{available} {unit}"),
                })));
            }
            if available > 0 && needed as f64 > warn_share * available as f64 {
                warnings.push(format!(
                    "daemon {daemon} takes {needed} of the {available} {unit} of instance {} ({:.0} %), more than the {:.0} % warning share",
                    instance.id(),
                    100.0 * needed as f64 / available as f64,
                    100.0 * warn_share
                ));
            }
        }
    }
    Ok(warnings)
}

/// What a deploy decided before recording anything: shared by the real run and the dry run.
struct PreparedDeploy {
    task_definition: String,
    warnings: Vec<String>,
    existing: Option<Versioned<DaemonSpec>>,
    spec: DaemonSpec,
}

/// Every check of a deploy, and the spec it would record. Reads only.
async fn prepare_deploy<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &DeployRequest,
    now: DateTime<Utc>,
) -> Result<PreparedDeploy, DeployError> {
    let task_definition = request.validate()?;
    engine.check_cluster(&request.cluster)?;
    let definition = engine
        .ecs
        .describe_task_definition(&task_definition)
        .await
        .map_err(|error| describe_error(&task_definition, error))?;
    if definition
        .execution_role_arn
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(DeployError::NoExecutionRole(task_definition));
    }
    let attached = engine
        .ecs
        .cluster_capacity_providers(&request.cluster)
        .await
        .map_err(|error| {
            if error.kind == EcsErrorKind::NotFound {
                DeployError::ClusterNotFound {
                    cluster: request.cluster.clone(),
                }
            } else {
                DeployError::Ecs(error)
            }
        })?;
    for provider in &request.capacity_providers {
        if !attached.contains(provider) {
            return Err(DeployError::CapacityProviderNotInCluster {
                provider: provider.clone(),
                cluster: request.cluster.clone(),
                attached: if attached.is_empty() {
                    "none".into()
                } else {
                    attached.join(", ")
                },
            });
        }
    }
    let arns = engine
        .ecs
        .list_container_instances(&request.cluster, None)
        .await?;
    let instances: Vec<_> = engine
        .ecs
        .describe_container_instances(&request.cluster, &arns)
        .await?
        .into_iter()
        .filter(|i| {
            i.capacity_provider
                .as_ref()
                .is_some_and(|p| request.capacity_providers.contains(p))
        })
        .collect();
    let mut warnings = check_sizes(
        &request.daemon,
        &definition,
        &instances,
        request.warn_share.unwrap_or(DEFAULT_WARN_SHARE),
    )?;
    if instances.is_empty() {
        warnings.push(format!(
            "no instance of {} is registered yet: the daemon starts on each one as it joins",
            request.capacity_providers.join(", ")
        ));
    }

    let key = ItemKey::spec(&request.cluster, &request.daemon);
    let existing: Option<Versioned<DaemonSpec>> = engine.store.get(&key).await?;
    let config = request
        .rollout
        .clone()
        .or_else(|| existing.as_ref().map(|e| e.record.rollout.clone()))
        .unwrap_or_default();
    let spec = DaemonSpec {
        cluster: request.cluster.clone(),
        daemon: request.daemon.clone(),
        task_definition: task_definition.clone(),
        capacity_providers: request.capacity_providers.clone(),
        start_order: request.start_order,
        has_health_check: definition.has_health_check(),
        cpu: definition.cpu,
        memory_mib: definition.memory_mib,
        // The first revision counts as good: it is where a failed update returns to.
        last_good_task_definition: existing
            .as_ref()
            .map_or(Some(task_definition.clone()), |e| {
                e.record.last_good_task_definition.clone()
            }),
        previous_good_task_definition: existing
            .as_ref()
            .and_then(|e| e.record.previous_good_task_definition.clone()),
        active_rollout: existing
            .as_ref()
            .and_then(|e| e.record.active_rollout.clone()),
        restart: request.restart.clone().unwrap_or_default(),
        rollout: config.clone(),
        updated_at: now,
    };
    Ok(PreparedDeploy {
        task_definition,
        warnings,
        existing,
        spec,
    })
}

/// Validates and records a daemon, then reconciles the cluster so coverage starts at once.
pub async fn deploy<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: DeployRequest,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<DeployAnswer, DeployError> {
    let PreparedDeploy {
        task_definition,
        warnings,
        existing,
        spec,
    } = prepare_deploy(engine, &request, now).await?;
    let recorded = what_deploy_records(existing.as_ref(), &spec, now);
    let rollout = match (recorded, &existing) {
        ("rollout", Some(current)) => {
            Some(start_rollout(engine, current, spec, RolloutKind::Update, now, invocation).await?)
        }
        ("unchanged", _) => None,
        (_, current) => {
            let expected = current
                .as_ref()
                .map_or(Expected::Absent, Versioned::expected);
            write_spec(engine, &spec, expected, &request.daemon).await?;
            None
        }
    };
    let reconcile = engine
        .reconcile_cluster(&request.cluster, now, invocation)
        .await?;
    Ok(DeployAnswer {
        daemon: request.daemon,
        task_definition,
        recorded,
        rollout,
        warnings,
        reconcile,
    })
}

/// The id of the rollout a dry run plans with (never stored).
const DRY_RUN_ID: &str = "dry-run";

/// What a deploy of `spec` records: `rollout` (another revision), `unchanged`, `updated`
/// or `created`. The real run and the dry run decide it here.
fn what_deploy_records(
    existing: Option<&Versioned<DaemonSpec>>,
    spec: &DaemonSpec,
    now: DateTime<Utc>,
) -> &'static str {
    match existing {
        Some(current) if current.record.task_definition != spec.task_definition => "rollout",
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
fn new_rollout(
    current: &DaemonSpec,
    spec: &DaemonSpec,
    kind: RolloutKind,
    id: String,
    now: DateTime<Utc>,
) -> Rollout {
    Rollout {
        cluster: spec.cluster.clone(),
        daemon: spec.daemon.clone(),
        id,
        kind,
        from_task_definition: Some(current.task_definition.clone()),
        to_task_definition: spec.task_definition.clone(),
        config: spec.rollout.clone(),
        state: RolloutState::InProgress,
        counts: Default::default(),
        failures: Vec::new(),
        reason: None,
        started_at: now,
        updated_at: now,
        finished_at: None,
    }
}

/// The planner's answer for the cluster as it would be with `spec` (and `rollout`) recorded.
#[allow(clippy::too_many_arguments)]
async fn dry_run_of<E: Ecs, S: Store>(
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
        .await?
        .ok_or_else(|| invalid("the cluster has no daemon to plan for"))?;
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
    let PreparedDeploy {
        warnings,
        existing,
        spec,
        ..
    } = prepare_deploy(engine, &request, now).await?;
    let would_record = what_deploy_records(existing.as_ref(), &spec, now);
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
    dry_run_of(
        engine,
        &request.cluster,
        spec,
        rollout,
        would_record,
        warnings,
        now,
    )
    .await
}

/// A rollback with `"dryRun": true`: its checks, then what it would do. Changes nothing.
pub async fn rollback_dry_run<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: RollbackRequest,
    now: DateTime<Utc>,
) -> Result<DryRunAnswer, DeployError> {
    let PreparedRollback { current, spec, .. } = prepare_rollback(engine, &request).await?;
    let rollout = new_rollout(
        &current.record,
        &spec,
        RolloutKind::Rollback,
        DRY_RUN_ID.into(),
        now,
    );
    dry_run_of(
        engine,
        &request.cluster,
        spec,
        Some(rollout),
        "rollback",
        Vec::new(),
        now,
    )
    .await
}

/// Starts a rollout of `spec.task_definition`: the one in flight (if any) is superseded,
/// the new record written, then the spec switched to it (conditionally).
async fn start_rollout<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    current: &Versioned<DaemonSpec>,
    mut spec: DaemonSpec,
    kind: RolloutKind,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<Rollout, DeployError> {
    let daemon = spec.daemon.clone();
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
    let puts = [
        PreparedPut::of(&spec, current.expected())?,
        PreparedPut::of(&rollout, Expected::Absent)?,
    ];
    match engine.store.put_all(&puts).await {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(DeployError::Conflict {
                daemon: daemon.clone(),
            })
        }
        Err(error) => return Err(error.into()),
    }
    if let Some(active) = &current.record.active_rollout {
        let key = ItemKey::rollout(&spec.cluster, &daemon, active);
        if let Some(running) = engine.store.get::<Rollout>(&key).await? {
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
                if let Err(error) = write_record(engine, &ended, running.expected(), &daemon).await
                {
                    tracing::warn!(rollout = %ended.id, error = %error, "could not mark the superseded rollout");
                }
            }
        }
    }
    prune_history(engine, &spec.cluster, &daemon).await?;
    Ok(rollout)
}

async fn write_record<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    rollout: &Rollout,
    expected: Expected,
    daemon: &str,
) -> Result<(), DeployError> {
    match engine.store.put(rollout, expected).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(DeployError::Conflict {
            daemon: daemon.into(),
        }),
        Err(error) => Err(error.into()),
    }
}

/// Keeps the newest [`Rollout::HISTORY_KEPT`] finished rollouts of a daemon.
async fn prune_history<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    cluster: &str,
    daemon: &str,
) -> Result<(), DeployError> {
    let rollouts: Vec<Versioned<Rollout>> = engine.store.query(cluster, daemon).await?;
    let excess = rollouts.len().saturating_sub(Rollout::HISTORY_KEPT);
    for old in rollouts
        .iter()
        .take(excess)
        .filter(|r| r.record.state != RolloutState::InProgress)
    {
        match engine.store.delete(&old.record.key(), old.version).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

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
    pub from_task_definition: String,
    pub task_definition: String,
    pub rollout: Rollout,
    pub reconcile: Outcome,
}

/// What a rollback decided before recording anything.
struct PreparedRollback {
    current: Versioned<DaemonSpec>,
    target: String,
    spec: DaemonSpec,
}

/// Every check of a rollback, and the spec it would switch to. Reads only.
async fn prepare_rollback<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &RollbackRequest,
) -> Result<PreparedRollback, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    check_name("daemon", &request.daemon, 64)?;
    if request.to_revision == Some(0) {
        return Err(invalid("`toRevision` must be a revision number, 1 or more"));
    }
    engine.check_cluster(&request.cluster)?;
    let key = ItemKey::spec(&request.cluster, &request.daemon);
    let Some(current) = engine.store.get::<DaemonSpec>(&key).await? else {
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
    let definition = engine
        .ecs
        .describe_task_definition(&target)
        .await
        .map_err(|error| describe_error(&target, error))?;
    if definition
        .execution_role_arn
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(DeployError::NoExecutionRole(target));
    }
    let mut spec = current.record.clone();
    spec.task_definition = target.clone();
    spec.has_health_check = definition.has_health_check();
    spec.cpu = definition.cpu;
    spec.memory_mib = definition.memory_mib;
    Ok(PreparedRollback {
        current,
        target,
        spec,
    })
}

/// Rolls a daemon back to its last good revision (or a named one), as a rollout like any other.
pub async fn rollback<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: RollbackRequest,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<RollbackAnswer, DeployError> {
    let PreparedRollback {
        current,
        target,
        spec,
    } = prepare_rollback(engine, &request).await?;
    let rollout = start_rollout(
        engine,
        &current,
        spec,
        RolloutKind::Rollback,
        now,
        invocation,
    )
    .await?;
    let reconcile = engine
        .reconcile_cluster(&request.cluster, now, invocation)
        .await?;
    Ok(RollbackAnswer {
        daemon: request.daemon,
        from_task_definition: current.record.task_definition,
        task_definition: target,
        rollout,
        reconcile,
    })
}

async fn write_spec<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    spec: &DaemonSpec,
    expected: Expected,
    daemon: &str,
) -> Result<(), DeployError> {
    match engine.store.put(spec, expected).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(DeployError::Conflict {
            daemon: daemon.into(),
        }),
        Err(error) => Err(error.into()),
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub daemon: String,
    pub task_definition: String,
    pub capacity_providers: Vec<String>,
    pub start_order: i32,
    pub coverage: DaemonCoverage,
    /// Slots recorded as crash-looping or backing off, with ECS's reasons.
    pub slots_in_trouble: Vec<SlotTrouble>,
    /// The rollout in flight, else the latest one.
    pub rollout: Option<RolloutView>,
    /// Earlier rollouts, newest first.
    pub history: Vec<RolloutView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub id: String,
    pub kind: RolloutKind,
    pub from_task_definition: Option<String>,
    pub to_task_definition: String,
    pub state: RolloutState,
    pub percent_done: u32,
    pub counts: crate::rollout::RolloutCounts,
    pub failures: Vec<crate::rollout::RolloutFailure>,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RolloutView {
    fn of(rollout: Rollout, live: Option<&crate::rollout::RolloutCounts>) -> Self {
        let counts = live.cloned().unwrap_or(rollout.counts);
        Self {
            percent_done: counts.percent_done(),
            counts,
            id: rollout.id,
            kind: rollout.kind,
            from_task_definition: rollout.from_task_definition,
            to_task_definition: rollout.to_task_definition,
            state: rollout.state,
            failures: rollout.failures,
            reason: rollout.reason,
            started_at: rollout.started_at,
            finished_at: rollout.finished_at,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotTrouble {
    pub instance_id: String,
    pub state: SlotState,
    pub consecutive_failures: u32,
    pub last_stop_reason: Option<String>,
    pub retry_after: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusAnswer {
    pub cluster: String,
    pub daemons: Vec<DaemonStatus>,
    /// How fast instances that joined recently got their daemons and readiness.
    pub time_to_coverage: crate::coverage_time::TimeToCoverage,
}

/// Specs, live coverage per daemon and slots in trouble; changes nothing.
pub async fn status<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: StatusRequest,
    now: DateTime<Utc>,
) -> Result<StatusAnswer, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    engine.check_cluster(&request.cluster)?;
    let mut specs = engine.store.list_specs(&request.cluster).await?;
    if let Some(daemon) = &request.daemon {
        check_name("daemon", daemon, 64)?;
        specs.retain(|s| &s.record.daemon == daemon);
        if specs.is_empty() {
            return Err(DeployError::UnknownDaemon {
                cluster: request.cluster,
                daemon: daemon.clone(),
            });
        }
    }
    let preview = engine.preview(&request.cluster, now).await?;
    let mut coverage: BTreeMap<String, DaemonCoverage> = preview.coverage;
    let mut daemons = Vec::new();
    specs.sort_by(|a, b| {
        (a.record.start_order, &a.record.daemon).cmp(&(b.record.start_order, &b.record.daemon))
    });
    for spec in specs {
        let spec = spec.record;
        let slots: Vec<Versioned<Slot>> =
            engine.store.query(&request.cluster, &spec.daemon).await?;
        let slots_in_trouble = slots
            .into_iter()
            .map(|s| s.record)
            .filter(|s| matches!(s.state, SlotState::CrashLooping | SlotState::Stopped))
            .map(|s| SlotTrouble {
                instance_id: s.instance_id,
                state: s.state,
                consecutive_failures: s.consecutive_failures,
                last_stop_reason: s.last_stop_reason,
                retry_after: s.retry_after,
            })
            .collect();
        let mut rollouts: Vec<Versioned<Rollout>> =
            engine.store.query(&request.cluster, &spec.daemon).await?;
        rollouts.reverse();
        let mut history: Vec<RolloutView> = rollouts
            .into_iter()
            .map(|r| {
                let live = (Some(&r.record.id) == spec.active_rollout.as_ref())
                    .then(|| preview.rollouts.get(&spec.daemon))
                    .flatten();
                RolloutView::of(r.record, live)
            })
            .collect();
        let current = match history
            .iter()
            .position(|r| Some(&r.id) == spec.active_rollout.as_ref())
        {
            Some(index) => Some(history.remove(index)),
            None if !history.is_empty() => Some(history.remove(0)),
            None => None,
        };
        daemons.push(DaemonStatus {
            rollout: current,
            history,
            coverage: coverage.remove(&spec.daemon).unwrap_or_default(),
            daemon: spec.daemon,
            task_definition: spec.task_definition,
            capacity_providers: spec.capacity_providers,
            start_order: spec.start_order,
            slots_in_trouble,
        });
    }
    let joined: Vec<Versioned<crate::coverage_time::CoverageTime>> = engine
        .store
        .query(&request.cluster, ItemKey::COVERAGE_TIMES)
        .await?;
    let joined: Vec<_> = joined.into_iter().map(|r| r.record).collect();
    Ok(StatusAnswer {
        cluster: request.cluster,
        daemons,
        time_to_coverage: crate::coverage_time::summarise(&joined, now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Value {
        json!({"cluster": "prod", "daemon": "cloudwatch-agent", "taskDefinition": "cloudwatch-agent:3", "capacityProviders": ["asg-general"]})
    }

    fn parse(value: Value) -> Result<String, DeployError> {
        parse_payload::<DeployRequest>(value)?.validate()
    }

    #[test]
    fn a_good_request_is_pinned() {
        assert_eq!(parse(request()).unwrap(), "cloudwatch-agent:3");
        let mut arn = request();
        arn["taskDefinition"] = json!("arn:aws:ecs:us-east-1:1:task-definition/cloudwatch-agent:3");
        assert_eq!(parse(arn).unwrap(), "cloudwatch-agent:3");
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([1]), "must be a JSON object"),
            (json!({"cluster": "prod"}), "missing field `daemon`"),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "colour": "red"}),
                "unknown field `colour`",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": "p"}),
                "`capacityProviders`",
            ),
            (
                json!({"cluster": "prod", "daemon": "bad#name", "taskDefinition": "x:1", "capacityProviders": ["p"]}),
                "`daemon` must be",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "cloudwatch-agent", "capacityProviders": ["p"]}),
                "pinned to a revision",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "cloudwatch-agent:latest", "capacityProviders": ["p"]}),
                "pinned to a revision",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:0", "capacityProviders": ["p"]}),
                "pinned to a revision",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": []}),
                "at least one",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p", "p"]}),
                "twice",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "startOrder": 5000}),
                "`startOrder`",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "warnShare": 3}),
                "`warnShare`",
            ),
            (
                json!({"cluster": "", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"]}),
                "`cluster` must be",
            ),
            (
                json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "restart": {"maxConsecutiveFailures": 0}}),
                "maxConsecutiveFailures",
            ),
        ];
        for (payload, expected) in cases {
            let error = parse(payload.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{payload}: {error}");
        }
    }
}
