//! `lifecycle-hook`. Input: an "EC2 Instance-terminate Lifecycle Action" EventBridge event
//! (`autoscaling::TerminateEvent` once parsed).

use chrono::Utc;
use serde_json::Value;

use crate::engine::Engine;
use crate::engine::Outcome;
use crate::runtime::logging::log_outcome;
use crate::runtime::FunctionError;

/// "EC2 Instance-terminate Lifecycle Action" (direct from its EventBridge rule): hold the
/// termination until drain-last is done.
pub async fn lifecycle_hook<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    let answer = engine
        .on_terminate_event(payload, Utc::now(), &request_id)
        .await?;
    // The hold (or the instant CONTINUE) is logged and counted like any outcome's.
    log_outcome(
        "lifecycle-hook",
        &Outcome {
            cluster: answer.cluster.clone().unwrap_or_default(),
            skipped: Some("the termination event itself".into()),
            terminations: answer.terminations.clone(),
            ..Outcome::default()
        },
    );
    if let Some(outcome) = &answer.reconcile {
        log_outcome("lifecycle-hook", outcome);
    }
    Ok(serde_json::to_value(answer)?)
}
