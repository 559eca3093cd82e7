//! The Lambda runtime loop around one handler: the production engine built once per process,
//! one span per invocation, failures logged and answered as diagnostics.

use std::future::Future;

use lambda_runtime::{service_fn, LambdaEvent};
use serde::Serialize;
use serde_json::Value;

use super::{production_engine, FunctionError, InvocationContext, ProductionEngine};

/// Starts the Lambda runtime with a handler over the production engine.
pub async fn serve<F, Fut, T>(
    function: &'static str,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    F: Fn(&'static ProductionEngine, Value, String) -> Fut,
    Fut: Future<Output = Result<T, FunctionError>> + 'static,
    T: Serialize,
{
    crate::telemetry::init_logging();
    let engine: &'static ProductionEngine = Box::leak(Box::new(production_engine(function).await?));
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        let span = InvocationContext::from_payload(&event.payload).span(function, &request_id);
        // Boxed: the engine's nested futures are too deep a type to inline into the runtime's.
        let work: std::pin::Pin<Box<dyn Future<Output = Result<T, FunctionError>>>> = Box::pin(
            tracing::Instrument::instrument(handler(engine, event.payload, request_id.clone()), span.clone()),
        );
        let result = work
            .await
            .and_then(|answer| serde_json::to_value(answer).map_err(FunctionError::from));
        let _entered = span.enter();
        match result {
            Ok(answer) => Ok(answer),
            Err(error) => {
                tracing::error!(function, request_id, error_type = error.error_type(), error = %error, "failed");
                Err(lambda_runtime::Diagnostic::from(error))
            }
        }
    }))
    .await
}
