//! The model's DAEMON-strategy services: what the services placement relies on, each rule
//! with its source, and every unknown a [`ServiceKnobs`] field with a pessimistic default.
//!
//! - "The daemon scheduling strategy deploys exactly one task on each active container
//!   instance that meets all of the task placement constraints … The service scheduler also
//!   evaluates the task placement constraints for running tasks and will stop tasks that
//!   don't meet the placement constraints" (API reference, CreateService
//!   `schedulingStrategy`); `SERVICE_DAEMON_PLACEMENT_CONSTRAINT_VIOLATED` is the event of
//!   the latter (developer guide, *Amazon ECS service action events*).
//! - "The daemon service scheduler doesn't place any tasks on instances that have a
//!   DRAINING status … the daemon task is the first task to launch on the instances and the
//!   last task to stop after all replica tasks are stopped … The service scheduler also
//!   monitors when new container instances are added to your cluster and adds the daemon
//!   tasks to them" (developer guide, *Amazon ECS service deployment controllers and
//!   strategies*, daemon scheduling strategy), with the defects [`DaemonDrainOrder`] names.
//! - Deployments: "the maximum percent parameter must be 100 … The default value for the
//!   minimumHealthyPercent parameter is 0" (same page): an old task stops before its
//!   replacement starts on that instance.
//! - Without room, "the task placement fails … Amazon ECS continues to try and schedule the
//!   task on the instance by waiting for resources to become available" (same page).
//! - DeleteService: "the service status moves from ACTIVE to DRAINING … After all tasks have
//!   transitioned to either STOPPING or STOPPED status, the service status moves from
//!   DRAINING to INACTIVE"; a name is taken while ACTIVE or DRAINING (API reference,
//!   DeleteService).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::{definition_arn, World, ACCOUNT, REGION};
use ecs_daemons::ecs::{
    parse_member_of, DaemonServiceDeclaration, EcsError, EcsErrorKind, ServiceDeploymentState,
    ServiceState, SERVICE_NAME_MAX_LEN,
};
use ecs_daemons::model::{InstanceStatus, TaskStatus};

/// What the DAEMON scheduler's documentation leaves open.
#[derive(Clone, Debug)]
pub struct ServiceKnobs {
    /// How long the scheduler takes to act on a change (an instance joining, an attribute
    /// set or removed, a task stopping, a service updated): `reaction` plus up to
    /// `reaction_spread`, drawn per look. Undocumented; tens of seconds by default.
    pub reaction: Duration,
    pub reaction_spread: Duration,
    pub drain_order: DaemonDrainOrder,
    /// containers-roadmap #856: while an instance of the cluster drains, the scheduler
    /// placed nothing on new instances until the drain finished. Whether that still holds is
    /// not documented; on by default (the pessimistic reading).
    pub waits_for_draining: bool,
    /// Longest wait between starts of a task that keeps failing to start on one instance.
    /// ECS throttles such services (`SERVICE_TASK_START_IMPAIRED`, *Amazon ECS service
    /// action events*) without documenting the intervals: doubling from `reaction`, up to
    /// this.
    pub restart_backoff_max: Duration,
    /// The services-per-cluster quota CreateService enforces (5,000 unless raised).
    pub services_per_cluster: usize,
}

/// When ECS stops a DAEMON task on a DRAINING instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonDrainOrder {
    /// As documented: after every other task there has STOPPED.
    AfterOthersStopped,
    /// amazon-ecs-agent #3829: once no other task is meant to run, while they may still be
    /// stopping.
    AfterOthersLeaveRunning,
    /// containers-roadmap #1700: with the others, at once.
    WithOthers,
}

impl Default for ServiceKnobs {
    fn default() -> Self {
        Self {
            reaction: Duration::seconds(5),
            reaction_spread: Duration::seconds(40),
            drain_order: DaemonDrainOrder::AfterOthersLeaveRunning,
            waits_for_draining: true,
            restart_backoff_max: Duration::minutes(15),
            services_per_cluster: ecs_daemons::ecs::SERVICES_PER_CLUSTER,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Active,
    Draining,
    Inactive,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Draining => "DRAINING",
            Self::Inactive => "INACTIVE",
        }
    }
}

