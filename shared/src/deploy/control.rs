//! The operator's hand on a rollout in flight, a mode of the `rollback` invoke
//! (`{"cluster", "daemon", "control": "pause" | "resume" | "promote", "by", "reason"}`).
//!
//! A paused rollout holds its place: no new batch, no old copy stopped; copies already asked
//! for still start, and one that fails is still counted (the breaker keeps watching). A
//! `promote` lets a rollout with `canary.promote: manual` go on past its canary batch. A
//! deploy or rollback supersedes a paused rollout as any other. ECS's managed daemons have no
//! pause or promote (the daemon API's deployments can only be replaced): refused there.

use super::*;
use crate::rollout::OperatorMark;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ControlVerb {
    Pause,
    Resume,
    Promote,
}

impl ControlVerb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutControlRequest {
    pub cluster: String,
    pub daemon: String,
    pub control: ControlVerb,
    /// Who asks (a name or an email), shown by `status`.
    #[serde(default)]
    pub by: Option<String>,
    /// Why, shown by `status`.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutControlAnswer {
    pub daemon: String,
    pub control: ControlVerb,
    /// "paused", "resumed", "promoted", or "already paused" / "already promoted" (a retried
    /// invoke: nothing written).
    pub recorded: &'static str,
    /// The rollout as it stands after the invoke.
    pub rollout: Rollout,
    /// What the invoke did not do, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The reconcile run at once after a resume or promote: the next batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Outcome>,
}

/// Whether a `rollback` payload asks for a rollout control rather than a rollback.
pub fn is_rollout_control(payload: &Value) -> bool {
    payload.get("control").is_some()
}

/// Writes lost to a reconcile's own record of the rollout, retried from a fresh read.
const CONFLICT_RETRIES: usize = 5;

/// Pauses, resumes or promotes a daemon's rollout in flight on its EC2 providers.
pub async fn control_rollout<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: RolloutControlRequest,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<RolloutControlAnswer, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    check_name("daemon", &request.daemon, 64)?;
    check_text("by", request.by.as_deref(), 256)?;
    check_text("reason", request.reason.as_deref(), 1024)?;
    engine.check_cluster(&request.cluster)?;
    let managed = engine
        .managed_daemon(&request.cluster, &request.daemon)
        .await?
        .filter(|m| m.record.retired_at.is_none());
    let mark = OperatorMark {
        by: request.by.clone(),
        invocation: invocation.to_string(),
        at: now,
        reason: request.reason.clone(),
    };
    for _ in 0..CONFLICT_RETRIES {
        let rollout = rollout_in_progress(engine, &request, managed.is_some()).await?;
        let mut record = rollout.record.clone();
        let recorded = apply(request.control, &mut record, mark.clone())?;
        let mut warnings = Vec::new();
        if managed.is_some() {
            warnings.push(format!(
                "the daemon's Managed Instances part is not {}: ECS's deployment carries it and the daemon API has no \
                 pause or promote; roll back with the rollback invoke if it must stop",
                past_tense(request.control)
            ));
        }
        if request.control == ControlVerb::Promote && record.control.paused.is_some() {
            warnings.push("the rollout is still paused: resume it to go on".into());
        }
        if recorded.starts_with("already") {
            return Ok(answer(&request, recorded, record, warnings, None));
        }
        record.updated_at = now;
        match engine.write_rollout(&record, rollout.expected()).await {
            Ok(_) => {}
            Err(error) if error.is_conflict() => continue,
            Err(error) => return Err(error.into()),
        }
        // Resumed or promoted: the next batch starts now, not at the next scheduled check.
        let reconcile = match request.control {
            ControlVerb::Pause => None,
            ControlVerb::Resume | ControlVerb::Promote => Some(
                engine
                    .reconcile_cluster(&request.cluster, now, invocation)
                    .await?,
            ),
        };
        return Ok(answer(&request, recorded, record, warnings, reconcile));
    }
    Err(DeployError::Conflict {
        daemon: request.daemon,
    })
}

