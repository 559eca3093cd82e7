//! Undeploy, a mode of the `deploy` invoke (`{"cluster", "daemon", "undeploy": true}`). On EC2
//! providers the declaration is retired and the full reconcile stops every copy, deletes the
//! DAEMON services and slot attributes, and makes ready the instances that waited only for
//! this daemon. A Managed Instances part goes by ECS's own DeleteDaemon (ECS stops every
//! copy; the instances stay). Each declaration is kept, retired, with its rollout history
//! for `status`; deploying the daemon again starts it afresh.

use super::*;
use crate::managed::ManagedDaemon;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UndeployRequest {
    pub cluster: String,
    pub daemon: String,
    /// Must be `true`: the mode's name in the `deploy` payload.
    pub undeploy: bool,
    /// Change nothing: answer with what the undeploy would do.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UndeployAnswer {
    pub daemon: String,
    /// The ECS daemon deleted (or that a dry run would delete): the Managed Instances part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon_arn: Option<String>,
    /// With EC2 providers: "undeployed" (its copies stopped now), "already undeployed" or
    /// "would undeploy". On Managed Instances alone: "deleting" (ECS stops the copies now),
    /// "already undeployed" or "would delete".
    pub recorded: &'static str,
    /// The rollouts in flight that the undeploy ended (or would end).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ended_rollouts: Vec<String>,
    /// On EC2 providers, the copies a dry run would stop (running or starting now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_stop: Option<u32>,
    /// The reconcile run right after on EC2 providers: copies stopped, DAEMON services
    /// deleted, instances waiting only for this daemon made ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Outcome>,
    pub dry_run: bool,
}

/// Whether a `deploy` payload asks for the undeploy mode.
pub fn is_undeploy(payload: &Value) -> bool {
    payload.get("undeploy").is_some()
}

/// Undeploys both parts a daemon may have: the EC2 declaration is retired (its rollout in
/// flight ended in the same write) and a reconcile stops every copy at once, drain-last
/// aside, since the daemon is going; the Managed Instances part goes by DeleteDaemon.
pub async fn undeploy<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: UndeployRequest,
    now: DateTime<Utc>,
    invocation: &str,
) -> Result<UndeployAnswer, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    check_name("daemon", &request.daemon, 64)?;
    if !request.undeploy {
        return Err(invalid(
            "`undeploy` must be true (leave it out to deploy the daemon)",
        ));
    }
    engine.check_cluster(&request.cluster)?;
    let on_ec2 = engine
        .stored_declaration(&request.cluster, &request.daemon)
        .await?;
    let managed = engine
        .managed_daemon_now(&request.cluster, &request.daemon, now)
        .await?;
    if on_ec2.is_none() && managed.is_none() {
        return Err(DeployError::UnknownDaemon {
            cluster: request.cluster.clone(),
            daemon: request.daemon.clone(),
        });
    }
    // Every refusal before any write: a daemon on both kinds is undeployed whole or not.
    let daemon_arn = match &managed {
        Some(current) => Some(current.record.daemon_arn.clone().ok_or_else(|| {
            // Never confirmed by ECS: a cut-off CreateDaemon may still have created it.
            DeployError::UndeployPending {
                daemon: request.daemon.clone(),
            }
        })?),
        None => None,
    };
    let mut answer = UndeployAnswer {
        daemon: request.daemon.clone(),
        daemon_arn: daemon_arn.clone(),
        recorded: "already undeployed",
        ended_rollouts: Vec::new(),
        would_stop: None,
        reconcile: None,
        dry_run: request.dry_run,
    };
    if request.dry_run {
        dry_run_answer(
            engine,
            &request,
            on_ec2.as_ref(),
            managed.as_ref(),
            &mut answer,
        )
        .await?;
        return Ok(answer);
    }
    if let (Some(current), Some(daemon_arn)) = (&managed, &daemon_arn) {
        delete_managed(engine, daemon_arn).await?;
        if current.record.retired_at.is_none() {
            answer
                .ended_rollouts
                .extend(retire(engine, current, now).await?);
            answer.recorded = "deleting";
        }
    }
    if let Some(current) = &on_ec2 {
        if current.record.retired_at.is_none() {
            answer
                .ended_rollouts
                .extend(retire_ec2(engine, current, now).await?);
            answer.recorded = "undeployed";
        }
        // Also after a retry: the reconcile finishes what a cut-off undeploy left.
        answer.reconcile = Some(
            engine
                .reconcile_cluster(&request.cluster, now, invocation)
                .await?,
        );
    }
    Ok(answer)
}

