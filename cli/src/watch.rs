//! Following rollouts through `status` until they end: which rollouts to watch, how far each
//! is, and the verdict (`rollout wait`, `status --watch`).

use std::time::Duration;

use serde_json::Value;

use crate::error::CliError;
use crate::functions::{Function, Functions};

/// One watched rollout as the latest `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub daemon: String,
    pub id: String,
    /// INITIAL, UPDATE, ROLLBACK or AUTO_ROLLBACK.
    pub kind: String,
    pub to_task_definition: String,
    /// IN_PROGRESS, SUCCEEDED, FAILED or SUPERSEDED.
    pub state: String,
    pub done: u64,
    pub total: u64,
    pub failures: u64,
    pub threshold: u64,
    /// What holds or ended it, when something does: a pause, a manual canary, a bake, the
    /// reason it failed.
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    InProgress,
    /// Every watched rollout succeeded.
    Succeeded,
    /// One failed, was rolled back or superseded.
    Failed,
}

/// How following ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Judged(Verdict),
    TimedOut,
    /// No rollout in progress to follow.
    NothingInProgress,
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or_default()
}

/// Each daemon's rollouts in a status answer (`daemon` only, if given): the current one,
/// then its history, newest first.
fn rollouts<'a>(status: &'a Value, daemon: Option<&'a str>) -> Vec<(String, &'a Value)> {
    status
        .get("daemons")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| daemon.is_none_or(|name| d.get("daemon").and_then(Value::as_str) == Some(name)))
        .flat_map(|d| {
            let name = text(d, "daemon");
            d.get("rollout")
                .filter(|r| r.is_object())
                .into_iter()
                .chain(
                    d.get("history")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                )
                .map(move |r| (name.clone(), r))
        })
        .collect()
}

/// Which rollouts to follow, as (daemon, id): `requested`, else every one in progress, else
/// (`latest`: for `rollout wait`, which judges a rollout that already ended) the newest, else
/// (a daemon that never had one) its coverage ([`COVERAGE`]).
pub fn choose(
    status: &Value,
    daemon: Option<&str>,
    requested: Option<&str>,
    latest: bool,
) -> Result<Vec<(String, String)>, CliError> {
    if let Some(name) = daemon {
        let known = status
            .get("daemons")
            .and_then(Value::as_array)
            .is_some_and(|ds| {
                ds.iter()
                    .any(|d| d.get("daemon").and_then(Value::as_str) == Some(name))
            });
        if !known {
            return Err(CliError::Function {
                error_type: "UnknownDaemon".into(),
                message: format!("status shows no daemon {name} in this cluster: deploy it first, or check --cluster"),
            });
        }
    }
    let all = rollouts(status, daemon);
    if let Some(id) = requested {
        return all
            .iter()
            .find(|(_, r)| text(r, "id") == id)
            .map(|(d, _)| vec![(d.clone(), id.to_string())])
            .ok_or_else(|| CliError::Function {
                error_type: "UnknownRollout".into(),
                message: format!("status shows no rollout {id}: take its id from the deploy's answer or from status"),
            });
    }
    let in_progress: Vec<(String, String)> = all
        .iter()
        .filter(|(_, r)| text(r, "state") == "IN_PROGRESS")
        .map(|(d, r)| (d.clone(), text(r, "id")))
        .collect();
    if !in_progress.is_empty() || !latest {
        return Ok(in_progress);
    }
    let newest: Vec<(String, String)> = all
        .iter()
        .max_by_key(|(_, r)| text(r, "startedAt"))
        .map(|(d, r)| vec![(d.clone(), text(r, "id"))])
        .unwrap_or_default();
    match (newest.is_empty(), daemon) {
        (false, _) => Ok(newest),
        // A first deploy on EC2 providers starts its copies without a rollout: it is done
        // when every instance is covered.
        (true, Some(name)) => Ok(vec![(name.to_string(), COVERAGE.to_string())]),
        (true, None) => Ok(Vec::new()),
    }
}

/// The id that stands for "the daemon's coverage" where it has no rollout.
pub const COVERAGE: &str = "coverage";

