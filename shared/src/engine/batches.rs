//! Events: each deduplicated, a batch merged per instance (the newest word per task wins),
//! the instances it names reconciled together (`instances.rs`).

use super::*;
use crate::managed::ImpairedStart;
use instances::task_from_event;

/// What one event asks for, decided from the event alone.
pub(super) enum EventWork {
    Skip(Outcome),
    Reconcile {
        cluster: String,
        instance_arn: String,
        hint: Option<Task>,
        only_if_draining: bool,
    },
    /// A daemon event (Managed Instances): follow the cluster's managed daemons, after
    /// recording the impaired start it reports, if any.
    Daemon {
        cluster: String,
        daemon: Option<String>,
        impaired: Option<ImpairedStart>,
    },
}

/// The daemon events of a batch for one cluster.
#[derive(Debug, Default)]
pub(super) struct DaemonWork {
    /// Impaired starts, each with the daemon its event named (if it named one).
    pub(super) impaired: Vec<(Option<String>, ImpairedStart)>,
    pub(super) positions: Vec<usize>,
    pub(super) event_ids: Vec<String>,
}

impl DaemonWork {
    fn add(
        &mut self,
        position: usize,
        event_id: String,
        impaired: Option<(Option<String>, ImpairedStart)>,
    ) {
        self.positions.push(position);
        self.event_ids.push(event_id);
        self.impaired.extend(impaired);
    }
}

impl EventWork {
    /// Adds the work of a first-seen event to its cluster's.
    fn add_to(
        self,
        clusters: &mut BTreeMap<String, BTreeMap<String, InstanceWork>>,
        daemon_clusters: &mut BTreeMap<String, DaemonWork>,
        position: usize,
        event_id: String,
    ) {
        match self {
            Self::Reconcile {
                cluster,
                instance_arn,
                hint,
                only_if_draining,
            } => clusters
                .entry(cluster)
                .or_default()
                .entry(resource_id(&instance_arn).to_string())
                .or_insert_with(|| InstanceWork {
                    instance_arn,
                    only_if_draining: true,
                    ..InstanceWork::default()
                })
                .add(position, event_id, hint, only_if_draining),
            Self::Daemon {
                cluster,
                daemon,
                impaired,
            } => daemon_clusters.entry(cluster).or_default().add(
                position,
                event_id,
                impaired.map(|start| (daemon, start)),
            ),
            Self::Skip(_) => {}
        }
    }

    /// The cluster whose work it is (none when skipped).
    fn cluster(&self) -> Option<String> {
        match self {
            Self::Skip(_) => None,
            Self::Reconcile { cluster, .. } | Self::Daemon { cluster, .. } => Some(cluster.clone()),
        }
    }
}

/// One instance that the events of a batch ask to reconcile.
#[derive(Debug, Default)]
pub(super) struct InstanceWork {
    pub(super) instance_arn: String,
    /// What the events said of daemon tasks on the instance: the newest word per task.
    pub(super) hints: Vec<Task>,
    /// Only application tasks stopped here: reconcile only if the instance drains.
    pub(super) only_if_draining: bool,
    pub(super) positions: Vec<usize>,
    pub(super) event_ids: Vec<String>,
}

impl InstanceWork {
    pub(super) fn add(
        &mut self,
        position: usize,
        event_id: String,
        hint: Option<Task>,
        only_if_draining: bool,
    ) {
        self.positions.push(position);
        self.event_ids.push(event_id);
        self.only_if_draining &= only_if_draining;
        let Some(hint) = hint else { return };
        // Duplicates and reorderings within one batch: the higher version wins, and at the same
        // version the final word (STOPPED).
        let newer = |old: &Task| {
            (hint.version, hint.last_status.is_terminal())
                > (old.version, old.last_status.is_terminal())
        };
        match self.hints.iter_mut().find(|t| t.arn == hint.arn) {
            Some(old) if newer(old) => *old = hint,
            Some(_) => {}
            None => self.hints.push(hint),
        }
    }
}

