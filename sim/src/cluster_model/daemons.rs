//! The model's ECS managed daemons on Managed Instances capacity providers. ECS places every
//! copy itself; ecs-daemons only declares, watches and records, so this is what it watches.
//! Sources, cited at each rule: the developer guide's *Amazon ECS Managed Daemons* pages
//! (`managed-daemons`, `managed-daemons-deployments`, `managed-daemons-create-manage`) and
//! the API reference of each operation. What they leave open is a field of
//! [`NativeKnobs`] with a pessimistic default.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ecs_daemons::ecs::{
    DaemonChange, DaemonCircuitBreaker, DaemonDeclaration, DaemonDeployment,
    DaemonDeploymentStatus, DaemonLaunch, DaemonProviderCounts, DaemonRevision,
    DaemonRevisionCounts, DaemonRollback, DaemonState, DaemonTaskDefinition, EcsError,
    EcsErrorKind, DAEMON_NAME_MAX_LEN,
};

use super::{ACCOUNT, REGION};
use ecs_daemons::events::{
    DAEMON_DEPLOYMENT_STATE_CHANGE, DAEMON_SERVICE_ACTION, DAEMON_TASK_START_IMPAIRED,
};

/// ECS's reason for the model's failing revisions (the *Daemon events* example's pull failure).
pub const IMPAIRED_REASON: &str = "Task failed to reach RUNNING status: CannotPullContainerError: pull image manifest has been retried 5 time(s)";

/// What the managed-daemon documentation leaves open.
#[derive(Clone, Debug)]
pub struct NativeKnobs {
    /// How long draining one step's instances takes before their replacements launch. ECS
    /// drains application tasks first (their services start replacements elsewhere); the
    /// guide gives no figure.
    pub drain_time: Duration,
    /// Launch of a replacement instance until its daemon task has started or failed.
    pub replace_time: Duration,
    /// The breaker's threshold for a deployment over `instances` instances. The daemon
    /// guide documents no formula; the service deployment breaker's (API reference,
    /// *ServiceDeploymentCircuitBreaker*: 0.5 × desired count, at least 3, at most 200) is
    /// assumed.
    pub breaker_threshold: fn(usize) -> i32,
    /// DELETE_IN_PROGRESS until the daemon is gone.
    pub delete_time: Duration,
    /// What DeleteDaemon does to a deployment in flight (undocumented).
    pub deployment_on_delete: DeploymentOnDelete,
    /// How a deployment gets a non-critical daemon's failed copy running (undocumented).
    pub non_critical_failure: NonCriticalFailure,
    /// Which revision an instance launched by a scale-out during a deployment gets
    /// (undocumented).
    pub scale_out_revision: ScaleOutRevision,
    /// When ECS looks at a deployment's alarms (undocumented).
    pub alarm_check: AlarmCheck,
}

/// When ECS looks at a managed daemon deployment's alarms: "When alarms are triggered during
/// a deployment, the deployment can be automatically rolled back" (API reference,
/// *DaemonDeploymentConfiguration*) says nothing of how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmCheck {
    /// At each deployment step only: the later reading, so a bad revision spreads further
    /// before ECS stops it (the default).
    AtEachStep,
    /// As soon as an alarm goes to ALARM.
    WhenAlarmFires,
}

/// What DeleteDaemon does to a deployment in flight; the guide is silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentOnDelete {
    /// STOPPED at once (its instances keep their copies until the daemon is gone).
    Stopped,
    /// Left in its status, never to move again, until the daemon and its deployments are
    /// gone (the harder reading for a follower: nothing ever ends it).
    LeftAsIs,
}

/// How a deployment brings a non-critical daemon's failed copy to "all daemon tasks running
/// and healthy" (*Daemon events*, SUCCESSFUL); the guide only documents the critical case
/// (drain and replace the instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonCriticalFailure {
    /// Drains and replaces its instance like a critical daemon's (applications move).
    ReplaceInstance,
    /// Starts the copy again on the same instance; each failed start counts toward the
    /// breaker.
    RetryInPlace,
}

/// Which revision an instance launched by a plain scale-out during a deployment gets; the
/// guide documents only the replacements a deployment itself launches ("provisions
/// replacement instances with the updated daemon", *Daemon deployments*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleOutRevision {
    /// The revision the deployment moves instances to.
    Goal,
    /// The revision in force before the deployment; the deployment then drains and replaces
    /// the new instance too (more instances behind, more drains).
    Before,
}

fn service_breaker_threshold(instances: usize) -> i32 {
    (instances as f64 * 0.5).ceil().clamp(3.0, 200.0) as i32
}

impl Default for NativeKnobs {
    fn default() -> Self {
        Self {
            drain_time: Duration::seconds(60),
            replace_time: Duration::seconds(90),
            breaker_threshold: service_breaker_threshold,
            delete_time: Duration::seconds(30),
            deployment_on_delete: DeploymentOnDelete::Stopped,
            non_critical_failure: NonCriticalFailure::ReplaceInstance,
            scale_out_revision: ScaleOutRevision::Goal,
            alarm_check: AlarmCheck::AtEachStep,
        }
    }
}

/// A daemon task definition revision of the model.
#[derive(Clone, Debug)]
pub struct DaemonDefinitionModel {
    pub family: String,
    pub cpu: i64,
    pub memory_mib: i64,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
    /// Every start of it fails (a bad image): DAEMON_TASK_START_IMPAIRED, TASK_FAILED_TO_RUN.
    pub fails_to_start: bool,
}