/// The daemon's rollout in progress on EC2 providers, or why there is none to control
/// (`managed`: the daemon has a Managed Instances part, whose deployment is ECS's).
async fn rollout_in_progress<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &RolloutControlRequest,
    managed: bool,
) -> Result<Versioned<Rollout>, DeployError> {
    let Some(spec) = engine
        .declaration(&request.cluster, &request.daemon)
        .await?
    else {
        return Err(if managed {
            DeployError::ControlOnManagedInstances {
                daemon: request.daemon.clone(),
                verb: request.control.as_str(),
            }
        } else {
            DeployError::UnknownDaemon {
                cluster: request.cluster.clone(),
                daemon: request.daemon.clone(),
            }
        });
    };
    let rollout = match &spec.record.active_rollout {
        Some(id) => {
            engine
                .rollout(&request.cluster, &request.daemon, id)
                .await?
        }
        None => None,
    };
    let Some(rollout) = rollout.filter(|r| r.record.state == RolloutState::InProgress) else {
        let latest = engine
            .rollouts(&request.cluster, &request.daemon)
            .await?
            .into_iter()
            .map(|r| r.record)
            .filter(|r| !r.managed_instances)
            .max_by_key(|r| r.started_at);
        return Err(DeployError::NoRolloutInProgress {
            daemon: request.daemon.clone(),
            verb: request.control.as_str(),
            latest: latest.map_or_else(String::new, |r| {
                let state = serde_json::to_value(r.state).unwrap_or_default();
                format!(
                    " (its latest, {}, ended {})",
                    r.id,
                    state.as_str().unwrap_or_default()
                )
            }),
        });
    };
    Ok(rollout)
}

fn answer(
    request: &RolloutControlRequest,
    recorded: &'static str,
    rollout: Rollout,
    warnings: Vec<String>,
    reconcile: Option<Outcome>,
) -> RolloutControlAnswer {
    RolloutControlAnswer {
        daemon: request.daemon.clone(),
        control: request.control,
        recorded,
        rollout,
        warnings,
        reconcile,
    }
}

fn past_tense(verb: ControlVerb) -> &'static str {
    match verb {
        ControlVerb::Pause => "paused",
        ControlVerb::Resume => "resumed",
        ControlVerb::Promote => "promoted",
    }
}

/// The control's change to an in-progress rollout record, or why it cannot be made. A
/// repeated pause or promote (a retried invoke) changes nothing and says so.
pub(super) fn apply(
    verb: ControlVerb,
    record: &mut Rollout,
    mark: OperatorMark,
) -> Result<&'static str, DeployError> {
    match verb {
        ControlVerb::Pause if record.control.paused.is_some() => Ok("already paused"),
        ControlVerb::Pause => {
            record.control.paused = Some(mark);
            Ok("paused")
        }
        ControlVerb::Resume => match record.control.paused.take() {
            Some(_) => {
                record.control.resumed = Some(mark);
                Ok("resumed")
            }
            None => Err(DeployError::NotPaused {
                daemon: record.daemon.clone(),
                rollout: record.id.clone(),
            }),
        },
        ControlVerb::Promote if record.control.promoted.is_some() => Ok("already promoted"),
        ControlVerb::Promote => {
            if record.awaits_promote(&record.counts) {
                record.control.promoted = Some(mark);
                return Ok("promoted");
            }
            let why = match record.config.canary {
                Some(canary) if canary.promote == crate::rollout::Promote::Manual => format!(
                    "its canary batch is not done yet ({} of {} instance(s) done at {}): promote once status shows \
                     awaitingPromote",
                    record.counts.done,
                    canary.instances,
                    record.updated_at.to_rfc3339()
                ),
                _ => "it has no manual canary (rollout.canary.promote is not \"manual\"): it goes on by itself".into(),
            };
            Err(DeployError::CanaryNotWaiting {
                daemon: record.daemon.clone(),
                rollout: record.id.clone(),
                why,
            })
        }
    }
}

/// An optional free-text field: at most `max` characters, no control characters.
fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<(), DeployError> {
    match value {
        Some(text) if text.trim().is_empty() || text.chars().count() > max => Err(invalid(
            format!("`{field}` must be 1 to {max} characters when given"),
        )),
        Some(text) if text.chars().any(char::is_control) => Err(invalid(format!(
            "`{field}` must not hold control characters (newlines, tabs)"
        ))),
        _ => Ok(()),
    }
}