/// An event of the kind a function takes (its rule's detail-type), or either.
fn parse_accepted(raw: Value, accept: EventKind) -> Result<AnyEcsEvent, EventError> {
    match accept {
        EventKind::Instance => {
            parse_instance_event(raw).map(|e| AnyEcsEvent::Instance(Box::new(e)))
        }
        EventKind::Task => parse_task_or_daemon_event(raw),
        EventKind::Any => parse_ecs_event(raw),
    }
}

impl<E: Ecs, S: Store> Engine<E, S> {
    pub(super) async fn forget_events(&self, event_ids: &[&str]) {
        for event_id in event_ids {
            if let Err(forget) = self.store.forget_event(event_id).await {
                tracing::warn!(event_id, error = %forget, "could not forget a failed event; its retry will be skipped");
            }
        }
    }

    /// What one event asks for, decided from the event alone (no call).
    pub(super) fn event_work(
        &self,
        event: AnyEcsEvent,
        now: DateTime<Utc>,
    ) -> Result<(String, EventWork), EngineError> {
        match event {
            AnyEcsEvent::Daemon(event) => self.daemon_event_work(*event, now),
            AnyEcsEvent::Instance(event) => {
                let cluster = cluster_name(&event.detail.cluster_arn).to_string();
                self.check_cluster(&cluster)?;
                Ok((
                    event.id,
                    EventWork::Reconcile {
                        cluster,
                        instance_arn: event.detail.container_instance_arn,
                        hint: None,
                        only_if_draining: false,
                    },
                ))
            }
            AnyEcsEvent::Task(event) => {
                let detail = &event.detail;
                let cluster = cluster_name(&detail.cluster_arn).to_string();
                self.check_cluster(&cluster)?;
                let Some(instance_arn) = detail.container_instance_arn.clone() else {
                    return Ok((
                        event.id,
                        EventWork::Skip(Outcome::skipped(
                            &cluster,
                            None,
                            "the task is not on a container instance",
                        )),
                    ));
                };
                let task = task_from_event(detail);
                let instance_id = resource_id(&instance_arn);
                let work = if self.owns(&task) {
                    let settled =
                        task.last_status == TaskStatus::Running || task.last_status.is_terminal();
                    if settled {
                        EventWork::Reconcile {
                            cluster,
                            instance_arn,
                            hint: Some(task),
                            only_if_draining: false,
                        }
                    } else {
                        EventWork::Skip(Outcome::skipped(
                            &cluster,
                            Some(instance_id),
                            format!("daemon task is {}", task.last_status),
                        ))
                    }
                } else if task.last_status.is_terminal() {
                    EventWork::Reconcile {
                        cluster,
                        instance_arn,
                        hint: None,
                        only_if_draining: true,
                    }
                } else {
                    EventWork::Skip(Outcome::skipped(
                        &cluster,
                        Some(instance_id),
                        "an application task changed; nothing to do",
                    ))
                };
                Ok((event.id, work))
            }
        }
    }

    /// What a daemon event asks for: follow its cluster, recording the impaired start.
    fn daemon_event_work(
        &self,
        event: crate::events::DaemonEvent,
        now: DateTime<Utc>,
    ) -> Result<(String, EventWork), EngineError> {
        let detail = &event.detail;
        let cluster = detail.cluster_name().unwrap_or_default().to_string();
        self.check_cluster(&cluster)?;
        let impaired = detail
            .is_impaired_start()
            .then(|| ImpairedStart::of_event(&event.id, event.time, detail, now));
        let daemon = detail.daemon_name().map(str::to_string);
        Ok((
            event.id,
            EventWork::Daemon {
                cluster,
                daemon,
                impaired,
            },
        ))
    }

