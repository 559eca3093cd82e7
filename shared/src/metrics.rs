//! Figures as CloudWatch embedded-metric-format (EMF) log lines: CloudWatch Logs turns each
//! line into metric values, so publishing costs no API call and no extra permission. The
//! alarms and the dashboard in template.yaml are built on the names below (the template
//! test holds them to this list).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::engine::Outcome;
use crate::rollout::RolloutState;

/// Namespace when `METRICS_NAMESPACE` is not set (template.yaml sets it from a parameter).
pub const DEFAULT_NAMESPACE: &str = "ecs-daemons";

/// Targeted instances (ACTIVE, agent connected, in the daemon's capacity providers).
pub const INSTANCES_TARGETED: &str = "InstancesTargeted";
/// Of those, with a RUNNING (HEALTHY where checked) copy.
pub const INSTANCES_COVERED: &str = "InstancesCovered";
/// Of those, with no copy running and none on its way: what the missing-daemon alarm watches.
pub const INSTANCES_WITHOUT_DAEMON: &str = "InstancesWithoutDaemon";
pub const DUPLICATE_COPIES: &str = "DuplicateCopies";
pub const CRASH_LOOPING_INSTANCES: &str = "CrashLoopingInstances";
pub const ROLLOUT_PERCENT_DONE: &str = "RolloutPercentDone";
pub const ROLLOUT_FAILURES: &str = "RolloutFailures";
pub const ROLLOUTS_FAILED: &str = "RolloutsFailed";
pub const ROLLOUTS_SUCCEEDED: &str = "RolloutsSucceeded";
pub const DAEMONS_STARTED: &str = "DaemonsStarted";
pub const DAEMONS_STOPPED: &str = "DaemonsStopped";
/// DAEMON-service copies ECS stopped on a DRAINING instance before its other tasks left
/// (the drain order defects; `status` names the instance and task).
pub const DAEMONS_STOPPED_EARLY: &str = "DaemonsStoppedEarly";
pub const START_FAILURES: &str = "StartFailures";
pub const ACTION_ERRORS: &str = "ActionErrors";
/// Seconds from a joining instance's registration until all its daemons ran (per cluster,
/// and without dimensions for the p99 alarm).
pub const TIME_TO_COVERAGE: &str = "TimeToCoverage";
/// Seconds from registration until the instance was ready for applications.
pub const TIME_TO_READY: &str = "TimeToReady";
/// Seconds from registration until one daemon's copy ran (per cluster and daemon).
pub const TIME_TO_DAEMON_RUNNING: &str = "TimeToDaemonRunning";
/// 1 while a Managed Instances daemon was changed or deleted outside ecs-daemons, else 0
/// (per daemon, from the coverage check; `status` says what changed and the fix).
pub const DAEMON_DRIFT: &str = "DaemonDrift";
/// Terminate lifecycle actions completed (the instance may terminate).
pub const TERMINATIONS_CONTINUED: &str = "TerminationsContinued";
/// Of those, completed at the drain limit while tasks still ran: what its alarm watches.
pub const TERMINATIONS_AT_DRAIN_LIMIT: &str = "TerminationsAtDrainLimit";

/// Every metric name the functions publish.
pub const METRIC_NAMES: &[&str] = &[
    INSTANCES_TARGETED,
    INSTANCES_COVERED,
    INSTANCES_WITHOUT_DAEMON,
    DUPLICATE_COPIES,
    CRASH_LOOPING_INSTANCES,
    DAEMON_DRIFT,
    ROLLOUT_PERCENT_DONE,
    ROLLOUT_FAILURES,
    ROLLOUTS_FAILED,
    ROLLOUTS_SUCCEEDED,
    DAEMONS_STARTED,
    DAEMONS_STOPPED,
    DAEMONS_STOPPED_EARLY,
    START_FAILURES,
    ACTION_ERRORS,
    TERMINATIONS_CONTINUED,
    TERMINATIONS_AT_DRAIN_LIMIT,
    TIME_TO_COVERAGE,
    TIME_TO_READY,
    TIME_TO_DAEMON_RUNNING,
];

/// Per daemon, and once more without dimensions so that one alarm covers every cluster and
/// daemon of the stack (its statistic is Maximum).
const PER_DAEMON: &[&[&str]] = &[&["Cluster", "Daemon"], &[]];
/// Without dimensions only: a daemon at rest. CloudWatch bills each metric (name and
/// dimension values) for every hour it is published in ($0.30 a month each), so per-daemon
/// series appear only while a daemon is in trouble, where they say which one.
const FLEET_ONLY: &[&[&str]] = &[&[]];
const PER_CLUSTER: &[&[&str]] = &[&["Cluster"], &[]];

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
}

