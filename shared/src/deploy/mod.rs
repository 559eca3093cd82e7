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
use crate::slot::SlotState;
use crate::spec::{DaemonSpec, RestartPolicy};
use crate::store::{Expected, Store, StoreError, Versioned};

/// Share of an instance's registered CPU or memory above which a deploy warns.
pub const DEFAULT_WARN_SHARE: f64 = 0.25;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployRequest {
    pub cluster: String,
    pub daemon: String,
    /// `family:revision`, or its ARN: the task definition of the copies on EC2 (Auto Scaling
    /// group) capacity providers. Required when the daemon targets one.
    #[serde(default)]
    pub task_definition: Option<String>,
    /// `family:revision`, or its ARN: the daemon task definition ECS runs on Managed Instances
    /// capacity providers. Required when the daemon targets one.
    #[serde(default)]
    pub daemon_task_definition: Option<String>,
    /// Whether the daemon is critical. On Managed Instances ECS's own `critical` (default
    /// true): a failed copy drains and replaces its instance. On EC2 providers opt-in
    /// (default false): an instance where it crash-loops is set DRAINING, at most
    /// `maxCriticalDrains` at once.
    #[serde(default)]
    pub critical: Option<bool>,
    /// On EC2 providers, for a critical daemon: how many of its instances (a count, or a
    /// share like "10%") may be draining at once, whoever drained them (default 1).
    #[serde(default)]
    pub max_critical_drains: Option<crate::rollout::Amount>,
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
    /// How copies exist on EC2 Auto Scaling group providers: `auto` (default: DAEMON
    /// services where managed scaling or managed termination protection is on, standalone
    /// tasks elsewhere), `tasks` or `services`.
    #[serde(default)]
    pub placement: PlacementChoice,
    /// Which instances of its EC2 providers the daemon targets (`instance_filter`); none: all.
    #[serde(default)]
    pub instance_filter: Option<String>,
    /// Change nothing: answer with what the deploy would do (see [`crate::dry_run`]).
    /// How the copies are launched: tags, ECS Exec, environment per capacity provider.
    #[serde(default)]
    pub launch: crate::launch::LaunchOptions,
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
    #[error(
        "capacity provider {provider} is a Fargate provider: Fargate tasks have no container instance for a daemon to run on; \
         target EC2 Auto Scaling group or ECS Managed Instances capacity providers (on Fargate, run the agent as a sidecar container of each task)"
    )]
    FargateProvider { provider: String },
    #[error(
        "capacity provider {provider} is an ECS Managed Instances provider: ECS runs a daemon there only as a managed daemon, \
         from a daemon task definition (RegisterDaemonTaskDefinition); register one and name it in daemonTaskDefinition as family:revision"
    )]
    ManagedInstancesNeedDaemonTaskDefinition { provider: String },
    #[error(
        "capacity provider {provider} is an EC2 Auto Scaling group provider: its copies run from an ordinary task definition; \
         name it in taskDefinition as family:revision"
    )]
    AutoScalingNeedsTaskDefinition { provider: String },
    #[error(
        "{field} is given but no capacity provider of its kind is targeted ({kind} providers take it): \
         remove {field}, or add such a provider to capacityProviders"
    )]
    UnusedTaskDefinition {
        field: &'static str,
        kind: &'static str,
    },
    #[error("daemon task definition {0} was not found in this account and region: register it with RegisterDaemonTaskDefinition, or fix the family or revision")]
    DaemonTaskDefinitionNotFound(String),
    #[error("daemon task definition {definition} is {status}, not ACTIVE: ECS starts no daemon from it; register a new revision")]
    DaemonTaskDefinitionNotActive { definition: String, status: String },
    #[error(
        "daemon task definition {0} sets no task-level cpu and memory: ECS reserves them on every instance for the daemon; \
         register a revision with both set"
    )]
    DaemonSizeMissing(String),
    #[error(
        "{definition} uses role {role}, which this stack may not pass to ECS (DaemonRoleArns: {allowed}): \
         add the role to the stack's DaemonRoleArns parameter, or register a revision with one of those roles"
    )]
    RoleNotAllowed {
        definition: String,
        role: String,
        allowed: String,
    },
    #[error(
        "capacity provider {provider} is of a kind ecs-daemons does not know ({kind}): \
         target EC2 Auto Scaling group or ECS Managed Instances capacity providers"
    )]
    UnknownProviderKind { provider: String, kind: String },
    #[error(
        "task definition family {family} is not one this stack may start (DaemonFamilies: {allowed}): \
         add it to the stack's DaemonFamilies parameter, which scopes ecs:StartTask"
    )]
    FamilyNotAllowed { family: String, allowed: String },
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
    #[error(
        "daemon {daemon}'s last deploy was cut off before ECS confirmed it: invoke that deploy again \
         (the same payload finishes it without creating a second daemon), then undeploy"
    )]
    UndeployPending { daemon: String },
    #[error(
        "ECS is still deleting daemon {daemon} ({daemon_arn}, undeployed): deploy it again once \
         status no longer shows it deleting (ECS keeps a daemon's name until it is gone)"
    )]
    DaemonBeingDeleted { daemon: String, daemon_arn: String },
    #[error("unknown daemon {daemon} in cluster {cluster}: deploy it first (status lists the declared ones)")]
    UnknownDaemon { cluster: String, daemon: String },
    #[error("daemon {daemon} has no rollout in progress{latest}: there is nothing to {verb}; status lists its rollouts")]
    NoRolloutInProgress {
        daemon: String,
        verb: &'static str,
        latest: String,
    },
    #[error("rollout {rollout} of daemon {daemon} is not paused: there is nothing to resume")]
    NotPaused { daemon: String, rollout: String },
    #[error("rollout {rollout} of daemon {daemon} is not waiting for a promote: {why}")]
    CanaryNotWaiting {
        daemon: String,
        rollout: String,
        why: String,
    },
    #[error(
        "daemon {daemon} runs on Managed Instances providers only, where ECS's own deployment carries its rollouts \
         and the daemon API offers no {verb}: roll back with the rollback invoke, or let the deployment's circuit \
         breaker stop it"
    )]
    ControlOnManagedInstances { daemon: String, verb: &'static str },
    #[error(
        "capacity provider {provider} has {feature} on, which counts only tasks of DAEMON-strategy services as daemons: \
         standalone copies would keep every instance busy for it (no scale-in, termination protection never lifted); \
         deploy with placement auto or services there, or turn {feature} off"
    )]
    TasksUnderManagedScaling {
        provider: String,
        feature: &'static str,
    },
    #[error(
        "task definition {definition} uses network mode awsvpc, which a DAEMON service can only run with a network \
         configuration of its own (subnets, security groups) that ecs-daemons does not manage: register a revision with \
         network mode bridge or host for the daemon"
    )]
    AwsvpcForServices { definition: String },
    #[error(
        "instance {instance} carries {used} custom attributes and the daemon needs {} more ({}): \
         ECS allows 10 per container instance; remove attributes it no longer needs",
        missing.len(),
        missing.join(", ")
    )]
    AttributeBudget {
        instance: String,
        used: usize,
        missing: Vec<String>,
    },
    #[error(
        "capacity provider {provider} runs daemon {daemon} as {from}; moving it back to {to} is not offered: \
         with managed scaling or managed termination protection on, standalone copies keep instances busy for ECS; \
         keep placement as it was for that provider"
    )]
    PlacementChange {
        daemon: String,
        provider: String,
        from: &'static str,
        to: &'static str,
    },
    #[error(
        "daemon {daemon}'s two DAEMON services both still have copies ({running}) and another revision needs an idle \
         one: wait for the rollout in flight to end or roll it back (status shows which instances run what), then deploy"
    )]
    ServicesBusy { daemon: String, running: String },
    #[error(
        "cluster {cluster} holds {active} services and daemon {daemon} needs {needed} more, beyond the quota of \
         {quota} services per cluster: request an increase of Amazon ECS's \"Services per cluster\" in Service Quotas \
         (then set the stack's ServicesPerClusterQuota parameter to it), or delete services the cluster no longer needs"
    )]
    ServiceQuota {
        cluster: String,
        daemon: String,
        active: usize,
        needed: usize,
        quota: usize,
    },
    #[error(
        "no CloudWatch alarm named {names} in this account and Region: create it, or fix `rollout.alarms` \
         (alarm names are case-sensitive)"
    )]
    UnknownAlarm { names: String },
    #[error(
        "this stack may not read CloudWatch alarm(s) {names} ({message}): add them to the stack's \
         RolloutAlarmNames parameter, or name alarms it lists"
    )]
    AlarmsNotReadable { names: String, message: String },
    #[error(transparent)]
    Alarms(#[from] crate::alarms::AlarmsError),
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
    "daemon {daemon} needs {needed} but {where_} of capacity provider {provider} registers only {available}: \
     lower the task definition's {resource}, or target larger instances",
    where_ = match .instance.as_str() {
        LARGEST_INSTANCE => LARGEST_INSTANCE.to_string(),
        id => format!("instance {id}"),
    }
)]
pub struct TooLarge {
    pub daemon: String,
    /// The container instance's id, or [`LARGEST_INSTANCE`] (a Managed Instances provider's
    /// instance requirements).
    pub instance: String,
    pub provider: String,
    pub resource: &'static str,
    pub needed: String,
    pub available: String,
}

