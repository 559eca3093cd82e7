//! Every check of a deploy before anything is recorded: the request, the task definition
//! (execution role, size against every targeted instance), the cluster and its capacity
//! providers.

use super::*;
use crate::model::{CapacityProvider, CapacityProviderKind, FARGATE_PROVIDERS};

pub(super) fn describe_error(task_definition: &str, error: EcsError) -> DeployError {
    if error.kind == EcsErrorKind::NotFound {
        DeployError::TaskDefinitionNotFound(task_definition.into())
    } else {
        DeployError::Ecs(error)
    }
}

/// Checks the daemon's size against every targeted instance; returns warnings.
pub(super) fn check_sizes(
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
pub(super) struct PreparedDeploy {
    pub(super) task_definition: String,
    pub(super) warnings: Vec<String>,
    pub(super) existing: Option<Versioned<DaemonSpec>>,
    /// The version of the undeployed declaration a new one replaces (none: there is none).
    pub(super) replaces_retired: Option<u64>,
    pub(super) spec: DaemonSpec,
    /// The daemon's latest rollout failed on the revision deployed again: the deploy retries
    /// it (instances it left on another revision or placement roll again).
    pub(super) retries_failed: bool,
}

/// The capacity providers a deploy targets, by how the daemon's copies exist on them.
#[derive(Debug, Default)]
pub(super) struct Targets {
    /// EC2 Auto Scaling group providers.
    pub(super) ec2: Vec<String>,
    /// Of those, the ones where the daemon runs as DAEMON services.
    pub(super) services: Vec<String>,
    /// Managed Instances providers: ECS's managed daemon.
    pub(super) managed: Vec<CapacityProvider>,
}

/// The request's checks that need no EC2-side read: the request itself, the cluster, and the
/// kind of every provider it targets, matched with the task definitions it names.
pub(super) async fn check_targets<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &DeployRequest,
) -> Result<(Pins, Targets), DeployError> {
    let pins = request.validate()?;
    engine.check_cluster(&request.cluster)?;
    let targets = check_capacity_providers(engine, request, &pins).await?;
    crate::launch::check_placements(
        &request.launch,
        targets.services.first().map(String::as_str),
        targets.managed.first().map(|p| p.name.as_str()),
    )
    .map_err(invalid)?;
    for provider in request.launch.environment.keys() {
        if targets.managed.iter().any(|p| &p.name == provider) {
            return Err(invalid(format!(
                "`launch.environment.{provider}`: {provider} is a Managed Instances provider, where ECS's managed daemon \
                 takes no per-task overrides; register a daemon task definition revision with this environment instead"
            )));
        }
    }
    Ok((pins, targets))
}

/// `rollout.alarms` checked against CloudWatch: every named alarm must exist and be readable
/// by this stack (its RolloutAlarmNames parameter), and the bake is recorded: the one given,
/// else derived from the alarms as ECS derives a deployment's. Answers the request with its
/// bake set; without alarms, the request as it is.
pub(super) async fn resolve_alarms<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    mut request: DeployRequest,
) -> Result<DeployRequest, DeployError> {
    let Some(rollout) = request.rollout.as_mut().filter(|r| !r.alarms.is_empty()) else {
        return Ok(request);
    };
    let names = rollout.alarms.join(", ");
    let Some(alarms) = engine.alarms() else {
        return Err(DeployError::AlarmsNotReadable {
            names,
            message: "this function has no CloudWatch client".into(),
        });
    };
    let states = match alarms.describe_alarms(&rollout.alarms).await {
        Ok(states) => states,
        Err(error) if error.kind == crate::alarms::AlarmsErrorKind::AccessDenied => {
            return Err(DeployError::AlarmsNotReadable {
                names,
                message: error.message,
            })
        }
        Err(error) => return Err(DeployError::Alarms(error)),
    };
    let unknown: Vec<&str> = rollout
        .alarms
        .iter()
        .filter(|name| !states.iter().any(|state| &state.name == *name))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(DeployError::UnknownAlarm {
            names: unknown.join(", "),
        });
    }
    rollout.bake_seconds = Some(
        rollout
            .bake_seconds
            .unwrap_or_else(|| crate::alarms::derived_bake_seconds(&states)),
    );
    Ok(request)
}

