//! `deploy`. Input: `deploy::DeployRequest` (`dryRun` for the dry run), or
//! `deploy::UndeployRequest` (`"undeploy": true`).

use chrono::Utc;
use serde_json::Value;

use crate::deploy::{parse_payload, DeployRequest};
use crate::engine::Engine;
use crate::runtime::logging::log_outcome;
use crate::runtime::FunctionError;

/// Validates and records a daemon, then starts covering (or answers the dry run).
pub async fn deploy<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    if crate::deploy::is_undeploy(&payload) {
        let request: crate::deploy::UndeployRequest = parse_payload(payload)?;
        let answer = crate::deploy::undeploy(engine, request, Utc::now(), &request_id).await?;
        tracing::info!(
            function = "deploy",
            daemon = %answer.daemon,
            recorded = answer.recorded,
            daemon_arn = answer.daemon_arn.as_deref().unwrap_or(""),
            "undeploy"
        );
        if let Some(outcome) = &answer.reconcile {
            log_outcome("deploy", outcome);
        }
        return Ok(serde_json::to_value(answer)?);
    }
    let request: DeployRequest = parse_payload(payload)?;
    if request.dry_run {
        let answer = crate::deploy::deploy_dry_run(engine, request, Utc::now()).await?;
        return Ok(serde_json::to_value(answer)?);
    }
    let answer = crate::deploy::deploy(engine, request, Utc::now(), &request_id).await?;
    if let Some(outcome) = &answer.reconcile {
        log_outcome("deploy", outcome);
    }
    if let Some(managed) = &answer.managed {
        tracing::info!(
            function = "deploy",
            daemon = %answer.daemon,
            recorded = managed.recorded,
            daemon_arn = managed.daemon_arn.as_deref().unwrap_or(""),
            deployment_arn = managed.deployment_arn.as_deref().unwrap_or(""),
            "declared to ECS on Managed Instances"
        );
    }
    Ok(serde_json::to_value(answer)?)
}