/// [`TooLarge::instance`] when no instance exists yet: the largest a provider may launch.
pub const LARGEST_INSTANCE: &str = "the largest instance it may launch";

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
    pinned("taskDefinition", ":task-definition/", reference)
}

/// A daemon task definition's `family:revision` (or its ARN) → `family:revision`.
pub fn pinned_daemon_task_definition(reference: &str) -> Result<String, DeployError> {
    pinned(
        "daemonTaskDefinition",
        ":daemon-task-definition/",
        reference,
    )
}

fn pinned(field: &str, arn_marker: &str, reference: &str) -> Result<String, DeployError> {
    let bare = reference
        .split_once(arn_marker)
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
            "`{field}` must be pinned to a revision as family:revision (for example cloudwatch-agent:3), got {}; \
             daemons never follow the latest revision on their own",
            shown(reference)
        ))
    })
}

/// The restart settings' bounds.
fn check_restart(restart: &RestartPolicy) -> Result<(), DeployError> {
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
    if let Some(grace) = restart.unhealthy_grace_seconds {
        if !(10..=86_400).contains(&grace) {
            return Err(invalid(format!(
                "`restart.unhealthyGraceSeconds` must be between 10 and 86400 (leave it out to follow the task definition's health check), got {grace}"
            )));
        }
    }
    Ok(())
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
            task_definition: Some(task_definition.into()),
            daemon_task_definition: None,
            critical: None,
            max_critical_drains: None,
            capacity_providers: capacity_providers.iter().map(|p| p.to_string()).collect(),
            start_order,
            restart: None,
            warn_share: None,
            rollout: None,
            placement: PlacementChoice::Auto,
            instance_filter: None,
            launch: crate::launch::LaunchOptions::default(),
            dry_run: false,
        }
    }

    /// On EC2 providers: the drain limit of a critical daemon (none: not critical).
    pub fn critical_drains(&self) -> Option<crate::rollout::Amount> {
        (self.critical == Some(true)).then(|| {
            self.max_critical_drains
                .unwrap_or(crate::rollout::Amount::Count(1))
        })
    }

    /// Checks that need no AWS call; answers the pinned task definitions.
    pub fn validate(&self) -> Result<Pins, DeployError> {
        check_name("cluster", &self.cluster, 255)?;
        check_name("daemon", &self.daemon, 64)?;
        let pins = Pins {
            task: self
                .task_definition
                .as_deref()
                .map(pinned_task_definition)
                .transpose()?,
            daemon: self
                .daemon_task_definition
                .as_deref()
                .map(pinned_daemon_task_definition)
                .transpose()?,
        };
        self.check_kind_specific(&pins)?;
        self.check_capacity_providers()?;
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
        crate::launch::check(
            &self.launch,
            &[crate::placement::DAEMON_TAG, crate::placement::ROLLOUT_TAG],
        )
        .map_err(invalid)?;
        if let Some(restart) = &self.restart {
            check_restart(restart)?;
        }
        Ok(pins)
    }

    /// The fields that belong to one kind of provider: the instance filter and the drain
    /// limit to EC2's (`taskDefinition`), and at least one of the two task definitions.
    fn check_kind_specific(&self, pins: &Pins) -> Result<(), DeployError> {
        if let Some(filter) = &self.instance_filter {
            crate::instance_filter::InstanceFilter::parse(filter)
                .map_err(|error| invalid(error.to_string()))?;
            if pins.task.is_none() {
                return Err(invalid(
                    "`instanceFilter` applies to EC2 Auto Scaling group providers (`taskDefinition`): \
                     ECS's managed daemons run on every instance of their Managed Instances providers, \
                     so target those by capacity provider instead",
                ));
            }
        }
        if self.max_critical_drains.is_some() && self.critical != Some(true) {
            return Err(invalid(
                "`maxCriticalDrains` limits the drains of a critical daemon: set `critical: true` too, or remove it",
            ));
        }
        if self.max_critical_drains.is_some() && pins.task.is_none() {
            return Err(invalid(
                "`maxCriticalDrains` applies to EC2 Auto Scaling group providers (`taskDefinition`): on Managed \
                 Instances ECS drains and replaces an instance whose critical daemon fails, with no limit to set",
            ));
        }
        if pins.task.is_none() && pins.daemon.is_none() {
            return Err(invalid(
                "name `taskDefinition` (for EC2 Auto Scaling group providers) or `daemonTaskDefinition` \
                 (for Managed Instances providers), pinned as family:revision",
            ));
        }
        Ok(())
    }

    fn check_capacity_providers(&self) -> Result<(), DeployError> {
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
        Ok(())
    }

    /// The same request, narrowed to some of its capacity providers.
    fn for_providers(&self, providers: &[String]) -> Self {
        Self {
            capacity_providers: providers.to_vec(),
            ..self.clone()
        }
    }
}

