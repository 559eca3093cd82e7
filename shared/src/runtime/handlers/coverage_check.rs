//! `coverage-check`. Input: the schedule's EventBridge event, `{}` for every managed cluster,
//! `{"cluster": "name"}`, a batch of the table's stream (new rollout records: their
//! clusters are reconciled once each, so a rollout's first wave starts within seconds), or a
//! batch of the wake queue (a timed step is due: [`crate::wake`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::deploy::DeployError;
use crate::engine::Engine;
use crate::engine::Outcome;
use crate::runtime::logging::log_outcome;
use crate::runtime::FunctionError;
use crate::store::{ItemKey, RecordKind};
use crate::wake::{Wake, WakeStep};

/// What a batch of the wake queue asks for at one moment ([`plan_wakes`]).
#[derive(Debug, Default, PartialEq)]
pub struct WakePlan {
    /// The clusters to reconcile now, each once, with the messages that asked for it.
    pub reconcile: BTreeMap<String, Vec<String>>,
    /// How long to wait first: the fraction of a second the messages' whole-second timers
    /// left (at most one second).
    pub wait: Duration,
    /// Wakes further away than one timer reaches, to send again (message id, wake).
    pub send_again: Vec<(String, Wake)>,
    /// Messages that are no wake for a managed cluster: logged and dropped (message id, why).
    pub dropped: Vec<(String, String)>,
}

/// The wake queue's batch at `now`: which clusters are due, which wakes travel on.
pub fn plan_wakes(
    messages: Vec<crate::sqs::Message>,
    managed: &[String],
    now: DateTime<Utc>,
) -> WakePlan {
    let mut plan = WakePlan::default();
    for message in messages {
        let wake = message.body.and_then(|body| Wake::from_body(&body));
        let wake = match wake {
            Ok(wake) if managed.is_empty() || managed.contains(&wake.cluster) => wake,
            Ok(wake) => {
                let why = format!("cluster {} is not managed by this deployment", wake.cluster);
                plan.dropped.push((message.message_id, why));
                continue;
            }
            Err(why) => {
                plan.dropped.push((message.message_id, why));
                continue;
            }
        };
        match wake.step(now) {
            WakeStep::Reconcile => {}
            WakeStep::WaitThenReconcile(left) => plan.wait = plan.wait.max(left),
            WakeStep::SendAgain => {
                plan.send_again.push((message.message_id, wake));
                continue;
            }
        }
        plan.reconcile
            .entry(wake.cluster)
            .or_default()
            .push(message.message_id);
    }
    plan
}

/// Whether a payload is a batch of the wake queue (SQS records whose bodies are wakes).
fn is_wake_batch(payload: &Value) -> bool {
    crate::sqs::messages(payload).is_some_and(|messages| {
        !messages.is_empty()
            && messages
                .iter()
                .any(|m| m.body.as_ref().is_ok_and(|b| b.get("wake").is_some()))
    })
}

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

/// Scheduled (every managed cluster), manual `{"cluster": …}`, the table's stream, or the
/// wake queue. Every cluster is reconciled once; each reconcile books its next wake.
/// Answers the outcomes, or for a wake batch the messages to deliver again.
pub async fn coverage_check<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    if is_wake_batch(&payload) {
        return Ok(wake_batch(engine, payload, &request_id).await);
    }
    let scheduled = payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    let clusters = match (
        rollout_stream_clusters(&payload, &engine.config().clusters),
        payload.get("cluster").and_then(Value::as_str),
    ) {
        (Some(recorded), _) => recorded,
        (None, Some(cluster)) => vec![cluster.to_string()],
        (None, None) if scheduled || payload.as_object().is_some_and(|o| o.is_empty()) => {
            engine.config().clusters.clone()
        }
        (None, None) => {
            return Err(DeployError::InvalidRequest(
                "coverage-check takes a scheduled event, {} for every managed cluster, {\"cluster\": \"name\"}, or a batch of the table's stream or of the wake queue".into(),
            )
            .into())
        }
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    for cluster in &clusters {
        let outcome = engine
            .coverage_check_cluster(cluster, Utc::now(), &request_id)
            .await?;
        log_outcome("coverage-check", &outcome);
        outcomes.push(outcome);
    }
    Ok(serde_json::to_value(outcomes)?)
}

/// A batch of the wake queue: due clusters reconciled (after the fraction of a second their
/// timers left), far wakes sent on; answers the messages to deliver again.
async fn wake_batch<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: &str,
) -> Value {
    let messages = crate::sqs::messages(&payload).unwrap_or_default();
    let plan = plan_wakes(messages, &engine.config().clusters, Utc::now());
    for (message_id, why) in &plan.dropped {
        tracing::error!(function = "coverage-check", message_id = %message_id, error_type = "InvalidWake", error = %why, "dropped a wake message");
    }
    let mut retry = Vec::new();
    for (message_id, wake) in &plan.send_again {
        if let Err(error) = engine.send_wake_again(wake).await {
            tracing::error!(function = "coverage-check", message_id = %message_id, error_type = "WakeNotSent", error = %error, "a far wake was not sent on; delivering it again");
            retry.push(message_id.clone());
        }
    }
    if let Ok(wait) = plan.wait.to_std() {
        tokio::time::sleep(wait).await;
    }
    for (cluster, message_ids) in plan.reconcile {
        match engine
            .coverage_check_cluster(&cluster, Utc::now(), request_id)
            .await
        {
            Ok(outcome) => log_outcome("coverage-check", &outcome),
            Err(error) => {
                let error = FunctionError::from(error);
                let retryable = matches!(&error, FunctionError::Engine(e) if e.is_retryable());
                tracing::error!(function = "coverage-check", cluster = %cluster, error_type = error.error_type(), error = %error, retry = retryable, "a woken reconcile failed");
                if retryable {
                    retry.extend(message_ids);
                }
            }
        }
    }
    crate::sqs::batch_response(&retry)
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