/// The launch options against the task definition and the providers that run standalone
/// copies (the EC2 providers not on `services`).
fn check_launch(
    request: &DeployRequest,
    services: &[String],
    definition: &TaskDefinition,
) -> Result<(), DeployError> {
    let standalone: Vec<String> = request
        .capacity_providers
        .iter()
        .filter(|p| !services.contains(p))
        .cloned()
        .collect();
    crate::launch::check_against(
        &request.launch,
        definition,
        &request.capacity_providers,
        &standalone,
    )
    .map_err(invalid)
}

/// Every check of a deploy's EC2 part, and the spec it would record. Reads only.
/// `request` is narrowed to the EC2 providers and names their task definition.
pub(super) async fn prepare_deploy<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &DeployRequest,
    task_definition: String,
    services: &[String],
    now: DateTime<Utc>,
) -> Result<PreparedDeploy, DeployError> {
    let definition = runnable_definition(engine, &task_definition).await?;
    check_launch(request, services, &definition)?;
    // An undeployed daemon is deployed afresh: nothing of the retired declaration carries
    // over but its version, which the new one's write must find.
    let (existing, replaces_retired) = match engine
        .stored_declaration(&request.cluster, &request.daemon)
        .await?
    {
        Some(retired) if retired.record.retired_at.is_some() => (None, Some(retired.version)),
        stored => (stored, None),
    };
    // Another instanceFilter targets other instances: they are read again.
    let checks_stand = existing.as_ref().is_some_and(|current| {
        current.record.instance_filter == request.instance_filter
            && instance_checks_stand(
                &current.record,
                &request.capacity_providers,
                services,
                &definition,
            )
    });
    let instances = if checks_stand {
        Vec::new()
    } else {
        targeted_instances(engine, request).await?
    };
    let mut warnings = check_sizes(
        &request.daemon,
        &definition,
        &instances,
        request.warn_share.unwrap_or(DEFAULT_WARN_SHARE),
    )?;
    if instances.is_empty() && !checks_stand {
        warnings.push(format!(
            "no instance of {} is registered yet: the daemon starts on each one as it joins",
            request.capacity_providers.join(", ")
        ));
    }
    if !services.is_empty() {
        let on_services: Vec<_> = instances
            .iter()
            .filter(|i| {
                i.capacity_provider
                    .as_ref()
                    .is_some_and(|p| services.contains(p))
            })
            .cloned()
            .collect();
        super::services::check_for_services(&request.daemon, &definition, &on_services)?;
    }
    let mut spec = declared_spec(
        request,
        &task_definition,
        &definition,
        existing.as_ref(),
        now,
    );
    spec.services = super::services::declared_services(
        &request.daemon,
        services,
        &request.capacity_providers,
        &task_definition,
        existing.as_ref().map(|e| &e.record),
    )?;
    let retries_failed = match &existing {
        Some(current) if current.record.task_definition == spec.task_definition => engine
            .rollouts(&request.cluster, &request.daemon)
            .await?
            .last()
            .is_some_and(|last| {
                last.record.state == RolloutState::Failed
                    && last.record.to_task_definition == spec.task_definition
            }),
        _ => false,
    };
    if retries_failed {
        warnings.push(format!(
            "the last rollout to {} failed: this deploy rolls it out again to the instances it did not reach",
            spec.task_definition
        ));
    }
    Ok(PreparedDeploy {
        task_definition,
        warnings,
        existing,
        replaces_retired,
        spec,
        retries_failed,
    })
}

/// The container instances of the providers a deploy targets (two reads per 100 instances
/// of the cluster).
async fn targeted_instances<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &DeployRequest,
) -> Result<Vec<crate::model::ContainerInstance>, DeployError> {
    let filter = request
        .instance_filter
        .as_deref()
        .map(crate::instance_filter::InstanceFilter::parse)
        .transpose()
        .map_err(|error| invalid(error.to_string()))?;
    let arns = engine
        .ecs()
        .list_container_instances(&request.cluster, None)
        .await?;
    Ok(engine
        .ecs()
        .describe_container_instances(&request.cluster, &arns)
        .await?
        .into_iter()
        .filter(|i| {
            i.capacity_provider
                .as_ref()
                .is_some_and(|p| request.capacity_providers.contains(p))
        })
        .filter(|i| filter.as_ref().is_none_or(|f| f.matches(i)))
        .collect())
}

