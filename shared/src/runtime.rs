//! Lambda glue shared by every function: configuration from the environment,
//! the production engine (SDK adapters), JSON logs, and one error type whose
//! message tells the caller what to fix.

use std::future::Future;

use chrono::Utc;
use lambda_runtime::{service_fn, LambdaEvent};
use serde::Serialize;
use serde_json::Value;

use crate::deploy::{parse_payload, DeployError, DeployRequest, StatusRequest};
use crate::ecs::SdkEcs;
use crate::engine::{Engine, EngineConfig, EngineError, EventKind, Outcome};
use crate::pacing::{Paced, Pacing, SystemClock};
use crate::store::DynamoStore;

/// The SDK adapters, every ECS call paced to the function's share of ECS's rates.
pub type ProductionEngine = Engine<Paced<SdkEcs, SystemClock>, DynamoStore>;

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("could not encode the answer: {0}")]
    Encode(#[from] serde_json::Error),
}

impl FunctionError {
    /// The `errorType` a caller sees: what kind of mistake or failure, by name.
    pub fn error_type(&self) -> &'static str {
        use crate::deploy::DeployError as D;
        let engine = |error: &EngineError| match error {
            EngineError::Event(_) => "InvalidEvent",
            EngineError::Ecs(_) => "EcsError",
            EngineError::Store(_) => "StoreError",
            EngineError::ClusterNotManaged { .. } => "ClusterNotManaged",
            EngineError::AutoScaling(_) => "AutoScalingError",
            EngineError::NoAutoScaling => "ConfigurationError",
        };
        match self {
            Self::Config(_) => "ConfigurationError",
            Self::Engine(error) => engine(error),
            Self::Encode(_) => "EncodingError",
            Self::Deploy(error) => match error {
                D::InvalidRequest(_) => "InvalidRequest",
                D::TaskDefinitionNotFound(_) => "TaskDefinitionNotFound",
                D::NoExecutionRole(_) => "NoExecutionRole",
                D::ClusterNotFound { .. } => "ClusterNotFound",
                D::CapacityProviderNotInCluster { .. } => "CapacityProviderNotInCluster",
                D::TooLarge(_) => "DaemonTooLarge",
                D::NoGoodRevision { .. } => "NoGoodRevision",
                D::AlreadyOn { .. } => "AlreadyOnRevision",
                D::Conflict { .. } => "Conflict",
                D::UnknownDaemon { .. } => "UnknownDaemon",
                D::Ecs(_) => "EcsError",
                D::Store(_) => "StoreError",
                D::Engine(error) => engine(error),
            },
        }
    }
}

