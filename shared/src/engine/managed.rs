//! Watching ECS's managed daemons (Managed Instances): ECS places and rolls out every copy;
//! the coverage check reads each daemon's counts and its deployment in flight, and the
//! rollout record follows the deployment (`crate::managed::follow_deployment`): progress,
//! success (the revision becomes the good one), or ECS's own rollback.

use super::*;
use crate::ecs::{DaemonDeployment, DaemonState};
use crate::managed::{
    deleted_drift, drift_of, follow_deployment, record_impaired_starts, ImpairedStart,
    ManagedDaemon,
};
use crate::plan::Trouble;

impl<E: Ecs, S: Store> Engine<E, S> {
    /// The coverage check of one cluster: the full reconcile of its EC2 copies, then its
    /// Managed Instances daemons followed; one outcome for both.
    pub async fn coverage_check_cluster(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let mut outcome = self.reconcile_cluster(cluster, now, invocation).await?;
        let managed = match self.store.list_in_cluster::<ManagedDaemon>(cluster).await {
            Ok(managed) => managed,
            Err(error) => {
                outcome.errors.push(error.to_string());
                self.book_wake(&mut outcome, now).await;
                return Ok(outcome);
            }
        };
        for part in managed {
            // Drift (the DaemonDrift metric) is the coverage check's alone: events and deploys
            // follow a daemon without the extra reads it may take.
            let drift = match self.follow_managed(&part, now, &mut outcome).await {
                Ok(Some(state)) => {
                    self.managed_drift(&part.record, state.deployment_arn.as_deref())
                        .await
                }
                Ok(None) => continue,
                Err(error) => Err(error),
            };
            match drift {
                Ok(drift) => {
                    outcome
                        .native_drift
                        .insert(part.record.daemon.clone(), drift);
                }
                Err(error) => outcome
                    .errors
                    .push(format!("daemon {}: {error}", part.record.daemon)),
            }
        }
        self.book_wake(&mut outcome, now).await;
        Ok(outcome)
    }

    /// Daemon events of one cluster (Managed Instances): the impaired starts they report are
    /// recorded on their daemons, then every managed daemon of the cluster is followed as the
    /// coverage check does (the events are triggers; ECS's answers are the truth, so a lost
    /// event costs only time until the next check). The outcome carries no coverage: the
    /// coverage check publishes it for the whole fleet.
    pub async fn on_daemon_events(
        &self,
        cluster: &str,
        impaired: &[(Option<String>, ImpairedStart)],
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let mut outcome = Outcome {
            cluster: cluster.into(),
            ..Outcome::default()
        };
        let managed = self.store.list_in_cluster::<ManagedDaemon>(cluster).await?;
        if managed.is_empty() {
            outcome.skipped = Some("no daemon of the cluster runs on Managed Instances".into());
            return Ok(outcome);
        }
        for part in managed {
            let part = self.record_impaired(part, impaired, now).await?;
            self.follow_managed(&part, now, &mut outcome).await?;
        }
        outcome.coverage.clear();
        Ok(outcome)
    }

