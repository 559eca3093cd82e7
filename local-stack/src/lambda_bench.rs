//! Lambda figures of the release function binaries: size, zip size, process start to ready
//! for the first event, and peak RSS while handling a real event against the local backends
//! (the ECS model over HTTP, DynamoDB in moto). Each binary runs as Lambda runs it, against a
//! one-event runtime API on loopback. Each figure also has a floor measured in the same run:
//! lambda_runtime's hello world ([`HELLO`]), built with the same profile and started the same
//! way, so the ratios hold on any machine where the milliseconds do not.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ecs_daemons::events::INSTANCE_STATE_CHANGE;
use ecs_daemons_sim::cluster_model::TaskDefinitionModel;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::lambda::FUNCTIONS;
use crate::moto::MotoServer;
use crate::runtime_api::FakeRuntime;
use crate::stack::{quick_model, Backends, StackConfig, StackError};

const CLUSTER: &str = "bench";
const PROVIDER: &str = "asg";
/// Starts measured per function (the median is reported).
const START_RUNS: usize = 5;
/// The floor: `local-stack/hello-lambda`, which echoes its event.
pub const HELLO: &str = "hello-lambda";

#[derive(Clone, Debug)]
pub struct LambdaFigures {
    pub function: &'static str,
    pub binary_bytes: u64,
    pub zip_bytes: u64,
    /// Median of [`START_RUNS`]: spawn to the first poll of the runtime API.
    pub start_ms: f64,
    /// Peak RSS (VmHWM) after handling one event, where one was handled.
    pub peak_rss_mb: Option<f64>,
    /// What the handled event was.
    pub handled: Option<&'static str>,
}

fn spawn_error(what: &str) -> impl FnOnce(std::io::Error) -> StackError + '_ {
    move |source| StackError::Config(format!("{what}: {source}"))
}