/// Whether the checks of every targeted instance (size, attribute budget) would answer for
/// `definition` as they did for the declared revision: the same providers, placed the same
/// way (`services`: those on DAEMON services), and a revision that reserves no more CPU and
/// no more memory. Then the instances are not read again (two reads per 100: 14 s for 1,000
/// instances at the deploy's share of ECS's read rate, before the answer and the rollout):
/// an instance the new revision would not fit, the declared one does not fit either, and
/// its status says so already.
pub(super) fn instance_checks_stand(
    declared: &DaemonSpec,
    providers: &[String],
    services: &[String],
    definition: &TaskDefinition,
) -> bool {
    let no_more = |new: Option<i64>, old: Option<i64>| match (new, old) {
        (None, _) => true,
        (Some(new), Some(old)) => new <= old,
        (Some(_), None) => false,
    };
    let same_providers = providers.len() == declared.capacity_providers.len()
        && providers
            .iter()
            .all(|p| declared.capacity_providers.contains(p));
    let placed_alike = providers.iter().all(|p| {
        let on_services = declared
            .services
            .as_ref()
            .is_some_and(|s| s.covers(Some(p)));
        services.contains(p) == on_services
    });
    same_providers
        && placed_alike
        && no_more(definition.cpu, declared.cpu)
        && no_more(definition.memory_mib, declared.memory_mib)
}

/// The task definition, if ECS has it and it names an execution role (every daemon pulls
/// its image and ships its output with one).
pub(super) async fn runnable_definition<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    task_definition: &str,
) -> Result<TaskDefinition, DeployError> {
    check_family(&engine.config().daemon_families, task_definition)?;
    let definition = engine
        .ecs()
        .describe_task_definition(task_definition)
        .await
        .map_err(|error| describe_error(task_definition, error))?;
    if definition
        .execution_role_arn
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(DeployError::NoExecutionRole(task_definition.into()));
    }
    Ok(definition)
}

