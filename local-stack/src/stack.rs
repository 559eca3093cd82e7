//! The local stack: the ECS cluster model over HTTP, DynamoDB from moto, the real function
//! binaries under `cargo lambda watch`, and a pump that moves the model's clock with the
//! wall clock and delivers each event the model emits to the function that template.yaml's
//! rules would deliver it to.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ecs_daemons::events::{
    DAEMON_DEPLOYMENT_STATE_CHANGE, DAEMON_SERVICE_ACTION, INSTANCE_STATE_CHANGE, TASK_STATE_CHANGE,
};
use ecs_daemons_sim::cluster_model::{cluster_arn, ClusterModel, ModelConfig, REGION};
use serde_json::{json, Value};

use crate::lambda::{LambdaEmulator, LambdaError};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("serving the ECS model: {0}")]
    Serve(#[source] std::io::Error),
    #[error("creating the table in DynamoDB at {endpoint}: {message}")]
    Table { endpoint: String, message: String },
    #[error(transparent)]
    Lambda(#[from] LambdaError),
    #[error("waited {seconds} s for {what}; last seen: {last}")]
    Timeout {
        what: String,
        seconds: u64,
        last: String,
    },
    #[error("{0}")]
    Check(String),
}

pub struct StackConfig {
    /// Managed clusters, by name (the model creates them; MANAGED_CLUSTERS names them by ARN
    /// as template.yaml does).
    pub clusters: Vec<String>,
    pub table: String,
    /// DynamoDB endpoint (moto), e.g. `http://127.0.0.1:5000`.
    pub dynamodb_endpoint: String,
    pub model: ModelConfig,
    /// Where the build and `cargo lambda watch` write (functions log there too).
    pub log: PathBuf,
}

/// A model quick enough for a scenario in real time: tasks start, turn healthy and stop
/// within a second.
pub fn quick_model() -> ModelConfig {
    ModelConfig {
        start_latency: chrono::Duration::seconds(1),
        health_grace: chrono::Duration::seconds(1),
        stop_latency: chrono::Duration::seconds(1),
        native: ecs_daemons_sim::cluster_model::NativeKnobs {
            drain_time: chrono::Duration::seconds(1),
            replace_time: chrono::Duration::seconds(1),
            delete_time: chrono::Duration::seconds(1),
            ..Default::default()
        },
        // The DAEMON scheduler looks within a second or two (its default is tens of seconds).
        services: ecs_daemons_sim::cluster_model::ServiceKnobs {
            reaction: chrono::Duration::milliseconds(500),
            reaction_spread: chrono::Duration::seconds(1),
            ..Default::default()
        },
        ..ModelConfig::default()
    }
}

/// One batch of events delivered as the rules and queues of template.yaml deliver them.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub function: &'static str,
    pub detail_type: String,
    pub events: usize,
    /// The function's last answer, or why the batch still failed after the redeliveries.
    pub result: Result<Value, String>,
}

/// What the functions talk to: the ECS model served over HTTP, the table in DynamoDB, and
/// the environment that points a function at both.
pub struct Backends {
    pub model: Arc<ClusterModel>,
    pub ecs_endpoint: String,
    pub environment: Vec<(String, String)>,
    pub managed_cluster_arns: Vec<String>,
    server: tokio::task::JoinHandle<()>,
}

