//! The CLI end to end on the local stack: the real `ecs-daemons` binary invokes the real
//! functions under `cargo lambda watch` through the Lambda API (`AWS_ENDPOINT_URL_LAMBDA`),
//! the ECS cluster model behind them, DynamoDB from moto; the test plays the schedule and the
//! table's stream (a coverage-check every two seconds) and delivers the model's events.
//! Every command runs once, with its exit code checked: deploy (and its dry run), status,
//! status --watch, rollout wait on a success, on a tripped breaker and at its timeout,
//! pause, resume, promote refused, rollback, undeploy, and a refusal's one-line error.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ecs_daemons_sim::cluster_model::TaskDefinitionModel;
use local_stack::stack::{quick_model, LocalStack, StackConfig};

const CLUSTER: &str = "prod";
const PROVIDER: &str = "asg-general";
const DAEMON: &str = "cwagent";

/// The moto endpoint scripts/test.sh started; only a loopback one.
fn moto() -> String {
    let url = std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the tests through scripts/test.sh, which starts moto",
    );
    assert!(
        url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:"),
        "tests only talk to a loopback moto server, not {url}"
    );
    url
}

struct Cli {
    lambda: String,
}

impl Cli {
    /// Runs `ecs-daemons ARGS` against the local functions.
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-daemons"))
            .args([
                "--deploy-function",
                "deploy",
                "--rollback-function",
                "rollback",
            ])
            .args(["--status-function", "status"])
            .args(args)
            .env("AWS_ENDPOINT_URL_LAMBDA", format!("http://{}", self.lambda))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env_remove("ECS_DAEMONS_STACK")
            .env("USER", "alice")
            .output()
            .await
            .expect("the CLI runs")
    }

    /// Runs it and checks its exit code; answers what it printed.
    async fn expect(&self, code: i32, args: &[&str]) -> String {
        let output = self.run(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(
            output.status.code(),
            Some(code),
            "ecs-daemons {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" ")
        );
        println!(
            "$ ecs-daemons {}  (exit {code})\n{stdout}{stderr}",
            args.join(" ")
        );
        format!("{stdout}{stderr}")
    }
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_against_the_real_functions() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let log = workspace.join("target/local-stack-cli.log");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let stack = Arc::new(
        LocalStack::start(
            &workspace,
            StackConfig {
                clusters: vec![CLUSTER.into()],
                table: format!("cli-{}-{nanos}", std::process::id()),
                dynamodb_endpoint: moto(),
                model: quick_model(),
                log: log.clone(),
            },
        )
        .await
        .unwrap_or_else(|error| panic!("the local stack did not start: {error}")),
    );
    let model = &stack.model;
    model.create_cluster(CLUSTER, &[PROVIDER]);
    for _ in 0..3 {
        model.add_instance(CLUSTER, PROVIDER, 2048, 4096);
    }
    let v1 = model.register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    let v2 = model.register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    // Its image cannot be pulled: every copy fails to start, the breaker trips.
    let bad = model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, 256, 256)
    });

    // The schedule and the stream: a coverage-check every two seconds, events as they fall due.
    let running = Arc::new(AtomicBool::new(true));
    let driver = {
        let (stack, running) = (stack.clone(), running.clone());
        tokio::spawn(async move {
            let mut round = 0u32;
            while running.load(Ordering::Relaxed) {
                stack.pump().await;
                if round.is_multiple_of(8) {
                    let _ = stack.coverage_check().await;
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let cli = Cli {
        lambda: stack.lambda_address().to_string(),
    };
    let target = ["--cluster", CLUSTER, "--daemon", DAEMON];
    let deploy = |revision: &str| {
        let mut args = vec!["deploy", "--cluster", CLUSTER, "--daemon", DAEMON];
        args.extend([
            "--task-definition",
            revision,
            "--capacity-provider",
            PROVIDER,
        ]);
        args.into_iter()
            .map(str::to_string)
            .collect::<Vec<String>>()
    };

    // deploy, then rollout wait on its initial rollout: 0.
    let shown = cli.expect(0, &args(&deploy(&v1))).await;
    assert!(shown.contains("recorded created"), "{shown}");
    let wait = [
        &["rollout", "wait"][..],
        &target,
        &["--interval", "1", "--timeout", "120"],
    ]
    .concat();
    let shown = cli.expect(0, &wait).await;
    assert!(shown.contains("rollout succeeded"), "{shown}");

    // The dry run of an update changes nothing; the update (from a request file) is followed
    // by status --watch to its end.
    let request = workspace.join("target/cli-deploy-request.json");
    std::fs::write(
        &request,
        serde_json::json!({"rollout": {"maxParallel": 1, "minHealthySeconds": 1, "failureThreshold": 1}})
            .to_string(),
    )
    .unwrap();
    let mut dry = deploy(&v2);
    dry.push("--dry-run".into());
    let shown = cli.expect(0, &args(&dry)).await;
    assert!(shown.contains("would record rollout"), "{shown}");
    let mut update = deploy(&v2);
    update.extend(["--file".to_string(), request.display().to_string()]);
    let shown = cli.expect(0, &args(&update)).await;
    assert!(shown.contains("recorded rollout"), "{shown}");
    let watch = ["status", "--cluster", CLUSTER, "--watch", "--interval", "1"];
    let shown = cli.expect(0, &watch).await;
    assert!(
        shown.contains("rollout succeeded") && shown.contains("3/3"),
        "{shown}"
    );

    // A paused rollout stays in progress: rollout wait gives up at its timeout (2); resumed,
    // it ends (0). Promote without a manual canary is refused (3), in one line.
    let mut back_to_v1 = deploy(&v1);
    back_to_v1.extend(["--file".to_string(), request.display().to_string()]);
    cli.expect(0, &args(&back_to_v1)).await;
    let shown = cli
        .expect(
            0,
            &[&["pause"][..], &target, &["--reason", "checking p99"]].concat(),
        )
        .await;
    assert!(shown.contains("recorded paused"), "{shown}");
    let short = [
        &["rollout", "wait"][..],
        &target,
        &["--interval", "1", "--timeout", "3"],
    ]
    .concat();
    let shown = cli.expect(2, &short).await;
    assert!(shown.contains("paused by alice"), "{shown}");
    let shown = cli.expect(3, &[&["promote"][..], &target].concat()).await;
    assert!(shown.starts_with("error: CanaryNotWaiting: "), "{shown}");
    assert_eq!(shown.trim_end().lines().count(), 1, "one line: {shown}");
    cli.expect(0, &[&["resume"][..], &target].concat()).await;
    cli.expect(0, &wait).await;

    // A bad revision: the breaker trips and rolls back; rollout wait says 1.
    let mut broken = deploy(&bad);
    broken.extend(["--file".to_string(), request.display().to_string()]);
    cli.expect(0, &args(&broken)).await;
    let shown = cli.expect(1, &wait).await;
    assert!(shown.contains("did not succeed"), "{shown}");

    // status as a table; --json as the function answers it.
    let shown = cli.expect(0, &["status", "--cluster", CLUSTER]).await;
    assert!(
        shown.contains(DAEMON) && shown.contains(PROVIDER),
        "{shown}"
    );
    let shown = cli
        .expect(0, &["--json", "status", "--cluster", CLUSTER])
        .await;
    let answer: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(answer["cluster"], CLUSTER);

    // rollback, undeploy (its dry run first), and an unknown daemon refused (3).
    cli.expect(0, &wait).await; // the automatic rollback ends first
    let shown = cli
        .expect(
            0,
            &[
                &["rollback"][..],
                &target,
                &["--to-revision", v2.rsplit(':').next().unwrap()],
            ]
            .concat(),
        )
        .await;
    assert!(shown.contains("rollback"), "{shown}");
    cli.expect(0, &wait).await;
    let shown = cli
        .expect(0, &[&["undeploy"][..], &target, &["--dry-run"]].concat())
        .await;
    assert!(shown.contains("would stop 3"), "{shown}");
    let shown = cli.expect(0, &[&["undeploy"][..], &target].concat()).await;
    assert!(shown.contains("recorded undeployed"), "{shown}");
    let shown = cli
        .expect(
            3,
            &["rollback", "--cluster", CLUSTER, "--daemon", "nothing-here"],
        )
        .await;
    assert!(shown.starts_with("error: UnknownDaemon: "), "{shown}");

    running.store(false, Ordering::Relaxed);
    driver.await.unwrap();
}
