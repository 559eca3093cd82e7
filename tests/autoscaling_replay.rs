//! The Auto Scaling adapter against the SDK's own replay client (moto has no
//! CompleteLifecycleAction): the requests as the Query protocol sends them, and the
//! documented XML answers, errors included.

use std::time::Duration;

use aws_sdk_autoscaling::config::retry::RetryConfig;
use aws_sdk_autoscaling::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use ecs_daemons::autoscaling::{
    AutoScaling, AutoScalingErrorKind, LifecycleAction, SdkAutoScaling,
};

const NS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

fn answer(status: u16, body: String) -> ReplayEvent {
    ReplayEvent::new(
        http::Request::builder()
            .uri("https://autoscaling.us-east-1.amazonaws.com/")
            .body(SdkBody::empty())
            .unwrap(),
        http::Response::builder()
            .status(status)
            .header("content-type", "text/xml")
            .body(SdkBody::from(body))
            .unwrap(),
    )
}

fn ok(operation: &str) -> ReplayEvent {
    answer(
        200,
        format!(
            r#"<{operation}Response xmlns="{NS}"><{operation}Result/><ResponseMetadata><RequestId>7c6e177f-f082-11e1-ac58-3714bEXAMPLE</RequestId></ResponseMetadata></{operation}Response>"#
        ),
    )
}

fn error(status: u16, code: &str, message: &str) -> ReplayEvent {
    answer(
        status,
        format!(
            r#"<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>7c6e177f-f082-11e1-ac58-3714bEXAMPLE</RequestId></ErrorResponse>"#
        ),
    )
}

fn replay(events: Vec<ReplayEvent>) -> (SdkAutoScaling, StaticReplayClient) {
    let http_client = StaticReplayClient::new(events);
    let config = aws_sdk_autoscaling::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "replay"))
        .http_client(http_client.clone())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    (
        SdkAutoScaling::new(aws_sdk_autoscaling::Client::from_conf(config)),
        http_client,
    )
}