    /// Adds the impaired starts that concern `part`'s daemon to its record (a lost race with
    /// another writer reads again, a few times).
    async fn record_impaired(
        &self,
        mut part: Versioned<ManagedDaemon>,
        impaired: &[(Option<String>, ImpairedStart)],
        now: DateTime<Utc>,
    ) -> Result<Versioned<ManagedDaemon>, EngineError> {
        let starts: Vec<ImpairedStart> = impaired
            .iter()
            .filter(|(daemon, start)| start.concerns(daemon.as_deref(), &part.record))
            .map(|(_, start)| start.clone())
            .collect();
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let Some(next) = record_impaired_starts(&part.record, &starts, now) else {
                return Ok(part);
            };
            match self.store.put(&next, part.expected()).await {
                Ok(version) => {
                    return Ok(Versioned {
                        record: next,
                        version,
                    })
                }
                Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => {
                    let key = crate::store::Record::key(&part.record);
                    match self.store.get::<ManagedDaemon>(&key).await? {
                        Some(fresh) => part = fresh,
                        None => return Ok(part),
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(part)
    }

    /// A daemon's Managed Instances part with its rollout in flight brought up to date with
    /// ECS's deployment first, so a deploy or rollback decides on what ECS did (a rollout
    /// ECS finished is recorded finished, not superseded; a revision it rolled out is good).
    pub async fn managed_daemon_now(
        &self,
        cluster: &str,
        daemon: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Versioned<ManagedDaemon>>, EngineError> {
        let key = ItemKey::managed_daemon(cluster, daemon);
        let Some(part) = self.store.get::<ManagedDaemon>(&key).await? else {
            return Ok(None);
        };
        if part.record.active_rollout.is_none() || part.record.pending_rollout.is_some() {
            return Ok(Some(part));
        }
        let mut scratch = Outcome::skipped(cluster, None, "");
        self.follow_managed(&part, now, &mut scratch).await?;
        Ok(self.store.get::<ManagedDaemon>(&key).await?)
    }

    /// One Managed Instances daemon: its coverage from ECS's counts, and its rollout in
    /// flight moved on with ECS's deployment. Answers what DescribeDaemon said, when ECS has
    /// the daemon.
    async fn follow_managed(
        &self,
        part: &Versioned<ManagedDaemon>,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) -> Result<Option<DaemonState>, EngineError> {
        let record = &part.record;
        let Some(daemon_arn) = record
            .daemon_arn
            .as_ref()
            .filter(|_| record.retired_at.is_none())
        else {
            // Not created yet, or undeployed: nothing of it to cover or follow.
            return Ok(None);
        };
        let state = match self.ecs.describe_daemon(daemon_arn).await {
            Ok(state) => state,
            Err(error) if error.kind == crate::ecs::EcsErrorKind::NotFound => {
                // Deleted outside ecs-daemons: every targeted instance is without it.
                let coverage = outcome.coverage.entry(record.daemon.clone()).or_default();
                let drift = deleted_drift(daemon_arn);
                coverage.trouble.push(Trouble {
                    instance_id: String::new(),
                    state: "DELETED".into(),
                    reason: drift.clone(),
                });
                outcome
                    .native_drift
                    .insert(record.daemon.clone(), Some(drift.clone()));
                self.end_rollout_of_deleted(part, &drift, now, outcome)
                    .await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        add_coverage(outcome, &record.daemon, record.critical, &state);
        self.follow_rollout(part, &state, now, outcome).await?;
        Ok(Some(state))
    }

    /// The daemon's rollout in flight moved on with the ECS deployment that carries it.
    async fn follow_rollout(
        &self,
        part: &Versioned<ManagedDaemon>,
        state: &DaemonState,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) -> Result<(), EngineError> {
        let record = &part.record;
        let Some(active) = &record.active_rollout else {
            return Ok(());
        };
        let Some(rollout) = self
            .store
            .get::<Rollout>(&ItemKey::rollout(&record.cluster, &record.daemon, active))
            .await?
        else {
            return Ok(());
        };
        // The record confirmed ECS's deployment for its active rollout, and the rollout's own
        // write of it was cut off (a crash between the two writes): the record says which.
        let mut carried = rollout.record.clone();
        let repaired = carried.deployment_arn.is_none() && record.pending_rollout.is_none();
        if repaired {
            carried.deployment_arn = record.deployment_arn.clone();
        }
        let Some(deployment) = self.deployment_of(&carried).await? else {
            return Ok(());
        };
        let rolled_back_to = self.rollback_target(&deployment).await?;
        let followed = follow_deployment(
            record,
            &carried,
            &deployment,
            rolled_back_to.as_deref(),
            instances_of(state),
            now,
        );
        let (next_record, next_rollout) = match followed {
            Some(next) => next,
            None if repaired => (record.clone(), carried),
            None => return Ok(()),
        };
        // Before ECS counts a copy (a new daemon) there is no progress to report.
        if next_rollout.state == RolloutState::InProgress && next_rollout.counts.total > 0 {
            outcome
                .rollouts
                .insert(record.daemon.clone(), next_rollout.counts.clone());
        }
        let mut puts = vec![PreparedPut::of(&next_rollout, rollout.expected())?];
        if next_record != *record {
            puts.push(PreparedPut::of(&next_record, part.expected())?);
        }
        let ended = (next_rollout.state != RolloutState::InProgress)
            .then(|| EndedRollout::of(&next_rollout));
        self.write_followed(&puts, ended, outcome).await
    }

    /// Writes what following ECS decided, together; a lost race is harmless (a deploy or
    /// another check got there first: the next check reads again).
    async fn write_followed(
        &self,
        puts: &[PreparedPut],
        ended: Option<EndedRollout>,
        outcome: &mut Outcome,
    ) -> Result<(), EngineError> {
        match self.store.put_all(puts).await {
            Ok(_) => {
                outcome.rollouts_ended.extend(ended);
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                outcome.conflicts += 1;
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The daemon is gone from ECS: its rollout in flight can never end by ECS's deployment,
    /// so it ends failed with the reason (the declaration stays for a deploy to recreate).
    async fn end_rollout_of_deleted(
        &self,
        part: &Versioned<ManagedDaemon>,
        why: &str,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) -> Result<(), EngineError> {
        let record = &part.record;
        let Some(active) = &record.active_rollout else {
            return Ok(());
        };
        let key = ItemKey::rollout(&record.cluster, &record.daemon, active);
        let mut puts = Vec::new();
        let mut ended = None;
        if let Some(rollout) = self.store.get::<Rollout>(&key).await? {
            if rollout.record.state == RolloutState::InProgress {
                let mut next = rollout.record.clone();
                next.state = RolloutState::Failed;
                next.reason = Some(why.to_string());
                next.finished_at = Some(now);
                next.updated_at = now;
                puts.push(PreparedPut::of(&next, rollout.expected())?);
                ended = Some(EndedRollout::of(&next));
            }
        }
        let mut next_record = record.clone();
        next_record.active_rollout = None;
        next_record.updated_at = now;
        puts.push(PreparedPut::of(&next_record, part.expected())?);
        self.write_followed(&puts, ended, outcome).await
    }

    /// Drift of a daemon whose latest deployment in ECS is `latest` (`managed::drift_of`);
    /// reads the deployment and its revision only when ecs-daemons did not start it.
    pub async fn managed_drift(
        &self,
        record: &ManagedDaemon,
        latest: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        let Some(latest) = latest.filter(|latest| {
            Some(*latest) != record.deployment_arn.as_deref() && record.pending_rollout.is_none()
        }) else {
            return Ok(None);
        };
        let deployment = self
            .ecs
            .describe_daemon_deployments(&[latest.to_string()])
            .await?
            .into_iter()
            .next();
        // After ECS's own rollback the revision in force is the one it returned to.
        let revision = deployment.and_then(|d| {
            d.rollback
                .and_then(|r| r.target_revision_arn)
                .or(d.target_revision_arn)
        });
        let in_force = match revision {
            Some(revision) => self.task_definition_of(revision).await?,
            None => None,
        };
        Ok(drift_of(record, Some(latest), in_force.as_deref()))
    }

    /// ECS's deployment that carries `rollout`, if ECS knows it.
    async fn deployment_of(
        &self,
        rollout: &Rollout,
    ) -> Result<Option<DaemonDeployment>, EngineError> {
        let Some(deployment_arn) = &rollout.deployment_arn else {
            return Ok(None);
        };
        Ok(self
            .ecs
            .describe_daemon_deployments(std::slice::from_ref(deployment_arn))
            .await?
            .into_iter()
            .next())
    }

    /// The `family:revision` ECS's rollback of `deployment` returned to, if it ran one.
    async fn rollback_target(
        &self,
        deployment: &DaemonDeployment,
    ) -> Result<Option<String>, EngineError> {
        let Some(revision) = deployment
            .rollback
            .as_ref()
            .and_then(|r| r.target_revision_arn.clone())
        else {
            return Ok(None);
        };
        self.task_definition_of(revision).await
    }

    /// The `family:revision` of the daemon task definition a daemon revision runs.
    async fn task_definition_of(&self, revision: String) -> Result<Option<String>, EngineError> {
        let revisions = self.ecs.describe_daemon_revisions(&[revision]).await?;
        Ok(revisions
            .first()
            .map(|r| crate::arn::resource_id(&r.daemon_task_definition_arn).to_string()))
    }
}

/// Every instance ECS counts for the daemon (running it, or without it).
fn instances_of(state: &DaemonState) -> u32 {
    state
        .current_revisions
        .iter()
        .flat_map(|r| &r.providers)
        .map(|p| (p.running + p.without_daemon).max(0) as u32)
        .sum()
}

/// ECS's counts as coverage: a running copy covers its instance; an instance without the
/// daemon (non-critical daemons only: a critical one's instance is drained and replaced) is
/// missing. Added to the EC2 part's coverage of the same daemon.
fn add_coverage(outcome: &mut Outcome, daemon: &str, critical: bool, state: &DaemonState) {
    let coverage = outcome.coverage.entry(daemon.to_string()).or_default();
    for counts in state.current_revisions.iter().flat_map(|r| &r.providers) {
        let running = counts.running.max(0) as usize;
        let without = counts.without_daemon.max(0) as usize;
        coverage.targeted += running + without;
        coverage.covered += running;
        coverage.missing += without;
        if without > 0 {
            coverage.trouble.push(Trouble {
                instance_id: String::new(),
                state: "WITHOUT_DAEMON".into(),
                reason: format!(
                    "{without} instance(s) of {} run without the daemon (ECS: withoutDaemonCount{})",
                    counts.capacity_provider_arn.rsplit('/').next().unwrap_or_default(),
                    if critical { "" } else { "; the daemon is not critical" }
                ),
            });
        }
    }
}