#[derive(Clone, Debug)]
struct Deployment {
    id: String,
    task_definition: String,
    created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct Service {
    declaration: DaemonServiceDeclaration,
    client_token: String,
    arn: String,
    status: Status,
    /// The attribute and values of each `memberOf`.
    constraints: Vec<(String, Vec<String>)>,
    /// Newest last; the last is PRIMARY.
    deployments: Vec<Deployment>,
    created_at: DateTime<Utc>,
}

impl Service {
    fn group(&self) -> String {
        format!("service:{}", self.declaration.service_name)
    }

    fn primary(&self) -> &Deployment {
        self.deployments
            .last()
            .expect("a service always has its first deployment")
    }

    fn admits(&self, attributes: &BTreeMap<String, Option<String>>) -> bool {
        self.constraints.iter().all(|(name, values)| {
            attributes
                .get(name)
                .and_then(|v| v.as_deref())
                .is_some_and(|v| values.iter().any(|allowed| allowed == v))
        })
    }
}

/// Every DAEMON service of the model, and when the scheduler looks at each instance next.
#[derive(Clone, Debug, Default)]
pub(super) struct DaemonServices {
    /// By (cluster, service name); INACTIVE ones stay (their tasks keep their group).
    services: BTreeMap<(String, String), Service>,
    /// (cluster, service, instance id) → when the scheduler looks there.
    due: BTreeMap<(String, String, String), DateTime<Utc>>,
    /// DAEMON tasks ECS stopped on a DRAINING instance while another task still ran there
    /// (the drain-order defects): what `status` must report.
    pub(super) early_stops: Vec<String>,
    /// Services of other owners per cluster (counted against the quota, never run here).
    pub(super) others: BTreeMap<String, usize>,
}

/// `propagateTags` of a service: "TASK_DEFINITION | SERVICE | NONE" (API reference,
/// *CreateService*, *UpdateService*).
fn check_propagate_tags(
    operation: &'static str,
    target: &str,
    value: &str,
) -> Result<(), EcsError> {
    if matches!(value, "SERVICE" | "TASK_DEFINITION" | "NONE") {
        return Ok(());
    }
    Err(error(
        operation,
        target,
        EcsErrorKind::Invalid,
        "InvalidParameterException",
        "propagateTags must be one of TASK_DEFINITION, SERVICE or NONE.",
    ))
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= SERVICE_NAME_MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl World {
    /// Whether a task of `cluster` belongs to a DAEMON service (those ECS counts as daemons).
    pub(super) fn is_daemon_service_task(&self, cluster: &str, group: &str) -> bool {
        group.strip_prefix("service:").is_some_and(|name| {
            self.services
                .services
                .contains_key(&(cluster.to_string(), name.to_string()))
        })
    }

    fn reaction(&mut self) -> Duration {
        let knobs = &self.config.services;
        let spread = knobs.reaction_spread.num_milliseconds().max(0) as u64;
        knobs.reaction + Duration::milliseconds(self.rng.below(spread + 1) as i64)
    }

    /// Something changed on `instance` (or, with `None`, on every instance): each service
    /// of the cluster looks there after its reaction time.
    pub(super) fn notice_services(&mut self, cluster: &str, instance: Option<&str>) {
        let names: Vec<String> = self
            .services
            .services
            .iter()
            .filter(|((c, _), s)| c == cluster && s.status != Status::Inactive)
            .map(|((_, name), _)| name.clone())
            .collect();
        let instances: Vec<String> = match instance {
            Some(id) => vec![id.to_string()],
            None => self
                .clusters
                .get(cluster)
                .map(|c| c.instances.keys().cloned().collect())
                .unwrap_or_default(),
        };
        for name in names {
            for id in &instances {
                let at = self.now + self.reaction();
                let key = (cluster.to_string(), name.clone(), id.clone());
                let due = self.services.due.entry(key).or_insert(at);
                *due = (*due).min(at);
            }
        }
    }

    fn look_again(&mut self, cluster: &str, service: &str, instance: &str, at: DateTime<Utc>) {
        let key = (
            cluster.to_string(),
            service.to_string(),
            instance.to_string(),
        );
        let due = self.services.due.entry(key).or_insert(at);
        *due = (*due).min(at);
    }

    /// When the scheduler looks somewhere next.
    pub(super) fn next_service_look(&self) -> Option<DateTime<Utc>> {
        self.services.due.values().min().copied()
    }

    /// Runs the scheduler's looks due until `until`, each at its own moment.
    pub(super) fn run_services(&mut self, until: DateTime<Utc>) {
        while let Some((key, at)) = self
            .services
            .due
            .iter()
            .filter(|(_, at)| **at <= until)
            .min_by_key(|(_, at)| **at)
            .map(|(k, at)| (k.clone(), *at))
        {
            self.services.due.remove(&key);
            self.now = self.now.max(at);
            let (cluster, service, instance) = key;
            self.look(&cluster, &service, &instance);
        }
    }

    /// The scheduler's look at one instance for one service.
    fn look(&mut self, cluster: &str, name: &str, instance_id: &str) {
        let key = (cluster.to_string(), name.to_string());
        let Some(service) = self.services.services.get(&key).cloned() else {
            return;
        };
        let Some(state) = self.clusters.get(cluster) else {
            return;
        };
        let Some(instance) = state.instances.get(instance_id).cloned() else {
            return;
        };
        let group = service.group();
        let mine = |t: &&super::TaskModel| {
            t.instance_id == instance_id && t.group == group && !t.last_status.is_terminal()
        };
        let live: Vec<(String, String)> = state
            .tasks
            .values()
            .filter(mine)
            .filter(|t| t.desired_status == TaskStatus::Running)
            .map(|t| (t.id.clone(), t.definition.clone()))
            .collect();
        let stopping = state
            .tasks
            .values()
            .filter(mine)
            .any(|t| t.desired_status == TaskStatus::Stopped);
        if service.status != Status::Active {
            self.stop_all(cluster, &live, "Service is being deleted");
            self.settle_deletion(cluster, name);
            return;
        }
        if instance.status == InstanceStatus::Draining {
            self.drain_look(cluster, name, instance_id, &live);
            return;
        }
        if instance.status != InstanceStatus::Active || !instance.agent_connected {
            // Looked at again when the instance changes (it is noticed then).
            return;
        }
        if !service.admits(&instance.attributes) {
            self.stop_all(
                cluster,
                &live,
                "Task no longer meets the placement constraints of its DAEMON service",
            );
            return;
        }
        let primary = service.primary().clone();
        let (current, old): (Vec<_>, Vec<_>) = live
            .into_iter()
            .partition(|(_, definition)| *definition == primary.task_definition);
        // maximumPercent 100: the old task stops first; its replacement starts when it is
        // gone (its stop notices the instance again).
        self.stop_all(
            cluster,
            &old,
            "Deployment: replaced by the service's new task definition",
        );
        if !old.is_empty() || stopping {
            return;
        }
        // "Exactly one task on each active container instance".
        self.stop_all(cluster, current.get(1..).unwrap_or_default(), "Extra task");
        if !current.is_empty() {
            return;
        }
        if let Some(wait_until) = self.start_blocked_until(cluster, &service, instance_id) {
            self.look_again(cluster, name, instance_id, wait_until);
            return;
        }
        let tags = self.service_task_tags(cluster, &service);
        let started_by = primary.id.clone();
        let placed = self.place(
            cluster,
            instance_id,
            &primary.task_definition,
            &group,
            Some(&started_by),
            tags,
        );
        if let Ok(task) = &placed {
            if let Some(task) = self
                .clusters
                .get_mut(cluster)
                .and_then(|c| c.tasks.get_mut(task))
            {
                task.execute_command = service.declaration.enable_execute_command;
            }
        }
        if placed.is_err() {
            // "continues to try and schedule the task on the instance by waiting for
            // resources to become available".
            let at = self.now + self.reaction();
            self.look_again(cluster, name, instance_id, at);
        }
    }

    /// A DAEMON task on a DRAINING instance stops when [`DaemonDrainOrder`] lets it.
    fn drain_look(
        &mut self,
        cluster: &str,
        name: &str,
        instance_id: &str,
        live: &[(String, String)],
    ) {
        if live.is_empty() {
            return;
        }
        // Per other task left there: whether it is still meant to run.
        let others: Vec<bool> = self.clusters[cluster]
            .tasks
            .values()
            .filter(|t| t.instance_id == instance_id && !t.last_status.is_terminal())
            .filter(|t| !self.is_daemon_service_task(cluster, &t.group))
            .map(|t| t.desired_status == TaskStatus::Running)
            .collect();
        let blocked = match self.config.services.drain_order {
            DaemonDrainOrder::AfterOthersStopped => !others.is_empty(),
            DaemonDrainOrder::AfterOthersLeaveRunning => others.contains(&true),
            DaemonDrainOrder::WithOthers => false,
        };
        if blocked {
            let at = self.now + self.reaction();
            self.look_again(cluster, name, instance_id, at);
            return;
        }
        if !others.is_empty() {
            let at = self.now;
            for (task, _) in live {
                self.services.early_stops.push(format!(
                    "{task} on {instance_id} at {at} with {} other task(s) left",
                    others.len()
                ));
            }
        }
        self.stop_all(cluster, live, "Container instance is draining");
    }

    /// When a start on `instance_id` may happen, if not now: while another instance drains
    /// (containers-roadmap #856, [`ServiceKnobs::waits_for_draining`]), or while the
    /// instance's failed starts back off.
    fn start_blocked_until(
        &mut self,
        cluster: &str,
        service: &Service,
        instance_id: &str,
    ) -> Option<DateTime<Utc>> {
        let state = &self.clusters[cluster];
        let knobs = self.config.services.clone();
        let draining_elsewhere = state.instances.values().any(|i| {
            i.status == InstanceStatus::Draining
                && state
                    .tasks
                    .values()
                    .any(|t| t.instance_id == i.id && !t.last_status.is_terminal())
        });
        if knobs.waits_for_draining && draining_elsewhere {
            return Some(self.now + self.reaction());
        }
        // Consecutive failed starts since the last task that ran.
        let group = service.group();
        let mut history: Vec<&super::TaskModel> = state
            .tasks
            .values()
            .filter(|t| t.instance_id == instance_id && t.group == group)
            .collect();
        history.sort_by_key(|t| t.created_at);
        let failed: Vec<&&super::TaskModel> = history
            .iter()
            .rev()
            .take_while(|t| t.started_at.is_none() && t.last_status.is_terminal())
            .collect();
        let last = failed.first()?.stopped_at?;
        let doublings = (failed.len() as u32 - 1).min(16);
        let backoff = (knobs.reaction * 2i32.pow(doublings)).min(knobs.restart_backoff_max);
        (last + backoff > self.now).then_some(last + backoff)
    }

    fn stop_all(&mut self, cluster: &str, tasks: &[(String, String)], reason: &str) {
        for (task, _) in tasks {
            self.stop_task(cluster, task, "ServiceSchedulerInitiated", reason);
        }
    }

    /// The tags a service task carries: the service's own (`propagateTags` SERVICE), its
    /// task definition's (TASK_DEFINITION) or none (NONE), as they are when the task starts
    /// (API reference, *CreateService* `propagateTags`: "Tags can only be propagated to the
    /// task during task creation"), and ECS's managed ones (`enableECSManagedTags`:
    /// `aws:ecs:serviceName`, `aws:ecs:clusterName`; developer guide, *Tagging your
    /// resources*).
    fn service_task_tags(&self, cluster: &str, service: &Service) -> BTreeMap<String, String> {
        let mut tags: BTreeMap<String, String> = match service.declaration.propagate_tags.as_str() {
            "SERVICE" => service.declaration.tags.iter().cloned().collect(),
            "TASK_DEFINITION" => self
                .definitions
                .get(&service.primary().task_definition)
                .map(|(_, model)| model.tags.clone())
                .unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        tags.insert(
            "aws:ecs:serviceName".into(),
            service.declaration.service_name.clone(),
        );
        tags.insert("aws:ecs:clusterName".into(), cluster.into());
        tags
    }

    /// DRAINING → INACTIVE once no task of the service is meant to run.
    fn settle_deletion(&mut self, cluster: &str, name: &str) {
        let key = (cluster.to_string(), name.to_string());
        let Some(service) = self.services.services.get(&key) else {
            return;
        };
        let group = service.group();
        let running = self.clusters.get(cluster).is_some_and(|c| {
            c.tasks
                .values()
                .any(|t| t.group == group && t.desired_status == TaskStatus::Running)
        });
        if !running {
            if let Some(service) = self.services.services.get_mut(&key) {
                service.status = Status::Inactive;
            }
        }
    }

    fn service_state(&self, cluster: &str, service: &Service) -> ServiceState {
        let group = service.group();
        let tasks: Vec<&super::TaskModel> = self
            .clusters
            .get(cluster)
            .map(|c| c.tasks.values().filter(|t| t.group == group).collect())
            .unwrap_or_default();
        let counts = |definition: Option<&str>| {
            let of = |t: &&&super::TaskModel| {
                definition.is_none_or(|d| t.definition == d)
                    && t.desired_status == TaskStatus::Running
            };
            let running = tasks
                .iter()
                .filter(of)
                .filter(|t| t.last_status == TaskStatus::Running)
                .count() as i32;
            let pending = tasks
                .iter()
                .filter(of)
                .filter(|t| t.last_status == TaskStatus::Pending)
                .count() as i32;
            (running, pending)
        };
        let primary = &service.primary().task_definition;
        let old_live = tasks
            .iter()
            .any(|t| t.definition != *primary && !t.last_status.is_terminal());
        let deployments = service
            .deployments
            .iter()
            .rev()
            .enumerate()
            .filter_map(|(i, d)| {
                let (running, pending) = counts(Some(&d.task_definition));
                let is_primary = i == 0;
                if !is_primary && running + pending == 0 {
                    return None;
                }
                let failed = tasks
                    .iter()
                    .filter(|t| {
                        t.definition == d.task_definition
                            && t.stop_code.as_deref() == Some("TaskFailedToStart")
                    })
                    .count() as i32;
                Some(ServiceDeploymentState {
                    id: d.id.clone(),
                    status: if is_primary { "PRIMARY" } else { "ACTIVE" }.into(),
                    task_definition: definition_arn(&d.task_definition),
                    rollout_state: Some(
                        if is_primary && !old_live && pending == 0 {
                            "COMPLETED"
                        } else {
                            "IN_PROGRESS"
                        }
                        .into(),
                    ),
                    running_count: running,
                    pending_count: pending,
                    failed_tasks: failed,
                    created_at: Some(d.created_at),
                })
            })
            .collect();
        let (running, pending) = counts(None);
        ServiceState {
            arn: service.arn.clone(),
            name: service.declaration.service_name.clone(),
            status: service.status.as_str().into(),
            scheduling_strategy: "DAEMON".into(),
            launch_type: Some("EC2".into()),
            task_definition: definition_arn(primary),
            running_count: running,
            pending_count: pending,
            member_of: service.declaration.member_of.clone(),
            deployments,
            created_at: Some(service.created_at),
            tags: service.declaration.tags.clone(),
        }
    }

    fn new_deployment(&mut self, task_definition: &str) -> Deployment {
        // Service deployment ids look like `ecs-svc/` and 19 digits, and tasks carry it as
        // `startedBy`.
        Deployment {
            id: format!("ecs-svc/{:019}", self.rng.next_u64() % 10u64.pow(19)),
            task_definition: task_definition.into(),
            created_at: self.now,
        }
    }

    fn known_definition(
        &self,
        operation: &'static str,
        reference: &str,
    ) -> Result<String, EcsError> {
        let key = super::definition_key(reference).to_string();
        if self.definitions.contains_key(&key) {
            Ok(key)
        } else {
            Err(error(
                operation,
                reference,
                EcsErrorKind::Invalid,
                "ClientException",
                "Unable to describe task definition.",
            ))
        }
    }

    pub(super) fn create_service(
        &mut self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
        client_token: &str,
    ) -> Result<ServiceState, EcsError> {
        const OPERATION: &str = "CreateService";
        let name = &declaration.service_name;
        let target = format!("service {name} in {cluster}");
        self.cluster(cluster, OPERATION)?;
        if !valid_name(name) {
            return Err(error(
                OPERATION,
                &target,
                EcsErrorKind::Invalid,
                "InvalidParameterException",
                "Service name must be 1 to 255 letters, numbers, underscores and hyphens.",
            ));
        }
        check_propagate_tags(OPERATION, &target, &declaration.propagate_tags)?;
        let definition = self.known_definition(OPERATION, &declaration.task_definition)?;
        let constraints: Option<Vec<(String, Vec<String>)>> = declaration
            .member_of
            .iter()
            .map(|e| parse_member_of(e))
            .collect();
        let Some(constraints) = constraints else {
            return Err(error(
                OPERATION,
                &target,
                EcsErrorKind::Invalid,
                "InvalidParameterException",
                "Invalid placement constraint expression.",
            ));
        };
        let key = (cluster.to_string(), name.clone());
        if let Some(existing) = self.services.services.get(&key) {
            if existing.status != Status::Inactive {
                // The client token makes a retry answer the same service; anything else
                // with a name in use is refused.
                if existing.client_token == client_token && existing.declaration == *declaration {
                    return Ok(self.service_state(cluster, existing));
                }
                return Err(error(
                    OPERATION,
                    &target,
                    EcsErrorKind::Invalid,
                    "InvalidParameterException",
                    "Creation of service was not idempotent.",
                ));
            }
        }
        // "Services per cluster: 5,000" (developer guide, *Amazon ECS service quotas*); the
        // exception ECS answers beyond it is not documented: a client error.
        if self.active_services(cluster) >= self.config.services.services_per_cluster {
            return Err(error(
                OPERATION,
                &target,
                EcsErrorKind::Invalid,
                "ClientException",
                "The maximum number of services per cluster has been reached.",
            ));
        }
        let deployment = self.new_deployment(&definition);
        let service = Service {
            declaration: declaration.clone(),
            client_token: client_token.into(),
            arn: format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{name}"),
            status: Status::Active,
            constraints,
            deployments: vec![deployment],
            created_at: self.now,
        };
        let state = self.service_state(cluster, &service);
        self.services.services.insert(key, service);
        self.notice_services(cluster, None);
        Ok(state)
    }

    fn active_service(
        &self,
        operation: &'static str,
        cluster: &str,
        name: &str,
    ) -> Result<&Service, EcsError> {
        let target = format!("service {name} in {cluster}");
        match self
            .services
            .services
            .get(&(cluster.to_string(), name.to_string()))
        {
            Some(service) if service.status == Status::Active => Ok(service),
            Some(_) => Err(error(
                operation,
                &target,
                EcsErrorKind::Invalid,
                "ServiceNotActiveException",
                "Service was not ACTIVE.",
            )),
            None => Err(error(
                operation,
                &target,
                EcsErrorKind::NotFound,
                "ServiceNotFoundException",
                "Service not found.",
            )),
        }
    }

    pub(super) fn update_service(
        &mut self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
    ) -> Result<ServiceState, EcsError> {
        const OPERATION: &str = "UpdateService";
        let name = declaration.service_name.as_str();
        self.cluster(cluster, OPERATION)?;
        self.active_service(OPERATION, cluster, name)?;
        check_propagate_tags(OPERATION, name, &declaration.propagate_tags)?;
        let definition = self.known_definition(OPERATION, &declaration.task_definition)?;
        let key = (cluster.to_string(), name.to_string());
        // "A new deployment also starts when updating a service or setting a different
        // revision of the task definition" (the daemon strategy's page).
        let deployment = self.new_deployment(&definition);
        if let Some(service) = self.services.services.get_mut(&key) {
            service.declaration.task_definition = declaration.task_definition.clone();
            service.declaration.propagate_tags = declaration.propagate_tags.clone();
            service.declaration.enable_execute_command = declaration.enable_execute_command;
            service.deployments.push(deployment);
        }
        self.notice_services(cluster, None);
        let service = &self.services.services[&key];
        Ok(self.service_state(cluster, service))
    }

    /// TagResource and UntagResource on a service: its tags change, its tasks keep theirs
    /// and no deployment starts (API reference, *TagResource*; the tags a task gets are
    /// fixed when it starts). ECS's rules: at most 50 tags, none with the `aws:` prefix.
    pub(super) fn retag_service(
        &mut self,
        operation: &'static str,
        arn: &str,
        add: &[(String, String)],
        remove: &[String],
    ) -> Result<(), EcsError> {
        let invalid = |message: String| {
            error(
                operation,
                arn,
                EcsErrorKind::Invalid,
                "InvalidParameterException",
                &message,
            )
        };
        let Some(service) = self
            .services
            .services
            .values_mut()
            .find(|s| s.arn == arn && s.status != Status::Inactive)
        else {
            return Err(error(
                operation,
                arn,
                EcsErrorKind::NotFound,
                "ResourceNotFoundException",
                "The specified resource could not be found.",
            ));
        };
        let mut tags: BTreeMap<String, String> = service.declaration.tags.iter().cloned().collect();
        for (key, value) in add {
            if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
                return Err(invalid(format!(
                    "Tag key {key} uses the reserved aws: prefix."
                )));
            }
            tags.insert(key.clone(), value.clone());
        }
        for key in remove {
            tags.remove(key);
        }
        if tags.len() > 50 {
            return Err(invalid(format!(
                "Too many tags: {}, at most 50.",
                tags.len()
            )));
        }
        service.declaration.tags = tags.into_iter().collect();
        Ok(())
    }

    pub(super) fn describe_services(
        &mut self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<ServiceState>, EcsError> {
        self.cluster(cluster, "DescribeServices")?;
        Ok(names
            .iter()
            .filter_map(|name| {
                self.services
                    .services
                    .get(&(cluster.to_string(), name.clone()))
                    .map(|s| self.service_state(cluster, s))
            })
            .collect())
    }

    pub(super) fn delete_service(
        &mut self,
        cluster: &str,
        name: &str,
    ) -> Result<ServiceState, EcsError> {
        const OPERATION: &str = "DeleteService";
        self.cluster(cluster, OPERATION)?;
        self.active_service(OPERATION, cluster, name)?;
        let key = (cluster.to_string(), name.to_string());
        if let Some(service) = self.services.services.get_mut(&key) {
            service.status = Status::Draining;
        }
        self.settle_deletion(cluster, name);
        // The scheduler stops the tasks at its own pace.
        let instances: Vec<String> = self.clusters[cluster].instances.keys().cloned().collect();
        for id in instances {
            let at = self.now + self.reaction();
            self.look_again(cluster, name, &id, at);
        }
        let service = &self.services.services[&key];
        Ok(self.service_state(cluster, service))
    }

    /// An instance left the cluster: nothing more to look at there.
    /// Services of the cluster in the ACTIVE state (`activeServicesCount`); the model's
    /// application services (`set_application`) are counted too.
    pub(super) fn active_services(&self, cluster: &str) -> usize {
        let daemon_services = self
            .services
            .services
            .iter()
            .filter(|((c, _), s)| c == cluster && s.status == Status::Active)
            .count();
        let applications = self
            .scaling
            .applications
            .keys()
            .filter(|(c, _)| c == cluster)
            .count();
        daemon_services + applications + self.services.others.get(cluster).copied().unwrap_or(0)
    }

    pub(super) fn forget_instance_for_services(&mut self, cluster: &str, instance: &str) {
        self.services
            .due
            .retain(|(c, _, i), _| !(c == cluster && i == instance));
    }
}

impl ecs_daemons::ecs::EcsServices for super::ClusterModel {
    async fn create_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
        client_token: &str,
    ) -> Result<ServiceState, EcsError> {
        let mut world = self.world();
        world.call("CreateService", true, &declaration.service_name)?;
        world.create_service(cluster, declaration, client_token)
    }

    async fn update_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
    ) -> Result<ServiceState, EcsError> {
        let mut world = self.world();
        world.call("UpdateService", true, &declaration.service_name)?;
        world.update_service(cluster, declaration)
    }

    async fn tag_service(
        &self,
        service_arn: &str,
        tags: &[(String, String)],
    ) -> Result<(), EcsError> {
        let mut world = self.world();
        world.call("TagResource", true, service_arn)?;
        world.retag_service("TagResource", service_arn, tags, &[])
    }

    async fn untag_service(&self, service_arn: &str, keys: &[String]) -> Result<(), EcsError> {
        let mut world = self.world();
        world.call("UntagResource", true, service_arn)?;
        world.retag_service("UntagResource", service_arn, &[], keys)
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceState>, EcsError> {
        let mut world = self.world();
        let mut described = Vec::with_capacity(services.len());
        for batch in services.chunks(ecs_daemons::ecs::DESCRIBE_SERVICES_BATCH) {
            world.call("DescribeServices", false, cluster)?;
            described.extend(world.describe_services(cluster, batch)?);
        }
        Ok(described)
    }

    async fn delete_service(&self, cluster: &str, service: &str) -> Result<ServiceState, EcsError> {
        let mut world = self.world();
        world.call("DeleteService", true, service)?;
        world.delete_service(cluster, service)
    }

    async fn active_services_count(&self, cluster: &str) -> Result<usize, EcsError> {
        let mut world = self.world();
        world.call("DescribeClusters", false, cluster)?;
        world.cluster(cluster, "DescribeClusters")?;
        Ok(world.active_services(cluster))
    }
}

impl super::ClusterModel {
    /// `count` services of other owners in `cluster`: they count against its quota.
    pub fn set_other_services(&self, cluster: &str, count: usize) {
        self.world()
            .services
            .others
            .insert(cluster.to_string(), count);
    }

    /// DAEMON tasks ECS stopped on a DRAINING instance while another task still ran there.
    pub fn early_daemon_service_stops(&self) -> Vec<String> {
        self.world().services.early_stops.clone()
    }
}
