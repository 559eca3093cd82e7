//! `status`. Input: `deploy::StatusRequest` (a cluster, optionally one daemon).

use chrono::Utc;
use serde_json::Value;

use crate::deploy::{parse_payload, StatusRequest};
use crate::engine::Engine;
use crate::runtime::FunctionError;

/// Coverage and rollout progress as JSON; reads only.
pub async fn status<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    _request_id: String,
) -> Result<Value, FunctionError> {
    let request: StatusRequest = parse_payload(payload)?;
    Ok(serde_json::to_value(
        crate::deploy::status(engine, request, Utc::now()).await?,
    )?)
}
