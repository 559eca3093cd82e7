//! The simulated world of ecs-daemons, apart from what runs in AWS: the ECS cluster model
//! (and its Auto Scaling part), the harness that runs the functions against it, the fault
//! campaign, the in-memory store and the store contract every store keeps.

pub mod campaign;
pub mod cluster_model;
pub mod memory_store;
pub mod simulation;
pub mod store_contract;
pub mod wake_queue;

pub use memory_store::MemoryStore;
