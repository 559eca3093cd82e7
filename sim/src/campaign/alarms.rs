//! Alarm gates in the rollout scenario: some seeds gate their rollouts by a CloudWatch alarm
//! that goes into ALARM mid-rollout (or during a bake) and clears later; with the invariant
//! the gate promises: a gated rollout does not stay in progress once its alarm has been in
//! ALARM for longer than the reconcile cadence the faults allow.

use super::*;
use ecs_daemons::alarms::AlarmValue;
use ecs_daemons::rollout::RolloutKind;

/// Salt of the random stream that decides a seed's gate and its alarm.
pub(super) const ALARM_SALT: u64 = 0x616c_6172_6d73;

/// The alarm the gated seeds name.
pub(super) const ALARM: &str = "agent-errors";

/// One seed's alarm: when it fires, how long it stays in ALARM.
pub(super) struct AlarmScript {
    /// Seconds after the start it goes into ALARM, and for how long.
    fires: Option<(i64, i64)>,
    /// While in ALARM: since when.
    alarm_since: Option<DateTime<Utc>>,
    cleared: bool,
    /// Gated rollouts seen failed by their alarm so far.
    tripped: BTreeSet<String>,
}

impl AlarmScript {
    /// Gates `rollout` in 40 % of the seeds (the alarm created OK in the model; the bake
    /// given or derived); the alarm fires in 70 % of those.
    pub(super) fn new(seed: u64, harness: &Harness, rollout: &mut RolloutConfig) -> Self {
        let mut rng = Rng::new(seed ^ ALARM_SALT);
        let gated = rng.chance(0.4);
        let evaluation_periods = 1 + rng.below(3) as u32;
        let bake = rng.chance(0.5).then(|| 60 + rng.below(240) as u32);
        let fires = rng
            .chance(0.7)
            .then(|| (20 + rng.below(400) as i64, 120 + rng.below(300) as i64));
        if !gated {
            return Self {
                fires: None,
                alarm_since: None,
                cleared: false,
                tripped: BTreeSet::new(),
            };
        }
        harness
            .model
            .put_metric_alarm(ALARM, 60, evaluation_periods);
        rollout.alarms = vec![ALARM.into()];
        rollout.bake_seconds = bake;
        Self {
            fires,
            alarm_since: None,
            cleared: false,
            tripped: BTreeSet::new(),
        }
    }

    /// Moves the alarm when its moments come (`start`: the script's start).
    pub(super) fn step(&mut self, harness: &Harness, start: DateTime<Utc>) {
        let Some((at, length)) = self.fires else {
            return;
        };
        let now = harness.model.now();
        let elapsed = (now - start).num_seconds();
        if self.alarm_since.is_none() && !self.cleared && elapsed >= at {
            self.alarm_since = Some(now);
            harness
                .model
                .set_alarm_state(ALARM, AlarmValue::Alarm, "Threshold Crossed (campaign)");
        } else if self.alarm_since.is_some() && elapsed >= at + length {
            self.alarm_since = None;
            self.cleared = true;
            harness
                .model
                .set_alarm_state(ALARM, AlarmValue::Ok, "recovered (campaign)");
        }
    }

    /// The gate's promise, checked every second: no gated rollout (an update; rollbacks are
    /// not gated) is still in progress `slack` after its alarm went into ALARM, and none that
    /// failed by it names another alarm. Counts the rollouts the alarm failed.
    pub(super) async fn check(
        &mut self,
        harness: &Harness,
        slack: Duration,
        counts: &mut FaultCounts,
    ) -> Result<(), String> {
        let now = harness.model.now();
        for rollout in rollouts(harness).await?.into_iter().map(|r| r.record) {
            let gated = matches!(rollout.kind, RolloutKind::Initial | RolloutKind::Update)
                && !rollout.config.alarms.is_empty();
            if !gated {
                continue;
            }
            let triggered = &rollout.alarm_watch.triggered_alarm_names;
            if !triggered.is_empty() {
                if triggered.iter().any(|name| name != ALARM) {
                    return Err(format!(
                        "rollout {} names alarms it was not gated by: {triggered:?}",
                        rollout.id
                    ));
                }
                if self.tripped.insert(rollout.id.clone()) {
                    counts.alarm_trips += 1;
                }
            }
            let Some(since) = self.alarm_since else {
                continue;
            };
            let firing_for = now - since.max(rollout.started_at);
            if rollout.state == RolloutState::InProgress && firing_for > slack {
                return Err(format!(
                    "at {now}: rollout {} is still in progress {} s after its alarm {ALARM} went into ALARM",
                    rollout.id,
                    firing_for.num_seconds()
                ));
            }
        }
        Ok(())
    }
}
