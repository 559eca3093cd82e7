//! CloudWatch alarms that gate a rollout (`rollout.alarms`): while a rollout runs and for its
//! bake after the last instance, any of them in ALARM fails it and rolls back, as ECS does for
//! a service deployment (developer guide, *How CloudWatch alarms detect Amazon ECS deployment
//! failures*; API reference, *DeploymentAlarms*). Reached through the small [`Alarms`] trait:
//! a hand-written CloudWatch Query adapter in [`cloudwatch`], the cluster model in tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub mod cloudwatch;
pub use cloudwatch::CloudWatchAlarms;

/// At most this many alarms gate one rollout (DescribeAlarms takes 100 names a call; ten
/// keep the check one small call and the IAM policy short).
pub const MAX_ALARMS: usize = 10;

/// CloudWatch's bounds on an alarm name (API reference, *PutMetricAlarm*, AlarmName).
pub const ALARM_NAME_LENGTH: std::ops::RangeInclusive<usize> = 1..=255;

/// The bake when no named alarm says how long it needs to judge (composite alarms only).
pub const DEFAULT_BAKE_SECONDS: u32 = 300;

/// The longest bake asked for or derived (a day, as `progressDeadlineSeconds`).
pub const MAX_BAKE_SECONDS: u32 = 86_400;

/// An alarm's state (API reference, *MetricAlarm*, StateValue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmValue {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmValue {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "OK" => Some(Self::Ok),
            "ALARM" => Some(Self::Alarm),
            "INSUFFICIENT_DATA" => Some(Self::InsufficientData),
            _ => None,
        }
    }
}

/// One alarm as DescribeAlarms answers it: its state, why, and (metric alarms) the window it
/// judges over, from which the default bake is derived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmState {
    pub name: String,
    pub value: AlarmValue,
    #[serde(default)]
    pub reason: String,
    /// A metric alarm's `Period` (seconds); none for a composite alarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    /// A metric alarm's `EvaluationPeriods`; none for a composite alarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_periods: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmsErrorKind {
    Throttled,
    AccessDenied,
    /// Network trouble, timeouts, 5xx.
    Transient,
    /// Refused as invalid (a client error retrying will not fix).
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CloudWatch {operation} failed ({code}): {message}")]
pub struct AlarmsError {
    pub operation: &'static str,
    pub kind: AlarmsErrorKind,
    pub code: String,
    pub message: String,
}

impl AlarmsError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            AlarmsErrorKind::Throttled | AlarmsErrorKind::Transient
        )
    }
}

/// What `describe_alarms` answers. Boxed: the trait is used as `dyn` by the engine, which
/// needs it only while a rollout with alarms runs.
pub type AlarmsAnswer<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<AlarmState>, AlarmsError>> + Send + 'a>>;

/// The CloudWatch API surface of ecs-daemons.
pub trait Alarms: Send + Sync {
    /// `DescribeAlarms` for these names, metric and composite alarms alike; an unknown name
    /// is simply not in the answer.
    fn describe_alarms<'a>(&'a self, names: &'a [String]) -> AlarmsAnswer<'a>;
}

impl<T: Alarms + ?Sized> Alarms for std::sync::Arc<T> {
    fn describe_alarms<'a>(&'a self, names: &'a [String]) -> AlarmsAnswer<'a> {
        (**self).describe_alarms(names)
    }
}

/// The alarms one reconcile read for its rollouts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AlarmReading {
    /// No rollout with alarms is in progress: nothing was read.
    #[default]
    NotNeeded,
    /// Each named alarm CloudWatch knows, by name.
    Read(BTreeMap<String, AlarmState>),
    /// The read failed (or this function has no CloudWatch client): no rollout is failed or
    /// finished on alarms it could not see.
    Unreadable(String),
}