/// What an undeploy would do, changing nothing.
async fn dry_run_answer<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: &UndeployRequest,
    on_ec2: Option<&Versioned<DaemonSpec>>,
    managed: Option<&Versioned<ManagedDaemon>>,
    answer: &mut UndeployAnswer,
) -> Result<(), DeployError> {
    if let Some(current) = managed.filter(|m| m.record.retired_at.is_none()) {
        answer.recorded = "would delete";
        answer
            .ended_rollouts
            .extend(current.record.active_rollout.clone());
    }
    if let Some(current) = on_ec2.filter(|s| s.record.retired_at.is_none()) {
        answer.recorded = "would undeploy";
        answer
            .ended_rollouts
            .extend(current.record.active_rollout.clone());
        let planned = engine.preview(&request.cluster, Utc::now()).await?;
        let coverage = planned.coverage.get(&request.daemon);
        answer.would_stop = Some(coverage.map_or(0, |c| c.covered + c.starting) as u32);
    }
    Ok(())
}

/// ECS's DeleteDaemon; a retry after a crash deletes again, which ECS answers as not found
/// or not active, both meaning "deleted".
async fn delete_managed<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    daemon_arn: &str,
) -> Result<(), DeployError> {
    match engine.ecs().delete_daemon(daemon_arn).await {
        Ok(_) => Ok(()),
        Err(error)
            if error.kind == EcsErrorKind::NotFound || error.code == "DaemonNotActiveException" =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// The rollout in flight a retired declaration ends, as it is recorded ended.
fn ended_by_undeploy(rollout: &Versioned<Rollout>, now: DateTime<Utc>) -> Option<Rollout> {
    if rollout.record.state != RolloutState::InProgress {
        return None;
    }
    let mut stopped = rollout.record.clone();
    stopped.state = RolloutState::Superseded;
    stopped.reason = Some("the daemon was undeployed".into());
    stopped.finished_at = Some(now);
    stopped.updated_at = now;
    Some(stopped)
}

/// Records the EC2 declaration retired, ending its rollout in flight in the same write.
async fn retire_ec2<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    current: &Versioned<DaemonSpec>,
    now: DateTime<Utc>,
) -> Result<Option<String>, DeployError> {
    let mut record = current.record.clone();
    record.retired_at = Some(now);
    record.active_rollout = None;
    record.updated_at = now;
    let active = current.record.active_rollout.as_deref();
    let named = (record.cluster.as_str(), record.daemon.as_str());
    write_retired(engine, &record, current.expected(), named, active, now).await
}

/// Records the Managed Instances part retired, ending its rollout in flight in the same write.
async fn retire<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    current: &Versioned<ManagedDaemon>,
    now: DateTime<Utc>,
) -> Result<Option<String>, DeployError> {
    let mut record = current.record.clone();
    record.retired_at = Some(now);
    record.active_rollout = None;
    record.pending_rollout = None;
    record.updated_at = now;
    let active = current.record.active_rollout.as_deref();
    let named = (record.cluster.as_str(), record.daemon.as_str());
    write_retired(engine, &record, current.expected(), named, active, now).await
}

/// Writes a retired declaration and, in the same transaction, its rollout `active` ended
/// (if still in progress): the ended rollout's id.
async fn write_retired<E: Ecs, S: Store, R: crate::store::Record>(
    engine: &Engine<E, S>,
    retired: &R,
    expected: Expected,
    (cluster, daemon): (&str, &str),
    active: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<String>, DeployError> {
    let mut ended = None;
    if let Some(active) = active {
        if let Some(rollout) = engine.rollout(cluster, daemon, active).await? {
            ended = ended_by_undeploy(&rollout, now).map(|r| (r, rollout.expected()));
        }
    }
    let written = engine
        .retire_declaration(retired, expected, ended.as_ref().map(|(r, e)| (r, *e)))
        .await;
    match written {
        Ok(()) => Ok(ended.map(|(r, _)| r.id)),
        Err(StoreError::Conflict { .. }) => Err(DeployError::Conflict {
            daemon: daemon.into(),
        }),
        Err(error) => Err(error.into()),
    }
}
