//! `cost_per_month`: every billable unit ecs-daemons spends, counted on the cluster model and
//! priced at AWS's public us-east-1 list prices. Two cases: 1,000 instances × 3 daemons at
//! rest with application tasks coming and going, for an hour scaled to a month; and one
//! rollout of one daemon across them.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::engine::Outcome;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState};
use ecs_daemons::store::{Store, Versioned};
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::memory_store::RequestUnits;
use ecs_daemons_sim::simulation::{Harness, Invocation};
use serde_json::Value;

use crate::Figure;

const CLUSTER: &str = "cost";
const INSTANCES: usize = 1_000;
const DAEMONS: [&str; 3] = ["cloudwatch-agent", "log-router", "otel-collector"];
/// Application task state changes per hour at rest (the issue's load).
const APPLICATION_CHANGES_PER_HOUR: f64 = 2_000.0;
const HOURS_PER_MONTH: f64 = 730.0;
/// ECS's agent "disconnects and reconnects several times per hour as part of its normal
/// operation" (ECS developer guide, *Amazon ECS container instance state change events*),
/// and each change of `agentConnected` is an instance event. How often and for how long is
/// undocumented: 4 times an hour per instance, 5 s each (knobs; more would cost more).
const AGENT_RECONNECTS_PER_INSTANCE_HOUR: f64 = 4.0;
const AGENT_DISCONNECTED_SECONDS: i64 = 5;

/// AWS's public list prices in us-east-1, as of 2026-11 (free tiers left out: the figure is
/// what the stack costs where they are used up).
pub const PRICES_AS_OF: &str = "2026-11";
/// Lambda, arm64 (template.yaml's default Architecture): per GB-second and per request.
const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
/// SQS standard queues: per request (64 KB each).
const SQS_REQUEST: f64 = 0.40 / 1e6;
/// DynamoDB on-demand: per write and per read request unit.
const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
/// CloudWatch Logs (Standard class): per GB ingested.
const LOGS_GB: f64 = 0.50;
/// CloudWatch: per custom metric (each name × dimension set × values, the first 10,000) per
/// month, and per standard-resolution alarm metric per month.
const METRIC_MONTH: f64 = 0.30;
const ALARM_METRIC_MONTH: f64 = 0.10;

/// What the model does not measure, assumed: each AWS call's round trip from a function
/// (the Lambda duration it bills), the work of an invocation beside its calls, the bytes
/// Lambda writes per invocation (START, END and REPORT lines), and the idle polls of an SQS
/// event source (five pollers, as with MaximumConcurrency set, each a 20 s long poll:
/// Lambda developer guide, *Configuring scaling behavior for SQS event source mappings*).
const CALL_MILLISECONDS: f64 = 25.0;
const INVOCATION_MILLISECONDS: f64 = 5.0;
const PLATFORM_LOG_BYTES: usize = 400;
const IDLE_POLLS_PER_QUEUE_MINUTE: f64 = 5.0 * 3.0;
/// The queues Lambda polls: instance events, task events, wakes.
const POLLED_QUEUES: f64 = 3.0;
/// template.yaml's MemorySize.
const MEMORY_GB: f64 = 0.25;

/// Billable units of a stretch of model time.
#[derive(Clone, Debug, Default)]
struct Units {
    invocations: f64,
    lambda_milliseconds: f64,
    sqs_requests: f64,
    request_units: RequestUnits,
    log_bytes: f64,
    metrics: BTreeSet<String>,
    minutes: f64,
    by_function: std::collections::BTreeMap<&'static str, usize>,
}

