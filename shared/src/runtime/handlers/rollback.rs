//! `rollback`. Input: `deploy::RollbackRequest` (`toRevision`, `dryRun`), or
//! `deploy::RolloutControlRequest` (`"control": "pause" | "resume" | "promote"`).

use chrono::Utc;
use serde_json::Value;

use crate::deploy::parse_payload;
use crate::engine::Engine;
use crate::runtime::logging::log_outcome;
use crate::runtime::FunctionError;

/// Rolls a daemon back to its previous good revision (or the one named).
pub async fn rollback<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    if crate::deploy::is_rollout_control(&payload) {
        let request: crate::deploy::RolloutControlRequest = parse_payload(payload)?;
        let answer =
            crate::deploy::control_rollout(engine, request, Utc::now(), &request_id).await?;
        tracing::info!(
            function = "rollback",
            daemon = %answer.daemon,
            rollout = %answer.rollout.id,
            recorded = answer.recorded,
            "rollout control"
        );
        if let Some(outcome) = &answer.reconcile {
            log_outcome("rollback", outcome);
        }
        return Ok(serde_json::to_value(answer)?);
    }
    let request: crate::deploy::RollbackRequest = parse_payload(payload)?;
    if request.dry_run {
        let answer = crate::deploy::rollback_dry_run(engine, request, Utc::now()).await?;
        return Ok(serde_json::to_value(answer)?);
    }
    let answer = crate::deploy::rollback(engine, request, Utc::now(), &request_id).await?;
    if let Some(outcome) = &answer.reconcile {
        log_outcome("rollback", outcome);
    }
    Ok(serde_json::to_value(answer)?)
}