impl From<FunctionError> for lambda_runtime::Diagnostic {
    fn from(error: FunctionError) -> Self {
        Self {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

/// Reads `TABLE_NAME` and `MANAGED_CLUSTERS` (comma-separated), as template.yaml sets them.
pub fn engine_config_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, EngineConfig), FunctionError> {
    let table = lookup("TABLE_NAME")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| FunctionError::Config("TABLE_NAME is not set".into()))?;
    let clusters: Vec<String> = lookup("MANAGED_CLUSTERS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        // Names or ARNs: events name clusters by ARN, invokes by name; both compare by name.
        .map(|c| crate::arn::cluster_name(c).to_string())
        .collect();
    if clusters.is_empty() {
        return Err(FunctionError::Config(
            "MANAGED_CLUSTERS names no cluster".into(),
        ));
    }
    let mut config = EngineConfig {
        clusters,
        ..EngineConfig::default()
    };
    if let Some(marker) = lookup("STARTED_BY").filter(|m| !m.is_empty()) {
        config.started_by = marker;
    }
    config.holds = hold_settings_from(&lookup)?;
    config.terminate_hook = terminate_hook_from(&lookup);
    Ok((table, config))
}

/// `AUTO_SCALING_GROUP_NAMES` (comma-separated, as template.yaml joins them) and
/// `LIFECYCLE_HOOK_NAME`: the hook whose lost events the coverage check adopts.
fn terminate_hook_from(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Option<crate::autoscaling::TerminateHook> {
    let groups: Vec<String> = lookup("AUTO_SCALING_GROUP_NAMES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    if groups.is_empty() {
        return None;
    }
    let name = lookup("LIFECYCLE_HOOK_NAME")
        .filter(|n| !n.trim().is_empty())
        .map_or_else(
            || crate::autoscaling::DEFAULT_HOOK_NAME.to_string(),
            |n| n.trim().to_string(),
        );
    Some(crate::autoscaling::TerminateHook { name, groups })
}

/// `LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS` (the hook's heartbeat timeout) and
/// `DRAIN_LIMIT_SECONDS` (how long a drain may hold a termination), both optional.
fn hold_settings_from(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<crate::holds::HoldSettings, FunctionError> {
    let defaults = crate::holds::HoldSettings::default();
    let seconds =
        |name: &str, default: i64, range: std::ops::RangeInclusive<i64>| match lookup(name)
            .filter(|v| !v.is_empty())
        {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    FunctionError::Config(format!(
                        "{name} must be a whole number of seconds from {} to {}, got {text:?}",
                        range.start(),
                        range.end()
                    ))
                }),
        };
    // Auto Scaling's own bounds: a heartbeat timeout of 30 s to 7200 s, a wait of at most 48 h.
    let timeout = seconds(
        "LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS",
        (defaults.heartbeat_every * 2).num_seconds(),
        30..=7200,
    )?;
    let limit = seconds(
        "DRAIN_LIMIT_SECONDS",
        defaults.limit.num_seconds(),
        60..=172_800,
    )?;
    Ok(crate::holds::HoldSettings::new(
        chrono::Duration::seconds(timeout),
        chrono::Duration::seconds(limit),
    ))
}

/// The engine of one function's process: its pacing share (`Pacing::share`, or the
/// `ECS_*` environment), the SDK clients, the table.
pub async fn production_engine(function: &str) -> Result<ProductionEngine, FunctionError> {
    let (table, mut config) = engine_config_from(|name| std::env::var(name).ok())?;
    // Adopting lost terminations is the schedule's work (it alone may describe the groups);
    // deploy and rollback reconcile too, and must not call what their role does not allow.
    if function != "coverage-check" {
        config.terminate_hook = None;
    }
    let pacing = Pacing::from_env(Pacing::share(function), |name| std::env::var(name).ok())
        .map_err(|error| FunctionError::Config(error.to_string()))?;
    let aws = crate::aws::load_config().await;
    Ok(Engine::new(
        Paced::new(SdkEcs::from_config(&aws), SystemClock::default(), pacing),
        DynamoStore::from_config(&aws, table),
        config,
    )
    .with_autoscaling(std::sync::Arc::new(
        crate::autoscaling::SdkAutoScaling::from_config(&aws),
    )))
}

/// Logs what one engine run saw and did, and publishes its figures as EMF lines.
fn log_outcome(function: &str, outcome: &Outcome) {
    for (daemon, coverage) in &outcome.coverage {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            instance = outcome.instance.as_deref().unwrap_or(""),
            daemon = %daemon,
            targeted = coverage.targeted,
            covered = coverage.covered,
            starting = coverage.starting,
            missing = coverage.missing,
            duplicates = coverage.duplicates,
            crash_looping = coverage.crash_looping,
            "coverage"
        );
    }
    for (daemon, counts) in &outcome.rollouts {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            daemon = %daemon,
            total = counts.total,
            done = counts.done,
            surging = counts.surging,
            settling = counts.settling,
            failures = counts.failures,
            threshold = counts.threshold,
            "rollout progress"
        );
    }
    for joined in &outcome.coverage_times {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            instance = %joined.instance_id,
            covered_seconds = joined.coverage_seconds(),
            ready_seconds = joined.ready_seconds(),
            "time to coverage"
        );
    }
    for report in &outcome.terminations {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            ec2_instance = %report.ec2_instance_id,
            instance = report.instance_id.as_deref().unwrap_or(""),
            group = %report.group,
            action = report.action,
            reason = ?report.reason,
            detail = %report.detail,
            "termination"
        );
    }
    for ended in &outcome.rollouts_ended {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            daemon = %ended.daemon,
            rollout = %ended.id,
            state = ?ended.state,
            reason = ended.reason.as_deref().unwrap_or(""),
            "rollout ended"
        );
    }
    tracing::info!(
        function,
        cluster = %outcome.cluster,
        instance = outcome.instance.as_deref().unwrap_or(""),
        skipped = outcome.skipped.as_deref().unwrap_or(""),
        started = outcome.started.len(),
        start_failures = outcome.start_failures.len(),
        stopped = outcome.stopped.len(),
        ready_set = outcome.ready_set.len(),
        ready_cleared = outcome.ready_cleared.len(),
        rollouts_started = ?outcome.rollouts_started,
        conflicts = outcome.conflicts,
        errors = ?outcome.errors,
        "done"
    );
    crate::metrics::publish(&crate::metrics::outcome_lines(
        metrics_namespace(),
        function,
        outcome,
        Utc::now(),
    ));
}