/// The daemon's coverage as a rollout of its own: done when every targeted instance has a
/// running copy and none is starting or missing; failed when a copy crash-loops.
fn coverage_progress(status: &Value, daemon: &str) -> Option<Progress> {
    let entry = status
        .get("daemons")
        .and_then(Value::as_array)?
        .iter()
        .find(|d| d.get("daemon").and_then(Value::as_str) == Some(daemon))?;
    let coverage = entry.get("coverage")?;
    let (covered, targeted) = (number(coverage, "covered"), number(coverage, "targeted"));
    let crash_looping = number(coverage, "crashLooping");
    let complete = covered == targeted
        && number(coverage, "starting") == 0
        && number(coverage, "missing") == 0;
    let state = if crash_looping > 0 {
        "FAILED"
    } else if complete {
        "SUCCEEDED"
    } else {
        "IN_PROGRESS"
    };
    Some(Progress {
        daemon: daemon.to_string(),
        id: COVERAGE.to_string(),
        kind: "COVERAGE".into(),
        to_task_definition: text(entry, "taskDefinition"),
        state: state.into(),
        done: covered,
        total: targeted,
        failures: crash_looping,
        threshold: 0,
        note: (crash_looping > 0)
            .then(|| format!("{crash_looping} instance(s) crash-loop: see status")),
    })
}

/// How far each watched rollout is in `status`.
pub fn progress(status: &Value, watched: &[(String, String)]) -> Vec<Progress> {
    let all = rollouts(status, None);
    watched
        .iter()
        .map(|(daemon, id)| {
            if id == COVERAGE {
                if let Some(coverage) = coverage_progress(status, daemon) {
                    return coverage;
                }
            }
            let found = all
                .iter()
                .find(|(d, r)| d == daemon && text(r, "id") == *id);
            let Some((_, rollout)) = found else {
                return Progress {
                    daemon: daemon.clone(),
                    id: id.clone(),
                    kind: String::new(),
                    to_task_definition: String::new(),
                    state: "UNKNOWN".into(),
                    done: 0,
                    total: 0,
                    failures: 0,
                    threshold: 0,
                    note: Some("no longer in status (history pruned?)".into()),
                };
            };
            let counts = rollout.get("counts").cloned().unwrap_or_default();
            Progress {
                daemon: daemon.clone(),
                id: id.clone(),
                kind: text(rollout, "kind"),
                to_task_definition: text(rollout, "toTaskDefinition"),
                state: text(rollout, "state"),
                done: number(&counts, "done"),
                total: number(&counts, "total"),
                failures: number(&counts, "failures"),
                threshold: number(&counts, "threshold"),
                note: note(rollout),
            }
        })
        .collect()
}

/// What holds a rollout in progress, or why it ended other than by succeeding.
fn note(rollout: &Value) -> Option<String> {
    let state = text(rollout, "state");
    if state != "IN_PROGRESS" {
        return rollout
            .get("reason")
            .and_then(Value::as_str)
            .filter(|_| state != "SUCCEEDED")
            .map(str::to_string);
    }
    if let Some(paused) = rollout.get("paused").filter(|p| p.is_object()) {
        let by = paused
            .get("by")
            .and_then(Value::as_str)
            .unwrap_or("someone");
        return Some(format!("paused by {by} at {}", text(paused, "at")));
    }
    if rollout.get("awaitingPromote").and_then(Value::as_bool) == Some(true) {
        return Some("canary done: waiting for `ecs-daemons promote`".into());
    }
    rollout
        .get("alarms")
        .and_then(|a| a.get("bakingUntil"))
        .and_then(Value::as_str)
        .map(|until| format!("baking (alarms watched) until {until}"))
}

pub fn verdict(progress: &[Progress]) -> Verdict {
    if progress
        .iter()
        .any(|p| matches!(p.state.as_str(), "FAILED" | "SUPERSEDED" | "UNKNOWN"))
    {
        Verdict::Failed
    } else if progress.iter().all(|p| p.state == "SUCCEEDED") {
        Verdict::Succeeded
    } else {
        Verdict::InProgress
    }
}

/// How to follow.
pub struct Follow<'a> {
    pub cluster: &'a str,
    pub daemon: Option<&'a str>,
    pub rollout: Option<&'a str>,
    /// Judge the newest rollout when none is in progress (`rollout wait`).
    pub latest: bool,
    pub interval: Duration,
    pub timeout: Option<Duration>,
}

