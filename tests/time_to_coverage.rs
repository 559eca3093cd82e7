//! Time to coverage: every instance that joins gets its registration-to-RUNNING and
//! registration-to-ready times recorded once, published, and summarised by status.

use chrono::Duration;
use ecs_daemons::deploy::{status, DeployRequest, StatusRequest};
use ecs_daemons::metrics::{outcome_lines, TIME_TO_COVERAGE, TIME_TO_DAEMON_RUNNING};
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";

#[tokio::test]
async fn a_hundred_instances_joining_at_once_are_covered_within_the_start_latency() {
    let mut harness = Harness::new(
        CLUSTER,
        &["general"],
        ModelConfig {
            start_latency: Duration::seconds(10),
            rate_limits: true,
            ..ModelConfig::default()
        },
    );
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 512, 512));
    harness
        .deploy(DeployRequest::new(
            CLUSTER,
            "agent",
            &agent,
            &["general"],
            0,
        ))
        .await
        .unwrap();
    for _ in 0..100 {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    let seen = harness.run_scheduled(Duration::seconds(90), 60).await;
    let joined: Vec<_> = seen
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .flat_map(|o| o.coverage_times.iter())
        .collect();
    assert_eq!(joined.len(), 100, "each join recorded once");
    let answer = status(
        &harness.engine,
        StatusRequest {
            cluster: CLUSTER.into(),
            daemon: None,
        },
        harness.model.now(),
    )
    .await
    .unwrap();
    let summary = answer.time_to_coverage;
    assert_eq!(summary.covered.count, 100);
    let p99 = summary.covered.p99.unwrap();
    println!("time to coverage: {summary:?}");
    assert!(p99 >= 10.0, "at least the start latency: {p99}");
    assert!(p99 <= 12.0, "within 1.2 × the start latency: {p99}");
    assert!(summary.ready.p50.unwrap() >= summary.covered.p50.unwrap());
    assert_eq!(summary.per_daemon["agent"].count, 100);

    // Published as embedded-metric values.
    let outcome = seen
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .find(|o| !o.coverage_times.is_empty())
        .unwrap();
    let lines = outcome_lines("ecs-daemons", "task-events", outcome, harness.model.now());
    assert!(lines
        .iter()
        .any(|l| l[TIME_TO_COVERAGE].as_f64().is_some_and(|v| v >= 10.0)));
    assert!(lines
        .iter()
        .any(|l| l.get(TIME_TO_DAEMON_RUNNING).is_some() && l["Daemon"] == "agent"));

    // A copy that dies and is restarted later is not a second join.
    let victim = harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .find(|t| t.group == "daemon:agent")
        .unwrap();
    harness.model.crash_task(CLUSTER, &victim.id);
    let again = harness.run_scheduled(Duration::seconds(120), 60).await;
    assert!(again
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .all(|o| o.coverage_times.is_empty()));
}