impl DaemonDefinitionModel {
    pub fn new(family: &str, cpu: i64, memory_mib: i64) -> Self {
        Self {
            family: family.into(),
            cpu,
            memory_mib,
            execution_role_arn: Some(format!("arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole")),
            task_role_arn: None,
            fails_to_start: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CopyState {
    Running,
    /// Started and failed; on a non-critical daemon the instance stays without it.
    Impaired,
}

#[derive(Clone, Debug)]
struct Copy {
    revision: String,
    state: CopyState,
    /// The tags the task got when it started ("You can only propagate tags to daemon tasks
    /// during task creation", API reference, *CreateDaemon* `propagateTags`).
    tags: BTreeMap<String, String>,
    execute_command: bool,
}

#[derive(Clone, Debug)]
struct ManagedInstance {
    provider: String,
    draining: bool,
    /// By daemon ARN.
    copies: BTreeMap<String, Copy>,
}

#[derive(Clone, Debug)]
enum Phase {
    /// Choose the next step at `next_at`.
    Idle,
    Draining(Vec<String>),
    Launching(Vec<String>),
}

#[derive(Clone, Debug)]
struct Deployment {
    arn: String,
    status: DaemonDeploymentStatus,
    reason: Option<String>,
    target: String,
    source: Option<String>,
    failures: i32,
    threshold: i32,
    breaker: &'static str,
    /// The alarms found in ALARM (`DaemonDeploymentAlarms.triggeredAlarmNames`).
    triggered_alarm_names: Vec<String>,
    rollback: Option<DaemonRollback>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    phase: Phase,
    next_at: DateTime<Utc>,
}

impl Deployment {
    /// The revision the deployment is moving instances to now.
    fn goal(&self) -> &str {
        self.rollback
            .as_ref()
            .and_then(|r| r.target_revision_arn.as_deref())
            .unwrap_or(&self.target)
    }

    /// The revision the deployment is moving instances away from (the goal itself for a
    /// first deployment, which has none).
    fn moving_from(&self) -> &str {
        if self.rollback.is_some() {
            &self.target
        } else {
            self.source.as_deref().unwrap_or(&self.target)
        }
    }
}

#[derive(Clone, Debug)]
struct Daemon {
    name: String,
    cluster: String,
    providers: Vec<String>,
    critical: bool,
    drain_percent: f64,
    bake: Duration,
    /// `DaemonAlarmConfiguration.alarmNames`: any in ALARM fails a deployment in flight.
    alarm_names: Vec<String>,
    /// The daemon's own tags (CreateDaemon's `tags`).
    tags: BTreeMap<String, String>,
    launch: DaemonLaunch,
    status: &'static str,
    /// Revision ARN → daemon task definition key (`family:revision`).
    revisions: BTreeMap<String, String>,
    deployments: Vec<Deployment>,
    deleted_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// An event ECS sends about its managed daemons (*Daemon events*, developer guide), not yet
/// handed to EventBridge.
#[derive(Clone, Debug)]
pub(super) enum NativeEvent {
    /// `ECS Daemon Deployment State Change`: "each time the state of a daemon deployment
    /// changes".
    Deployment {
        cluster: String,
        daemon_arn: String,
        deployment_arn: String,
        target_revision_arn: String,
        event_name: &'static str,
    },
    /// `ECS Daemon Service Action` `DAEMON_TASK_START_IMPAIRED`, `TASK_FAILED_TO_RUN` (the
    /// model's failing revisions start a task that never reaches RUNNING).
    ImpairedStart {
        cluster: String,
        daemon_arn: String,
        revision_arn: String,
        definition_key: String,
        provider: String,
        instance_id: String,
        task_id: String,
    },
}

/// The deployment events a change of status sends (*Daemon events*: the INFO and ERROR
/// `DAEMON_DEPLOYMENT_*` names). Before a rollback ECS says it "stopped the deployment from
/// moving forward and will now start to roll back" (`STOP_REQUESTED`).
fn deployment_event_names(status: &DaemonDeploymentStatus) -> &'static [&'static str] {
    match status {
        DaemonDeploymentStatus::Pending => &["DAEMON_DEPLOYMENT_PENDING"],
        DaemonDeploymentStatus::InProgress => &["DAEMON_DEPLOYMENT_IN_PROGRESS"],
        DaemonDeploymentStatus::Successful => &["DAEMON_DEPLOYMENT_SUCCESSFUL"],
        DaemonDeploymentStatus::Stopped => &["DAEMON_DEPLOYMENT_STOPPED"],
        DaemonDeploymentStatus::RollbackInProgress => &[
            "DAEMON_DEPLOYMENT_STOP_REQUESTED",
            "DAEMON_DEPLOYMENT_ROLLBACK_IN_PROGRESS",
        ],
        DaemonDeploymentStatus::RollbackSuccessful => &["DAEMON_DEPLOYMENT_ROLLBACK_SUCCESSFUL"],
        DaemonDeploymentStatus::RollbackFailed => &["DAEMON_DEPLOYMENT_ROLLBACK_FAILED"],
        _ => &[],
    }
}

/// The managed-daemon part of the model's world.
#[derive(Debug, Default)]
pub(super) struct NativeDaemons {
    /// Events sent and not yet taken by the world.
    outbox: Vec<NativeEvent>,
    definitions: BTreeMap<String, DaemonDefinitionModel>,
    latest: BTreeMap<String, i32>,
    daemons: BTreeMap<String, Daemon>,
    tokens: BTreeMap<String, String>,
    /// By cluster, then instance id.
    instances: BTreeMap<String, BTreeMap<String, ManagedInstance>>,
    next_id: u64,
}

fn definition_arn(key: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:daemon-task-definition/{key}")
}

fn daemon_arn(cluster: &str, name: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:daemon/{cluster}/{name}")
}

fn provider_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

fn error(
    operation: &'static str,
    target: &str,
    kind: EcsErrorKind,
    code: &str,
    message: &str,
) -> EcsError {
    EcsError::new(operation, target, kind, code, message)
}

impl Daemon {
    /// A copy of `revision` as ECS starts it: the daemon's tags where `propagateTags` is
    /// DAEMON ("If you don't specify a value, the tags aren't propagated"), ECS's managed
    /// tags where on (the model adds `aws:ecs:clusterName` only), ECS Exec as declared.
    fn copy(&self, revision: String, state: CopyState) -> Copy {
        let mut tags = if self.launch.propagate_tags.as_deref() == Some("DAEMON") {
            self.tags.clone()
        } else {
            BTreeMap::new()
        };
        if self.launch.enable_ecs_managed_tags {
            tags.insert("aws:ecs:clusterName".into(), self.cluster.clone());
        }
        Copy {
            revision,
            state,
            tags,
            execute_command: self.launch.enable_execute_command,
        }
    }
}

/// `propagateTags` of a daemon: "DAEMON | NONE" (API reference, *CreateDaemon*), and its
/// tags by ECS's rules (at most 50, no `aws:` prefix).
fn check_launch(operation: &'static str, declaration: &DaemonDeclaration) -> Result<(), EcsError> {
    let name = &declaration.daemon_name;
    if let Some(value) = declaration.launch.propagate_tags.as_deref() {
        if !matches!(value, "DAEMON" | "NONE") {
            return Err(invalid_parameter(
                operation,
                name,
                "propagateTags must be DAEMON or NONE.",
            ));
        }
    }
    if declaration.tags.len() > 50 {
        return Err(invalid_parameter(
            operation,
            name,
            "Too many tags, at most 50.",
        ));
    }
    let reserved = |text: &str| {
        text.get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("aws:"))
    };
    if declaration
        .tags
        .iter()
        .any(|(k, v)| reserved(k) || reserved(v))
    {
        return Err(invalid_parameter(
            operation,
            name,
            "The aws: prefix is reserved for AWS use.",
        ));
    }
    Ok(())
}

fn invalid_parameter(operation: &'static str, target: &str, message: &str) -> EcsError {
    error(
        operation,
        target,
        EcsErrorKind::Invalid,
        "InvalidParameterException",
        message,
    )
}

/// Fails `deployment` if any of its daemon's `alarm_names` is in ALARM ("When alarms are
/// triggered during a deployment, the deployment can be automatically rolled back", API
/// reference, *DaemonDeploymentConfiguration*). Answers whether it did.
fn trip_on_alarms(
    alarm_names: &[String],
    deployment: &mut Deployment,
    now: DateTime<Utc>,
    alarming: &std::collections::BTreeSet<String>,
) -> bool {
    let triggered: Vec<String> = alarm_names
        .iter()
        .filter(|name| alarming.contains(*name))
        .cloned()
        .collect();
    if triggered.is_empty() {
        return false;
    }
    deployment.triggered_alarm_names = triggered;
    trip_breaker(deployment, now);
    deployment.reason = deployment
        .reason
        .take()
        .map(|r| r.replace("Circuit breaker triggered", "Deployment alarms triggered"));
    if let Some(rollback) = deployment.rollback.as_mut() {
        // The reason's value for alarms is undocumented: the product reads only
        // `triggeredAlarmNames` and the status.
        rollback.reason = Some("DEPLOYMENT_ALARMS".into());
    }
    true
}

fn client_error(operation: &'static str, target: &str, message: &str) -> EcsError {
    error(
        operation,
        target,
        EcsErrorKind::Invalid,
        "ClientException",
        message,
    )
}

impl NativeDaemons {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// RegisterDaemonTaskDefinition: "When you register a daemon task definition for the
    /// first time, the revision is 1 … the revision value always increases by one"
    /// (*DaemonTaskDefinition*). Answers `family:revision`.
    pub(super) fn register(&mut self, definition: DaemonDefinitionModel) -> String {
        let revision = self.latest.entry(definition.family.clone()).or_insert(0);
        *revision += 1;
        let key = format!("{}:{}", definition.family, revision);
        self.definitions.insert(key.clone(), definition);
        key
    }

    /// Every deployment's status, by ARN: what [`Self::announce`] compares with.
    pub(super) fn statuses(&self) -> BTreeMap<String, DaemonDeploymentStatus> {
        self.daemons
            .values()
            .flat_map(|d| d.deployments.iter())
            .map(|d| (d.arn.clone(), d.status.clone()))
            .collect()
    }

    /// Sends a deployment state change for every deployment whose status is not what it was
    /// in `before` (new ones included).
    pub(super) fn announce(&mut self, before: &BTreeMap<String, DaemonDeploymentStatus>) {
        let mut events = Vec::new();
        for (daemon_arn, daemon) in &self.daemons {
            for deployment in &daemon.deployments {
                if before.get(&deployment.arn) == Some(&deployment.status) {
                    continue;
                }
                for event_name in deployment_event_names(&deployment.status) {
                    events.push(NativeEvent::Deployment {
                        cluster: daemon.cluster.clone(),
                        daemon_arn: daemon_arn.clone(),
                        deployment_arn: deployment.arn.clone(),
                        target_revision_arn: deployment.target.clone(),
                        event_name,
                    });
                }
            }
        }
        self.outbox.extend(events);
    }

    pub(super) fn take_events(&mut self) -> Vec<NativeEvent> {
        std::mem::take(&mut self.outbox)
    }

    /// A copy of `daemon_arn` at `revision` failed to start on `instance_id`.
    fn impaired(&mut self, daemon_arn: &str, revision: &str, instance_id: &str, provider: &str) {
        let Some(daemon) = self.daemons.get(daemon_arn) else {
            return;
        };
        let event = NativeEvent::ImpairedStart {
            cluster: daemon.cluster.clone(),
            daemon_arn: daemon_arn.to_string(),
            revision_arn: revision.to_string(),
            definition_key: daemon.revisions.get(revision).cloned().unwrap_or_default(),
            provider: provider.to_string(),
            instance_id: instance_id.to_string(),
            task_id: format!("{:032x}", self.next_id + 1),
        };
        self.next_id += 1;
        self.outbox.push(event);
    }

    /// Instances launched for an application's room (not a deployment's replacements): each
    /// copy that failed to start is announced.
    pub(super) fn scale_out(
        &mut self,
        cluster: &str,
        provider: &str,
        count: usize,
        revision: ScaleOutRevision,
    ) -> Vec<String> {
        let launched = self.launch(cluster, provider, count, revision);
        for id in &launched {
            let failed: Vec<(String, String)> = self.instances[cluster][id]
                .copies
                .iter()
                .filter(|(_, copy)| copy.state == CopyState::Impaired)
                .map(|(arn, copy)| (arn.clone(), copy.revision.clone()))
                .collect();
            for (arn, revision) in failed {
                self.impaired(&arn, &revision, id, provider);
            }
        }
        launched
    }

    /// Instances ECS launched for a Managed Instances provider. Each starts every daemon of
    /// its provider before anything else ("starts the daemon task first", *Amazon ECS Managed
    /// Daemons*); the model starts them at once, at the revision in force.
    fn launch(
        &mut self,
        cluster: &str,
        provider: &str,
        count: usize,
        revision: ScaleOutRevision,
    ) -> Vec<String> {
        (0..count)
            .map(|_| {
                let id = format!("mi{:016x}", self.id());
                let copies = self.copies_for_new_instance(cluster, provider, revision);
                self.instances.entry(cluster.into()).or_default().insert(
                    id.clone(),
                    ManagedInstance {
                        provider: provider.into(),
                        draining: false,
                        copies,
                    },
                );
                id
            })
            .collect()
    }

    /// The copies a new instance of `provider` gets: each daemon's revision in force; while a
    /// deployment runs, the one [`ScaleOutRevision`] says (a deployment's own replacements
    /// always get its goal: "provisions replacement instances with the updated daemon",
    /// *Daemon deployments*).
    fn copies_for_new_instance(
        &self,
        cluster: &str,
        provider: &str,
        during_deployment: ScaleOutRevision,
    ) -> BTreeMap<String, Copy> {
        self.daemons
            .iter()
            .filter(|(_, d)| d.cluster == cluster && d.deleted_at.is_none())
            .filter(|(_, d)| d.providers.iter().any(|p| p == provider))
            .filter_map(|(arn, d)| {
                let deployment = d.deployments.last()?;
                let revision = match during_deployment {
                    ScaleOutRevision::Before if !deployment.status.is_final() => {
                        deployment.moving_from()
                    }
                    _ => deployment.goal(),
                }
                .to_string();
                let fails = self.revision_fails(d, &revision);
                let state = if fails {
                    CopyState::Impaired
                } else {
                    CopyState::Running
                };
                Some((arn.clone(), d.copy(revision, state)))
            })
            .collect()
    }

    fn revision_fails(&self, daemon: &Daemon, revision: &str) -> bool {
        daemon
            .revisions
            .get(revision)
            .and_then(|key| self.definitions.get(key))
            .is_some_and(|d| d.fails_to_start)
    }

    pub(super) fn describe_definition(
        &self,
        reference: &str,
    ) -> Result<DaemonTaskDefinition, EcsError> {
        let key = reference.rsplit('/').next().unwrap_or(reference);
        // ECS answers an unknown task definition with a ClientException "Unable to describe
        // task definition"; the daemon one is assumed alike, and the SDK adapter reads it as
        // not found.
        let definition = self.definitions.get(key).ok_or_else(|| {
            error(
                "DescribeDaemonTaskDefinition",
                reference,
                EcsErrorKind::NotFound,
                "ClientException",
                "Unable to describe daemon task definition.",
            )
        })?;
        let revision = key
            .rsplit(':')
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        Ok(DaemonTaskDefinition {
            arn: definition_arn(key),
            family: definition.family.clone(),
            revision,
            status: "ACTIVE".into(),
            execution_role_arn: definition.execution_role_arn.clone(),
            task_role_arn: definition.task_role_arn.clone(),
            cpu: Some(definition.cpu),
            memory_mib: Some(definition.memory_mib),
        })
    }

    /// CreateDaemon. "ECS Managed Daemons is only supported for Amazon ECS Managed Instances
    /// Capacity Providers" (the caller checks the kinds and answers ClientException); the
    /// name takes "Up to 255 letters …, numbers, underscores, and hyphens"; the client token
    /// makes a retry answer the same daemon.
    pub(super) fn create(
        &mut self,
        declaration: &DaemonDeclaration,
        client_token: &str,
        now: DateTime<Utc>,
        knobs: &NativeKnobs,
    ) -> Result<DaemonChange, EcsError> {
        const OPERATION: &str = "CreateDaemon";
        let name = &declaration.daemon_name;
        if let Some(arn) = self.tokens.get(client_token) {
            let daemon = &self.daemons[arn];
            return Ok(DaemonChange {
                daemon_arn: arn.clone(),
                status: daemon.status.into(),
                deployment_arn: daemon.deployments.first().map(|d| d.arn.clone()),
            });
        }
        let valid_name = !name.is_empty()
            && name.len() <= DAEMON_NAME_MAX_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(client_error(OPERATION, name, "Invalid daemon name."));
        }
        let cluster = declaration
            .cluster_arn
            .rsplit('/')
            .next()
            .unwrap_or(&declaration.cluster_arn)
            .to_string();
        let arn = daemon_arn(&cluster, name);
        // A second daemon of one name in a cluster: undocumented; refused (the pessimistic
        // reading: a retry without the token fails instead of silently succeeding).
        if self
            .daemons
            .get(&arn)
            .is_some_and(|d| d.deleted_at.is_none())
        {
            return Err(client_error(
                OPERATION,
                name,
                "A daemon with this name already exists.",
            ));
        }
        check_launch(OPERATION, declaration)?;
        let key = self.definition_key(OPERATION, &declaration.daemon_task_definition_arn)?;
        let mut daemon = Daemon {
            name: name.clone(),
            cluster: cluster.clone(),
            providers: declaration
                .capacity_provider_arns
                .iter()
                .map(|p| provider_name(p).to_string())
                .collect(),
            critical: declaration.critical,
            drain_percent: declaration.deployment.drain_percent.unwrap_or(25.0),
            bake: Duration::minutes(i64::from(
                declaration.deployment.bake_time_in_minutes.unwrap_or(0),
            )),
            alarm_names: declaration.deployment.alarm_names.clone(),
            tags: declaration.tags.iter().cloned().collect(),
            launch: declaration.launch.clone(),
            status: "ACTIVE",
            revisions: BTreeMap::new(),
            deployments: Vec::new(),
            deleted_at: None,
            updated_at: now,
        };
        let deployment = self.new_deployment(&mut daemon, &key, None, now, knobs);
        self.daemons.insert(arn.clone(), daemon);
        self.tokens.insert(client_token.into(), arn.clone());
        Ok(DaemonChange {
            daemon_arn: arn,
            status: "ACTIVE".into(),
            deployment_arn: Some(deployment),
        })
    }

    fn definition_key(&self, operation: &'static str, reference: &str) -> Result<String, EcsError> {
        let key = reference
            .rsplit('/')
            .next()
            .unwrap_or(reference)
            .to_string();
        if self.definitions.contains_key(&key) {
            Ok(key)
        } else {
            Err(client_error(
                operation,
                reference,
                "Daemon task definition not found.",
            ))
        }
    }

    /// A new revision and the deployment that rolls it out. A deployment still running is
    /// STOPPED: "stopped the deployment because it failed or was replaced by a new
    /// deployment" (*Daemon deployments*). Every deployment is a new revision, even with the
    /// same daemon task definition (UpdateDaemon of settings only): whether ECS then drains
    /// and replaces every instance is undocumented, and the model does (pessimistic).
    fn new_deployment(
        &mut self,
        daemon: &mut Daemon,
        key: &str,
        source: Option<String>,
        now: DateTime<Utc>,
        knobs: &NativeKnobs,
    ) -> String {
        let number = self.id();
        // *Daemon events*' examples: `…:daemon-revision/<cluster>/<daemon>/<id>`.
        let revision = format!(
            "arn:aws:ecs:{REGION}:{ACCOUNT}:daemon-revision/{}/{}/{number}",
            daemon.cluster, daemon.name
        );
        daemon.revisions.insert(revision.clone(), key.to_string());
        for running in daemon
            .deployments
            .iter_mut()
            .filter(|d| !d.status.is_final())
        {
            running.status = DaemonDeploymentStatus::Stopped;
            running.reason = Some("Replaced by a new deployment.".into());
            running.finished_at = Some(now);
        }
        let instances = self.instances_of(&daemon.cluster, &daemon.providers).len();
        let arn = format!(
            "arn:aws:ecs:{REGION}:{ACCOUNT}:daemon-deployment/{}/{}/{number}",
            daemon.cluster, daemon.name
        );
        daemon.deployments.push(Deployment {
            arn: arn.clone(),
            status: DaemonDeploymentStatus::Pending,
            reason: None,
            target: revision,
            source,
            failures: 0,
            threshold: (knobs.breaker_threshold)(instances),
            breaker: "MONITORING",
            triggered_alarm_names: Vec::new(),
            rollback: None,
            created_at: now,
            finished_at: None,
            phase: Phase::Idle,
            next_at: now,
        });
        daemon.updated_at = now;
        arn
    }

    fn instances_of(&self, cluster: &str, providers: &[String]) -> Vec<String> {
        self.instances
            .get(cluster)
            .map(|instances| {
                instances
                    .iter()
                    .filter(|(_, i)| providers.contains(&i.provider))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn active(&mut self, operation: &'static str, arn: &str) -> Result<&mut Daemon, EcsError> {
        match self.daemons.get_mut(arn) {
            None => Err(error(
                operation,
                arn,
                EcsErrorKind::NotFound,
                "DaemonNotFoundException",
                "Daemon not found.",
            )),
            Some(d) if d.deleted_at.is_some() => Err(error(
                operation,
                arn,
                EcsErrorKind::Invalid,
                "DaemonNotActiveException",
                "The daemon is not active.",
            )),
            Some(d) => Ok(d),
        }
    }

    /// UpdateDaemon: "a new deployment is triggered that progressively rolls out the changes".
    pub(super) fn update(
        &mut self,
        arn: &str,
        declaration: &DaemonDeclaration,
        now: DateTime<Utc>,
        knobs: &NativeKnobs,
    ) -> Result<DaemonChange, EcsError> {
        const OPERATION: &str = "UpdateDaemon";
        check_launch(OPERATION, declaration)?;
        let key = self.definition_key(OPERATION, &declaration.daemon_task_definition_arn)?;
        let mut daemon = self.active(OPERATION, arn)?.clone();
        daemon.providers = declaration
            .capacity_provider_arns
            .iter()
            .map(|p| provider_name(p).to_string())
            .collect();
        daemon.critical = declaration.critical;
        daemon.drain_percent = declaration.deployment.drain_percent.unwrap_or(25.0);
        daemon.bake = Duration::minutes(i64::from(
            declaration.deployment.bake_time_in_minutes.unwrap_or(0),
        ));
        daemon.alarm_names = declaration.deployment.alarm_names.clone();
        // UpdateDaemon takes no tags; a launch option not sent stays as it was.
        if let Some(propagate) = &declaration.launch.propagate_tags {
            daemon.launch.propagate_tags = Some(propagate.clone());
        }
        daemon.launch.enable_ecs_managed_tags = declaration.launch.enable_ecs_managed_tags;
        daemon.launch.enable_execute_command = declaration.launch.enable_execute_command;
        let source = daemon.deployments.last().map(|d| d.goal().to_string());
        let deployment = self.new_deployment(&mut daemon, &key, source, now, knobs);
        self.daemons.insert(arn.into(), daemon);
        Ok(DaemonChange {
            daemon_arn: arn.into(),
            status: "ACTIVE".into(),
            deployment_arn: Some(deployment),
        })
    }

    /// DeleteDaemon: DELETE_IN_PROGRESS, the copies stop, then the daemon is gone (and
    /// DescribeDaemon answers DaemonNotFoundException, the pessimistic reading).
    pub(super) fn delete(
        &mut self,
        arn: &str,
        now: DateTime<Utc>,
        on_delete: DeploymentOnDelete,
    ) -> Result<DaemonChange, EcsError> {
        let daemon = self.active("DeleteDaemon", arn)?;
        daemon.status = "DELETE_IN_PROGRESS";
        daemon.deleted_at = Some(now);
        daemon.updated_at = now;
        // What becomes of a deployment in flight is undocumented ([`DeploymentOnDelete`]);
        // either way its instances keep whatever copy they had until the daemon is gone.
        for running in daemon
            .deployments
            .iter_mut()
            .filter(|d| !d.status.is_final() && on_delete == DeploymentOnDelete::Stopped)
        {
            running.status = DaemonDeploymentStatus::Stopped;
            running.reason = Some("The daemon is being deleted.".into());
            running.finished_at = Some(now);
        }
        Ok(DaemonChange {
            daemon_arn: arn.into(),
            status: "DELETE_IN_PROGRESS".into(),
            deployment_arn: None,
        })
    }

    /// DescribeDaemon: per current revision and capacity provider, the instances running
    /// the daemon, and those without it ("applies to daemons that aren't critical",
    /// *DaemonCapacityProvider*).
    pub(super) fn describe(&self, arn: &str) -> Result<DaemonState, EcsError> {
        let daemon = self.daemons.get(arn).ok_or_else(|| {
            error(
                "DescribeDaemon",
                arn,
                EcsErrorKind::NotFound,
                "DaemonNotFoundException",
                "Daemon not found.",
            )
        })?;
        let mut counts: BTreeMap<(String, String), (i32, i32)> = BTreeMap::new();
        for instance in self
            .instances
            .get(&daemon.cluster)
            .into_iter()
            .flat_map(|i| i.values())
        {
            if let Some(copy) = instance.copies.get(arn) {
                let entry = counts
                    .entry((copy.revision.clone(), instance.provider.clone()))
                    .or_default();
                match copy.state {
                    CopyState::Running => entry.0 += 1,
                    CopyState::Impaired if !daemon.critical => entry.1 += 1,
                    CopyState::Impaired => {}
                }
            }
        }
        let mut revisions: Vec<DaemonRevisionCounts> = Vec::new();
        for ((revision, provider), (running, without)) in counts {
            let counts = DaemonProviderCounts {
                capacity_provider_arn: format!(
                    "arn:aws:ecs:{REGION}:{ACCOUNT}:capacity-provider/{provider}"
                ),
                running,
                without_daemon: without,
            };
            match revisions.iter_mut().find(|r| r.revision_arn == revision) {
                Some(found) => found.providers.push(counts),
                None => revisions.push(DaemonRevisionCounts {
                    revision_arn: revision,
                    providers: vec![counts],
                }),
            }
        }
        Ok(DaemonState {
            daemon_arn: arn.into(),
            status: daemon.status.into(),
            deployment_arn: daemon.deployments.last().map(|d| d.arn.clone()),
            current_revisions: revisions,
            updated_at: Some(daemon.updated_at),
        })
    }

    pub(super) fn deployments(&self, arns: &[String]) -> Vec<DaemonDeployment> {
        let mut found = Vec::new();
        for (daemon_arn, daemon) in &self.daemons {
            for deployment in daemon.deployments.iter().filter(|d| arns.contains(&d.arn)) {
                found.push(self.view(daemon_arn, daemon, deployment));
            }
        }
        found
    }

    fn view(&self, daemon_arn: &str, daemon: &Daemon, deployment: &Deployment) -> DaemonDeployment {
        let (mut running, mut without, mut draining) = (0, 0, 0);
        for instance in self
            .instances
            .get(&daemon.cluster)
            .into_iter()
            .flat_map(|i| i.values())
        {
            let Some(copy) = instance.copies.get(daemon_arn) else {
                continue;
            };
            if copy.revision != deployment.target {
                continue;
            }
            if instance.draining {
                draining += 1;
            } else if copy.state == CopyState::Running {
                running += 1;
            } else if !daemon.critical {
                without += 1;
            }
        }
        DaemonDeployment {
            deployment_arn: deployment.arn.clone(),
            status: deployment.status.clone(),
            status_reason: deployment.reason.clone(),
            target_revision_arn: Some(deployment.target.clone()),
            target_running: running,
            target_without_daemon: without,
            target_draining: draining,
            circuit_breaker: Some(DaemonCircuitBreaker {
                status: deployment.breaker.into(),
                failure_count: deployment.failures,
                threshold: deployment.threshold,
            }),
            rollback: deployment.rollback.clone(),
            triggered_alarm_names: deployment.triggered_alarm_names.clone(),
            created_at: Some(deployment.created_at),
            finished_at: deployment.finished_at,
        }
    }

    pub(super) fn revisions(&self, arns: &[String]) -> Vec<DaemonRevision> {
        self.daemons
            .values()
            .flat_map(|d| d.revisions.iter())
            .filter(|(revision, _)| arns.contains(revision))
            .map(|(revision, key)| DaemonRevision {
                revision_arn: revision.clone(),
                daemon_task_definition_arn: definition_arn(key),
            })
            .collect()
    }

    /// The next moment something is due, if any.
    pub(super) fn next_due(&self, knobs: &NativeKnobs) -> Option<DateTime<Utc>> {
        self.daemons
            .values()
            .flat_map(|d| {
                let deleting = d.deleted_at.map(|at| at + knobs.delete_time);
                d.deployments
                    .iter()
                    .filter(|dep| !dep.status.is_final() && d.deleted_at.is_none())
                    .map(|dep| dep.next_at)
                    .chain(deleting)
            })
            .min()
    }

    /// Runs everything due at `now`.
    pub(super) fn step(
        &mut self,
        now: DateTime<Utc>,
        knobs: &NativeKnobs,
        alarming: &std::collections::BTreeSet<String>,
    ) {
        let arns: Vec<String> = self.daemons.keys().cloned().collect();
        for arn in arns {
            let deleted_at = self.daemons[&arn].deleted_at;
            if let Some(at) = deleted_at {
                if at + knobs.delete_time <= now {
                    self.finish_delete(&arn);
                }
                continue;
            }
            let due = self.daemons[&arn]
                .deployments
                .last()
                .is_some_and(|d| !d.status.is_final() && d.next_at <= now);
            if due {
                self.advance_deployment(&arn, now, knobs, alarming);
            }
        }
    }

    /// ECS looks at every deployment's alarms now ([`AlarmCheck::WhenAlarmFires`]).
    pub(super) fn check_alarms_now(
        &mut self,
        now: DateTime<Utc>,
        alarming: &std::collections::BTreeSet<String>,
    ) {
        for daemon in self.daemons.values_mut() {
            let names = daemon.alarm_names.clone();
            let Some(deployment) = daemon.deployments.last_mut() else {
                continue;
            };
            if !deployment.status.is_final() && deployment.rollback.is_none() {
                trip_on_alarms(&names, deployment, now, alarming);
            }
        }
    }

    fn finish_delete(&mut self, arn: &str) {
        for instances in self.instances.values_mut() {
            for instance in instances.values_mut() {
                instance.copies.remove(arn);
            }
        }
        self.daemons.remove(arn);
    }

    /// One move of the drain-provision-replace rollout (*Daemon deployments*: "drains a batch
    /// of instances, provisions replacement instances with the updated daemon … This process
    /// repeats until all instances run the new daemon revision"; `drainPercent` of the
    /// instances at once; `bakeTimeInMinutes` "to wait after a successful deployment step").
    fn advance_deployment(
        &mut self,
        arn: &str,
        now: DateTime<Utc>,
        knobs: &NativeKnobs,
        alarming: &std::collections::BTreeSet<String>,
    ) {
        let mut daemon = self.daemons[arn].clone();
        let Some(mut deployment) = daemon.deployments.pop() else {
            return;
        };
        // How often ECS looks at the alarms is a knob (`NativeKnobs::alarm_check`); at the
        // least, at each step.
        if deployment.rollback.is_none()
            && trip_on_alarms(&daemon.alarm_names, &mut deployment, now, alarming)
        {
            daemon.deployments.push(deployment);
            self.daemons.insert(arn.into(), daemon);
            return;
        }
        match std::mem::replace(&mut deployment.phase, Phase::Idle) {
            Phase::Idle => self.choose_step(arn, &daemon, &mut deployment, now, knobs),
            Phase::Draining(instances) => {
                let launched = self.replace(&daemon, arn, &instances, deployment.goal());
                deployment.phase = Phase::Launching(launched);
                deployment.next_at = now + knobs.replace_time;
            }
            Phase::Launching(instances) => {
                let failed = self.settle(&daemon, arn, &instances);
                deployment.failures += failed;
                let bake = if failed == 0 {
                    daemon.bake
                } else {
                    Duration::zero()
                };
                deployment.next_at = now + bake;
                if deployment.failures >= deployment.threshold {
                    trip_breaker(&mut deployment, now);
                }
            }
        }
        daemon.deployments.push(deployment);
        self.daemons.insert(arn.into(), daemon);
    }

    fn choose_step(
        &mut self,
        arn: &str,
        daemon: &Daemon,
        deployment: &mut Deployment,
        now: DateTime<Utc>,
        knobs: &NativeKnobs,
    ) {
        let goal = deployment.goal().to_string();
        let all = self.instances_of(&daemon.cluster, &daemon.providers);
        let behind: Vec<String> = all
            .iter()
            .filter(|id| {
                let copy = self.instances[&daemon.cluster][*id].copies.get(arn);
                match copy {
                    None => true,
                    Some(copy) if copy.revision != goal => true,
                    // A failed copy of a critical daemon: "ECS automatically drains and
                    // replaces that container instance" (*Amazon ECS Managed Daemons*). A
                    // deployment is SUCCESSFUL only "with all daemon tasks running and
                    // healthy" (*Daemon events*); how ECS gets a non-critical daemon's failed
                    // copy there is undocumented ([`NonCriticalFailure`]); each failed start
                    // counts toward the breaker.
                    Some(copy) => copy.state == CopyState::Impaired,
                }
            })
            .cloned()
            .collect();
        if behind.is_empty() {
            if deployment.rollback.is_some() {
                deployment.status = DaemonDeploymentStatus::RollbackSuccessful;
            } else {
                deployment.status = DaemonDeploymentStatus::Successful;
                deployment.breaker = "MONITORING_COMPLETE";
            }
            deployment.finished_at = Some(now);
            return;
        }
        if deployment.status == DaemonDeploymentStatus::Pending {
            deployment.status = DaemonDeploymentStatus::InProgress;
        }
        if knobs.non_critical_failure == NonCriticalFailure::RetryInPlace && !daemon.critical {
            let failed_in_place: Vec<String> = behind
                .iter()
                .filter(|id| {
                    self.instances[&daemon.cluster][*id]
                        .copies
                        .get(arn)
                        .is_some_and(|c| c.revision == goal && c.state == CopyState::Impaired)
                })
                .cloned()
                .collect();
            if !failed_in_place.is_empty() {
                // Started again where they are; `settle` counts each start that fails.
                deployment.phase = Phase::Launching(failed_in_place);
                deployment.next_at = now + knobs.replace_time;
                return;
            }
        }
        // The rounding of drainPercent × instances is undocumented: up, at least one (more
        // instances drained at once, the pessimistic reading for the applications).
        let step = ((daemon.drain_percent / 100.0) * all.len() as f64)
            .ceil()
            .max(1.0) as usize;
        let batch: Vec<String> = behind.into_iter().take(step).collect();
        if let Some(instances) = self.instances.get_mut(&daemon.cluster) {
            for id in &batch {
                if let Some(instance) = instances.get_mut(id) {
                    instance.draining = true;
                }
            }
        }
        deployment.phase = Phase::Draining(batch);
        deployment.next_at = now + knobs.drain_time;
    }

    /// Drained instances leave; as many replacements launch on the same providers, with
    /// every daemon of theirs, this one at `goal`.
    fn replace(
        &mut self,
        daemon: &Daemon,
        arn: &str,
        drained: &[String],
        goal: &str,
    ) -> Vec<String> {
        let mut launched = Vec::new();
        for id in drained {
            let Some(old) = self
                .instances
                .get_mut(&daemon.cluster)
                .and_then(|i| i.remove(id))
            else {
                continue;
            };
            let new = self.launch(&daemon.cluster, &old.provider, 1, ScaleOutRevision::Goal);
            for new_id in &new {
                if let Some(instance) = self
                    .instances
                    .get_mut(&daemon.cluster)
                    .and_then(|i| i.get_mut(new_id))
                {
                    instance
                        .copies
                        .insert(arn.into(), daemon.copy(goal.into(), CopyState::Running));
                }
            }
            launched.extend(new);
        }
        launched
    }

    /// The launched instances' copies started or failed; answers how many failed.
    fn settle(&mut self, daemon: &Daemon, arn: &str, launched: &[String]) -> i32 {
        let mut failed = 0;
        for id in launched {
            let revision = self
                .instances
                .get(&daemon.cluster)
                .and_then(|i| i.get(id))
                .and_then(|i| i.copies.get(arn))
                .map(|c| c.revision.clone());
            let Some(revision) = revision else { continue };
            let fails = self.revision_fails(daemon, &revision);
            if let Some(copy) = self
                .instances
                .get_mut(&daemon.cluster)
                .and_then(|i| i.get_mut(id))
                .and_then(|i| i.copies.get_mut(arn))
            {
                copy.state = if fails {
                    CopyState::Impaired
                } else {
                    CopyState::Running
                };
            }
            if fails {
                failed += 1;
                let provider = self.instances[&daemon.cluster][id].provider.clone();
                self.impaired(arn, &revision, id, &provider);
            }
        }
        failed
    }

    /// How many instances of `cluster` run each daemon's copy, by daemon name (for tests).
    pub(super) fn running_by_daemon(&self, cluster: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for instance in self
            .instances
            .get(cluster)
            .into_iter()
            .flat_map(|i| i.values())
        {
            for (arn, copy) in &instance.copies {
                if copy.state == CopyState::Running {
                    let name = self
                        .daemons
                        .get(arn)
                        .map_or(arn.as_str(), |d| d.name.as_str());
                    *counts.entry(name.to_string()).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    pub(super) fn instance_count(&self, cluster: &str) -> usize {
        self.instances.get(cluster).map_or(0, |i| i.len())
    }
}

/// The breaker tripped: roll back to the revision before (ECS "automatically rolls back to
/// the previous daemon revision if the deployment circuit breaker detects failures", *Daemon
/// deployments*); a first deployment has none to return to and stops.
fn trip_breaker(deployment: &mut Deployment, now: DateTime<Utc>) {
    deployment.breaker = "TRIGGERED";
    match deployment.source.clone() {
        Some(source) if deployment.rollback.is_none() => {
            deployment.status = DaemonDeploymentStatus::RollbackInProgress;
            deployment.reason = Some("Circuit breaker triggered: rolling back.".into());
            // The rollback's own failures are counted afresh.
            deployment.failures = 0;
            deployment.rollback = Some(DaemonRollback {
                reason: Some("DEPLOYMENT_CIRCUIT_BREAKER".into()),
                target_revision_arn: Some(source),
            });
        }
        Some(_) => {
            deployment.status = DaemonDeploymentStatus::RollbackFailed;
            deployment.reason = Some("The rollback failed too.".into());
            deployment.finished_at = Some(now);
        }
        None => {
            deployment.status = DaemonDeploymentStatus::Stopped;
            deployment.reason = Some("Circuit breaker triggered.".into());
            deployment.finished_at = Some(now);
        }
    }
}

impl super::World {
    /// Runs the managed daemons' steps due until `until`, each at its own moment.
    pub(super) fn run_native(&mut self, until: DateTime<Utc>) {
        let knobs = self.config.native.clone();
        while let Some(at) = self.native.next_due(&knobs).filter(|at| *at <= until) {
            self.now = self.now.max(at);
            let now = self.now;
            let before = self.native.statuses();
            let alarming = self.cloudwatch.alarming();
            self.native.step(now, &knobs, &alarming);
            self.native.announce(&before);
            self.send_native_events();
        }
    }

    /// Hands ECS's daemon events to EventBridge (with the world's delivery faults).
    pub(super) fn send_native_events(&mut self) {
        for event in self.native.take_events() {
            let (detail_type, resource, detail) = match event {
                NativeEvent::Deployment {
                    cluster,
                    daemon_arn,
                    deployment_arn,
                    target_revision_arn,
                    event_name,
                } => {
                    let detail = serde_json::json!({
                        "eventType": if event_name.ends_with("FAILED") { "ERROR" } else { "INFO" },
                        "eventName": event_name,
                        "clusterArn": super::cluster_arn(&cluster),
                        "daemonArn": daemon_arn,
                        "daemonDeploymentArn": deployment_arn,
                        "targetDaemonRevisionArn": target_revision_arn,
                        "updatedAt": super::iso(self.now),
                    });
                    (DAEMON_DEPLOYMENT_STATE_CHANGE, daemon_arn, detail)
                }
                NativeEvent::ImpairedStart {
                    cluster,
                    daemon_arn,
                    revision_arn,
                    definition_key,
                    provider,
                    instance_id,
                    task_id,
                } => {
                    let task_arn =
                        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{task_id}");
                    let detail = serde_json::json!({
                        "eventType": "WARNING",
                        "eventName": DAEMON_TASK_START_IMPAIRED,
                        "clusterArn": super::cluster_arn(&cluster),
                        "containerInstanceArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{instance_id}"),
                        "taskArn": task_arn,
                        "daemonRevisionArn": revision_arn,
                        "capacityProviderName": provider,
                        "daemonArn": daemon_arn,
                        "daemonTaskDefinitionArn": definition_arn(&definition_key),
                        "failureType": "TASK_FAILED_TO_RUN",
                        "createdAt": super::iso(self.now),
                        "reason": IMPAIRED_REASON,
                    });
                    (DAEMON_SERVICE_ACTION, task_arn, detail)
                }
            };
            let body = self.envelope(detail_type, &resource, detail);
            self.emit(body);
        }
    }

    /// ClientException unless every provider is a Managed Instances one of the cluster
    /// ("ECS Managed Daemons is only supported for Amazon ECS Managed Instances Capacity
    /// Providers", CreateDaemon).
    fn check_native_providers(
        &self,
        operation: &'static str,
        cluster: &str,
        declaration: &DaemonDeclaration,
    ) -> Result<(), EcsError> {
        for provider in &declaration.capacity_provider_arns {
            let name = provider_name(provider);
            let kind = self.capacity_provider(cluster, name).map(|p| p.kind);
            if !matches!(
                kind,
                Some(ecs_daemons::model::CapacityProviderKind::ManagedInstances { .. })
            ) {
                return Err(client_error(
                    operation,
                    name,
                    "ECS Managed Daemons is only supported for Amazon ECS Managed Instances Capacity Providers.",
                ));
            }
        }
        Ok(())
    }
}

impl super::ClusterModel {
    /// RegisterDaemonTaskDefinition; answers `family:revision`.
    pub fn register_daemon_task_definition(&self, definition: DaemonDefinitionModel) -> String {
        self.world().native.register(definition)
    }

    /// ECS launches `count` instances for a Managed Instances provider (an application task
    /// needed room); each starts its provider's daemons first.
    pub fn launch_managed_instances(
        &self,
        cluster: &str,
        provider: &str,
        count: usize,
    ) -> Vec<String> {
        let mut world = self.world();
        let revision = world.config.native.scale_out_revision;
        let launched = world.native.scale_out(cluster, provider, count, revision);
        world.send_native_events();
        launched
    }

    /// Instances of `cluster` running each managed daemon, by daemon name.
    pub fn managed_daemon_copies(&self, cluster: &str) -> BTreeMap<String, usize> {
        self.world().native.running_by_daemon(cluster)
    }

    /// How each managed daemon copy of `cluster` was launched: (instance id, daemon name,
    /// its tags, ECS Exec), by instance then daemon.
    pub fn managed_copy_launches(
        &self,
        cluster: &str,
    ) -> Vec<(String, String, BTreeMap<String, String>, bool)> {
        let world = self.world();
        let native = &world.native;
        let Some(instances) = native.instances.get(cluster) else {
            return Vec::new();
        };
        instances
            .iter()
            .flat_map(|(id, instance)| {
                instance.copies.iter().filter_map(move |(arn, copy)| {
                    let daemon = native.daemons.get(arn)?;
                    Some((
                        id.clone(),
                        daemon.name.clone(),
                        copy.tags.clone(),
                        copy.execute_command,
                    ))
                })
            })
            .collect()
    }

    /// Managed Instances instances of `cluster`.
    pub fn managed_instance_count(&self, cluster: &str) -> usize {
        self.world().native.instance_count(cluster)
    }

    /// The ids of `cluster`'s Managed Instances instances.
    pub fn managed_instance_ids(&self, cluster: &str) -> Vec<String> {
        let world = self.world();
        world
            .native
            .instances
            .get(cluster)
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// What ECS holds for each managed daemon of `cluster`, read without a call (no throttle,
    /// no accounting): the campaign's truth to hold the records and `status` to.
    pub fn managed_truth(&self, cluster: &str) -> Vec<ManagedTruth> {
        let world = self.world();
        let native = &world.native;
        native
            .daemons
            .iter()
            .filter(|(_, d)| d.cluster == cluster)
            .filter_map(|(arn, daemon)| {
                let state = native.describe(arn).ok()?;
                let latest = daemon
                    .deployments
                    .last()
                    .map(|d| native.view(arn, daemon, d));
                let in_force = daemon
                    .deployments
                    .last()
                    .and_then(|d| daemon.revisions.get(d.goal()).cloned());
                Some(ManagedTruth {
                    name: daemon.name.clone(),
                    arn: arn.clone(),
                    status: daemon.status,
                    state,
                    latest,
                    in_force,
                    deployments: daemon.deployments.len(),
                })
            })
            .collect()
    }
}

/// One managed daemon as ECS holds it (see [`super::ClusterModel::managed_truth`]).
#[derive(Clone, Debug)]
pub struct ManagedTruth {
    pub name: String,
    pub arn: String,
    /// ACTIVE or DELETE_IN_PROGRESS.
    pub status: &'static str,
    /// What DescribeDaemon answers.
    pub state: DaemonState,
    /// Its latest deployment, as DescribeDaemonDeployments answers it.
    pub latest: Option<DaemonDeployment>,
    /// The `family:revision` the latest deployment rolls out (or back to).
    pub in_force: Option<String>,
    /// Deployments ECS ran for it.
    pub deployments: usize,
}

impl ecs_daemons::ecs::EcsDaemons for super::ClusterModel {
    async fn describe_daemon_task_definition(
        &self,
        reference: &str,
    ) -> Result<DaemonTaskDefinition, EcsError> {
        let mut world = self.world();
        world.call("DescribeDaemonTaskDefinition", false, reference)?;
        world.native.describe_definition(reference)
    }

    async fn create_daemon(
        &self,
        declaration: &DaemonDeclaration,
        client_token: &str,
    ) -> Result<DaemonChange, EcsError> {
        let mut world = self.world();
        world.call("CreateDaemon", true, &declaration.daemon_name)?;
        let cluster = provider_name(&declaration.cluster_arn).to_string();
        world.check_native_providers("CreateDaemon", &cluster, declaration)?;
        let (now, knobs) = (world.now, world.config.native.clone());
        let before = world.native.statuses();
        let answer = world.native.create(declaration, client_token, now, &knobs);
        world.native.announce(&before);
        world.send_native_events();
        answer
    }

    async fn update_daemon(
        &self,
        daemon_arn: &str,
        declaration: &DaemonDeclaration,
    ) -> Result<DaemonChange, EcsError> {
        let mut world = self.world();
        world.call("UpdateDaemon", true, daemon_arn)?;
        // The daemon's ARN names its cluster: …:daemon/<cluster>/<name>.
        let cluster = daemon_arn
            .rsplit('/')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        world.check_native_providers("UpdateDaemon", &cluster, declaration)?;
        let (now, knobs) = (world.now, world.config.native.clone());
        let before = world.native.statuses();
        let answer = world.native.update(daemon_arn, declaration, now, &knobs);
        world.native.announce(&before);
        world.send_native_events();
        answer
    }

    async fn delete_daemon(&self, daemon_arn: &str) -> Result<DaemonChange, EcsError> {
        let mut world = self.world();
        world.call("DeleteDaemon", true, daemon_arn)?;
        let now = world.now;
        let before = world.native.statuses();
        let on_delete = world.config.native.deployment_on_delete;
        let answer = world.native.delete(daemon_arn, now, on_delete);
        world.native.announce(&before);
        world.send_native_events();
        answer
    }

    async fn describe_daemon(&self, daemon_arn: &str) -> Result<DaemonState, EcsError> {
        let mut world = self.world();
        world.call("DescribeDaemon", false, daemon_arn)?;
        world.native.describe(daemon_arn)
    }

    async fn describe_daemon_deployments(
        &self,
        deployment_arns: &[String],
    ) -> Result<Vec<DaemonDeployment>, EcsError> {
        let mut world = self.world();
        let mut described = Vec::new();
        for batch in deployment_arns.chunks(ecs_daemons::ecs::DAEMON_DEPLOYMENT_BATCH) {
            world.call("DescribeDaemonDeployments", false, "daemon deployments")?;
            described.extend(world.native.deployments(batch));
        }
        Ok(described)
    }

    async fn describe_daemon_revisions(
        &self,
        revision_arns: &[String],
    ) -> Result<Vec<DaemonRevision>, EcsError> {
        let mut world = self.world();
        let mut described = Vec::new();
        for batch in revision_arns.chunks(ecs_daemons::ecs::DAEMON_REVISION_BATCH) {
            world.call("DescribeDaemonRevisions", false, "daemon revisions")?;
            described.extend(world.native.revisions(batch));
        }
        Ok(described)
    }
}
