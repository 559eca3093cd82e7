//! Status: coverage, the rollout in flight and its history, slots in trouble, times to
//! coverage, per daemon.

use super::*;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub daemon: String,
    /// On EC2 Auto Scaling group providers (none: the daemon runs on Managed Instances only).
    pub task_definition: Option<String>,
    pub capacity_providers: Vec<String>,
    /// Which instances of those providers it targets, as deployed (none: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_filter: Option<String>,
    /// How its copies are launched, as deployed (none set: left out).
    #[serde(skip_serializing_if = "crate::launch::LaunchOptions::is_default")]
    pub launch: crate::launch::LaunchOptions,
    /// A critical daemon on EC2 providers: how many of its instances may be draining at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_critical_drains: Option<crate::rollout::Amount>,
    pub start_order: i32,
    pub coverage: DaemonCoverage,
    /// Slots recorded as crash-looping or backing off, with ECS's reasons.
    pub slots_in_trouble: Vec<SlotTrouble>,
    /// The rollout in flight, else the latest one.
    pub rollout: Option<RolloutView>,
    /// Earlier rollouts, newest first.
    pub history: Vec<RolloutView>,
    /// On Managed Instances providers: ECS's managed daemon, as ECS reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<super::managed_status::ManagedStatus>,
    /// Where the daemon runs as DAEMON services: its two services, as ECS reports them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<ServicesStatus>,
    /// When its EC2 part was undeployed (kept with its history; no copy is started again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undeployed_at: Option<DateTime<Utc>>,
}

/// The services placement of a daemon (`placement::services`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicesStatus {
    /// The capacity providers where copies run as DAEMON services (the daemon's other EC2
    /// providers run standalone copies).
    pub capacity_providers: Vec<String>,
    pub services: Vec<ServiceView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    /// The revision ecs-daemons gave the service.
    pub task_definition: String,
    /// Whether copies of the declared revision come from this service.
    pub declared: bool,
    /// What ECS says: ACTIVE, DRAINING, INACTIVE, or MISSING (deleted outside ecs-daemons:
    /// deploy again to recreate it).
    pub status: String,
    /// The task definition ECS runs it with, when it differs from ecs-daemons' (changed
    /// outside ecs-daemons).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_outside_to: Option<String>,
    pub running: i32,
    pub pending: i32,
}

/// The daemon's services as ECS reports them next to what the spec says they run.
async fn services_status<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    spec: &DaemonSpec,
) -> Result<Option<ServicesStatus>, DeployError> {
    use crate::placement::services::{service_name, Letter};
    let Some(services) = &spec.services else {
        return Ok(None);
    };
    let names = [Letter::A, Letter::B].map(|letter| service_name(&spec.daemon, letter));
    let described = engine
        .ecs()
        .describe_services(&spec.cluster, &names)
        .await?;
    let views = [Letter::A, Letter::B]
        .into_iter()
        .map(|letter| {
            let name = service_name(&spec.daemon, letter);
            let revision = services.revision_of(letter);
            let seen = described.iter().find(|s| s.name == name);
            let ecs_revision =
                seen.map(|s| crate::arn::resource_id(&s.task_definition).to_string());
            ServiceView {
                declared: services.letter_for(&spec.task_definition) == Some(letter),
                task_definition: revision.to_string(),
                status: seen.map_or_else(|| "MISSING".to_string(), |s| s.status.clone()),
                changed_outside_to: ecs_revision.filter(|r| r != revision),
                running: seen.map_or(0, |s| s.running_count),
                pending: seen.map_or(0, |s| s.pending_count),
                name,
            }
        })
        .collect();
    Ok(Some(ServicesStatus {
        capacity_providers: services.capacity_providers.clone(),
        services: views,
    }))
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
    /// Pause, resume and promote: who, which invoke, when, why.
    #[serde(flatten)]
    pub control: crate::rollout::RolloutControl,
    /// In progress with `canary.promote: manual`, its canary batch done: a `promote` invoke
    /// lets it go on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_promote: bool,
    /// The alarms that gate it (`rollout.alarms`), as ECS shows a deployment's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarms: Option<AlarmsView>,
}

