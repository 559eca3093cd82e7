//! The local stack (design tier 4): the ECS cluster model served over HTTP with the ECS JSON
//! protocol, DynamoDB from moto, the real function binaries under `cargo lambda watch`, and
//! the model's events delivered to them as template.yaml's EventBridge rules would.

pub mod ecs_server;
pub mod http;
pub mod lambda;
pub mod lambda_bench;
pub mod moto;
pub mod runtime_api;
pub mod scenario;
pub mod stack;