impl Backends {
    pub async fn start(config: &StackConfig) -> Result<Self, StackError> {
        if config.clusters.is_empty() {
            return Err(StackError::Config("no managed cluster".into()));
        }
        // The functions decide by the wall clock; the model's clock follows it.
        let model = Arc::new(ClusterModel::new(ModelConfig {
            start_at: Utc::now(),
            ..config.model.clone()
        }));
        let (address, server) = crate::ecs_server::serve(model.clone())
            .await
            .map_err(StackError::Serve)?;
        let ecs_endpoint = format!("http://{address}");
        create_table(&config.dynamodb_endpoint, &config.table).await?;
        let managed_cluster_arns: Vec<String> =
            config.clusters.iter().map(|c| cluster_arn(c)).collect();
        let environment: Vec<(String, String)> = [
            ("TABLE_NAME", config.table.clone()),
            ("MANAGED_CLUSTERS", managed_cluster_arns.join(",")),
            ("METRICS_NAMESPACE", "ecs-daemons-local".into()),
            ("AWS_ENDPOINT_URL_ECS", ecs_endpoint.clone()),
            (
                "AWS_ENDPOINT_URL_DYNAMODB",
                config.dynamodb_endpoint.clone(),
            ),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", "local-stack".into()),
            ("AWS_SECRET_ACCESS_KEY", "local-stack".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(Self {
            model,
            ecs_endpoint,
            environment,
            managed_cluster_arns,
            server,
        })
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub struct LocalStack {
    pub model: Arc<ClusterModel>,
    pub ecs_endpoint: String,
    lambda: LambdaEmulator,
    managed_cluster_arns: Vec<String>,
    _backends: Backends,
}

/// Receives of a message before the queue gives up on it (a shorter redrive than the
/// template's five, to keep a failing local run short).
const RECEIVES: usize = 3;
/// The event functions' SQS batch size in template.yaml.
const BATCH_SIZE: usize = 100;

impl LocalStack {
    pub async fn start(workspace: &Path, config: StackConfig) -> Result<Self, StackError> {
        let backends = Backends::start(&config).await?;
        let lambda = LambdaEmulator::start(workspace, &backends.environment, &config.log).await?;
        Ok(Self {
            model: backends.model.clone(),
            ecs_endpoint: backends.ecs_endpoint.clone(),
            lambda,
            managed_cluster_arns: backends.managed_cluster_arns.clone(),
            _backends: backends,
        })
    }

    /// Where `cargo lambda watch` serves the Lambda Invoke API (`127.0.0.1:PORT`): the
    /// functions by their binary names, for a client that invokes them itself.
    pub fn lambda_address(&self) -> &str {
        self.lambda.address()
    }

    /// A manual invoke (deploy, rollback, status, coverage-check). A deploy or rollback that
    /// recorded a rollout is followed by the coverage-check its record's insert starts through
    /// the table's stream (template.yaml, `RolloutRecorded`).
    pub async fn invoke(&self, function: &str, payload: Value) -> Result<Value, LambdaError> {
        let answer = self.lambda.invoke(function, &payload).await?;
        if let Some(key) = recorded_rollout(function, &answer) {
            let batch = ecs_daemons::runtime::stream_batch_of_inserts(&[key]);
            self.lambda.invoke("coverage-check", &batch).await?;
        }
        Ok(answer)
    }

    /// Brings the model's clock up to the wall clock and delivers the events that are due to
    /// the function the rules name, through its queue: SQS batches of up to 100, the
    /// messages the function names in `batchItemFailures` delivered again.
    pub async fn pump(&self) -> Vec<Delivery> {
        let lag = Utc::now() - self.model.now();
        if lag > chrono::Duration::zero() {
            self.model.advance(lag);
        }
        let mut queues: Vec<(&'static str, String, Vec<Value>)> = Vec::new();
        for event in self.model.take_due_events() {
            let Some((function, detail_type)) = self.route(&event) else {
                continue;
            };
            match queues.iter_mut().find(|(f, _, _)| *f == function) {
                Some((_, _, events)) => events.push(event),
                None => queues.push((function, detail_type, vec![event])),
            }
        }
        let mut deliveries = Vec::new();
        for (function, detail_type, events) in queues {
            for batch in events.chunks(BATCH_SIZE) {
                deliveries.push(Delivery {
                    function,
                    detail_type: detail_type.clone(),
                    events: batch.len(),
                    result: self.deliver(function, batch.to_vec()).await,
                });
            }
        }
        deliveries
    }

    async fn deliver(&self, function: &str, mut batch: Vec<Value>) -> Result<Value, String> {
        let mut last = Err(String::new());
        for _ in 0..RECEIVES {
            let answer = self
                .lambda
                .invoke(function, &ecs_daemons::sqs::batch_of(&batch))
                .await
                .map_err(|e| e.to_string());
            let retry: Vec<String> = match &answer {
                Ok(answer) => answer["batchItemFailures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                    .collect(),
                Err(_) => vec![],
            };
            let failed = answer.is_err() || !retry.is_empty();
            last = answer;
            if !failed {
                return last;
            }
            if !retry.is_empty() {
                batch.retain(|event| {
                    ecs_daemons::sqs::message_id(event).is_some_and(|id| retry.contains(&id))
                });
                last = Err(format!("messages to deliver again: {retry:?}"));
            }
        }
        last
    }

    /// The function an EventBridge rule of template.yaml sends this event to, if any.
    fn route(&self, event: &Value) -> Option<(&'static str, String)> {
        if event["source"] != "aws.ecs" {
            return None;
        }
        let cluster = event["detail"]["clusterArn"].as_str()?;
        if !self.managed_cluster_arns.iter().any(|c| c == cluster) {
            return None;
        }
        let detail_type = event["detail-type"].as_str()?;
        let function = match detail_type {
            INSTANCE_STATE_CHANGE => "instance-events",
            // The daemon events' rule feeds the task-events queue too (template.yaml).
            TASK_STATE_CHANGE | DAEMON_SERVICE_ACTION | DAEMON_DEPLOYMENT_STATE_CHANGE => {
                "task-events"
            }
            _ => return None,
        };
        Some((function, detail_type.to_string()))
    }

    /// The schedule's work: a full reconcile of every managed cluster. (Invoked as `{}`:
    /// a "Scheduled Event" payload keeps reconciling up to 55 s inside one invocation.)
    pub async fn coverage_check(&self) -> Result<Value, LambdaError> {
        self.lambda.invoke("coverage-check", &json!({})).await
    }

    /// Pumps events, runs the schedule every `schedule_every`, and after each round reads
    /// `probe` and asks `check` about it, until it answers `Ok(true)`; `Ok(false)` waits on,
    /// `Err(seen)` says what was seen (and is reported if time runs out).
    pub async fn wait_until<P, Fut, F>(
        &self,
        what: &str,
        timeout: Duration,
        schedule_every: Duration,
        mut probe: P,
        mut check: F,
    ) -> Result<Vec<Delivery>, StackError>
    where
        P: FnMut() -> Fut,
        Fut: Future<Output = Result<Value, String>>,
        F: FnMut(&Value) -> Result<bool, String>,
    {
        let started = tokio::time::Instant::now();
        let mut last_schedule = started;
        let mut deliveries = Vec::new();
        let mut schedule_failure = None;
        loop {
            deliveries.extend(self.pump().await);
            if last_schedule.elapsed() >= schedule_every {
                last_schedule = tokio::time::Instant::now();
                schedule_failure = self.coverage_check().await.err().map(|e| e.to_string());
            }
            let mut last_seen = match probe().await.and_then(|seen| check(&seen)) {
                Ok(true) => return Ok(deliveries),
                Ok(false) => "the condition does not hold yet".to_string(),
                Err(seen) => seen,
            };
            if started.elapsed() > timeout {
                if let Some(failure) = schedule_failure {
                    last_seen = format!("{last_seen}; the last coverage-check failed: {failure}");
                }
                return Err(StackError::Timeout {
                    what: what.into(),
                    seconds: timeout.as_secs(),
                    last: last_seen,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn create_table(endpoint: &str, table: &str) -> Result<(), StackError> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local-stack",
            "local-stack",
            None,
            None,
            "local-stack",
        ))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    ecs_daemons::store::create_table(&client, table)
        .await
        .map_err(|error| StackError::Table {
            endpoint: endpoint.into(),
            message: error.to_string(),
        })
}

/// The key of the rollout record a deploy or rollback answer says it left to the
/// coverage-check.
fn recorded_rollout(function: &str, answer: &Value) -> Option<ecs_daemons::store::ItemKey> {
    if !matches!(function, "deploy" | "rollback") || answer.get("firstReconcileBy").is_none() {
        return None;
    }
    let rollout = answer.get("rollout")?;
    let text = |field: &str| rollout.get(field)?.as_str();
    Some(ecs_daemons::store::ItemKey::rollout(
        text("cluster")?,
        text("daemon")?,
        text("id")?,
    ))
}
