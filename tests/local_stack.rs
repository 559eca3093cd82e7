//! End to end on the local stack: the real function binaries under `cargo lambda watch`, the
//! ECS cluster model over HTTP (the unchanged aws-sdk-ecs client talks to it), DynamoDB from
//! moto, and the model's events delivered as template.yaml's rules deliver them. One short
//! scenario: deploy, a new instance, a drain, a rolling update, a rollback; the same on
//! Managed Instances and on DAEMON services (a provider with managed scaling); the final
//! state is read through `status`.

mod common;

use std::path::Path;
use std::time::Instant;

use local_stack::scenario::{self, CLUSTER, DAEMON, MANAGED_DAEMON, SERVICES_DAEMON};
use local_stack::stack::{quick_model, LocalStack, StackConfig};

/// A daemon's rollouts as `status` lists them (the latest, then its history): (kind, target
/// revision, state).
fn rollouts_of(daemon: &serde_json::Value) -> Vec<(String, String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    std::iter::once(&daemon["rollout"])
        .chain(daemon["history"].as_array().expect("history"))
        .map(|r| {
            (
                text(&r["kind"]),
                text(&r["toTaskDefinition"]),
                text(&r["state"]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_scale_out_drain_rollout_and_rollback_through_the_real_functions() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let log = workspace.join("target/local-stack.log");
    let began = Instant::now();
    let stack = LocalStack::start(
        &workspace,
        StackConfig {
            clusters: vec![CLUSTER.into()],
            table: common::unique("local-stack"),
            dynamodb_endpoint: common::endpoint(),
            model: quick_model(),
            log: log.clone(),
        },
    )
    .await
    .unwrap_or_else(|error| panic!("the local stack did not start: {error}"));
    let started = began.elapsed();
    let scenario_began = Instant::now();
    let report = scenario::run(&stack, &mut |line| println!("{line}"))
        .await
        .unwrap_or_else(|error| panic!("{error}\n(functions' logs: {})", log.display()));
    let scenario_took = scenario_began.elapsed();
    println!(
        "local stack: started (build + cargo lambda watch) in {:.1} s; scenario in {:.1} s; {} events delivered",
        started.as_secs_f64(),
        scenario_took.as_secs_f64(),
        report.deliveries
    );

    // Every event went through the real functions without an error.
    assert!(
        report.deliveries >= 20,
        "only {} events delivered",
        report.deliveries
    );
    assert!(
        report.failed_deliveries.is_empty(),
        "{:#?}",
        report.failed_deliveries
    );
    // The final state as `status` tells it.
    let status = &report.final_status;
    assert_eq!(status["cluster"], CLUSTER);
    let daemons = status["daemons"].as_array().expect("daemons");
    assert_eq!(daemons.len(), 3, "{status}");
    let daemon = &daemons[0];
    assert_eq!(daemon["daemon"], DAEMON);
    assert_eq!(
        daemon["taskDefinition"], "cwagent:1",
        "rolled back: {daemon}"
    );
    assert_eq!(daemon["coverage"]["targeted"], 2, "{daemon}");
    assert_eq!(daemon["coverage"]["covered"], 2, "{daemon}");
    assert_eq!(daemon["coverage"]["duplicates"], 0, "{daemon}");
    // `rollout` is the latest (here: the rollback, ended), `history` the ones before it.
    assert_eq!(daemon["rollout"]["state"], "SUCCEEDED", "{daemon}");
    let history = rollouts_of(daemon);
    let succeeded = |kind: &str, to: &str| {
        history
            .iter()
            .any(|(k, t, s)| k == kind && t == to && s == "SUCCEEDED")
    };
    assert!(succeeded("UPDATE", "cwagent:2"), "{history:?}");
    assert!(succeeded("ROLLBACK", "cwagent:1"), "{history:?}");

    // The daemon on Managed Instances, through the same functions: ECS's managed daemon,
    // created, updated and rolled back; its three rollouts in one history.
    let managed = daemons
        .iter()
        .find(|d| d["daemon"] == MANAGED_DAEMON)
        .expect("the Managed Instances daemon in status");
    assert_eq!(
        managed["taskDefinition"],
        serde_json::Value::Null,
        "no EC2 part"
    );
    assert_eq!(
        managed["managed"]["daemonTaskDefinition"], "cwagent-managed:1",
        "{managed}"
    );
    assert_eq!(
        managed["managed"]["deployment"]["status"], "SUCCESSFUL",
        "{managed}"
    );
    let kinds: Vec<(String, String)> = std::iter::once(&managed["rollout"])
        .chain(managed["history"].as_array().expect("history"))
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_string(),
                r["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for kind in ["INITIAL", "UPDATE", "ROLLBACK"] {
        assert!(
            kinds.iter().any(|(k, s)| k == kind && s == "SUCCEEDED"),
            "{kind}: {kinds:?}"
        );
    }

    // The daemon on the provider with managed scaling: copies from its two DAEMON services,
    // updated by service B and rolled back to service A, through the same functions.
    let scaled = daemons
        .iter()
        .find(|d| d["daemon"] == SERVICES_DAEMON)
        .expect("the services daemon in status");
    assert_eq!(scaled["taskDefinition"], "cwagent-scaled:1", "{scaled}");
    assert_eq!(scaled["coverage"]["covered"], 2, "{scaled}");
    assert_eq!(scaled["coverage"]["duplicates"], 0, "{scaled}");
    let services: Vec<(String, String, String)> = scaled["services"]["services"]
        .as_array()
        .expect("services in status")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["taskDefinition"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        services,
        vec![
            (
                "ecs-daemons-cwagent-scaled-a".to_string(),
                "cwagent-scaled:1".to_string(),
                "ACTIVE".to_string()
            ),
            (
                "ecs-daemons-cwagent-scaled-b".to_string(),
                "cwagent-scaled:2".to_string(),
                "ACTIVE".to_string()
            ),
        ]
    );
    let kinds = rollouts_of(scaled);
    for (kind, to) in [
        ("UPDATE", "cwagent-scaled:2"),
        ("ROLLBACK", "cwagent-scaled:1"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, t, s)| k == kind && t == to && s == "SUCCEEDED"),
            "{kind} to {to}: {kinds:?}"
        );
    }
}
