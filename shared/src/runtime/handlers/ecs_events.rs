//! `instance-events` and `task-events`: ECS events in SQS batches (or one event invoked
//! directly), answered with the messages to deliver again.
//! Input: an SQS event (`aws_lambda_events`' shape; bodies are EventBridge ECS events), or one
//! EventBridge event.

use chrono::Utc;
use serde_json::Value;

use crate::engine::{Engine, EventKind};
use crate::runtime::logging::log_outcome;
use crate::runtime::FunctionError;

/// ECS events for `function`: an SQS batch (as the template delivers them) or one
/// EventBridge event (a direct invoke). A batch answers the messages to deliver again:
/// those whose work failed for a passing reason. An event that can never succeed (not
/// an ECS event, a cluster not managed here) is logged with what is wrong and dropped,
/// so it does not loop.
pub async fn ecs_events<E, S>(
    engine: &Engine<E, S>,
    function: &'static str,
    accept: EventKind,
    payload: Value,
    request_id: &str,
) -> Result<Value, FunctionError>
where
    E: crate::ecs::Ecs,
    S: crate::store::Store,
{
    let Some(messages) = crate::sqs::messages(&payload) else {
        let outcome = engine
            .on_event(payload, accept, Utc::now(), request_id)
            .await?;
        log_outcome(function, &outcome);
        return Ok(serde_json::to_value(outcome)?);
    };
    let mut ids = Vec::with_capacity(messages.len());
    let mut events = Vec::with_capacity(messages.len());
    for message in messages {
        match message.body {
            Ok(event) => {
                ids.push(message.message_id);
                events.push(event);
            }
            Err(problem) => tracing::error!(
                function,
                message_id = %message.message_id,
                error_type = "InvalidEvent",
                error = %problem,
                "dropped a message that is not an event"
            ),
        }
    }
    let batch = engine
        .on_events(events, accept, Utc::now(), request_id)
        .await;
    for outcome in &batch.outcomes {
        log_outcome(function, outcome);
    }
    let mut retry = Vec::new();
    for failure in batch.failures {
        let error = FunctionError::from(failure.error);
        let retryable = matches!(&error, FunctionError::Engine(e) if e.is_retryable());
        let messages: Vec<&str> = failure
            .positions
            .iter()
            .filter_map(|p| ids.get(*p).map(String::as_str))
            .collect();
        tracing::error!(
            function,
            error_type = error.error_type(),
            error = %error,
            retry = retryable,
            messages = ?messages,
            "events failed"
        );
        if retryable {
            retry.extend(messages.into_iter().map(str::to_string));
        }
    }
    Ok(crate::sqs::batch_response(&retry))
}

pub async fn instance_event<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    ecs_events(
        engine,
        "instance-events",
        EventKind::Instance,
        payload,
        &request_id,
    )
    .await
}

pub async fn task_event<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    ecs_events(engine, "task-events", EventKind::Task, payload, &request_id).await
}
