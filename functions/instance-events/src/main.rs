//! ECS Container Instance State Change → the instance the event is about.
//! The control loop (next issue) reconciles that instance; for now the handler
//! validates the event and reports what it says.

use ecs_daemons::events::parse_instance_event;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let event = parse_instance_event(event.payload)?;
    let detail = &event.detail;
    tracing::info!(
        event_id = %event.id,
        cluster = detail.cluster_name(),
        instance = detail.instance_id(),
        status = %detail.status,
        version = detail.version,
        "container instance state change"
    );
    Ok(json!({
        "eventId": event.id,
        "cluster": detail.cluster_name(),
        "instance": detail.instance_id(),
        "status": detail.status,
        "agentConnected": detail.agent_connected,
        "version": detail.version,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    ecs_daemons::telemetry::init_logging();
    lambda_runtime::run(service_fn(handle)).await
}
