//! Benchmarks on the ECS cluster model, in simulated time (figures, never timed tests).
//! Prints one JSON line per figure, then a table.
//!
//! `cargo run --release -p ecs-daemons-demo --bin bench`

use chrono::Duration;
use ecs_daemons::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState};
use ecs_daemons::simulation::Harness;
use ecs_daemons::store::{Rollout, Store, Versioned};

const CLUSTER: &str = "bench";
const SCHEDULE_SECONDS: i64 = 60;

struct Figure {
    name: &'static str,
    value: f64,
    parameters: String,
}

async fn rollout_figures(
    instances: usize,
    percent: u32,
    start_seconds: i64,
    min_healthy: u32,
) -> Vec<Figure> {
    let config = ModelConfig {
        seed: 42,
        start_latency: Duration::seconds(start_seconds),
        health_grace: Duration::seconds(10),
        stop_latency: Duration::seconds(3),
        // The controller does not pace its calls yet (the SDK retries throttling in AWS; the
        // model has no SDK): measured without limits, the peak rates are reported instead.
        rate_limits: false,
        ..ModelConfig::default()
    };
    let mut harness = Harness::new(CLUSTER, &["general"], config);
    let v1 = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    let v2 = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    let rollout = RolloutConfig {
        max_parallel: Amount::Percent(percent),
        min_healthy_seconds: min_healthy,
        failure_threshold: Amount::Percent(10),
        ..RolloutConfig::default()
    };
    let request = |td: &str| DeployRequest {
        rollout: Some(rollout.clone()),
        ..DeployRequest::new(CLUSTER, "agent", td, &["general"], 0)
    };
    harness.deploy(request(&v1)).await.expect("first deploy");
    harness
        .run_scheduled(Duration::seconds(300), SCHEDULE_SECONDS)
        .await;

    let calls_before = harness.model.call_count();
    let started = harness.model.now();
    harness.deploy(request(&v2)).await.expect("update deploy");
    let mut finished = None;
    while finished.is_none() && harness.model.now() - started < Duration::hours(3) {
        harness
            .run_scheduled(Duration::seconds(1), SCHEDULE_SECONDS)
            .await;
        let records: Vec<Versioned<Rollout>> =
            harness.store.query(CLUSTER, "agent").await.expect("query");
        let done = records.iter().find(|r| {
            r.record.to_task_definition == v2 && r.record.state == RolloutState::Succeeded
        });
        finished = done.and_then(|r| r.record.finished_at);
    }
    let finished = finished.expect("the rollout finished within three simulated hours");
    let wall = (finished - started).num_seconds() as f64;
    let batches = instances.div_ceil(Amount::Percent(percent).of(instances)) as f64;
    let ideal = batches * (start_seconds as f64 + min_healthy as f64);
    let calls = harness.model.calls()[calls_before..].to_vec();
    let per_second = |modify: bool| {
        let mut counts = std::collections::BTreeMap::<i64, u32>::new();
        for call in calls.iter().filter(|c| c.modify == modify) {
            *counts.entry(call.at.timestamp()).or_default() += 1;
        }
        counts.values().copied().max().unwrap_or(0) as f64
    };
    let throttled = calls.iter().filter(|c| c.throttled).count() as f64;
    let parameters = format!(
        "\"instances\": {instances}, \"maxParallel\": \"{percent}%\", \"startSeconds\": {start_seconds}, \"minHealthySeconds\": {min_healthy}"
    );
    vec![
        Figure {
            name: "rollout_wall_seconds",
            value: wall,
            parameters: parameters.clone(),
        },
        Figure {
            name: "rollout_ideal_seconds",
            value: ideal,
            parameters: parameters.clone(),
        },
        Figure {
            name: "rollout_wall_over_ideal",
            value: wall / ideal,
            parameters: parameters.clone(),
        },
        Figure {
            name: "rollout_ecs_calls_per_instance",
            value: calls.len() as f64 / instances as f64,
            parameters: parameters.clone(),
        },
        Figure {
            name: "rollout_api_modify_peak_per_s",
            value: per_second(true),
            parameters: parameters.clone(),
        },
        Figure {
            name: "rollout_api_read_peak_per_s",
            value: per_second(false),
            parameters: parameters.clone(),
        },
        Figure {
            name: "rollout_throttled_calls",
            value: throttled,
            parameters,
        },
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let figures = rollout_figures(1000, 10, 20, 30).await;
    for figure in &figures {
        println!(
            "{{\"figure\": \"{}\", \"value\": {:.3}, {}}}",
            figure.name, figure.value, figure.parameters
        );
    }
    println!();
    println!("{:<34} {:>12}", "figure", "value");
    for figure in &figures {
        println!("{:<34} {:>12.3}", figure.name, figure.value);
    }
}