/// `METRICS_NAMESPACE` (template.yaml sets it), read once.
fn metrics_namespace() -> &'static str {
    static NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAMESPACE.get_or_init(|| {
        std::env::var("METRICS_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| crate::metrics::DEFAULT_NAMESPACE.to_string())
    })
}

/// What an invocation is about, read from its raw payload before any parsing, so that every
/// log line of the invocation (the span's fields) names it even when parsing fails.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InvocationContext {
    pub event_id: Option<String>,
    pub cluster: Option<String>,
    pub instance: Option<String>,
    pub daemon: Option<String>,
    pub rollout: Option<String>,
}

impl InvocationContext {
    pub fn from_payload(payload: &Value) -> Self {
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
        let detail = payload.get("detail");
        let field = |name: &str| text(detail.and_then(|d| d.get(name)).or(payload.get(name)));
        let group_daemon = text(detail.and_then(|d| d.get("group")))
            .and_then(|g| g.strip_prefix("daemon:").map(str::to_string));
        let tag = |key: &str| {
            detail
                .and_then(|d| d.get("tags"))
                .and_then(Value::as_array)
                .and_then(|tags| {
                    tags.iter()
                        .find(|t| t.get("key").and_then(Value::as_str) == Some(key))
                })
                .and_then(|t| text(t.get("value")))
        };
        Self {
            event_id: detail.and(text(payload.get("id"))),
            cluster: field("clusterArn")
                .or_else(|| field("cluster"))
                .map(|c| crate::arn::cluster_name(&c).to_string()),
            instance: field("containerInstanceArn")
                .map(|i| crate::arn::resource_id(&i).to_string()),
            daemon: group_daemon.or_else(|| field("daemon")),
            rollout: tag(crate::engine::ROLLOUT_TAG),
        }
    }

    fn span(&self, function: &str, request_id: &str) -> tracing::Span {
        let shown = |v: &Option<String>| v.clone().unwrap_or_default();
        tracing::info_span!(
            "invocation",
            function,
            request_id,
            event_id = %shown(&self.event_id),
            cluster = %shown(&self.cluster),
            instance = %shown(&self.instance),
            daemon = %shown(&self.daemon),
            rollout = %shown(&self.rollout),
        )
    }
}

/// Starts the Lambda runtime with a handler over the production engine.
pub async fn serve<F, Fut, T>(
    function: &'static str,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    F: Fn(&'static ProductionEngine, Value, String) -> Fut,
    Fut: Future<Output = Result<T, FunctionError>> + 'static,
    T: Serialize,
{
    crate::telemetry::init_logging();
    let engine: &'static ProductionEngine = Box::leak(Box::new(production_engine(function).await?));
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        let span = InvocationContext::from_payload(&event.payload).span(function, &request_id);
        // Boxed: the engine's nested futures are too deep a type to inline into the runtime's.
        let work: std::pin::Pin<Box<dyn Future<Output = Result<T, FunctionError>>>> = Box::pin(
            tracing::Instrument::instrument(handler(engine, event.payload, request_id.clone()), span.clone()),
        );
        let result = work
            .await
            .and_then(|answer| serde_json::to_value(answer).map_err(FunctionError::from));
        let _entered = span.enter();
        match result {
            Ok(answer) => Ok(answer),
            Err(error) => {
                tracing::error!(function, request_id, error_type = error.error_type(), error = %error, "failed");
                Err(lambda_runtime::Diagnostic::from(error))
            }
        }
    }))
    .await
}

