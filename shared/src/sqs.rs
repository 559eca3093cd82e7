//! The SQS envelope around ECS events. The EventBridge rules put ECS events on a queue and
//! Lambda hands the event functions up to 100 at a time (template.yaml), so that a burst
//! of events (100 copies of a rollout batch going RUNNING in the same second) costs one
//! batched read per 100 instances instead of a few reads per event. The answer names the
//! messages to deliver again (`ReportBatchItemFailures`).

use serde_json::{json, Value};

/// One message of a batch: its id, and its body as JSON or why it is not.
#[derive(Debug, PartialEq)]
pub struct Message {
    pub message_id: String,
    pub body: Result<Value, String>,
}

/// The messages of an SQS batch, or `None` when the payload is not one (a direct invoke
/// with one EventBridge event).
pub fn messages(payload: &Value) -> Option<Vec<Message>> {
    let records = payload.get("Records")?.as_array()?;
    let is_sqs = records
        .iter()
        .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"));
    if !is_sqs {
        return None;
    }
    Some(
        records
            .iter()
            .enumerate()
            .map(|(position, record)| {
                let message_id = record
                    .get("messageId")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("record {position}"), str::to_string);
                let body = match record.get("body").and_then(Value::as_str) {
                    None => Err("the SQS record has no string `body`".to_string()),
                    Some(text) => serde_json::from_str(text)
                        .map_err(|error| format!("the SQS record's body is not JSON: {error}")),
                };
                Message { message_id, body }
            })
            .collect(),
    )
}

/// The answer Lambda expects with `ReportBatchItemFailures`: the messages to retry.
pub fn batch_response(retry: &[String]) -> Value {
    json!({
        "batchItemFailures": retry
            .iter()
            .map(|id| json!({"itemIdentifier": id}))
            .collect::<Vec<_>>()
    })
}

/// The message id [`batch_of`] gives an event (from its EventBridge id).
pub fn message_id(event: &Value) -> Option<String> {
    let id = event.get("id").and_then(Value::as_str)?;
    Some(format!("message-{id}"))
}

/// An SQS batch holding `events` as Lambda delivers it (the local stack and tests send these).
pub fn batch_of(events: &[Value]) -> Value {
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(position, event)| {
            let id = message_id(event).unwrap_or_else(|| format!("message-{position}"));
            json!({
                "messageId": id,
                "receiptHandle": format!("handle-{position}"),
                "body": event.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ecs-daemons-events",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_its_bodies_and_a_direct_event_is_not_a_batch() {
        let events = [json!({"id": "a", "detail": {}}), json!({"id": "b"})];
        let batch = batch_of(&events);
        let read = messages(&batch).expect("an SQS batch");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].message_id, "message-a");
        assert_eq!(read[1].body, Ok(events[1].clone()));
        assert_eq!(messages(&events[0]), None);
        assert_eq!(
            messages(&json!({"Records": [{"eventSource": "aws:s3"}]})),
            None
        );
        assert_eq!(messages(&json!({"Records": 5})), None);
    }

    #[test]
    fn a_body_that_is_not_json_is_named_not_fatal() {
        let batch = json!({"Records": [
            {"eventSource": "aws:sqs", "messageId": "m1", "body": "{not json"},
            {"eventSource": "aws:sqs", "body": 7},
        ]});
        let read = messages(&batch).unwrap();
        assert!(read[0].body.as_ref().unwrap_err().contains("not JSON"));
        assert_eq!(read[1].message_id, "record 1");
        assert!(read[1]
            .body
            .as_ref()
            .unwrap_err()
            .contains("no string `body`"));
    }

    #[test]
    fn the_answer_names_the_messages_to_retry() {
        assert_eq!(
            batch_response(&["m1".into(), "m3".into()]),
            json!({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]})
        );
        assert_eq!(batch_response(&[]), json!({"batchItemFailures": []}));
    }
}
