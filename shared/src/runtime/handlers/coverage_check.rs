//! `coverage-check`. Input: the schedule's EventBridge event, `{}` for every managed cluster, or
//! `{"cluster": "name"}`.

use chrono::Utc;
use serde_json::Value;

use crate::deploy::DeployError;
use crate::engine::Engine;
use crate::engine::Outcome;
use crate::runtime::logging::log_outcome;
use crate::runtime::FunctionError;

/// A scheduled coverage-check keeps reconciling inside its invocation while timed
/// conditions (minHealthySeconds, restart backoffs) mature within this many seconds of
/// its start, so rollouts and restarts do not wait for the next schedule. (The function's
/// timeout in template.yaml leaves room for it.)
pub const WAKE_WINDOW_SECONDS: i64 = 55;

/// Scheduled (every managed cluster) or manual `{"cluster": …}`.
pub async fn coverage_check<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Vec<Outcome>, FunctionError> {
    let scheduled = payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    let clusters = match payload.get("cluster").and_then(Value::as_str) {
        Some(cluster) => vec![cluster.to_string()],
        None if scheduled || payload.as_object().is_some_and(|o| o.is_empty()) => engine.config().clusters.clone(),
        None => {
            return Err(DeployError::InvalidRequest(
                "coverage-check takes a scheduled event, {} for every managed cluster, or {\"cluster\": \"name\"}".into(),
            )
            .into())
        }
    };
    let window_end = Utc::now() + chrono::Duration::seconds(WAKE_WINDOW_SECONDS);
    loop {
        let mut outcomes = Vec::new();
        for cluster in &clusters {
            let outcome = engine
                .coverage_check_cluster(cluster, Utc::now(), &request_id)
                .await?;
            log_outcome("coverage-check", &outcome);
            outcomes.push(outcome);
        }
        let wake = outcomes.iter().filter_map(|o| o.wake_at).min();
        match wake {
            Some(at) if scheduled && at <= window_end => {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            _ => return Ok(outcomes),
        }
    }
}
