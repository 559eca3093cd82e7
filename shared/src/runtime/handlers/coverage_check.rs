//! `coverage-check`. Input: the schedule's EventBridge event, `{}` for every managed cluster,
//! `{"cluster": "name"}`, or a batch of the table's stream (new rollout records: their
//! clusters are reconciled once each, so a rollout's first wave starts within seconds).

use chrono::Utc;
use serde_json::Value;

use crate::deploy::DeployError;
use crate::engine::Engine;
use crate::engine::Outcome;
use crate::runtime::logging::log_outcome;
use crate::runtime::FunctionError;
use crate::store::{ItemKey, RecordKind};

/// A scheduled coverage-check keeps reconciling inside its invocation while timed
/// conditions (minHealthySeconds, restart backoffs) mature within this many seconds of
/// its start, so rollouts and restarts do not wait for the next schedule. (The function's
/// timeout in template.yaml leaves room for it.)
pub const WAKE_WINDOW_SECONDS: i64 = 55;

/// The clusters whose rollout records a batch of the table's stream inserted, each once;
/// `None` when the payload is not such a batch. Other records (the filter in template.yaml
/// lets none through) and clusters this deployment does not manage are left out.
pub fn rollout_stream_clusters(payload: &Value, managed: &[String]) -> Option<Vec<String>> {
    let records = payload.get("Records")?.as_array()?;
    let from_stream = !records.is_empty()
        && records
            .iter()
            .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:dynamodb"));
    if !from_stream {
        return None;
    }
    let mut clusters: Vec<String> = Vec::new();
    for record in records {
        if record.get("eventName").and_then(Value::as_str) != Some("INSERT") {
            continue;
        }
        let key = |name: &str| {
            record
                .pointer(&format!("/dynamodb/Keys/{name}/S"))
                .and_then(Value::as_str)
        };
        let is_rollout = key("sk").is_some_and(|sk| sk.starts_with(RecordKind::Rollout.prefix()));
        let cluster = key("pk").and_then(ItemKey::cluster_of_daemon_partition);
        if let (true, Some(cluster)) = (is_rollout, cluster) {
            if managed.iter().any(|m| m == cluster) && !clusters.iter().any(|c| c == cluster) {
                clusters.push(cluster.to_string());
            }
        }
    }
    Some(clusters)
}

/// The batch the table's stream hands the coverage-check for these inserted items (KEYS_ONLY,
/// as template.yaml configures it): what the local stack and tests deliver as Lambda would.
pub fn stream_batch_of_inserts(keys: &[ItemKey]) -> Value {
    let records: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            serde_json::json!({
                "eventID": index.to_string(),
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "dynamodb": {
                    "Keys": {"pk": {"S": key.pk}, "sk": {"S": key.sk}},
                    "SequenceNumber": index.to_string(),
                    "StreamViewType": "KEYS_ONLY"
                }
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// Scheduled (every managed cluster), manual `{"cluster": …}`, or the table's stream.
pub async fn coverage_check<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Vec<Outcome>, FunctionError> {
    let scheduled = payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    // Only the schedule's run keeps a wake-up window: a stream batch (a new rollout record)
    // reconciles once, so it never holds the function's one concurrent run for long.
    let (clusters, windowed) = match (
        rollout_stream_clusters(&payload, &engine.config().clusters),
        payload.get("cluster").and_then(Value::as_str),
    ) {
        (Some(recorded), _) => (recorded, false),
        (None, Some(cluster)) => (vec![cluster.to_string()], false),
        (None, None) if scheduled || payload.as_object().is_some_and(|o| o.is_empty()) => {
            (engine.config().clusters.clone(), scheduled)
        }
        (None, None) => {
            return Err(DeployError::InvalidRequest(
                "coverage-check takes a scheduled event, {} for every managed cluster, {\"cluster\": \"name\"}, or a batch of the table's stream".into(),
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
            Some(at) if windowed && at <= window_end => {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            _ => return Ok(outcomes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(event: &str, key: &ItemKey) -> Value {
        let mut batch = stream_batch_of_inserts(std::slice::from_ref(key));
        let mut record = batch["Records"][0].take();
        record["eventName"] = json!(event);
        record
    }

    #[test]
    fn a_stream_batch_names_each_cluster_with_a_new_rollout_once() {
        let managed = vec!["prod".to_string(), "staging".to_string()];
        let payload = json!({"Records": [
            record("INSERT", &ItemKey::rollout("prod", "agent", "r1")),
            record("INSERT", &ItemKey::rollout("prod", "log-router", "r2")),
            record("INSERT", &ItemKey::rollout("staging", "agent", "r3")),
            record("MODIFY", &ItemKey::rollout("other", "agent", "r4")),
            record("INSERT", &ItemKey::slot("other", "agent", "i-1")),
            record("INSERT", &ItemKey::rollout("unmanaged", "agent", "r5")),
        ]});
        assert_eq!(
            rollout_stream_clusters(&payload, &managed),
            Some(vec!["prod".to_string(), "staging".to_string()]),
            "updates, other records and clusters not managed here start nothing"
        );
    }

    #[test]
    fn other_payloads_are_not_stream_batches() {
        let managed = vec!["prod".to_string()];
        for payload in [
            json!({}),
            json!({"cluster": "prod"}),
            json!({"detail-type": "Scheduled Event"}),
            json!({"Records": []}),
            json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}),
        ] {
            assert_eq!(
                rollout_stream_clusters(&payload, &managed),
                None,
                "{payload}"
            );
        }
        let malformed =
            json!({"Records": [{"eventSource": "aws:dynamodb", "eventName": "INSERT"}]});
        assert_eq!(
            rollout_stream_clusters(&malformed, &managed),
            Some(Vec::new()),
            "a record without keys starts nothing and fails nothing"
        );
    }
}
