//! The hand-written CloudWatch adapter against moto over HTTP: the SigV4-signed Query form,
//! DescribeAlarms' XML answer (metric and composite alarms, unknown names left out), and a
//! deploy's `rollout.alarms` check through it.

mod common;

use ecs_daemons::alarms::{AlarmValue, Alarms, CloudWatchAlarms};

fn param(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

/// PutMetricAlarm through the adapter's own signed Query call.
async fn put_metric_alarm(
    cloudwatch: &CloudWatchAlarms,
    name: &str,
    period: u32,
    evaluations: u32,
) {
    let form = [
        param("AlarmName", name),
        param("MetricName", "Errors"),
        param("Namespace", "ecs-daemons/test"),
        param("Statistic", "Sum"),
        param("Period", &period.to_string()),
        param("EvaluationPeriods", &evaluations.to_string()),
        param("Threshold", "5"),
        param("ComparisonOperator", "GreaterThanThreshold"),
    ];
    cloudwatch.query("PutMetricAlarm", &form).await.unwrap();
}

#[tokio::test]
async fn describe_alarms_reads_each_named_alarms_state_and_window() {
    let config = common::sdk_config().await;
    let cloudwatch = CloudWatchAlarms::from_config(&config).expect("a region and credentials");
    let errors = common::unique("agent errors/5xx");
    let latency = common::unique("checkout-p99");
    put_metric_alarm(&cloudwatch, &errors, 60, 3).await;
    put_metric_alarm(&cloudwatch, &latency, 300, 2).await;
    cloudwatch
        .query(
            "SetAlarmState",
            &[
                param("AlarmName", &errors),
                param("StateValue", "ALARM"),
                param("StateReason", "Threshold Crossed: 7 > 5 & rising"),
            ],
        )
        .await
        .unwrap();

    let missing = common::unique("never-created");
    let names = vec![errors.clone(), latency.clone(), missing];
    let mut states = cloudwatch.describe_alarms(&names).await.unwrap();
    states.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(states.len(), 2, "an unknown name is left out: {states:?}");
    let by_name = |name: &str| states.iter().find(|s| s.name == name).unwrap().clone();
    let firing = by_name(&errors);
    assert_eq!(firing.value, AlarmValue::Alarm);
    assert_eq!(firing.reason, "Threshold Crossed: 7 > 5 & rising");
    assert_eq!(
        (firing.period_seconds, firing.evaluation_periods),
        (Some(60), Some(3))
    );
    let quiet = by_name(&latency);
    assert_ne!(quiet.value, AlarmValue::Alarm);
    assert_eq!(
        ecs_daemons::alarms::derived_bake_seconds(&states),
        600,
        "the bake derived from what CloudWatch answered"
    );
}

#[tokio::test]
async fn an_invalid_call_is_an_error_that_says_what_cloudwatch_said() {
    let config = common::sdk_config().await;
    let cloudwatch = CloudWatchAlarms::from_config(&config).unwrap();
    let error = cloudwatch
        .query(
            "SetAlarmState",
            &[
                param("AlarmName", &common::unique("absent")),
                param("StateValue", "ALARM"),
                param("StateReason", "x"),
            ],
        )
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(error.to_string().contains("SetAlarmState"), "{error}");
}
