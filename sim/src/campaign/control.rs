//! The operator's hand in the rollout scenario: a pause mid-rollout and its resume, and the
//! promote a manual canary waits for; with the invariant a pause promises: while a rollout is
//! paused, no old copy is stopped for it and no instance it had not claimed gets a second copy.

use super::*;
use ecs_daemons::deploy::{ControlVerb, RolloutControlRequest};

/// Salt of the random stream that decides a seed's pause and its manual canary.
pub(super) const CONTROL_SALT: u64 = 0x7061_7573_6573;

/// What the operator does in one seed.
pub(super) struct Operator {
    /// Seconds after the start to pause, and how long to stay paused.
    pause: Option<(i64, i64)>,
    paused_at: Option<DateTime<Utc>>,
    resumed: bool,
    /// How long after a manual canary is seen waiting to promote it.
    promote_delay: i64,
    /// When each waiting rollout is promoted.
    promote_at: BTreeMap<String, DateTime<Utc>>,
    /// Per paused rollout: the instances in flight when the pause landed.
    claimed: BTreeMap<String, BTreeSet<String>>,
    /// Stops seen so far (task ids), to tell this second's new ones.
    stops_seen: BTreeSet<String>,
}

impl Operator {
    /// `canary`: the scenario's canary, made manual in half the seeds that have one.
    pub(super) fn new(seed: u64, canary: &mut Option<ecs_daemons::rollout::Canary>) -> Self {
        let mut rng = Rng::new(seed ^ CONTROL_SALT);
        let pause = rng
            .chance(0.4)
            .then(|| (20 + rng.below(200) as i64, 30 + rng.below(300) as i64));
        if let Some(canary) = canary.as_mut() {
            if rng.chance(0.5) {
                canary.promote = ecs_daemons::rollout::Promote::Manual;
            }
        }
        Self {
            pause,
            paused_at: None,
            resumed: false,
            promote_delay: rng.below(120) as i64,
            promote_at: BTreeMap::new(),
            claimed: BTreeMap::new(),
            stops_seen: BTreeSet::new(),
        }
    }

    /// Pauses, resumes and promotes when their moments come (`start`: the script's start).
    pub(super) async fn step(
        &mut self,
        harness: &mut Harness,
        start: DateTime<Utc>,
        counts: &mut FaultCounts,
    ) -> Result<(), String> {
        let now = harness.model.now();
        if let Some((at, length)) = self.pause {
            let elapsed = (now - start).num_seconds();
            if self.paused_at.is_none() && elapsed >= at {
                self.paused_at = Some(now);
                if control_until_done(harness, ControlVerb::Pause).await? {
                    counts.pauses += 1;
                }
            } else if !self.resumed && elapsed >= at + length {
                self.resumed = true;
                control_until_done(harness, ControlVerb::Resume).await?;
            }
        }
        let waiting: Vec<String> = rollouts(harness)
            .await?
            .into_iter()
            .map(|r| r.record)
            .filter(|r| r.state == RolloutState::InProgress && r.awaits_promote(&r.counts))
            .map(|r| r.id)
            .collect();
        for id in waiting {
            let at = *self
                .promote_at
                .entry(id)
                .or_insert(now + Duration::seconds(self.promote_delay));
            if at <= now && control_until_done(harness, ControlVerb::Promote).await? {
                counts.promotes += 1;
            }
        }
        Ok(())
    }

