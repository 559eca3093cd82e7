//! `deploy`. Input: `deploy::DeployRequest` (`dryRun` for the dry run).

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
    let request: DeployRequest = parse_payload(payload)?;
    if request.dry_run {
        let answer = crate::deploy::deploy_dry_run(engine, request, Utc::now()).await?;
        return Ok(serde_json::to_value(answer)?);
    }
    let answer = crate::deploy::deploy(engine, request, Utc::now(), &request_id).await?;
    log_outcome("deploy", &answer.reconcile);
    Ok(serde_json::to_value(answer)?)
}