impl Units {
    fn lines(&self, scale: f64, alarms: f64) -> Vec<(&'static str, f64, String)> {
        let gb_seconds = self.lambda_milliseconds / 1000.0 * MEMORY_GB * scale;
        let idle_polls = IDLE_POLLS_PER_QUEUE_MINUTE * POLLED_QUEUES * self.minutes * scale;
        let sqs = self.sqs_requests * scale + idle_polls;
        let logs_gb = self.log_bytes * scale / 1e9;
        vec![
            (
                "lambda_requests",
                self.invocations * scale * LAMBDA_REQUEST,
                format!("{:.0} invocations", self.invocations * scale),
            ),
            (
                "lambda_duration",
                gb_seconds * LAMBDA_GB_SECOND,
                format!("{gb_seconds:.0} GB-s"),
            ),
            (
                "sqs",
                sqs * SQS_REQUEST,
                format!("{sqs:.0} requests ({idle_polls:.0} idle polls)"),
            ),
            (
                "dynamodb",
                self.request_units.write * scale * DYNAMODB_WRITE_UNIT
                    + self.request_units.read * scale * DYNAMODB_READ_UNIT,
                format!(
                    "{:.0} WRU, {:.0} RRU",
                    self.request_units.write * scale,
                    self.request_units.read * scale
                ),
            ),
            (
                "logs",
                logs_gb * LOGS_GB,
                format!("{logs_gb:.2} GB ingested"),
            ),
            (
                "custom_metrics",
                self.metrics.len() as f64
                    * METRIC_MONTH
                    * (scale * self.minutes / 60.0 / HOURS_PER_MONTH).min(1.0),
                format!("{} metrics", self.metrics.len()),
            ),
            (
                "alarms",
                alarms
                    * ALARM_METRIC_MONTH
                    * (scale * self.minutes / 60.0 / HOURS_PER_MONTH).min(1.0),
                format!("{alarms:.0} alarm metrics"),
            ),
        ]
    }
}

/// Counts the bytes the functions' JSON log layer writes.
#[derive(Clone, Default)]
struct ByteCounter(Arc<Mutex<usize>>);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ByteCounter {
    type Writer = ByteCounter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What the invocations cost in Lambda time, queue requests, log bytes and metrics.
fn count(invocations: &[Invocation], units: &mut Units, counter: &ByteCounter) {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber =
        tracing_subscriber::registry().with(ecs_daemons::telemetry::json_layer(counter.clone()));
    let _default = tracing::subscriber::set_default(subscriber);
    for invocation in invocations {
        units.invocations += 1.0;
        *units.by_function.entry(invocation.function).or_default() += 1;
        units.lambda_milliseconds += INVOCATION_MILLISECONDS
            + CALL_MILLISECONDS * (invocation.ecs_calls + invocation.store_calls) as f64;
        if !invocation.events.is_empty() {
            // EventBridge's SendMessage per event, then the poller's receive and delete.
            units.sqs_requests += invocation.events.len() as f64 + 2.0;
        }
        let span = ecs_daemons::runtime::InvocationContext::from_payload(&Value::Null)
            .span(invocation.function, "c0ffee00-0000-4000-8000-000000000000");
        let _entered = span.enter();
        units.log_bytes += PLATFORM_LOG_BYTES as f64;
        if let Ok(outcome) = &invocation.result {
            ecs_daemons::runtime::log_lines(invocation.function, outcome);
            emf(invocation.function, outcome, units);
        }
    }
}

/// The EMF lines of one outcome: their bytes, and the metrics CloudWatch makes of them.
fn emf(function: &str, outcome: &Outcome, units: &mut Units) {
    let lines =
        ecs_daemons::metrics::outcome_lines("ecs-daemons", function, outcome, chrono::Utc::now());
    for line in &lines {
        units.log_bytes += line.to_string().len() as f64 + 1.0;
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        for metric in directive["Metrics"].as_array().into_iter().flatten() {
            for set in directive["Dimensions"].as_array().into_iter().flatten() {
                let values: Vec<String> = set
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|name| format!("{name}={}", line[name.as_str().unwrap_or_default()]))
                    .collect();
                units
                    .metrics
                    .insert(format!("{}[{}]", metric["Name"], values.join(",")));
            }
        }
    }
}

/// What the counters said when a measured stretch began.
struct Mark {
    request_units: RequestUnits,
    wakes: u64,
    paced_seconds: f64,
    at: chrono::DateTime<chrono::Utc>,
}

impl Mark {
    /// Marks the start (and empties the log byte counter).
    fn now(harness: &Harness, counter: &ByteCounter) -> Self {
        *counter
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = 0;
        Self {
            request_units: harness.store.request_units(),
            wakes: harness.wakes.sent(),
            paced_seconds: harness.paced_seconds(),
            at: harness.model.now(),
        }
    }