    /// The pause's promise, checked every second: a rollout paused since before this second
    /// stopped no old copy (a settled instance's, or a stopFirst gap's) and gave no instance
    /// it had not claimed a second copy.
    pub(super) async fn check_paused(&mut self, harness: &Harness) -> Result<(), String> {
        let now = harness.model.now();
        let tasks = harness.model.tasks(CLUSTER);
        let new_stops: Vec<&crate::cluster_model::TaskView> = tasks
            .iter()
            .filter(|t| t.group == "daemon:agent")
            .filter(|t| t.stopped_reason.is_some() && !self.stops_seen.contains(&t.id))
            .collect();
        let paused: Vec<Rollout> = rollouts(harness)
            .await?
            .into_iter()
            .map(|r| r.record)
            .filter(|r| r.state == RolloutState::InProgress && r.control.paused.is_some())
            .collect();
        let mut per_instance: BTreeMap<&str, usize> = BTreeMap::new();
        for task in tasks.iter().filter(|t| {
            t.group == "daemon:agent"
                && !t.last_status.is_terminal()
                && t.desired_status == TaskStatus::Running
        }) {
            *per_instance.entry(task.instance_id.as_str()).or_default() += 1;
        }
        for rollout in &paused {
            let Some(claimed) = self.claimed.get(&rollout.id) else {
                // Paused during this second: what is in flight now is what it holds.
                let in_flight = per_instance
                    .iter()
                    .filter(|(_, n)| **n == 2)
                    .map(|(i, _)| i.to_string())
                    .chain(surging_instances(harness, &rollout.id).await?)
                    .collect();
                self.claimed.insert(rollout.id.clone(), in_flight);
                continue;
            };
            if let Some(stop) = new_stops.iter().find(|t| {
                t.stopped_reason.as_deref().is_some_and(|r| {
                    (r.starts_with("ecs-daemons: replaced by") && r.contains("healthy for"))
                        || r.contains("surgeFallback stopFirst")
                })
            }) {
                return Err(format!(
                    "at {now}: rollout {} is paused, yet {} on {} was stopped: {:?}",
                    rollout.id, stop.definition, stop.instance_id, stop.stopped_reason
                ));
            }
            if let Some((instance, _)) = per_instance
                .iter()
                .find(|(i, n)| **n == 2 && !claimed.contains(**i))
            {
                return Err(format!(
                    "at {now}: rollout {} is paused, yet {instance}, not in flight at the pause, has two copies",
                    rollout.id
                ));
            }
        }
        self.stops_seen
            .extend(new_stops.into_iter().map(|t| t.id.clone()));
        Ok(())
    }
}

/// The instances whose slot has a step of `rollout_id` in flight (their second copy may
/// still come).
async fn surging_instances(harness: &Harness, rollout_id: &str) -> Result<Vec<String>, String> {
    let slots: Vec<Versioned<Slot>> = harness
        .store
        .query(CLUSTER, "agent")
        .await
        .map_err(|e| e.to_string())?;
    Ok(slots
        .into_iter()
        .filter(|s| {
            s.record
                .rollout
                .as_ref()
                .is_some_and(|r| r.rollout_id == rollout_id && r.step.in_flight())
        })
        .map(|s| s.record.instance_id)
        .collect())
}

/// One control invoke, retried while the answer is a crash or a lost race. `true` when it
/// changed the rollout; a control that no longer applies (the rollout ended, or a deploy
/// superseded it) is an answer an operator gets too.
async fn control_until_done(harness: &mut Harness, verb: ControlVerb) -> Result<bool, String> {
    for _ in 0..20 {
        let request = RolloutControlRequest {
            cluster: CLUSTER.into(),
            daemon: "agent".into(),
            control: verb,
            by: Some("campaign".into()),
            reason: None,
        };
        let outcome = harness.control_rollout(request).await;
        if verbose() {
            println!(
                "{} {verb:?}: {:?}",
                harness.model.now(),
                outcome.as_ref().map(|a| a.recorded)
            );
        }
        match outcome {
            Ok(answer) => return Ok(!answer.recorded.starts_with("already")),
            Err(error) if retryable(&error.to_string()) => {
                harness.model.advance(Duration::seconds(1));
            }
            Err(
                ecs_daemons::deploy::DeployError::NoRolloutInProgress { .. }
                | ecs_daemons::deploy::DeployError::NotPaused { .. }
                | ecs_daemons::deploy::DeployError::CanaryNotWaiting { .. },
            ) => return Ok(false),
            Err(error) => return Err(format!("{verb:?}: {error}")),
        }
    }
    Ok(false)
}