/// Every capacity provider the request names is attached to the cluster, and of a kind a
/// daemon can run on with the task definition the request names for it.
async fn check_capacity_providers<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &DeployRequest,
    pins: &Pins,
) -> Result<Targets, DeployError> {
    let attached = engine
        .ecs()
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
    if let Some(provider) = request
        .capacity_providers
        .iter()
        .find(|provider| !attached.contains(provider))
    {
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
    let described = engine
        .ecs()
        .describe_capacity_providers(&request.cluster, &request.capacity_providers)
        .await?;
    let mut targets = Targets::default();
    for provider in &request.capacity_providers {
        let found = described.iter().find(|p| &p.name == provider);
        match check_provider_kind(provider, found, pins, request.placement)? {
            Placed::Tasks => targets.ec2.push(provider.clone()),
            Placed::Services => {
                targets.ec2.push(provider.clone());
                targets.services.push(provider.clone());
            }
            Placed::Managed => targets.managed.extend(found.cloned()),
        }
    }
    if pins.task.is_some() && targets.ec2.is_empty() {
        return Err(DeployError::UnusedTaskDefinition {
            field: "taskDefinition",
            kind: "EC2 Auto Scaling group",
        });
    }
    if pins.daemon.is_some() && targets.managed.is_empty() {
        return Err(DeployError::UnusedTaskDefinition {
            field: "daemonTaskDefinition",
            kind: "ECS Managed Instances",
        });
    }
    Ok(targets)
}

/// How a daemon's copies exist on one provider.
enum Placed {
    Tasks,
    Services,
    Managed,
}

/// The placement for a provider, or a refusal that says what to do instead.
fn check_provider_kind(
    provider: &str,
    described: Option<&CapacityProvider>,
    pins: &Pins,
    choice: super::PlacementChoice,
) -> Result<Placed, DeployError> {
    let kind = match described {
        Some(described) => &described.kind,
        // Attached to the cluster yet not described: ECS's two predefined Fargate
        // providers are the ones that may answer so.
        None if FARGATE_PROVIDERS.contains(&provider) => &CapacityProviderKind::Fargate,
        None => {
            return Err(DeployError::UnknownProviderKind {
                provider: provider.into(),
                kind: "not described by DescribeCapacityProviders".into(),
            })
        }
    };
    match kind {
        CapacityProviderKind::AutoScalingGroup {
            managed_scaling,
            managed_termination_protection,
        } if pins.task.is_some() => {
            let services = super::services::uses_services(
                provider,
                *managed_scaling,
                *managed_termination_protection,
                choice,
            )?;
            Ok(if services {
                Placed::Services
            } else {
                Placed::Tasks
            })
        }
        CapacityProviderKind::AutoScalingGroup { .. } => {
            Err(DeployError::AutoScalingNeedsTaskDefinition {
                provider: provider.into(),
            })
        }
        CapacityProviderKind::Fargate => Err(DeployError::FargateProvider {
            provider: provider.into(),
        }),
        CapacityProviderKind::ManagedInstances { .. } if pins.daemon.is_some() => {
            Ok(Placed::Managed)
        }
        CapacityProviderKind::ManagedInstances { .. } => {
            Err(DeployError::ManagedInstancesNeedDaemonTaskDefinition {
                provider: provider.into(),
            })
        }
        CapacityProviderKind::Other { name } => Err(DeployError::UnknownProviderKind {
            provider: provider.into(),
            kind: name.clone(),
        }),
    }
}

/// The declaration a deploy records: the request, what the task definition says, and what
/// the existing declaration keeps (good revisions, the rollout in flight).
fn declared_spec(
    request: &DeployRequest,
    task_definition: &str,
    definition: &TaskDefinition,
    existing: Option<&Versioned<DaemonSpec>>,
    now: DateTime<Utc>,
) -> DaemonSpec {
    let config = request
        .rollout
        .clone()
        .or_else(|| existing.map(|e| e.record.rollout.clone()))
        .unwrap_or_default();
    let mut spec = DaemonSpec {
        cluster: request.cluster.clone(),
        daemon: request.daemon.clone(),
        task_definition: task_definition.into(),
        capacity_providers: request.capacity_providers.clone(),
        start_order: request.start_order,
        has_health_check: definition.has_health_check(),
        cpu: definition.cpu,
        memory_mib: definition.memory_mib,
        // The first revision counts as good: it is where a failed update returns to.
        last_good_task_definition: existing.map_or(Some(task_definition.into()), |e| {
            e.record.last_good_task_definition.clone()
        }),
        previous_good_task_definition: existing
            .and_then(|e| e.record.previous_good_task_definition.clone()),
        active_rollout: existing.and_then(|e| e.record.active_rollout.clone()),
        restart: request.restart.clone().unwrap_or_default(),
        rollout: config,
        services: existing.and_then(|e| e.record.services.clone()),
        instance_filter: request.instance_filter.clone(),
        critical_drains: request.critical_drains(),
        retired_at: None,
        cleaned_up_at: None,
        revision_health_checks: existing
            .map(|e| e.record.revision_health_checks.clone())
            .unwrap_or_default(),
        health_check_grace_seconds: definition.health_check_grace_seconds(),
        launch: request.launch.clone(),
        updated_at: now,
    };
    spec.note_health_check(task_definition, definition.has_health_check());
    // The revision declared until now still runs while the new one rolls out.
    if let Some(current) = existing {
        spec.revision_health_checks.insert(
            current.record.task_definition.clone(),
            current
                .record
                .health_check_of(&current.record.task_definition),
        );
    }
    spec
}

/// The family of `family:revision` (or of a task definition ARN) must be one the stack's
/// StartTask permission names, or every start would be refused with AccessDenied.
pub(super) fn check_family(allowed: &[String], task_definition: &str) -> Result<(), DeployError> {
    let family = task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition)
        .split(':')
        .next()
        .unwrap_or_default();
    if allowed.is_empty() || allowed.iter().any(|a| a == family) {
        return Ok(());
    }
    Err(DeployError::FamilyNotAllowed {
        family: family.into(),
        allowed: allowed.join(", "),
    })
}