fn count(name: &'static str, value: impl Into<f64>) -> Figure {
    Figure {
        name,
        value: value.into(),
        unit: "Count",
    }
}

/// One EMF document: dimension values and properties at the root, the directive under `_aws`.
fn document(
    namespace: &str,
    at: DateTime<Utc>,
    dimension_sets: &[&[&str]],
    root: &[(&str, &str)],
    figures: &[Figure],
) -> Value {
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": dimension_sets,
                "Metrics": figures
                    .iter()
                    .map(|f| json!({"Name": f.name, "Unit": f.unit}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    for (key, value) in root {
        line.insert((*key).into(), Value::from(*value));
    }
    for figure in figures {
        line.insert(figure.name.into(), json!(figure.value));
    }
    Value::Object(line)
}

/// Where one outcome's lines go: the namespace, the function and cluster dimensions, the time.
struct Emitter<'a> {
    namespace: &'a str,
    function: &'a str,
    cluster: &'a str,
    at: DateTime<Utc>,
    lines: Vec<Value>,
}

impl Emitter<'_> {
    fn per_daemon(&mut self, daemon: &str, figures: &[Figure]) {
        self.of_daemon(daemon, PER_DAEMON, figures);
    }

    fn of_daemon(&mut self, daemon: &str, dimension_sets: &[&[&str]], figures: &[Figure]) {
        let root = [
            ("Cluster", self.cluster),
            ("Daemon", daemon),
            ("function", self.function),
        ];
        let line = document(self.namespace, self.at, dimension_sets, &root, figures);
        self.lines.push(line);
    }

    fn per_cluster(&mut self, instance: &str, figures: &[Figure]) {
        let root = [
            ("Cluster", self.cluster),
            ("function", self.function),
            ("instance", instance),
        ];
        let line = document(self.namespace, self.at, PER_CLUSTER, &root, figures);
        self.lines.push(line);
    }

    /// Coverage and rollout progress of every daemon (full reconciles only).
    fn fleet(&mut self, outcome: &Outcome) {
        for (daemon, coverage) in &outcome.coverage {
            let without = coverage
                .targeted
                .saturating_sub(coverage.covered + coverage.starting);
            let mut figures = vec![
                count(INSTANCES_TARGETED, coverage.targeted as f64),
                count(INSTANCES_COVERED, coverage.covered as f64),
                count(INSTANCES_WITHOUT_DAEMON, without as f64),
            ];
            // The three above are always there, without dimensions: the dashboard's coverage
            // and the missing-daemon alarm (which must never lack data). Duplicates and
            // crash loops, and the per-daemon series, only while something is wrong.
            let in_trouble = without > 0 || coverage.duplicates > 0 || coverage.crash_looping > 0;
            if in_trouble {
                figures.push(count(DUPLICATE_COPIES, coverage.duplicates as f64));
                figures.push(count(
                    CRASH_LOOPING_INSTANCES,
                    coverage.crash_looping as f64,
                ));
                self.per_daemon(daemon, &figures);
            } else {
                self.of_daemon(daemon, FLEET_ONLY, &figures);
            }
        }
        for (daemon, drift) in &outcome.native_drift {
            self.per_daemon(daemon, &[count(DAEMON_DRIFT, u8::from(drift.is_some()))]);
        }
        for (daemon, counts) in &outcome.rollouts {
            self.per_daemon(
                daemon,
                &[
                    Figure {
                        name: ROLLOUT_PERCENT_DONE,
                        value: f64::from(counts.percent_done()),
                        unit: "Percent",
                    },
                    count(ROLLOUT_FAILURES, counts.failures),
                ],
            );
        }
    }

    /// Times to coverage of the instances that became ready.
    fn coverage_times(&mut self, outcome: &Outcome) {
        let seconds = |name, value| Figure {
            name,
            value,
            unit: "Seconds",
        };
        for joined in &outcome.coverage_times {
            self.per_cluster(
                &joined.instance_id,
                &[
                    seconds(TIME_TO_COVERAGE, joined.coverage_seconds()),
                    seconds(TIME_TO_READY, joined.ready_seconds()),
                ],
            );
            for (daemon, value) in joined.per_daemon_seconds() {
                self.per_daemon(daemon, &[seconds(TIME_TO_DAEMON_RUNNING, value)]);
            }
        }
    }

    /// One line per rollout that succeeded or failed, with the rollout as a property.
    fn ended_rollouts(&mut self, outcome: &Outcome) {
        for ended in &outcome.rollouts_ended {
            let name = match ended.state {
                RolloutState::Failed => ROLLOUTS_FAILED,
                RolloutState::Succeeded => ROLLOUTS_SUCCEEDED,
                RolloutState::InProgress | RolloutState::Superseded => continue,
            };
            let root = [
                ("Cluster", self.cluster),
                ("Daemon", ended.daemon.as_str()),
                ("function", self.function),
                ("rollout", ended.id.as_str()),
            ];
            let line = document(
                self.namespace,
                self.at,
                PER_DAEMON,
                &root,
                &[count(name, 1)],
            );
            self.lines.push(line);
        }
    }

    /// Starts, stops, failures, errors and terminations let go, when there were any.
    fn activity(&mut self, outcome: &Outcome) {
        let continued = || {
            outcome
                .terminations
                .iter()
                .filter(|r| r.action == "completed")
        };
        let activity = [
            // A copy requested from a DAEMON service is a start too (ECS starts it).
            (
                DAEMONS_STARTED,
                outcome.started.len() + outcome.requested.len(),
            ),
            (DAEMONS_STOPPED, outcome.stopped.len()),
            (DAEMONS_STOPPED_EARLY, outcome.stopped_early.len()),
            (START_FAILURES, outcome.start_failures.len()),
            (ACTION_ERRORS, outcome.errors.len()),
            (TERMINATIONS_CONTINUED, continued().count()),
            (
                TERMINATIONS_AT_DRAIN_LIMIT,
                continued()
                    .filter(|r| r.reason == Some(crate::holds::HoldEndReason::LimitReached))
                    .count(),
            ),
        ];
        if activity.iter().any(|(_, n)| *n > 0) {
            let figures: Vec<Figure> = activity
                .iter()
                .map(|(name, n)| count(name, *n as f64))
                .collect();
            self.per_cluster(outcome.instance.as_deref().unwrap_or(""), &figures);
        }
    }
}