    /// The units spent since the mark by `invocations` and what the counters saw.
    fn units(self, harness: &Harness, invocations: &[Invocation], counter: &ByteCounter) -> Units {
        let mut units = Units::default();
        count(invocations, &mut units, counter);
        let now = harness.store.request_units();
        units.request_units = RequestUnits {
            read: now.read - self.request_units.read,
            write: now.write - self.request_units.write,
        };
        units.sqs_requests += (harness.wakes.sent() - self.wakes) as f64;
        units.lambda_milliseconds += (harness.paced_seconds() - self.paced_seconds) * 1000.0;
        units.minutes = (harness.model.now() - self.at).num_seconds() as f64 / 60.0;
        units.log_bytes += *counter
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) as f64;
        units
    }
}

/// Alarm metrics in template.yaml, as CloudWatch bills them: one per alarm on one metric,
/// one per metric (`MetricStat`) of a metric-math alarm, none for its expressions.
fn template_alarm_metrics() -> f64 {
    alarm_metrics(include_str!("../../template.yaml"))
        .expect("template.yaml parses (tests/template.rs reads it too)") as f64
}

fn alarm_metrics(template: &str) -> Result<usize, serde_yaml::Error> {
    let template: serde_yaml::Value = serde_yaml::from_str(template)?;
    let resources = template["Resources"].as_mapping().into_iter().flatten();
    let metrics = resources
        .map(|(_, resource)| resource)
        .filter(|resource| resource["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|alarm| match alarm["Properties"]["Metrics"].as_sequence() {
            Some(metrics) => metrics
                .iter()
                .filter(|metric| !metric["MetricStat"].is_null())
                .count(),
            None => 1,
        })
        .sum();
    Ok(metrics)
}

/// A settled cluster of 1,000 instances with the three daemons, and the application's task
/// definition.
async fn settled() -> (Harness, String) {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    for _ in 0..INSTANCES {
        harness.model.add_instance(CLUSTER, "general", 8192, 16384);
    }
    for daemon in DAEMONS {
        let revision = harness
            .model
            .register_task_definition(TaskDefinitionModel::new(daemon, 256, 256));
        harness
            .deploy(DeployRequest::new(
                CLUSTER,
                daemon,
                &revision,
                &["general"],
                0,
            ))
            .await
            .expect("deploy");
    }
    harness.run_scheduled(Duration::minutes(15), 60).await;
    let web = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("web", 256, 512));
    (harness, web)
}

/// Runs `seconds`, application tasks starting and stopping at the issue's rate; answers the
/// invocations and the application task state changes made (a start is PENDING and RUNNING).
async fn run_with_applications(
    harness: &mut Harness,
    web: &str,
    seconds: i64,
    seed: u64,
) -> (Vec<Invocation>, usize) {
    let mut rng = ecs_daemons_sim::cluster_model::Rng::new(seed);
    let mut changes = 0;
    let mut running: Vec<String> = Vec::new();
    let mut done = Vec::new();
    // A start is two events (PENDING, RUNNING), a stop one: a change every 1.5 s on average.
    let per_second = APPLICATION_CHANGES_PER_HOUR / 3600.0 / 1.5;
    let instances: Vec<String> = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .map(|instance| instance.arn)
        .collect();
    let reconnects_per_second =
        instances.len() as f64 * AGENT_RECONNECTS_PER_INSTANCE_HOUR / 3600.0;
    let mut disconnected: Vec<(String, i64)> = Vec::new();
    for second in 0..seconds {
        if rng.unit() < per_second {
            if running.len() > 200 && rng.chance(0.5) {
                let task = running.swap_remove(rng.below(running.len() as u64) as usize);
                harness.model.crash_task(CLUSTER, &task);
                changes += 1;
            } else if let Some(task) = harness.model.run_service_task(CLUSTER, "web", web) {
                running.push(task);
                changes += 2;
            }
        }
        disconnected.retain(|(instance, until)| {
            let back = *until <= second;
            if back {
                harness.model.set_agent_connected(CLUSTER, instance, true);
            }
            !back
        });
        let mut due = reconnects_per_second.floor() as usize;
        due += usize::from(rng.unit() < reconnects_per_second.fract());
        for _ in 0..due {
            let instance = &instances[rng.below(instances.len() as u64) as usize];
            if disconnected.iter().all(|(other, _)| other != instance) {
                harness.model.set_agent_connected(CLUSTER, instance, false);
                disconnected.push((instance.clone(), second + AGENT_DISCONNECTED_SECONDS));
            }
        }
        done.extend(harness.run_scheduled(Duration::seconds(1), 60).await);
    }
    for (instance, _) in disconnected {
        harness.model.set_agent_connected(CLUSTER, &instance, true);
    }
    (done, changes)
}