/// Reads status every `interval` until the watched rollouts end (or `timeout`), telling
/// `report` each reading. A failed read is tried again at the next interval (five in a row
/// end it); a refusal ends it at once. Answers how it ended and the last status.
pub async fn follow<F: Functions>(
    functions: &F,
    how: &Follow<'_>,
    report: &mut dyn FnMut(&[Progress], &Value),
) -> Result<(Ended, Value), CliError> {
    let payload = crate::payloads::status(how.cluster, how.daemon);
    let began = tokio::time::Instant::now();
    let mut status = functions.invoke(Function::Status, &payload).await?;
    let watched = choose(&status, how.daemon, how.rollout, how.latest)?;
    if watched.is_empty() {
        return Ok((Ended::NothingInProgress, status));
    }
    let mut failed_reads = 0;
    loop {
        let now = progress(&status, &watched);
        report(&now, &status);
        let judged = verdict(&now);
        if judged != Verdict::InProgress {
            return Ok((Ended::Judged(judged), status));
        }
        if how
            .timeout
            .is_some_and(|t| began.elapsed() + how.interval > t)
        {
            return Ok((Ended::TimedOut, status));
        }
        tokio::time::sleep(how.interval).await;
        match functions.invoke(Function::Status, &payload).await {
            Ok(next) => {
                status = next;
                failed_reads = 0;
            }
            Err(error) if error.is_transient() && failed_reads < 4 => {
                failed_reads += 1;
                eprintln!("reading status failed ({error}); trying again");
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    fn rollout(id: &str, state: &str, done: u64, started: &str) -> Value {
        json!({"id": id, "kind": "UPDATE", "toTaskDefinition": "agent:2", "state": state,
               "percentDone": done * 25, "counts": {"total": 4, "done": done, "failures": 0, "threshold": 2},
               "startedAt": started})
    }

    fn status(current: Value, history: Vec<Value>) -> Value {
        json!({"cluster": "prod", "daemons": [{"daemon": "agent", "rollout": current, "history": history}]})
    }

    #[test]
    fn the_rollout_in_progress_is_watched_else_the_newest_is_judged() {
        let running = status(
            rollout("r2", "IN_PROGRESS", 1, "2026-11-28T10:00:00Z"),
            vec![rollout("r1", "SUCCEEDED", 4, "2026-11-27T10:00:00Z")],
        );
        let watched = choose(&running, Some("agent"), None, true).unwrap();
        assert_eq!(watched, vec![("agent".to_string(), "r2".to_string())]);
        let now = progress(&running, &watched);
        assert_eq!((now[0].done, now[0].total), (1, 4));
        assert_eq!(verdict(&now), Verdict::InProgress);

        let ended = status(
            rollout("r2", "FAILED", 2, "2026-11-28T10:00:00Z"),
            vec![rollout("r1", "SUCCEEDED", 4, "2026-11-27T10:00:00Z")],
        );
        let watched = choose(&ended, Some("agent"), None, true).unwrap();
        assert_eq!(watched[0].1, "r2", "the newest");
        assert_eq!(verdict(&progress(&ended, &watched)), Verdict::Failed);
        assert!(choose(&ended, Some("agent"), None, false)
            .unwrap()
            .is_empty());
        let first = choose(&ended, Some("agent"), Some("r1"), true).unwrap();
        assert_eq!(verdict(&progress(&ended, &first)), Verdict::Succeeded);
        let first = json!({"cluster": "prod", "daemons": [{"daemon": "agent", "taskDefinition": "agent:1",
            "coverage": {"targeted": 3, "covered": 2, "starting": 1, "missing": 0, "crashLooping": 0},
            "rollout": null, "history": []}]});
        let watched = choose(&first, Some("agent"), None, true).unwrap();
        assert_eq!(watched[0].1, COVERAGE, "no rollout: its coverage");
        let now = progress(&first, &watched);
        assert_eq!(
            (now[0].done, now[0].total, verdict(&now)),
            (2, 3, Verdict::InProgress)
        );
        let mut covered = first.clone();
        covered["daemons"][0]["coverage"] =
            json!({"targeted": 3, "covered": 3, "starting": 0, "missing": 0, "crashLooping": 0});
        assert_eq!(verdict(&progress(&covered, &watched)), Verdict::Succeeded);
        covered["daemons"][0]["coverage"]["crashLooping"] = json!(1);
        assert_eq!(verdict(&progress(&covered, &watched)), Verdict::Failed);
        for (daemon, id, fix) in [
            (Some("other"), None, "UnknownDaemon"),
            (Some("agent"), Some("r9"), "UnknownRollout"),
        ] {
            let error = choose(&ended, daemon, id, true).unwrap_err();
            assert!(error.to_string().starts_with(fix), "{error}");
        }
    }

    #[test]
    fn what_holds_a_rollout_is_said() {
        let mut paused = rollout("r2", "IN_PROGRESS", 1, "t");
        paused["paused"] = json!({"by": "alice", "at": "2026-11-28T10:05:00Z"});
        assert_eq!(
            note(&paused).unwrap(),
            "paused by alice at 2026-11-28T10:05:00Z"
        );
        let mut canary = rollout("r2", "IN_PROGRESS", 1, "t");
        canary["awaitingPromote"] = json!(true);
        assert!(note(&canary).unwrap().contains("promote"));
        let mut failed = rollout("r2", "FAILED", 1, "t");
        failed["reason"] = json!("the circuit breaker tripped");
        assert_eq!(note(&failed).unwrap(), "the circuit breaker tripped");
        let superseded = rollout("r2", "SUPERSEDED", 1, "t");
        assert_eq!(
            verdict(&progress(
                &status(superseded, vec![]),
                &[("agent".into(), "r2".into())]
            )),
            Verdict::Failed
        );
    }

    /// Answers the scripted statuses in order, then the last one again.
    struct Scripted(Mutex<Vec<Result<Value, CliError>>>);

    impl Functions for Scripted {
        async fn invoke(&self, function: Function, _: &Value) -> Result<Value, CliError> {
            assert_eq!(function, Function::Status);
            let mut answers = self.0.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                match &answers[0] {
                    Ok(value) => Ok(value.clone()),
                    Err(error) => Err(CliError::Usage(error.to_string())),
                }
            }
        }
    }

    fn how(timeout: Option<Duration>) -> Follow<'static> {
        Follow {
            cluster: "prod",
            daemon: Some("agent"),
            rollout: None,
            latest: true,
            interval: Duration::from_millis(1),
            timeout,
        }
    }

    #[tokio::test]
    async fn following_reads_until_the_rollout_ends_through_failed_reads() {
        let functions = Scripted(Mutex::new(vec![
            Ok(status(rollout("r2", "IN_PROGRESS", 1, "t"), vec![])),
            Err(CliError::Function {
                error_type: "EcsError".into(),
                message: "throttled".into(),
            }),
            Ok(status(rollout("r2", "IN_PROGRESS", 3, "t"), vec![])),
            Ok(status(rollout("r2", "SUCCEEDED", 4, "t"), vec![])),
        ]));
        let mut seen = Vec::new();
        let (ended, _) = follow(&functions, &how(None), &mut |p, _| seen.push(p[0].done))
            .await
            .unwrap();
        assert_eq!(ended, Ended::Judged(Verdict::Succeeded));
        assert_eq!(seen, vec![1, 1, 3, 4]);

        let stuck = Scripted(Mutex::new(vec![Ok(status(
            rollout("r2", "IN_PROGRESS", 1, "t"),
            vec![],
        ))]));
        let (ended, _) = follow(
            &stuck,
            &how(Some(Duration::from_millis(20))),
            &mut |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(ended, Ended::TimedOut);

        let refused = Scripted(Mutex::new(vec![
            Ok(status(rollout("r2", "IN_PROGRESS", 1, "t"), vec![])),
            Err(CliError::Function {
                error_type: "ClusterNotManaged".into(),
                message: "m".into(),
            }),
            Ok(status(rollout("r2", "SUCCEEDED", 4, "t"), vec![])),
        ]));
        let error = follow(&refused, &how(None), &mut |_, _| {})
            .await
            .unwrap_err();
        assert!(error.to_string().starts_with("ClusterNotManaged"));
    }
}
