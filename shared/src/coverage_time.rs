//! Time to coverage: for every instance that joins, how long from its registration until all
//! its daemons ran, and until it was ready for applications. Measured by the reconcile that
//! sets the instance ready (from ECS's own timestamps), recorded once per instance in the
//! table, published as embedded-metric values, and summarised by `status` as p50/p90/p99.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ContainerInstance, Task};
use crate::plan::{revision_of, DaemonView};
use crate::store::{ItemKey, Record, RecordKind};

/// Only instances registered this recently count as joining: an old instance that becomes
/// ready (a daemon deployed to a running fleet, a crash healed) is not a join.
pub const JOIN_WINDOW_MINUTES: i64 = 15;
/// What `status` summarises, and how long records are kept.
pub const WINDOW_HOURS: i64 = 24;

/// One joined instance's times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoverageTime {
    pub cluster: String,
    pub instance_id: String,
    pub registered_at: DateTime<Utc>,
    /// The last of its daemons started RUNNING.
    pub covered_at: DateTime<Utc>,
    /// It carried the readiness attribute.
    pub ready_at: DateTime<Utc>,
    /// When each daemon's copy started RUNNING.
    pub running_at: BTreeMap<String, DateTime<Utc>>,
}

impl CoverageTime {
    pub fn coverage_seconds(&self) -> f64 {
        seconds(self.covered_at - self.registered_at)
    }

    pub fn ready_seconds(&self) -> f64 {
        seconds(self.ready_at - self.registered_at)
    }

    /// Seconds from registration to RUNNING, per daemon.
    pub fn per_daemon_seconds(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.running_at
            .iter()
            .map(|(daemon, at)| (daemon.as_str(), seconds(*at - self.registered_at)))
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.num_milliseconds() as f64 / 1000.0
}

impl Record for CoverageTime {
    const KIND: RecordKind = RecordKind::CoverageTime;
    fn key(&self) -> ItemKey {
        ItemKey::coverage_time(&self.cluster, &self.instance_id)
    }
}

/// The times of an instance becoming ready now, if it joined recently and every daemon
/// that targets it has a running copy with a start time.
pub fn measure(
    cluster: &str,
    instance: &ContainerInstance,
    daemons: &[DaemonView],
    tasks: &[Task],
    now: DateTime<Utc>,
) -> Option<CoverageTime> {
    let registered_at = instance.registered_at?;
    if now - registered_at > Duration::minutes(JOIN_WINDOW_MINUTES) || registered_at > now {
        return None;
    }
    let mut running_at = BTreeMap::new();
    let mut covered_at = registered_at;
    for daemon in daemons.iter().filter(|d| d.targets(instance)) {
        let group = crate::plan::daemon_group(&daemon.name);
        let started = tasks
            .iter()
            .filter(|t| t.container_instance_arn.as_deref() == Some(instance.arn.as_str()))
            .filter(|t| t.group.as_deref() == Some(group.as_str()))
            .filter(|t| revision_of(t) == daemon.task_definition && !t.last_status.is_terminal())
            .filter_map(|t| t.started_at)
            .min()?;
        running_at.insert(daemon.name.clone(), started);
        covered_at = covered_at.max(started);
    }
    if running_at.is_empty() {
        return None;
    }
    Some(CoverageTime {
        cluster: cluster.to_string(),
        instance_id: instance.id().to_string(),
        registered_at,
        covered_at,
        ready_at: now,
        running_at,
    })
}

/// Percentiles of a sample (nearest rank), in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

pub fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        (!values.is_empty()).then(|| {
            let index = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            (values[index] * 10.0).round() / 10.0
        })
    };
    Percentiles {
        count: values.len(),
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: values.last().map(|v| (v * 10.0).round() / 10.0),
    }
}

/// What `status` shows: the instances that joined in the last [`WINDOW_HOURS`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeToCoverage {
    pub window_hours: i64,
    /// Registration to all daemons RUNNING.
    pub covered: Percentiles,
    /// Registration to the readiness attribute.
    pub ready: Percentiles,
    pub per_daemon: BTreeMap<String, Percentiles>,
}

pub fn summarise(records: &[CoverageTime], now: DateTime<Utc>) -> TimeToCoverage {
    let recent: Vec<&CoverageTime> = records
        .iter()
        .filter(|r| now - r.ready_at <= Duration::hours(WINDOW_HOURS))
        .collect();
    let mut per_daemon: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for record in &recent {
        for (daemon, seconds) in record.per_daemon_seconds() {
            per_daemon
                .entry(daemon.to_string())
                .or_default()
                .push(seconds);
        }
    }
    TimeToCoverage {
        window_hours: WINDOW_HOURS,
        covered: percentiles(recent.iter().map(|r| r.coverage_seconds()).collect()),
        ready: percentiles(recent.iter().map(|r| r.ready_seconds()).collect()),
        per_daemon: per_daemon
            .into_iter()
            .map(|(daemon, values)| (daemon, percentiles(values)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(values);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, Some(50.0));
        assert_eq!(p.p90, Some(90.0));
        assert_eq!(p.p99, Some(99.0));
        assert_eq!(p.max, Some(100.0));
        assert_eq!(percentiles(vec![12.34]).p99, Some(12.3));
        assert_eq!(percentiles(Vec::new()).p50, None);
    }

    #[test]
    fn only_recent_joins_are_summarised() {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let record = |instance: &str, registered: i64, covered: i64, ready: i64| CoverageTime {
            cluster: "prod".into(),
            instance_id: instance.into(),
            registered_at: at(registered),
            covered_at: at(covered),
            ready_at: at(ready),
            running_at: BTreeMap::from([("agent".to_string(), at(covered))]),
        };
        let records = vec![
            record("old", 0, 10, 11),
            record("a", 100_000, 100_011, 100_012),
            record("b", 100_000, 100_013, 100_014),
        ];
        let summary = summarise(&records, at(100_100));
        assert_eq!(
            summary.covered.count, 2,
            "the day-old join is out of the window"
        );
        assert_eq!(summary.covered.p99, Some(13.0));
        assert_eq!(summary.ready.p50, Some(12.0));
        assert_eq!(summary.per_daemon["agent"].max, Some(13.0));
    }
}