pub async fn cost_figures() -> Vec<Figure> {
    let counter = ByteCounter::default();
    let alarms = template_alarm_metrics();
    let (mut harness, web) = settled().await;

    // At rest: an hour, scaled to a month.
    let mark = Mark::now(&harness, &counter);
    let (invocations, application_changes) =
        run_with_applications(&mut harness, &web, 3600, 7).await;
    let rest = mark.units(&harness, &invocations, &counter);
    let month = HOURS_PER_MONTH * 60.0 / rest.minutes;
    let rest_lines = rest.lines(month, alarms);

    // One rollout of one daemon across every instance.
    let mark = Mark::now(&harness, &counter);
    let started = harness.model.now();
    let next = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMONS[0], 256, 256));
    harness
        .deploy(DeployRequest {
            rollout: Some(RolloutConfig {
                max_parallel: Amount::Percent(10),
                min_healthy_seconds: 30,
                ..RolloutConfig::default()
            }),
            ..DeployRequest::new(CLUSTER, DAEMONS[0], &next, &["general"], 0)
        })
        .await
        .expect("the update deploy");
    let mut invocations = Vec::new();
    loop {
        let (some, _) = run_with_applications(&mut harness, &web, 60, 8).await;
        invocations.extend(some);
        let records: Vec<Versioned<ecs_daemons::rollout::Rollout>> = harness
            .store
            .query(CLUSTER, DAEMONS[0])
            .await
            .expect("query");
        let finished = records.iter().any(|r| {
            r.record.to_task_definition == next && r.record.state == RolloutState::Succeeded
        });
        if finished || harness.model.now() - started > Duration::hours(3) {
            break;
        }
    }
    let mut rollout = mark.units(&harness, &invocations, &counter);
    // A rollout's own metrics and alarms are the month's already: only its usage is its own.
    rollout.metrics.clear();
    let rollout_lines = rollout.lines(1.0, 0.0);

    let total =
        |lines: &[(&str, f64, String)]| lines.iter().map(|(_, dollars, _)| dollars).sum::<f64>();
    let itemised = |lines: &[(&str, f64, String)]| {
        lines
            .iter()
            .map(|(name, dollars, units)| {
                format!("\"{name}\": {{\"dollars\": {dollars:.3}, \"units\": \"{units}\"}}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let prices = format!("\"prices\": \"us-east-1 list prices as of {PRICES_AS_OF}\"");
    vec![
        Figure {
            name: "cost_per_month",
            value: total(&rest_lines),
            parameters: format!(
                "\"case\": \"at rest\", \"instances\": {INSTANCES}, \"daemons\": {}, \"applicationTaskChangesPerHour\": {}, \"invocationsPerHour\": {:?}, {prices}, \"goal\": 5, \"lines\": {{{}}}",
                DAEMONS.len(),
                application_changes,
                rest.by_function,
                itemised(&rest_lines)
            ),
        },
        Figure {
            name: "cost_per_rollout",
            value: total(&rollout_lines),
            parameters: format!(
                "\"case\": \"one rollout of one daemon\", \"instances\": {INSTANCES}, \"maxParallel\": \"10%\", \"minHealthySeconds\": 30, \"minutes\": {:.1}, {prices}, \"lines\": {{{}}}",
                rollout.minutes,
                itemised(&rollout_lines)
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::alarm_metrics;

    #[test]
    fn alarms_are_billed_per_metric_and_math_expressions_are_free() {
        let template = r#"
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Errors:
    Type: AWS::CloudWatch::Alarm
    Properties:
      MetricName: Errors
      Dimensions:
        - Name: FunctionName
          Value: !Ref Function
  Throttles:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Metrics:
        - Id: total
          Expression: SUM(METRICS())
        - Id: first
          MetricStat:
            Metric: {MetricName: Throttles}
        - Id: second
          MetricStat:
            Metric: {MetricName: Throttles}
"#;
        assert_eq!(alarm_metrics(template).expect("parses"), 3);
        assert!(super::template_alarm_metrics() >= 1.0);
    }
}
