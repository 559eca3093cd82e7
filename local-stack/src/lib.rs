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

use std::path::Path;

/// A loopback port nobody listens on right now (for a child process to bind).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
}

/// The log file, opened for appending (build, emulator and functions share one).
pub fn append_log(log: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
}