    /// The daemon events' work, one cluster at a time; on failure the cluster's events are
    /// forgotten so that their redelivery runs again.
    async fn follow_daemon_clusters(
        &self,
        batch: &mut EventBatch,
        daemon_clusters: BTreeMap<String, DaemonWork>,
        now: DateTime<Utc>,
    ) {
        for (cluster, work) in daemon_clusters {
            match self.on_daemon_events(&cluster, &work.impaired, now).await {
                Ok(outcome) => batch.outcomes.push(outcome),
                Err(error) => {
                    let ids: Vec<&str> = work.event_ids.iter().map(String::as_str).collect();
                    self.forget_events(&ids).await;
                    batch.failures.push(BatchFailure {
                        positions: work.positions,
                        error,
                    });
                }
            }
        }
    }

    /// A batch of ECS events (one SQS batch, or one event): each is deduplicated by id, the
    /// instances they name are reconciled together per cluster with batched reads, and an
    /// event whose work failed is forgotten and reported so that its redelivery runs again.
    pub async fn on_events(
        &self,
        raws: Vec<Value>,
        accept: EventKind,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> EventBatch {
        let mut batch = EventBatch::default();
        let mut clusters: BTreeMap<String, BTreeMap<String, InstanceWork>> = BTreeMap::new();
        let mut daemon_clusters: BTreeMap<String, DaemonWork> = BTreeMap::new();
        for (position, raw) in raws.into_iter().enumerate() {
            let (event_id, work) = match parse_accepted(raw, accept)
                .map_err(EngineError::from)
                .and_then(|event| self.event_work(event, now))
            {
                Ok(work) => work,
                Err(error) => {
                    batch.failures.push(BatchFailure {
                        positions: vec![position],
                        error,
                    });
                    continue;
                }
            };
            let Some(cluster) = work.cluster() else {
                if let EventWork::Skip(outcome) = work {
                    batch.outcomes.push(outcome);
                }
                continue;
            };
            match self
                .store
                .remember_event(&event_id, now, self.config.event_ttl)
                .await
            {
                Ok(EventSeen::Duplicate) => batch.outcomes.push(Outcome::skipped(
                    &cluster,
                    None,
                    format!("event {event_id} was already handled"),
                )),
                Ok(EventSeen::FirstTime) => {
                    work.add_to(&mut clusters, &mut daemon_clusters, position, event_id)
                }
                Err(error) => batch.failures.push(BatchFailure {
                    positions: vec![position],
                    error: error.into(),
                }),
            }
        }
        // The instances one cluster's events named, reconciled together; on failure their
        // events are forgotten so that their redelivery runs again. (Kept inline: as an
        // async fn of its own it added about 1 KB to the event functions' bootstrap.)
        for (cluster, works) in clusters {
            let works: Vec<InstanceWork> = works.into_values().collect();
            match self
                .reconcile_instances(&cluster, &works, now, invocation)
                .await
            {
                Ok(outcomes) => batch.outcomes.extend(outcomes),
                Err(error) => {
                    let ids: Vec<&str> = works
                        .iter()
                        .flat_map(|w| w.event_ids.iter().map(String::as_str))
                        .collect();
                    self.forget_events(&ids).await;
                    batch.failures.push(BatchFailure {
                        positions: works.iter().flat_map(|w| w.positions.clone()).collect(),
                        error,
                    });
                }
            }
        }
        self.follow_daemon_clusters(&mut batch, daemon_clusters, now)
            .await;
        self.book_batch_wakes(&mut batch.outcomes, now).await;
        batch
    }

    /// One event alone (a direct invoke): its outcome, or the error that stopped it.
    pub async fn on_event(
        &self,
        raw: Value,
        accept: EventKind,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let mut batch = self.on_events(vec![raw], accept, now, invocation).await;
        if let Some(failure) = batch.failures.pop() {
            return Err(failure.error);
        }
        Ok(batch.outcomes.pop().unwrap_or_default())
    }

    /// ECS Container Instance State Change: reconcile that instance.
    pub async fn on_instance_event(
        &self,
        raw: Value,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        self.on_event(raw, EventKind::Instance, now, invocation)
            .await
    }

    /// ECS Task State Change: daemon task bookkeeping and restarts, or drain-last when an
    /// application task leaves a draining instance.
    pub async fn on_task_event(
        &self,
        raw: Value,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        self.on_event(raw, EventKind::Task, now, invocation).await
    }
}