/// The pinned task definitions of a deploy: `family:revision` each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// For EC2 Auto Scaling group providers.
    pub task: Option<String>,
    /// For Managed Instances providers.
    pub daemon: Option<String>,
}

/// Who starts a rollout's first wave: the rollout record's insert reaches the coverage-check
/// through the table's stream (template.yaml, `RolloutRecorded`), and its share of ECS's read
/// rate (12/s against a deploy's 1.5/s) reads a cluster of 1,000 instances in about 4 s
/// instead of about 40 s. Should the stream's invoke not come, the scheduled run starts it
/// within the minute.
pub const ROLLOUT_STARTED_BY: &str = "coverage-check";

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployAnswer {
    pub daemon: String,
    /// On EC2 Auto Scaling group providers.
    pub task_definition: Option<String>,
    /// `created`, `updated`, `unchanged`, or `rollout` (a new revision rolls out), for the
    /// EC2 providers; `managed.recorded` says it for the Managed Instances ones.
    pub recorded: &'static str,
    pub rollout: Option<Rollout>,
    pub warnings: Vec<String>,
    /// The first reconcile, run right away (when the daemon targets EC2 providers and no
    /// rollout started: a rollout's first reconcile is the coverage-check's, see
    /// [`ROLLOUT_STARTED_BY`]).
    pub reconcile: Option<Outcome>,
    /// Who runs the new rollout's first reconcile, when not this invoke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_reconcile_by: Option<&'static str>,
    /// What was declared to ECS on Managed Instances providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<managed::ManagedAnswer>,
}

mod managed;
mod managed_status;
mod preview;
mod record;
mod rollback;
mod services;
mod status;
#[cfg(test)]
pub(crate) mod tests;
mod undeploy;
mod validate;

pub use managed_status::{ManagedProviderCount, ManagedStatus};
pub use preview::{deploy_dry_run, rollback_dry_run};
pub use record::deploy;
use record::*;
use rollback::*;
pub use rollback::{rollback, RollbackAnswer, RollbackRequest};
pub use services::PlacementChoice;
pub use status::{status, DaemonStatus, RolloutView, SlotTrouble, StatusAnswer};
pub use undeploy::{is_undeploy, undeploy, UndeployAnswer, UndeployRequest};
mod control;
pub use control::{
    control_rollout, is_rollout_control, ControlVerb, RolloutControlAnswer, RolloutControlRequest,
};
use validate::*;