/// `cargo lambda build --release` of every function, as a binary and as a zip.
async fn build(workspace: &Path, log: &Path) -> Result<PathBuf, StackError> {
    let tools = workspace.join(".tools");
    let cargo_lambda = tools.join("venv-local/bin/cargo-lambda");
    if !cargo_lambda.exists() {
        return Err(StackError::Config(format!(
            "{} is missing: run bash scripts/setup.sh first",
            cargo_lambda.display()
        )));
    }
    let path = format!(
        "{}:{}",
        tools.join("venv-local/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for format in ["binary", "zip"] {
        let output = crate::append_log(log).map_err(StackError::Serve)?;
        let mut command = Command::new(&cargo_lambda);
        command
            .current_dir(workspace)
            .args(["lambda", "build", "--release", "--output-format", format])
            .env("PATH", &path)
            .env("ZIG_GLOBAL_CACHE_DIR", tools.join("zig-cache"))
            .env("CARGO_ZIGBUILD_CACHE_DIR", tools.join("zigbuild-cache"))
            .stdout(output.try_clone().map_err(StackError::Serve)?)
            .stderr(output);
        for function in FUNCTIONS.iter().chain([&HELLO]) {
            command.args(["-p", function]);
        }
        let status = command
            .status()
            .await
            .map_err(spawn_error("cargo lambda build"))?;
        if !status.success() {
            return Err(StackError::Config(format!(
                "cargo lambda build --release failed (see {})",
                log.display()
            )));
        }
    }
    Ok(workspace.join("target/lambda"))
}

struct Run {
    ready: Duration,
    answer: Option<Result<Value, String>>,
    peak_rss_kb: Option<u64>,
}

/// Peak resident set of a live process, from /proc (Linux).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

async fn run(
    binary: &Path,
    function: &str,
    environment: &[(String, String)],
    event: Option<Value>,
    log: &Path,
) -> Result<Run, StackError> {
    let arn = format!("arn:aws:lambda:us-east-1:111122223333:function:{function}");
    let handles_event = event.is_some();
    let runtime = FakeRuntime::start(event, &arn)
        .await
        .map_err(StackError::Serve)?;
    let output = crate::append_log(log).map_err(StackError::Serve)?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/ecs-daemons/bench/{function}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .stdin(Stdio::null())
        .stdout(output.try_clone().map_err(StackError::Serve)?)
        .stderr(output)
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error("starting a function binary"))?;
    let ready = runtime
        .first_poll(Duration::from_secs(20))
        .await
        .ok_or_else(|| {
            StackError::Check(format!(
                "{function} never asked for an event (see {})",
                log.display()
            ))
        })?
        .duration_since(started);
    let mut answer = None;
    let mut peak = None;
    if handles_event {
        answer = runtime
            .answer(Duration::from_secs(60))
            .await
            .map(|(answer, _)| answer);
        peak = child.id().and_then(peak_rss_kb);
    }
    let _ = child.kill().await;
    Ok(Run {
        ready,
        answer,
        peak_rss_kb: peak,
    })
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The functions' figures and the floor's, from one run.
#[derive(Clone, Debug)]
pub struct LambdaMeasurement {
    pub functions: Vec<LambdaFigures>,
    /// [`HELLO`]'s start and its peak RSS after echoing an event.
    pub hello: LambdaFigures,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn measure(workspace: &Path, log: &Path) -> Result<LambdaMeasurement, StackError> {
    let lambda_dir = build(workspace, log).await?;
    let moto = MotoServer::start(workspace, &workspace.join("target/bench-moto.log")).await?;
    let backends = Backends::start(&StackConfig {
        clusters: vec![CLUSTER.into()],
        table: "ecs-daemons-bench".into(),
        dynamodb_endpoint: moto.endpoint.clone(),
        model: quick_model(),
        log: log.to_path_buf(),
    })
    .await?;
    let model = &backends.model;
    model.create_cluster(CLUSTER, &[PROVIDER]);
    let agent = model.register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    for _ in 0..2 {
        model.add_instance(CLUSTER, PROVIDER, 2048, 4096);
    }
    model.advance(chrono::Duration::seconds(5));
    model.take_due_events();

    // Starts interleaved round by round (the floor first in each), so a change in the
    // machine's load moves every binary's median alike.
    let binaries: Vec<&'static str> = std::iter::once(HELLO)
        .chain(FUNCTIONS.iter().copied())
        .collect();
    let mut starts = vec![Vec::new(); binaries.len()];
    for _ in 0..START_RUNS {
        for (function, starts) in binaries.iter().zip(&mut starts) {
            let binary = lambda_dir.join(function).join("bootstrap");
            let run = run(&binary, function, &backends.environment, None, log).await?;
            starts.push(run.ready.as_secs_f64() * 1000.0);
        }
    }
    let mut figures: Vec<LambdaFigures> = binaries
        .iter()
        .zip(starts)
        .map(|(function, starts)| LambdaFigures {
            function,
            binary_bytes: file_size(&lambda_dir.join(function).join("bootstrap")),
            zip_bytes: file_size(&lambda_dir.join(function).join("bootstrap.zip")),
            start_ms: median(starts),
            peak_rss_mb: None,
            handled: None,
        })
        .collect();

    let bench = Bench {
        lambda_dir: &lambda_dir,
        backends: &backends,
        log,
    };
    // deploy: declares the daemon (validation reads ECS, writes the table, starts copies).
    let deploy = json!({"cluster": CLUSTER, "daemon": "agent", "taskDefinition": agent,
                        "capacityProviders": [PROVIDER]});
    let created = |answer: &Value| answer["recorded"] == "created";
    // The floor echoes the same request: its answer is the request itself.
    let echoed = deploy.clone();
    bench
        .handle(
            HELLO,
            deploy.clone(),
            "an echo of the deploy request",
            |answer: &Value| *answer == echoed,
            &mut figures,
        )
        .await?;
    bench
        .handle(
            "deploy",
            deploy,
            "a deploy of a new daemon on 2 instances",
            created,
            &mut figures,
        )
        .await?;
    // instance-events: a new instance turns ACTIVE and gets its daemon.
    let joined = model.add_instance(CLUSTER, PROVIDER, 2048, 4096);
    let mut active = None;
    for _ in 0..30 {
        model.advance(chrono::Duration::seconds(1));
        active = model.take_due_events().into_iter().find(|event| {
            event["detail-type"] == INSTANCE_STATE_CHANGE
                && event["detail"]["containerInstanceArn"] == joined.as_str()
                && event["detail"]["status"] == "ACTIVE"
        });
        if active.is_some() {
            break;
        }
    }
    let event =
        active.ok_or_else(|| StackError::Check("the new instance never turned ACTIVE".into()))?;
    let started = |answer: &Value| answer["started"].as_array().is_some_and(|s| !s.is_empty());
    bench
        .handle(
            "instance-events",
            event,
            "the ACTIVE event of a new instance",
            started,
            &mut figures,
        )
        .await?;
    drop(moto);
    let hello = figures.remove(0);
    Ok(LambdaMeasurement {
        functions: figures,
        hello,
    })
}

/// Where the binaries are and what they run against.
struct Bench<'a> {
    lambda_dir: &'a Path,
    backends: &'a Backends,
    log: &'a Path,
}

impl Bench<'_> {
    /// Runs `function` on `event`, checks its answer did `what`, and records its peak RSS.
    async fn handle(
        &self,
        function: &'static str,
        event: Value,
        what: &'static str,
        expected: impl Fn(&Value) -> bool,
        figures: &mut [LambdaFigures],
    ) -> Result<(), StackError> {
        let binary = self.lambda_dir.join(function).join("bootstrap");
        let run = run(
            &binary,
            function,
            &self.backends.environment,
            Some(event),
            self.log,
        )
        .await?;
        match run.answer {
            Some(Ok(answer)) if expected(&answer) => {}
            Some(Ok(answer)) => {
                return Err(StackError::Check(format!(
                    "{function} handled {what} but did not do it: {answer}"
                )));
            }
            Some(Err(error)) => {
                return Err(StackError::Check(format!("{function} failed: {error}")));
            }
            None => return Err(StackError::Check(format!("{function} never answered"))),
        }
        if let Some(figure) = figures.iter_mut().find(|f| f.function == function) {
            figure.peak_rss_mb = run.peak_rss_kb.map(|kb| kb as f64 / 1024.0);
            figure.handled = Some(what);
        }
        Ok(())
    }
}