/// A rollout's alarm gate, in the words of ECS's *DeploymentAlarms*.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmsView {
    pub alarm_names: Vec<String>,
    /// `MONITORING` (in progress), `TRIGGERED` (an alarm failed it), `MONITORING_COMPLETE`
    /// (ended otherwise).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub triggered_alarm_names: Vec<String>,
    pub bake_seconds: u32,
    /// While every instance is done and the alarms are still watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baking_until: Option<DateTime<Utc>>,
}

impl AlarmsView {
    fn of(rollout: &Rollout) -> Option<Self> {
        let names = rollout.watched_alarms();
        if names.is_empty() {
            return None;
        }
        let watch = &rollout.alarm_watch;
        let bake = rollout.config.bake().unwrap_or_default();
        let status = if !watch.triggered_alarm_names.is_empty() {
            "TRIGGERED"
        } else if rollout.state == RolloutState::InProgress {
            "MONITORING"
        } else {
            "MONITORING_COMPLETE"
        };
        Some(Self {
            alarm_names: names.to_vec(),
            status,
            triggered_alarm_names: watch.triggered_alarm_names.clone(),
            bake_seconds: bake.num_seconds().max(0) as u32,
            baking_until: watch
                .baking_since
                .filter(|_| rollout.state == RolloutState::InProgress)
                .map(|since| since + bake),
        })
    }
}

impl RolloutView {
    pub(super) fn of(rollout: Rollout, live: Option<&crate::rollout::RolloutCounts>) -> Self {
        let counts = live.cloned().unwrap_or_else(|| rollout.counts.clone());
        Self {
            alarms: AlarmsView::of(&rollout),
            awaiting_promote: rollout.state == RolloutState::InProgress
                && rollout.awaits_promote(&counts),
            control: rollout.control,
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
    /// ECS stopped the copy on its DRAINING instance before the other tasks left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// When ecs-daemons set the instance DRAINING because this critical daemon crash-loops there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_drain_at: Option<DateTime<Utc>>,
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
    let mut specs = engine.declarations(&request.cluster).await?;
    let mut managed = engine.managed_daemons(&request.cluster).await?;
    if let Some(daemon) = &request.daemon {
        check_name("daemon", daemon, 64)?;
        specs.retain(|s| &s.record.daemon == daemon);
        managed.retain(|m| &m.record.daemon == daemon);
        if specs.is_empty() && managed.is_empty() {
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
        let slots = engine.slots(&request.cluster, &spec.daemon).await?;
        let slots_in_trouble = slots
            .into_iter()
            .map(|s| s.record)
            .filter(|s| {
                matches!(s.state, SlotState::CrashLooping | SlotState::Stopped)
                    || s.stopped_early.is_some()
                    || s.critical_drain_at.is_some()
            })
            .map(|s| SlotTrouble {
                instance_id: s.instance_id,
                state: s.state,
                consecutive_failures: s.consecutive_failures,
                last_stop_reason: s.last_stop_reason,
                retry_after: s.retry_after,
                stopped_early: s.stopped_early,
                critical_drain_at: s.critical_drain_at,
            })
            .collect();
        let mut rollouts = engine.rollouts(&request.cluster, &spec.daemon).await?;
        // The Managed Instances part's rollouts are added with it below.
        rollouts.retain(|r| !r.record.managed_instances);
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
        let services = services_status(engine, &spec).await?;
        daemons.push(DaemonStatus {
            services,
            undeployed_at: spec.retired_at,
            instance_filter: spec.instance_filter,
            launch: spec.launch,
            max_critical_drains: spec.critical_drains,
            rollout: current,
            history,
            coverage: coverage.remove(&spec.daemon).unwrap_or_default(),
            daemon: spec.daemon,
            task_definition: Some(spec.task_definition),
            capacity_providers: spec.capacity_providers,
            start_order: spec.start_order,
            slots_in_trouble,
            managed: None,
        });
    }
    super::managed_status::add_managed(engine, &mut daemons, managed).await?;
    let joined = engine.coverage_times(&request.cluster).await?;
    Ok(StatusAnswer {
        cluster: request.cluster,
        daemons,
        time_to_coverage: crate::coverage_time::summarise(&joined, now),
    })
}
