//! The floor the function binaries are measured against (`lambda_start_over_hello`,
//! `lambda_rss_over_hello`): lambda_runtime's hello world, which answers each event with the
//! event itself. Built with the same profile and started the same way as the functions.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