/// The form fields of each request, decoded.
fn forms(client: &StaticReplayClient) -> Vec<Vec<(String, String)>> {
    client
        .actual_requests()
        .map(|request| {
            let body = std::str::from_utf8(request.body().bytes().expect("in-memory body"))
                .unwrap()
                .to_string();
            body.split('&')
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(key), decode(value))
                })
                .collect()
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn action() -> LifecycleAction {
    LifecycleAction {
        group: "asg general".into(),
        hook: "ecs-daemons-drain".into(),
        token: Some("87654321-4321-4321-4321-210987654321".into()),
        ec2_instance_id: "i-0a1b2c3d4e5f60718".into(),
    }
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn complete_sends_continue_for_the_group_hook_token_and_instance() {
    let (autoscaling, client) = replay(vec![ok("CompleteLifecycleAction")]);
    autoscaling
        .complete_lifecycle_action(&action())
        .await
        .unwrap();
    let sent = forms(&client);
    assert_eq!(sent.len(), 1);
    let form = &sent[0];
    assert_eq!(field(form, "Action"), Some("CompleteLifecycleAction"));
    assert_eq!(field(form, "Version"), Some("2011-01-01"));
    assert_eq!(field(form, "AutoScalingGroupName"), Some("asg general"));
    assert_eq!(field(form, "LifecycleHookName"), Some("ecs-daemons-drain"));
    assert_eq!(
        field(form, "LifecycleActionToken"),
        Some("87654321-4321-4321-4321-210987654321")
    );
    assert_eq!(field(form, "InstanceId"), Some("i-0a1b2c3d4e5f60718"));
    assert_eq!(field(form, "LifecycleActionResult"), Some("CONTINUE"));
}

#[tokio::test]
async fn heartbeat_names_the_same_action() {
    let (autoscaling, client) = replay(vec![ok("RecordLifecycleActionHeartbeat")]);
    autoscaling
        .record_lifecycle_action_heartbeat(&action())
        .await
        .unwrap();
    let form = &forms(&client)[0];
    assert_eq!(
        field(form, "Action"),
        Some("RecordLifecycleActionHeartbeat")
    );
    assert_eq!(field(form, "AutoScalingGroupName"), Some("asg general"));
    assert_eq!(field(form, "LifecycleHookName"), Some("ecs-daemons-drain"));
    assert_eq!(
        field(form, "LifecycleActionToken"),
        Some("87654321-4321-4321-4321-210987654321")
    );
    assert_eq!(field(form, "InstanceId"), Some("i-0a1b2c3d4e5f60718"));
    assert_eq!(field(form, "LifecycleActionResult"), None);
}

#[tokio::test]
async fn a_stale_or_completed_action_is_told_apart_from_failures() {
    let (autoscaling, _) = replay(vec![error(
        400,
        "ValidationError",
        "No active Lifecycle Action found with token 87654321-4321-4321-4321-210987654321",
    )]);
    let stale = autoscaling
        .complete_lifecycle_action(&action())
        .await
        .unwrap_err();
    assert_eq!(stale.kind, AutoScalingErrorKind::NoActiveAction, "{stale}");
    assert!(!stale.is_retryable());

    // Throttling is retried by the SDK, then reported as retryable.
    let (autoscaling, client) = replay(vec![
        error(400, "Throttling", "Rate exceeded"),
        error(400, "Throttling", "Rate exceeded"),
        error(400, "Throttling", "Rate exceeded"),
    ]);
    let throttled = autoscaling
        .record_lifecycle_action_heartbeat(&action())
        .await
        .unwrap_err();
    assert_eq!(
        throttled.kind,
        AutoScalingErrorKind::Throttled,
        "{throttled}"
    );
    assert!(throttled.is_retryable());
    assert_eq!(client.actual_requests().count(), 3, "retried by the SDK");

    let (autoscaling, _) = replay(vec![error(
        403,
        "AccessDenied",
        "User is not authorized to perform: autoscaling:CompleteLifecycleAction",
    )]);
    let denied = autoscaling
        .complete_lifecycle_action(&action())
        .await
        .unwrap_err();
    assert_eq!(denied.kind, AutoScalingErrorKind::AccessDenied, "{denied}");
    assert!(denied.to_string().contains("CompleteLifecycleAction"));

    let (autoscaling, _) = replay(vec![error(
        400,
        "ValidationError",
        "1 validation error detected: Value at 'lifecycleActionToken' failed to satisfy constraint",
    )]);
    let invalid = autoscaling
        .complete_lifecycle_action(&action())
        .await
        .unwrap_err();
    assert_eq!(invalid.kind, AutoScalingErrorKind::Invalid, "{invalid}");
}

/// One group of a `DescribeAutoScalingGroups` answer, as the API reference documents it.
fn group_xml(name: &str, instances: &[(&str, &str)]) -> String {
    let members: String = instances
        .iter()
        .map(|(id, state)| {
            format!(
                "<member><InstanceId>{id}</InstanceId><InstanceType>m6i.large</InstanceType><AvailabilityZone>us-east-1a</AvailabilityZone><LifecycleState>{state}</LifecycleState><HealthStatus>Healthy</HealthStatus><ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>"
            )
        })
        .collect();
    format!(
        "<member><AutoScalingGroupName>{name}</AutoScalingGroupName><AutoScalingGroupARN>arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:4e1ad2d3-5e7b-4a3b-8c2f-1f0b2d3c4e5f:autoScalingGroupName/{name}</AutoScalingGroupARN><MinSize>0</MinSize><MaxSize>10</MaxSize><DesiredCapacity>2</DesiredCapacity><DefaultCooldown>300</DefaultCooldown><AvailabilityZones><member>us-east-1a</member></AvailabilityZones><HealthCheckType>EC2</HealthCheckType><CreatedTime>2026-11-01T10:00:00.000Z</CreatedTime><Instances>{members}</Instances></member>"
    )
}

fn groups_page(groups: &[String], next_token: Option<&str>) -> ReplayEvent {
    let token = next_token.map_or(String::new(), |t| format!("<NextToken>{t}</NextToken>"));
    answer(
        200,
        format!(
            r#"<DescribeAutoScalingGroupsResponse xmlns="{NS}"><DescribeAutoScalingGroupsResult><AutoScalingGroups>{}</AutoScalingGroups>{token}</DescribeAutoScalingGroupsResult><ResponseMetadata><RequestId>7c6e177f-f082-11e1-ac58-3714bEXAMPLE</RequestId></ResponseMetadata></DescribeAutoScalingGroupsResponse>"#,
            groups.concat()
        ),
    )
}

/// The coverage check's safety net for lost lifecycle events: instances of the named groups
/// in `Terminating:Wait`, every page followed, and only those.
#[tokio::test]
async fn waiting_terminations_are_read_from_every_page_of_the_named_groups() {
    let (autoscaling, client) = replay(vec![
        groups_page(
            &[group_xml(
                "asg-general",
                &[("i-0aaa", "InService"), ("i-0bbb", "Terminating:Wait")],
            )],
            Some("page-2"),
        ),
        groups_page(
            &[group_xml(
                "asg-gpu",
                &[
                    ("i-0ccc", "Terminating:Wait"),
                    ("i-0ddd", "Terminating:Proceed"),
                ],
            )],
            None,
        ),
    ]);
    let groups = vec!["asg-general".to_string(), "asg-gpu".to_string()];
    let waiting = autoscaling.waiting_terminations(&groups).await.unwrap();
    let found: Vec<(String, String)> = waiting
        .into_iter()
        .map(|w| (w.group, w.ec2_instance_id))
        .collect();
    assert_eq!(
        found,
        vec![
            ("asg-general".to_string(), "i-0bbb".to_string()),
            ("asg-gpu".to_string(), "i-0ccc".to_string())
        ]
    );
    let sent = forms(&client);
    assert_eq!(sent.len(), 2, "both pages read");
    let field = |form: &Vec<(String, String)>, key: &str| {
        form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    assert_eq!(
        field(&sent[0], "Action").as_deref(),
        Some("DescribeAutoScalingGroups")
    );
    assert_eq!(
        field(&sent[0], "AutoScalingGroupNames.member.1").as_deref(),
        Some("asg-general")
    );
    assert_eq!(
        field(&sent[0], "AutoScalingGroupNames.member.2").as_deref(),
        Some("asg-gpu")
    );
    assert_eq!(field(&sent[1], "NextToken").as_deref(), Some("page-2"));
}

/// An action adopted without its event is completed by instance id: no token is sent.
#[tokio::test]
async fn an_adopted_action_is_completed_by_instance_id() {
    let (autoscaling, client) = replay(vec![ok("CompleteLifecycleAction")]);
    let adopted = LifecycleAction {
        token: None,
        ..action()
    };
    autoscaling
        .complete_lifecycle_action(&adopted)
        .await
        .unwrap();
    let sent = forms(&client);
    assert!(sent[0].iter().all(|(k, _)| k != "LifecycleActionToken"));
    assert!(sent[0]
        .iter()
        .any(|(k, v)| k == "InstanceId" && v == &adopted.ec2_instance_id));
}
