//! Undeploy, a mode of the `deploy` invoke (`{"cluster", "daemon", "undeploy": true}`): a
//! daemon's Managed Instances part goes by ECS's own DeleteDaemon (ECS stops every copy; the
//! instances stay). The declaration is kept, retired, with its rollout history for `status`;
//! deploying the daemon again creates a new one once ECS has deleted the old.

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
    /// The ECS daemon deleted (or that a dry run would delete).
    pub daemon_arn: String,
    /// "deleting" (ECS stops the copies now), "already undeployed", or "would delete".
    pub recorded: &'static str,
    /// The rollout in flight that the undeploy ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_rollout: Option<String>,
    pub dry_run: bool,
}

/// Whether a `deploy` payload asks for the undeploy mode.
pub fn is_undeploy(payload: &Value) -> bool {
    payload.get("undeploy").is_some()
}

pub async fn undeploy<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    request: UndeployRequest,
    now: DateTime<Utc>,
) -> Result<UndeployAnswer, DeployError> {
    check_name("cluster", &request.cluster, 255)?;
    check_name("daemon", &request.daemon, 64)?;
    if !request.undeploy {
        return Err(invalid(
            "`undeploy` must be true (leave it out to deploy the daemon)",
        ));
    }
    engine.check_cluster(&request.cluster)?;
    let unknown = || DeployError::UnknownDaemon {
        cluster: request.cluster.clone(),
        daemon: request.daemon.clone(),
    };
    if engine
        .declaration(&request.cluster, &request.daemon)
        .await?
        .is_some()
    {
        return Err(DeployError::UndeployOnEc2 {
            daemon: request.daemon.clone(),
        });
    }
    let current = engine
        .managed_daemon_now(&request.cluster, &request.daemon, now)
        .await?
        .ok_or_else(unknown)?;
    let Some(daemon_arn) = current.record.daemon_arn.clone() else {
        // Never confirmed by ECS: a cut-off CreateDaemon may still have created it.
        return Err(DeployError::UndeployPending {
            daemon: request.daemon.clone(),
        });
    };
    let answer = |recorded, ended_rollout| UndeployAnswer {
        daemon: request.daemon.clone(),
        daemon_arn: daemon_arn.clone(),
        recorded,
        ended_rollout,
        dry_run: request.dry_run,
    };
    if request.dry_run {
        let recorded = if current.record.retired_at.is_some() {
            "already undeployed"
        } else {
            "would delete"
        };
        return Ok(answer(recorded, current.record.active_rollout.clone()));
    }
    // ECS first, then the record: a retry after a crash in between deletes again, which ECS
    // answers as not found or not active, both meaning "deleted".
    match engine.ecs().delete_daemon(&daemon_arn).await {
        Ok(_) => {}
        Err(error)
            if error.kind == EcsErrorKind::NotFound || error.code == "DaemonNotActiveException" => {
        }
        Err(error) => return Err(error.into()),
    }
    if current.record.retired_at.is_some() {
        return Ok(answer("already undeployed", None));
    }
    let ended = retire(engine, &current, now).await?;
    Ok(answer("deleting", ended))
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
    let mut ended = None;
    if let Some(active) = &current.record.active_rollout {
        if let Some(rollout) = engine
            .rollout(&record.cluster, &record.daemon, active)
            .await?
            .filter(|r| r.record.state == RolloutState::InProgress)
        {
            let mut stopped = rollout.record.clone();
            stopped.state = RolloutState::Superseded;
            stopped.reason = Some("the daemon was undeployed".into());
            stopped.finished_at = Some(now);
            stopped.updated_at = now;
            ended = Some((stopped, rollout.expected()));
        }
    }
    let written = engine
        .retire_managed_daemon(
            &record,
            current.expected(),
            ended.as_ref().map(|(r, e)| (r, *e)),
        )
        .await;
    match written {
        Ok(()) => Ok(ended.map(|(r, _)| r.id)),
        Err(StoreError::Conflict { .. }) => Err(DeployError::Conflict {
            daemon: record.daemon.clone(),
        }),
        Err(error) => Err(error.into()),
    }
}