/// ECS events for `function`: an SQS batch (as the template delivers them) or one
/// EventBridge event (a direct invoke). A batch answers the messages to deliver again:
/// those whose work failed for a passing reason. An event that can never succeed (not
/// an ECS event, a cluster not managed here) is logged with what is wrong and dropped,
/// so it does not loop.
pub async fn ecs_events<E, S>(
    engine: &Engine<E, S>,
    function: &'static str,
    accept: EventKind,
    payload: Value,
    request_id: &str,
) -> Result<Value, FunctionError>
where
    E: crate::ecs::Ecs,
    S: crate::store::Store,
{
    let Some(messages) = crate::sqs::messages(&payload) else {
        let outcome = engine
            .on_event(payload, accept, Utc::now(), request_id)
            .await?;
        log_outcome(function, &outcome);
        return Ok(serde_json::to_value(outcome)?);
    };
    let mut ids = Vec::with_capacity(messages.len());
    let mut events = Vec::with_capacity(messages.len());
    for message in messages {
        match message.body {
            Ok(event) => {
                ids.push(message.message_id);
                events.push(event);
            }
            Err(problem) => tracing::error!(
                function,
                message_id = %message.message_id,
                error_type = "InvalidEvent",
                error = %problem,
                "dropped a message that is not an event"
            ),
        }
    }
    let batch = engine
        .on_events(events, accept, Utc::now(), request_id)
        .await;
    for outcome in &batch.outcomes {
        log_outcome(function, outcome);
    }
    let mut retry = Vec::new();
    for failure in batch.failures {
        let error = FunctionError::from(failure.error);
        let retryable = matches!(&error, FunctionError::Engine(e) if e.is_retryable());
        let messages: Vec<&str> = failure
            .positions
            .iter()
            .filter_map(|p| ids.get(*p).map(String::as_str))
            .collect();
        tracing::error!(
            function,
            error_type = error.error_type(),
            error = %error,
            retry = retryable,
            messages = ?messages,
            "events failed"
        );
        if retryable {
            retry.extend(messages.into_iter().map(str::to_string));
        }
    }
    Ok(crate::sqs::batch_response(&retry))
}

/// "EC2 Instance-terminate Lifecycle Action" (direct from its EventBridge rule): hold the
/// termination until drain-last is done.
pub async fn lifecycle_hook<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    let answer = engine
        .on_terminate_event(payload, Utc::now(), &request_id)
        .await?;
    // The hold (or the instant CONTINUE) is logged and counted like any outcome's.
    log_outcome(
        "lifecycle-hook",
        &Outcome {
            cluster: answer.cluster.clone().unwrap_or_default(),
            skipped: Some("the termination event itself".into()),
            terminations: answer.terminations.clone(),
            ..Outcome::default()
        },
    );
    if let Some(outcome) = &answer.reconcile {
        log_outcome("lifecycle-hook", outcome);
    }
    Ok(serde_json::to_value(answer)?)
}

pub async fn instance_event<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    ecs_events(
        engine,
        "instance-events",
        EventKind::Instance,
        payload,
        &request_id,
    )
    .await
}

pub async fn task_event<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    ecs_events(engine, "task-events", EventKind::Task, payload, &request_id).await
}

/// A scheduled coverage-check keeps reconciling inside its invocation while timed
/// conditions (minHealthySeconds, restart backoffs) mature within this many seconds of
/// its start, so rollouts and restarts do not wait for the next schedule. (The function's
/// timeout in template.yaml leaves room for it.)
pub const WAKE_WINDOW_SECONDS: i64 = 55;

/// Scheduled (every managed cluster) or manual `{"cluster": …}`.
pub async fn coverage_check<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Vec<Outcome>, FunctionError> {
    let scheduled = payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    let clusters = match payload.get("cluster").and_then(Value::as_str) {
        Some(cluster) => vec![cluster.to_string()],
        None if scheduled || payload.as_object().is_some_and(|o| o.is_empty()) => engine.config.clusters.clone(),
        None => {
            return Err(DeployError::InvalidRequest(
                "coverage-check takes a scheduled event, {} for every managed cluster, or {\"cluster\": \"name\"}".into(),
            )
            .into())
        }
    };
    let window_end = Utc::now() + chrono::Duration::seconds(WAKE_WINDOW_SECONDS);
    loop {
        let mut outcomes = Vec::new();
        for cluster in &clusters {
            let outcome = engine
                .reconcile_cluster(cluster, Utc::now(), &request_id)
                .await?;
            log_outcome("coverage-check", &outcome);
            outcomes.push(outcome);
        }
        let wake = outcomes.iter().filter_map(|o| o.wake_at).min();
        match wake {
            Some(at) if scheduled && at <= window_end => {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            _ => return Ok(outcomes),
        }
    }
}

pub async fn deploy<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    let request: DeployRequest = parse_payload(payload)?;
    if request.dry_run {
        let answer = crate::deploy::deploy_dry_run(engine, request, Utc::now()).await?;
        return Ok(serde_json::to_value(answer)?);
    }
    let answer = crate::deploy::deploy(engine, request, Utc::now(), &request_id).await?;
    log_outcome("deploy", &answer.reconcile);
    Ok(serde_json::to_value(answer)?)
}

