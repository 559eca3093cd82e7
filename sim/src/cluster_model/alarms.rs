//! The model's CloudWatch alarms: named alarms whose state a test or the campaign sets, read
//! by DescribeAlarms as CloudWatch answers it. An unknown name is left out of the answer, not
//! an error (API reference, *DescribeAlarms*: `AlarmNames` filters); a read can be made to
//! fail (throttled) to exercise the engine's "could not read" path.

use std::collections::BTreeMap;

use super::{ClusterModel, World};
use ecs_daemons::alarms::{
    AlarmState, AlarmValue, Alarms, AlarmsAnswer, AlarmsError, AlarmsErrorKind,
};

#[derive(Clone, Debug, Default)]
pub(super) struct CloudWatch {
    alarms: BTreeMap<String, AlarmState>,
    /// DescribeAlarms calls answered with throttling from now on, this many.
    throttled_reads: u32,
    reads: u64,
}

impl ClusterModel {
    /// Creates a metric alarm in state OK, judging over `period_seconds × evaluation_periods`.
    pub fn put_metric_alarm(&self, name: &str, period_seconds: u32, evaluation_periods: u32) {
        self.world().cloudwatch.alarms.insert(
            name.to_string(),
            AlarmState {
                name: name.to_string(),
                value: AlarmValue::Ok,
                reason: "created".into(),
                period_seconds: Some(period_seconds),
                evaluation_periods: Some(evaluation_periods),
            },
        );
    }

    /// Sets an alarm's state (as `SetAlarmState` does, or as its metric would move it).
    /// Where ECS looks at managed daemons' alarms as they fire
    /// ([`super::daemons::AlarmCheck::WhenAlarmFires`]), their deployments fail now.
    pub fn set_alarm_state(&self, name: &str, value: AlarmValue, reason: &str) {
        let mut world = self.world();
        if let Some(alarm) = world.cloudwatch.alarms.get_mut(name) {
            alarm.value = value;
            alarm.reason = reason.to_string();
        }
        if world.config.native.alarm_check == super::daemons::AlarmCheck::WhenAlarmFires {
            let (now, alarming) = (world.now, world.cloudwatch.alarming());
            let before = world.native.statuses();
            world.native.check_alarms_now(now, &alarming);
            world.native.announce(&before);
            world.send_native_events();
        }
    }

    /// The next `reads` DescribeAlarms calls are throttled.
    pub fn throttle_alarm_reads(&self, reads: u32) {
        self.world().cloudwatch.throttled_reads = reads;
    }

    /// DescribeAlarms calls answered so far.
    pub fn alarm_reads(&self) -> u64 {
        self.world().cloudwatch.reads
    }
}

impl CloudWatch {
    /// The names of the alarms in ALARM now (ECS's managed daemons watch theirs).
    pub(super) fn alarming(&self) -> std::collections::BTreeSet<String> {
        self.alarms
            .values()
            .filter(|alarm| alarm.value == AlarmValue::Alarm)
            .map(|alarm| alarm.name.clone())
            .collect()
    }
}

fn describe(world: &mut World, names: &[String]) -> Result<Vec<AlarmState>, AlarmsError> {
    let cloudwatch = &mut world.cloudwatch;
    cloudwatch.reads += 1;
    if cloudwatch.throttled_reads > 0 {
        cloudwatch.throttled_reads -= 1;
        return Err(AlarmsError {
            operation: "DescribeAlarms",
            kind: AlarmsErrorKind::Throttled,
            code: "Throttling".into(),
            message: "Rate exceeded".into(),
        });
    }
    Ok(names
        .iter()
        .filter_map(|name| cloudwatch.alarms.get(name).cloned())
        .collect())
}

impl Alarms for ClusterModel {
    fn describe_alarms<'a>(&'a self, names: &'a [String]) -> AlarmsAnswer<'a> {
        Box::pin(async move { describe(&mut self.world(), names) })
    }
}