impl AlarmReading {
    /// Of `names`, those in ALARM now.
    pub fn firing<'a>(&'a self, names: &[String]) -> Vec<&'a AlarmState> {
        match self {
            Self::Read(states) => names
                .iter()
                .filter_map(|name| states.get(name))
                .filter(|state| state.value == AlarmValue::Alarm)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The bake a rollout keeps watching its alarms after its last instance, derived as ECS
/// derives a deployment's: from the alarms' own configuration (developer guide, *How
/// CloudWatch alarms detect Amazon ECS deployment failures*: "Amazon ECS computes this time
/// period based on the alarm configuration"). Here: the longest window a metric alarm judges
/// over (`Period × EvaluationPeriods`), so a fault the new revision causes has had time to
/// show; [`DEFAULT_BAKE_SECONDS`] when only composite alarms are named.
pub fn derived_bake_seconds(states: &[AlarmState]) -> u32 {
    states
        .iter()
        .filter_map(|state| Some(state.period_seconds? * state.evaluation_periods?))
        .max()
        .unwrap_or(DEFAULT_BAKE_SECONDS)
        .clamp(60, MAX_BAKE_SECONDS)
}

/// A check of `rollout.alarms` as given: the names' count, lengths and repeats.
pub fn check_names(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_ALARMS {
        return Err(format!(
            "rollout.alarms names {} alarms; at most {MAX_ALARMS} (a composite alarm can combine more)",
            names.len()
        ));
    }
    for (index, name) in names.iter().enumerate() {
        if !ALARM_NAME_LENGTH.contains(&name.chars().count()) {
            return Err(format!(
                "rollout.alarms[{index}] must be a CloudWatch alarm name of 1 to 255 characters"
            ));
        }
        if names[..index].contains(name) {
            return Err(format!("rollout.alarms names {name:?} twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, value: AlarmValue, window: Option<(u32, u32)>) -> AlarmState {
        AlarmState {
            name: name.into(),
            value,
            reason: String::new(),
            period_seconds: window.map(|w| w.0),
            evaluation_periods: window.map(|w| w.1),
        }
    }

    #[test]
    fn the_bake_is_the_longest_window_an_alarm_judges_over() {
        let states = [
            state("errors", AlarmValue::Ok, Some((60, 3))),
            state("latency", AlarmValue::Ok, Some((300, 2))),
            state("composite", AlarmValue::Ok, None),
        ];
        assert_eq!(derived_bake_seconds(&states), 600);
        assert_eq!(
            derived_bake_seconds(&[state("composite", AlarmValue::Ok, None)]),
            DEFAULT_BAKE_SECONDS
        );
        assert_eq!(
            derived_bake_seconds(&[state("fast", AlarmValue::Ok, Some((10, 1)))]),
            60,
            "at least a minute: the schedule reads alarms once a minute"
        );
        assert_eq!(
            derived_bake_seconds(&[state("slow", AlarmValue::Ok, Some((86_400, 7)))]),
            MAX_BAKE_SECONDS
        );
    }

    #[test]
    fn only_named_alarms_in_alarm_fire_and_unread_ones_never_do() {
        let reading = AlarmReading::Read(
            [
                state("errors", AlarmValue::Alarm, None),
                state("latency", AlarmValue::InsufficientData, None),
                state("other", AlarmValue::Alarm, None),
            ]
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect(),
        );
        let named = vec!["errors".to_string(), "latency".to_string()];
        let firing: Vec<&str> = reading
            .firing(&named)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(firing, ["errors"]);
        assert!(reading.firing(&["gone".to_string()]).is_empty());
        assert!(AlarmReading::Unreadable("throttled".into())
            .firing(&named)
            .is_empty());
    }

    #[test]
    fn names_are_checked_for_count_length_and_repeats() {
        assert!(check_names(&[]).is_ok());
        assert!(check_names(&["a".into(), "b".into()]).is_ok());
        let many: Vec<String> = (0..11).map(|i| format!("alarm-{i}")).collect();
        assert!(check_names(&many).unwrap_err().contains("at most 10"));
        assert!(check_names(&[String::new()])
            .unwrap_err()
            .contains("rollout.alarms[0]"));
        assert!(check_names(&["x".repeat(256)]).is_err());
        assert!(check_names(&["a".into(), "a".into()])
            .unwrap_err()
            .contains("twice"));
    }
}