pub async fn rollback<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    request_id: String,
) -> Result<Value, FunctionError> {
    let request: crate::deploy::RollbackRequest = parse_payload(payload)?;
    if request.dry_run {
        let answer = crate::deploy::rollback_dry_run(engine, request, Utc::now()).await?;
        return Ok(serde_json::to_value(answer)?);
    }
    let answer = crate::deploy::rollback(engine, request, Utc::now(), &request_id).await?;
    log_outcome("rollback", &answer.reconcile);
    Ok(serde_json::to_value(answer)?)
}

pub async fn status<E: crate::ecs::Ecs, S: crate::store::Store>(
    engine: &Engine<E, S>,
    payload: Value,
    _request_id: String,
) -> Result<Value, FunctionError> {
    let request: StatusRequest = parse_payload(payload)?;
    Ok(serde_json::to_value(
        crate::deploy::status(engine, request, Utc::now()).await?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_comes_from_the_environment() {
        let env = |name: &str| match name {
            "TABLE_NAME" => Some("ecs-daemons".to_string()),
            "MANAGED_CLUSTERS" => {
                Some(" prod, arn:aws:ecs:us-east-1:1:cluster/staging ,".to_string())
            }
            _ => None,
        };
        let (table, config) = engine_config_from(env).unwrap();
        assert_eq!(table, "ecs-daemons");
        assert_eq!(config.clusters, vec!["prod", "staging"]);
        assert_eq!(config.started_by, "ecs-daemons");
        let missing = engine_config_from(|_| None).unwrap_err().to_string();
        assert!(missing.contains("TABLE_NAME"), "{missing}");
        let no_clusters = engine_config_from(|n| (n == "TABLE_NAME").then(|| "t".to_string()))
            .unwrap_err()
            .to_string();
        assert!(no_clusters.contains("MANAGED_CLUSTERS"), "{no_clusters}");
    }

    #[test]
    fn every_log_line_names_what_the_invocation_is_about() {
        let task_event: Value =
            serde_json::from_str(include_str!("../../events/task-running.json")).unwrap();
        let context = InvocationContext::from_payload(&task_event);
        assert_eq!(context.cluster.as_deref(), Some("prod"));
        assert!(context.event_id.is_some(), "{context:?}");
        assert!(
            context
                .instance
                .as_deref()
                .is_some_and(|i| !i.contains(':')),
            "{context:?}"
        );
        assert_eq!(context.daemon.as_deref(), Some("cloudwatch-agent-daemon"));

        let instance_event: Value =
            serde_json::from_str(include_str!("../../events/instance-active.json")).unwrap();
        let context = InvocationContext::from_payload(&instance_event);
        assert_eq!(context.cluster.as_deref(), Some("prod"));
        assert!(
            context.instance.is_some() && context.daemon.is_none(),
            "{context:?}"
        );

        let deploy = serde_json::json!({"cluster": "prod", "daemon": "fluent-bit", "taskDefinition": "fb:3"});
        let context = InvocationContext::from_payload(&deploy);
        assert_eq!(
            context,
            InvocationContext {
                cluster: Some("prod".into()),
                daemon: Some("fluent-bit".into()),
                ..InvocationContext::default()
            }
        );
        // Whatever arrives, reading the context never fails.
        for odd in [
            serde_json::json!(null),
            serde_json::json!([1, 2]),
            serde_json::json!({"detail": 5, "cluster": 7}),
        ] {
            let _ = InvocationContext::from_payload(&odd);
        }
    }

    #[test]
    fn callers_see_what_kind_of_mistake_they_made() {
        let diagnostic =
            lambda_runtime::Diagnostic::from(FunctionError::Deploy(DeployError::UnknownDaemon {
                cluster: "prod".into(),
                daemon: "nobody".into(),
            }));
        assert_eq!(diagnostic.error_type, "UnknownDaemon");
        assert!(
            diagnostic.error_message.contains("nobody"),
            "{}",
            diagnostic.error_message
        );
        let config =
            lambda_runtime::Diagnostic::from(FunctionError::Config("TABLE_NAME is not set".into()));
        assert_eq!(config.error_type, "ConfigurationError");
    }
}