/// The EMF lines for one engine outcome. Coverage and rollout progress are published from
/// full reconciles only (an event's outcome sees one instance, not the fleet); activity
/// (starts, stops, failures, errors) and ended rollouts from every invocation that had some.
pub fn outcome_lines(
    namespace: &str,
    function: &str,
    outcome: &Outcome,
    at: DateTime<Utc>,
) -> Vec<Value> {
    let mut emitter = Emitter {
        namespace,
        function,
        cluster: &outcome.cluster,
        at,
        lines: Vec::new(),
    };
    if outcome.instance.is_none() && outcome.skipped.is_none() {
        emitter.fleet(outcome);
    }
    emitter.coverage_times(outcome);
    emitter.ended_rollouts(outcome);
    emitter.activity(outcome);
    emitter.lines
}

/// Writes the lines to stdout, where Lambda hands them to CloudWatch Logs.
pub fn publish(lines: &[Value]) {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in lines {
        // A metric line that cannot be written is not worth failing an invocation over.
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EndedRollout, Outcome};
    use crate::plan::DaemonCoverage;
    use crate::rollout::RolloutCounts;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// What CloudWatch would extract: (metric, dimension set, dimension values, value).
    fn extracted(line: &Value) -> Vec<(String, Vec<String>, Vec<String>, f64)> {
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert!(line["_aws"]["Timestamp"].is_i64());
        let mut found = Vec::new();
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(
                METRIC_NAMES.contains(&name),
                "{name} is not a published name"
            );
            let value = line[name].as_f64().expect("the value sits at the root");
            for set in directive["Dimensions"].as_array().unwrap() {
                let keys: Vec<String> = set
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                let values = keys
                    .iter()
                    .map(|k| {
                        line[k]
                            .as_str()
                            .expect("dimension value at the root")
                            .to_string()
                    })
                    .collect();
                found.push((name.to_string(), keys, values, value));
            }
        }
        found
    }

    #[test]
    fn a_full_reconcile_publishes_coverage_per_daemon_and_for_the_alarm() {
        let mut outcome = Outcome {
            cluster: "prod".into(),
            ..Outcome::default()
        };
        outcome.coverage.insert(
            "cwagent".into(),
            DaemonCoverage {
                targeted: 10,
                covered: 6,
                starting: 1,
                duplicates: 1,
                crash_looping: 2,
                ..DaemonCoverage::default()
            },
        );
        outcome.rollouts.insert(
            "cwagent".into(),
            RolloutCounts {
                total: 10,
                done: 5,
                failures: 1,
                ..RolloutCounts::default()
            },
        );
        let lines = outcome_lines("ns", "coverage-check", &outcome, at());
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ns");
        let figures = extracted(&lines[0]);
        let without: Vec<_> = figures
            .iter()
            .filter(|f| f.0 == INSTANCES_WITHOUT_DAEMON)
            .collect();
        // 10 targeted, 6 running, 1 on its way: 3 without, per daemon and undimensioned.
        assert_eq!(
            without,
            vec![
                &(
                    INSTANCES_WITHOUT_DAEMON.to_string(),
                    vec!["Cluster".to_string(), "Daemon".to_string()],
                    vec!["prod".to_string(), "cwagent".to_string()],
                    3.0
                ),
                &(INSTANCES_WITHOUT_DAEMON.to_string(), vec![], vec![], 3.0),
            ]
        );
        let percent = extracted(&lines[1]);
        assert!(percent.contains(&(ROLLOUT_PERCENT_DONE.to_string(), vec![], vec![], 50.0)));
        assert_eq!(
            lines[1]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Percent"
        );
    }

    #[test]
    fn a_daemon_at_rest_publishes_three_figures_without_dimensions_only() {
        let mut outcome = Outcome {
            cluster: "prod".into(),
            ..Outcome::default()
        };
        outcome.coverage.insert(
            "cwagent".into(),
            DaemonCoverage {
                targeted: 10,
                covered: 10,
                ..DaemonCoverage::default()
            },
        );
        let lines = outcome_lines("ns", "coverage-check", &outcome, at());
        let figures = extracted(&lines[0]);
        assert_eq!(
            figures,
            vec![
                (INSTANCES_TARGETED.to_string(), vec![], vec![], 10.0),
                (INSTANCES_COVERED.to_string(), vec![], vec![], 10.0),
                (INSTANCES_WITHOUT_DAEMON.to_string(), vec![], vec![], 0.0),
            ],
            "the alarm's figure and the dashboard's, nothing billed per daemon"
        );
    }

    #[test]
    fn an_event_publishes_activity_and_ended_rollouts_not_fleet_coverage() {
        let mut outcome = Outcome {
            cluster: "prod".into(),
            instance: Some("i-1".into()),
            errors: vec!["StartTask throttled".into()],
            ..Outcome::default()
        };
        // An event's coverage covers one instance: publishing it would fake fleet figures.
        outcome
            .coverage
            .insert("cwagent".into(), DaemonCoverage::default());
        outcome.rollouts_ended = vec![
            EndedRollout {
                daemon: "cwagent".into(),
                id: "r1".into(),
                state: RolloutState::Failed,
                reason: Some("3 of 10 instances failed".into()),
            },
            EndedRollout {
                daemon: "cwagent".into(),
                id: "r0".into(),
                state: RolloutState::Superseded,
                reason: None,
            },
        ];
        let lines = outcome_lines("ns", "task-events", &outcome, at());
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(lines[0]["rollout"], "r1");
        assert!(extracted(&lines[0]).contains(&(ROLLOUTS_FAILED.to_string(), vec![], vec![], 1.0)));
        let activity = extracted(&lines[1]);
        assert!(activity.contains(&(
            ACTION_ERRORS.to_string(),
            vec!["Cluster".to_string()],
            vec!["prod".to_string()],
            1.0
        )));
        assert_eq!(lines[1]["instance"], "i-1");
    }

    #[test]
    fn drift_of_each_managed_daemon_is_published_as_one_or_zero() {
        let mut outcome = Outcome {
            cluster: "prod".into(),
            ..Outcome::default()
        };
        outcome
            .native_drift
            .insert("agent".into(), Some("updated outside".into()));
        outcome.native_drift.insert("router".into(), None);
        let lines = outcome_lines("ns", "coverage-check", &outcome, at());
        let values: Vec<f64> = lines
            .iter()
            .flat_map(extracted)
            .filter(|f| f.0 == DAEMON_DRIFT && !f.1.is_empty())
            .map(|f| f.3)
            .collect();
        assert_eq!(values, vec![1.0, 0.0]);
    }

    #[test]
    fn a_quiet_event_publishes_nothing() {
        let outcome = Outcome {
            cluster: "prod".into(),
            instance: Some("i-1".into()),
            skipped: Some("duplicate event".into()),
            ..Outcome::default()
        };
        assert!(outcome_lines("ns", "instance-events", &outcome, at()).is_empty());
    }
}
