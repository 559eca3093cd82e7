//! The `ecs-daemons` CLI: what an operator does with ecs-daemons (deploy, roll back, pause,
//! watch, wait), through the deploy, rollback and status functions' invoke API. Every
//! decision is a pure function here; `main` only wires the AWS clients in.

pub mod args;
pub mod error;
pub mod functions;
pub mod payloads;
pub mod render;
pub mod run;
pub mod watch;
