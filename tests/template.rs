//! template.yaml against the code: every function crate is deployed and triggered (or
//! documented as a manual invoke), IAM is least privilege, the table is the one the store
//! expects, and alarms watch metrics the functions really publish.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ecs_daemons::events::{
    DAEMON_DEPLOYMENT_STATE_CHANGE, DAEMON_SERVICE_ACTION, ECS_SOURCE, INSTANCE_STATE_CHANGE,
    TASK_STATE_CHANGE,
};
use ecs_daemons::metrics::METRIC_NAMES;
use ecs_daemons::store::SPECS_BY_CLUSTER_INDEX;
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// YAML to JSON, with CloudFormation's short forms (`!Ref X`, `!GetAtt A.B`, `!Sub …`)
/// turned into their long forms, so that every check below reads one shape.
fn to_json(value: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).expect("a YAML number is a JSON number"),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml::to_string(&other).unwrap().trim().to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let name = tagged.tag.to_string();
            let name = name.trim_start_matches('!');
            let inner = to_json(tagged.value);
            match name {
                "Ref" | "Condition" => json!({ name: inner }),
                "GetAtt" => {
                    let parts = match &inner {
                        Value::String(s) => {
                            let (resource, attribute) =
                                s.split_once('.').expect("!GetAtt Resource.Attribute");
                            json!([resource, attribute])
                        }
                        other => other.clone(),
                    };
                    json!({ "Fn::GetAtt": parts })
                }
                other => json!({ format!("Fn::{other}"): inner }),
            }
        }
    }
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("template.yaml")).expect("template.yaml");
    to_json(serde_yaml::from_str(&text).expect("template.yaml is YAML"))
}

fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    template["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(name, r)| (name.as_str(), r))
        .collect()
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

fn reference(name: &str) -> Value {
    json!({ "Ref": name })
}

/// Function crates under functions/ (their package name is the binary name).
fn function_crates() -> BTreeSet<String> {
    std::fs::read_dir(root().join("functions"))
        .expect("functions/")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            path.join("Cargo.toml")
                .exists()
                .then(|| path.file_name()?.to_str().map(str::to_string))?
        })
        .collect()
}

/// Function resource name → binary name.
fn functions(template: &Value) -> BTreeMap<String, String> {
    resources_of_type(template, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, resource)| {
            assert_eq!(
                resource["Metadata"]["BuildMethod"], "rust-cargolambda",
                "{name} must build with cargo-lambda"
            );
            let binary = resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} names no Binary (CodeUri is the workspace)"));
            (name.to_string(), binary.to_string())
        })
        .collect()
}

/// The part of README.md that documents the manual invokes.
fn readme_manual_invokes() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme
        .find("## Manual invokes")
        .expect("README.md has a '## Manual invokes' section");
    let rest = &readme[start + 3..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_string()
}

#[test]
fn every_function_crate_is_deployed_and_triggered_or_documented_as_manual() {
    let template = template();
    let functions = functions(&template);
    let deployed: BTreeSet<String> = functions.values().cloned().collect();
    assert_eq!(
        deployed,
        function_crates(),
        "template functions vs functions/ crates"
    );
    let manual = readme_manual_invokes();
    // Each event function's queue, fed by one rule per detail-type family it takes (task-events
    // also takes ECS's daemon events: both report copies of daemons).
    let expected_rules = BTreeMap::from([
        ("instance-events", vec![json!([INSTANCE_STATE_CHANGE])]),
        (
            "task-events",
            vec![
                json!([TASK_STATE_CHANGE]),
                json!([DAEMON_SERVICE_ACTION, DAEMON_DEPLOYMENT_STATE_CHANGE]),
            ],
        ),
    ]);
    for (resource, binary) in &functions {
        let properties = &template["Resources"][resource]["Properties"];
        let events = properties["Events"].as_object();
        match events {
            None => assert!(
                manual.contains(&format!("`{binary}`")),
                "{binary} has no trigger and README's Manual invokes does not document it"
            ),
            Some(events) => {
                for (name, event) in events {
                    let p = &event["Properties"];
                    match event["Type"].as_str() {
                        Some("SQS") => {
                            // ECS events reach the function through a queue its rule feeds.
                            let queue = p["Queue"]["Fn::GetAtt"][0]
                                .as_str()
                                .expect("the queue by GetAtt");
                            if queue == "WakeQueue" {
                                check_wake_queue(&template, binary, properties, p);
                                continue;
                            }
                            let redrive =
                                &template["Resources"][queue]["Properties"]["RedrivePolicy"];
                            assert!(
                                redrive["deadLetterTargetArn"].is_object()
                                    && redrive["maxReceiveCount"].as_i64().is_some_and(|n| n <= 10),
                                "{queue}: failed messages end in the dead-letter queue"
                            );
                            let timeout = properties["Timeout"]
                                .as_i64()
                                .or(template["Globals"]["Function"]["Timeout"].as_i64())
                                .unwrap_or(3);
                            let visibility = template["Resources"][queue]["Properties"]
                                ["VisibilityTimeout"]
                                .as_i64()
                                .unwrap_or(30);
                            assert!(
                                visibility >= 6 * timeout,
                                "{queue}: visibility {visibility} s < 6 × timeout {timeout} s"
                            );
                            // A crashed invocation's event markers expire before its messages
                            // come back, and outlive the invocation that wrote them.
                            assert!(
                                visibility > ecs_daemons::engine::EVENT_MARKER_SECONDS
                                    && ecs_daemons::engine::EVENT_MARKER_SECONDS >= timeout,
                                "{queue}: visibility {visibility} s, event markers {} s, timeout {timeout} s",
                                ecs_daemons::engine::EVENT_MARKER_SECONDS
                            );
                            assert!(p["BatchSize"].as_i64().is_some_and(|n| n <= 100));
                            assert_eq!(
                                p["FunctionResponseTypes"],
                                json!(["ReportBatchItemFailures"]),
                                "{resource}: failed events are retried one by one"
                            );
                            assert!(
                                p["ScalingConfig"]["MaximumConcurrency"].is_i64(),
                                "{resource}: bounded concurrency (ECS rate share)"
                            );
                            let rules: Vec<&Value> =
                                resources_of_type(&template, "AWS::Events::Rule")
                                    .into_iter()
                                    .map(|(_, rule)| &rule["Properties"])
                                    .filter(|rule| {
                                        as_list(&rule["Targets"]).iter().any(|target| {
                                            target["Arn"]["Fn::GetAtt"][0].as_str() == Some(queue)
                                        })
                                    })
                                    .collect();
                            let expected = &expected_rules[binary.as_str()];
                            assert_eq!(
                                rules.len(),
                                expected.len(),
                                "{queue}: fed by one rule per kind of event it takes"
                            );
                            let mut patterns = Vec::new();
                            for rule in rules {
                                for target in as_list(&rule["Targets"]) {
                                    assert!(
                                        target["DeadLetterConfig"].is_object()
                                            && target["RetryPolicy"].is_object(),
                                        "{queue}: the rule's target has a retry policy and a dead-letter queue"
                                    );
                                }
                                let pattern = &rule["EventPattern"];
                                assert_eq!(pattern["source"], json!([ECS_SOURCE]));
                                assert_eq!(
                                    pattern["detail"]["clusterArn"],
                                    reference("ClusterArns"),
                                    "{binary}: events of the managed clusters only"
                                );
                                patterns.push(pattern["detail-type"].clone());
                            }
                            patterns.sort_by_key(|p| p.to_string());
                            let mut expected = expected.clone();
                            expected.sort_by_key(|p| p.to_string());
                            assert_eq!(
                                patterns, expected,
                                "{binary} is triggered by the wrong events"
                            );
                        }
                        Some("Schedule") => {
                            assert!(
                                p["DeadLetterConfig"].is_object() && p["RetryPolicy"].is_object(),
                                "{resource}.{name}: a retry policy and a dead-letter queue"
                            );
                            assert_eq!(binary, "coverage-check");
                        }
                        Some("EventBridgeRule") => {
                            // Terminate lifecycle actions of the named groups, straight to the function.
                            assert_eq!(binary, "lifecycle-hook", "{resource}.{name}");
                            assert!(
                                p["DeadLetterConfig"].is_object() && p["RetryPolicy"].is_object(),
                                "{resource}.{name}: a retry policy and a dead-letter queue"
                            );
                            let pattern = &p["Pattern"];
                            assert_eq!(
                                pattern["source"],
                                json!([ecs_daemons::autoscaling::AUTOSCALING_SOURCE])
                            );
                            assert_eq!(
                                pattern["detail-type"],
                                json!([ecs_daemons::autoscaling::TERMINATE_ACTION])
                            );
                            assert_eq!(
                                pattern["detail"]["AutoScalingGroupName"],
                                reference("AutoScalingGroupNames"),
                                "{resource}: the named groups only"
                            );
                        }
                        Some("DynamoDB") => {
                            // New rollout records start their first wave (deploy::ROLLOUT_STARTED_BY).
                            assert_eq!(binary, ecs_daemons::deploy::ROLLOUT_STARTED_BY);
                            assert_eq!(
                                p["Stream"],
                                json!({"Fn::GetAtt": ["Table", "StreamArn"]}),
                                "{resource}.{name}: the table's own stream"
                            );
                            assert!(
                                p["DestinationConfig"].is_null(),
                                "{resource}.{name}: an expired batch loses nothing (the schedule's run starts the rollout); dead-lettered it would fire DeadLetterAlarm"
                            );
                            assert!(
                                p["MaximumRecordAgeInSeconds"].as_i64().is_some_and(|age| age <= 60),
                                "{resource}.{name}: older than the schedule's minute, a record is moot"
                            );
                            let filters =
                                p["FilterCriteria"]["Filters"].as_array().expect("filters");
                            assert_eq!(filters.len(), 1);
                            let pattern: serde_json::Value = serde_json::from_str(
                                filters[0]["Pattern"].as_str().expect("a pattern"),
                            )
                            .expect("the pattern is JSON");
                            assert_eq!(pattern["eventName"], json!(["INSERT"]));
                            assert_eq!(
                                pattern["dynamodb"]["Keys"]["sk"]["S"],
                                json!([{"prefix": ecs_daemons::store::RecordKind::Rollout.prefix()}]),
                                "{resource}.{name}: rollout records only"
                            );
                            let view = &template["Resources"]["Table"]["Properties"]
                                ["StreamSpecification"]["StreamViewType"];
                            assert_eq!(view, "KEYS_ONLY", "the handler reads the keys alone");
                        }
                        other => panic!("{resource}.{name}: unexpected trigger {other:?}"),
                    }
                }
            }
        }
        // Every function can be found for a manual invoke.
        let named = template["Outputs"]
            .as_object()
            .expect("Outputs")
            .values()
            .any(|o| o["Value"] == reference(resource));
        assert!(named, "no Output names {resource}");
    }
    for binary in expected_rules.keys() {
        assert!(deployed.contains(*binary));
    }
}

/// One allowed statement's problems, if any.
fn statement_problems(statement: &Value) -> Vec<String> {
    if statement["Effect"] != "Allow" {
        return Vec::new();
    }
    let actions: Vec<String> = as_list(&statement["Action"])
        .into_iter()
        .map(|a| a.as_str().unwrap_or("<not a string>").to_string())
        .collect();
    let condition = &statement["Condition"];
    let condition_on = |key: &str| -> Option<&Value> {
        condition
            .as_object()?
            .values()
            .find_map(|operator| operator.get(key))
    };
    let mut problems = Vec::new();
    if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
        problems.push("NotAction / NotResource grant too much".into());
    }
    for action in &actions {
        if action.contains('*') {
            problems.push(format!("wildcard action {action}"));
            continue;
        }
        let Some((service, operation)) = action.split_once(':') else {
            problems.push(format!("malformed action {action}"));
            continue;
        };
        let reads = ["Describe", "List", "Get"]
            .iter()
            .any(|p| operation.starts_with(p));
        let own_table = || {
            as_list(&statement["Resource"]).iter().all(|r| {
                **r == json!({"Fn::GetAtt": ["Table", "Arn"]})
                    || r["Fn::Sub"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("${Table.Arn}/index/"))
            })
        };
        // (kind of action, whether its statement keeps it in bounds, what is wrong otherwise)
        let checks: Vec<(bool, String)> = match (service, operation) {
            // Tags: on tasks only as StartTask puts them; on ecs-daemons' own services; on
            // managed daemons (CreateDaemon's tags: no documented ecs:CreateAction).
            ("ecs", "TagResource" | "UntagResource") => {
                let on = |suffix: &str| {
                    statement["Resource"]["Fn::Sub"]
                        .as_str()
                        .is_some_and(|arn| arn.ends_with(suffix))
                };
                vec![(
                    (operation == "TagResource"
                        && condition_on("ecs:CreateAction") == Some(&json!("StartTask")))
                        || on(":service/*/ecs-daemons-*")
                        || (operation == "TagResource" && on(":daemon/*")),
                    format!("{action} beyond StartTask's tags, ecs-daemons' own services and managed daemons"),
                )]
            }
            // ecs-daemons' own services only (`placement::services::SERVICE_NAME_PREFIX`).
            ("ecs", "CreateService" | "UpdateService" | "DeleteService") => vec![
                (
                    condition_on("ecs:cluster") == Some(&reference("ClusterArns")),
                    format!("{action} without the ecs:cluster condition"),
                ),
                (
                    statement["Resource"]["Fn::Sub"]
                        .as_str()
                        .is_some_and(|arn| arn.ends_with(":service/*/ecs-daemons-*")),
                    format!("{action} beyond ecs-daemons' own services"),
                ),
            ],
            ("ecs", _) if !reads => vec![(
                condition_on("ecs:cluster") == Some(&reference("ClusterArns")),
                format!("{action} without the ecs:cluster condition"),
            )],
            ("iam", "PassRole") => vec![
                (
                    statement["Resource"] == reference("DaemonRoleArns"),
                    "iam:PassRole beyond the listed daemon roles".into(),
                ),
                (
                    condition_on("iam:PassedToService") == Some(&json!("ecs-tasks.amazonaws.com")),
                    "iam:PassRole to a service other than ECS tasks".into(),
                ),
            ],
            ("iam", _) => vec![(false, format!("{action}: no IAM action but PassRole"))],
            ("dynamodb", _) => vec![(own_table(), format!("{action} beyond the stack's table"))],
            ("autoscaling", "CompleteLifecycleAction" | "RecordLifecycleActionHeartbeat") => {
                vec![(
                    statement["Resource"] != json!("*")
                        && statement["Resource"]
                            .to_string()
                            .contains(r#"{"Ref":"AutoScalingGroupNames"}"#),
                    format!("{action} beyond the groups named in AutoScalingGroupNames"),
                )]
            }
            // A read; Auto Scaling's Describe actions take no resource-level permissions.
            ("autoscaling", "DescribeAutoScalingGroups") => Vec::new(),
            ("autoscaling", _) => vec![(
                false,
                format!(
                    "{action}: no Auto Scaling action but the two lifecycle calls and the describe"
                ),
            )],
            _ => Vec::new(),
        };
        problems.extend(
            checks
                .into_iter()
                .filter(|(in_bounds, _)| !in_bounds)
                .map(|(_, problem)| problem),
        );
    }
    problems
}

/// Every identity-policy statement in the template, with where it is.
fn identity_statements(template: &Value) -> Vec<(String, Value)> {
    let mut statements = Vec::new();
    let mut add = |place: String, document: &Value| {
        for statement in as_list(&document["Statement"]) {
            statements.push((place.clone(), statement.clone()));
        }
    };
    for (name, resource) in resources_of_type(template, "AWS::IAM::ManagedPolicy")
        .into_iter()
        .chain(resources_of_type(template, "AWS::IAM::Policy"))
    {
        add(name.to_string(), &resource["Properties"]["PolicyDocument"]);
    }
    for (name, resource) in resources_of_type(template, "AWS::IAM::Role") {
        for policy in as_list(&resource["Properties"]["Policies"]) {
            add(name.to_string(), &policy["PolicyDocument"]);
        }
    }
    for (name, resource) in resources_of_type(template, "AWS::Serverless::Function") {
        for policy in as_list(&resource["Properties"]["Policies"]) {
            if policy.get("Statement").is_some() {
                add(name.to_string(), policy);
            }
        }
    }
    statements
}

/// The IAM actions a function's policies allow (each by Ref to the template's own).
fn allowed_actions(
    template: &Value,
    policies: &BTreeMap<&str, &Value>,
    resource: &str,
) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for policy in as_list(&template["Resources"][resource]["Properties"]["Policies"]) {
        let name = policy["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{resource}: policies by Ref to the template's own"));
        let document = &policies
            .get(name)
            .unwrap_or_else(|| panic!("{resource}: {name} is not a managed policy here"))
            ["Properties"]["PolicyDocument"];
        for statement in as_list(&document["Statement"]) {
            for action in as_list(&statement["Action"]) {
                actions.insert(action.as_str().unwrap_or_default().to_string());
            }
        }
    }
    actions
}

#[test]
fn iam_is_least_privilege() {
    let template = template();
    let statements = identity_statements(&template);
    assert!(
        statements.len() >= 5,
        "found {} statements",
        statements.len()
    );
    let problems: Vec<String> = statements
        .iter()
        .flat_map(|(place, s)| {
            statement_problems(s)
                .into_iter()
                .map(move |p| format!("{place}: {p}"))
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // Resource policies (queue, topic) allow no wildcard action either.
    for (name, resource) in resources_of_type(&template, "AWS::SQS::QueuePolicy") {
        for statement in as_list(&resource["Properties"]["PolicyDocument"]["Statement"]) {
            for action in as_list(&statement["Action"]) {
                assert!(
                    !action.as_str().unwrap_or("*").contains('*'),
                    "{name}: {action}"
                );
            }
        }
    }
    // Functions take only the template's own policies (no SAM policy templates, no ARNs of
    // managed policies from elsewhere), and status only reads.
    let policies: BTreeMap<&str, &Value> = resources_of_type(&template, "AWS::IAM::ManagedPolicy")
        .into_iter()
        .collect();
    for (resource, binary) in functions(&template) {
        let actions = allowed_actions(&template, &policies, &resource);
        if binary == "status" {
            let writes: Vec<_> = actions
                .iter()
                .filter(|a| {
                    let operation = a.split_once(':').map_or("", |(_, o)| o);
                    !["Describe", "List", "Get", "Query"]
                        .iter()
                        .any(|p| operation.starts_with(p))
                })
                .collect();
            assert!(writes.is_empty(), "status may only read: {writes:?}");
        } else {
            assert!(
                actions.contains("ecs:StartTask"),
                "{binary} cannot start daemons"
            );
        }
    }
}

#[test]
fn the_policy_check_catches_what_it_must() {
    let bad = [
        json!({"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}),
        json!({"Effect": "Allow", "Action": ["ecs:StopTask"], "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "ecs:StartTask", "Resource": "*",
               "Condition": {"ArnEquals": {"ecs:cluster": "arn:aws:ecs:us-east-1:1:cluster/other"}}}),
        json!({"Effect": "Allow", "Action": "ecs:TagResource", "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "ecs:UntagResource", "Resource": "*",
               "Condition": {"StringEquals": {"ecs:CreateAction": "StartTask"}}}),
        json!({"Effect": "Allow", "Action": "ecs:TagResource",
               "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:service/*/*"}}),
        json!({"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "iam:PassRole", "Resource": {"Ref": "DaemonRoleArns"}}),
        json!({"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "*"}),
        json!({"Effect": "Allow", "NotAction": "s3:GetObject", "Action": "ecs:DescribeTasks", "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "autoscaling:CompleteLifecycleAction", "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "autoscaling:TerminateInstanceInAutoScalingGroup",
               "Resource": {"Ref": "AutoScalingGroupNames"}}),
        json!({"Effect": "Allow", "Action": "ecs:UpdateContainerInstancesState", "Resource": "*"}),
    ];
    for statement in bad {
        assert!(
            !statement_problems(&statement).is_empty(),
            "missed: {statement}"
        );
    }
    let good = json!({"Effect": "Allow", "Action": ["ecs:StopTask", "ecs:DescribeTasks"], "Resource": "*",
                      "Condition": {"ArnEquals": {"ecs:cluster": {"Ref": "ClusterArns"}}}});
    assert_eq!(statement_problems(&good), Vec::<String>::new());
}

#[test]
fn the_table_is_the_one_the_store_expects() {
    let template = template();
    let table = &template["Resources"]["Table"]["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["KeySchema"],
        json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    );
    let index = &table["GlobalSecondaryIndexes"][0];
    assert_eq!(index["IndexName"], SPECS_BY_CLUSTER_INDEX);
    assert_eq!(
        index["KeySchema"],
        json!([{"AttributeName": "specCluster", "KeyType": "HASH"}, {"AttributeName": "pk", "KeyType": "RANGE"}])
    );
    assert_eq!(
        table["TimeToLiveSpecification"],
        json!({"AttributeName": "expiresAt", "Enabled": true})
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(table["SSESpecification"]["SSEEnabled"], true);
    assert_eq!(template["Resources"]["Table"]["DeletionPolicy"], "Retain");
    // The functions find the table and their clusters the way runtime::engine_config_from reads them.
    let environment = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(environment["TABLE_NAME"], reference("Table"));
    assert_eq!(
        environment["MANAGED_CLUSTERS"],
        json!({"Fn::Join": [",", {"Ref": "ClusterArns"}]})
    );
    assert_eq!(
        environment["METRICS_NAMESPACE"],
        reference("MetricNamespace")
    );
}

#[test]
fn alarms_and_dashboard_watch_published_metrics() {
    let template = template();
    let mut watched = BTreeSet::new();
    for (name, alarm) in resources_of_type(&template, "AWS::CloudWatch::Alarm") {
        let properties = &alarm["Properties"];
        if properties["Namespace"] == reference("MetricNamespace") {
            let metric = properties["MetricName"].as_str().unwrap_or_default();
            assert!(
                METRIC_NAMES.contains(&metric),
                "{name} watches {metric}, never published"
            );
            watched.insert(metric.to_string());
        }
        assert!(
            properties["AlarmDescription"]
                .as_str()
                .is_some_and(|d| d.len() > 40),
            "{name} says what to do when it fires"
        );
    }
    for needed in ["InstancesWithoutDaemon", "RolloutsFailed"] {
        assert!(watched.contains(needed), "no alarm on {needed}");
    }
    // The dashboard body is a Sub template; with every ${…} filled in it is JSON.
    let body = &template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0];
    let mut text = body.as_str().expect("dashboard body").to_string();
    while let Some(start) = text.find("${") {
        let end = start + text[start..].find('}').expect("closed ${");
        let name = &text[start + 2..end];
        let filled = if name == "Namespace" { "OWN" } else { "x" };
        text.replace_range(start..=end, filled);
    }
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard body is JSON");
    let mut shown = 0;
    for widget in dashboard["widgets"].as_array().expect("widgets") {
        let mut namespace = String::new();
        for row in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let first = row[0].as_str().unwrap_or_default();
            if first != "." && first != "..." {
                namespace = first.to_string();
            }
            if namespace == "OWN" && first != "..." {
                let metric = row[1].as_str().unwrap_or_default();
                assert!(
                    METRIC_NAMES.contains(&metric),
                    "dashboard shows {metric}, never published"
                );
                shown += 1;
            }
        }
    }
    assert!(
        shown >= 5,
        "the dashboard shows {shown} of the functions' metrics"
    );
}

#[test]
fn the_sample_invokes_in_events_parse_as_the_readme_shows_them() {
    use ecs_daemons::deploy::{parse_payload, DeployRequest, RollbackRequest, StatusRequest};
    let read = |name: &str| -> Value {
        let text = std::fs::read_to_string(root().join("events").join(name))
            .unwrap_or_else(|e| panic!("events/{name}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("events/{name}: {e}"))
    };
    for name in [
        "invoke-deploy.json",
        "invoke-deploy-rollout.json",
        "invoke-deploy-dry-run.json",
        "invoke-deploy-managed-instances.json",
    ] {
        let request: DeployRequest = parse_payload(read(name)).unwrap();
        request.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(request.dry_run, name.contains("dry-run"), "{name}");
    }
    for name in ["invoke-rollback.json", "invoke-rollback-to-revision.json"] {
        let _: RollbackRequest = parse_payload(read(name)).unwrap();
    }
    for (name, verb) in [
        ("invoke-pause.json", ecs_daemons::deploy::ControlVerb::Pause),
        (
            "invoke-promote.json",
            ecs_daemons::deploy::ControlVerb::Promote,
        ),
    ] {
        let payload = read(name);
        assert!(ecs_daemons::deploy::is_rollout_control(&payload), "{name}");
        let request: ecs_daemons::deploy::RolloutControlRequest = parse_payload(payload).unwrap();
        assert_eq!(request.control, verb, "{name}");
    }
    let undeploy = read("invoke-undeploy.json");
    assert!(ecs_daemons::deploy::is_undeploy(&undeploy));
    let _: ecs_daemons::deploy::UndeployRequest = parse_payload(undeploy).unwrap();
    let _: StatusRequest = parse_payload(read("invoke-status.json")).unwrap();
    let _: StatusRequest = parse_payload(read("invoke-coverage-check.json")).unwrap();
    assert_eq!(
        read("scheduled-event.json")["detail-type"],
        "Scheduled Event"
    );
    // What the table's stream hands the coverage-check for a new rollout record.
    let recorded = read("rollout-recorded.json");
    assert_eq!(
        ecs_daemons::runtime::rollout_stream_clusters(&recorded, &["prod".to_string()]),
        Some(vec!["prod".to_string()])
    );
    // What the wake queue hands it: a wake of a managed cluster, reconciled when due.
    let wake = read("wake.json");
    let messages = ecs_daemons::sqs::messages(&wake).expect("an SQS batch");
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-27T23:00:35Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let plan = ecs_daemons::runtime::plan_wakes(messages, &["prod".to_string()], at);
    assert_eq!(plan.reconcile.keys().collect::<Vec<_>>(), vec!["prod"]);
    assert!(plan.dropped.is_empty() && plan.send_again.is_empty());
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in [
        "invoke-deploy.json",
        "invoke-deploy-rollout.json",
        "invoke-deploy-dry-run.json",
        "invoke-deploy-managed-instances.json",
        "invoke-rollback.json",
        "invoke-undeploy.json",
        "invoke-pause.json",
        "invoke-promote.json",
        "invoke-status.json",
        "invoke-coverage-check.json",
    ] {
        assert!(
            readme.contains(&format!("events/{name}")),
            "README does not show events/{name}"
        );
    }
}

#[test]
fn the_task_rule_lets_through_what_events_task_rule_passes_says() {
    let template = template();
    let pattern = &template["Resources"]["TaskStateChangeRule"]["Properties"]["EventPattern"];
    let mut expected: Vec<Value> = ecs_daemons::events::TASK_RULE_GROUP_PREFIXES
        .iter()
        .map(|prefix| json!({"group": [{"prefix": prefix}]}))
        .collect();
    expected.push(json!({"lastStatus": ecs_daemons::events::TASK_RULE_LAST_STATUSES}));
    assert_eq!(pattern["detail"]["$or"], json!(expected));
}

/// The wake queue: received by the coverage-check alone, at once, one cluster per message;
/// sent to by exactly the functions that book wakes, whose environment names it.
fn check_wake_queue(template: &Value, binary: &str, function: &Value, source: &Value) {
    assert_eq!(
        binary, "coverage-check",
        "only the coverage-check receives wakes"
    );
    let queue = &template["Resources"]["WakeQueue"]["Properties"];
    let timeout = function["Timeout"].as_i64().unwrap_or(3);
    let visibility = queue["VisibilityTimeout"].as_i64().unwrap_or(30);
    assert!(
        visibility >= 6 * timeout,
        "WakeQueue: visibility {visibility} s < 6 × timeout {timeout} s"
    );
    assert_eq!(
        source["MaximumBatchingWindowInSeconds"],
        json!(0),
        "a wake is delivered when due, not batched"
    );
    assert_eq!(
        source["BatchSize"].as_u64(),
        Some(ecs_daemons_sim::simulation::WAKE_BATCH as u64),
        "the harness delivers wakes as the template does"
    );
    assert_eq!(
        source["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(
        template["Globals"]["Function"]["Environment"]["Variables"]
            [ecs_daemons::wake::QUEUE_URL_VARIABLE],
        json!({"Ref": "WakeQueue"})
    );
    for (resource, binary) in functions(template) {
        let policies = as_list(&template["Resources"][&resource]["Properties"]["Policies"]);
        let sends = policies
            .iter()
            .any(|p| **p == json!({"Ref": "WakeQueueSendPolicy"}));
        assert_eq!(
            sends,
            ecs_daemons::runtime::books_wakes(&binary),
            "{binary}: may send wakes exactly when it books them"
        );
    }
}

#[test]
fn every_skipped_security_check_says_why() {
    // checkov runs in scripts/test.sh and must pass; a check it may skip is named in the
    // resource's Metadata with the reason (how the risk is covered, or why it does not apply).
    let template = template();
    let mut skipped = 0;
    for (name, resource) in template["Resources"].as_object().unwrap() {
        let Some(skips) = resource["Metadata"]["checkov"]["skip"].as_array() else {
            continue;
        };
        for skip in skips {
            let id = skip["id"].as_str().unwrap_or_default();
            let comment = skip["comment"].as_str().unwrap_or_default();
            assert!(
                id.starts_with("CKV_"),
                "{name}: a skip without a check id: {skip}"
            );
            assert!(
                comment.split_whitespace().count() >= 12,
                "{name}: {id} is skipped without a reason that explains it: {comment:?}"
            );
            skipped += 1;
        }
    }
    assert!(skipped > 0, "the template names its skipped checks");
}

#[test]
fn the_lifecycle_rule_takes_only_our_hooks_events() {
    let template = template();
    let rules: Vec<Value> = resources_of_type(&template, "AWS::Serverless::Function")
        .into_iter()
        .flat_map(|(_, f)| {
            f["Properties"]["Events"]
                .as_object()
                .into_iter()
                .flat_map(|events| events.values().cloned())
        })
        .filter(|e| {
            e["Properties"]["Pattern"]["detail-type"]
                .to_string()
                .contains("EC2 Instance-terminate Lifecycle Action")
        })
        .collect();
    assert_eq!(rules.len(), 1, "one rule for terminate lifecycle actions");
    let detail = &rules[0]["Properties"]["Pattern"]["detail"];
    assert_eq!(
        detail["LifecycleHookName"],
        json!([reference("LifecycleHookName")]),
        "a group's other terminate hooks must not reach lifecycle-hook: {detail}"
    );
    assert_eq!(
        template["Globals"]["Function"]["Environment"]["Variables"]["LIFECYCLE_HOOK_NAME"],
        reference("LifecycleHookName"),
        "the functions filter on the same name"
    );
}

/// The IAM actions one API operation needs.
fn iam_actions(operation: &str) -> Vec<String> {
    let ecs = |o: &str| format!("ecs:{o}");
    match operation {
        // "Permissions for Put, Update, Delete, and Get actions are governed by the
        // permissions used for the underlying PutItem, UpdateItem, DeleteItem, and GetItem
        // operations" (DynamoDB developer guide, Using IAM with DynamoDB transactions).
        "TransactWriteItems" => vec!["dynamodb:PutItem".into()],
        "GetItem" | "PutItem" | "DeleteItem" | "Query" => vec![format!("dynamodb:{operation}")],
        "CompleteLifecycleAction"
        | "RecordLifecycleActionHeartbeat"
        | "DescribeAutoScalingGroups" => {
            vec![format!("autoscaling:{operation}")]
        }
        "DescribeAlarms" => vec![format!("cloudwatch:{operation}")],
        "SendMessage" => vec![format!("sqs:{operation}")],
        // Copies are tagged at launch, which needs ecs:TagResource too (ECS developer guide,
        // "Grant permission to tag resources on creation").
        "StartTask" => vec![ecs("StartTask"), ecs("TagResource")],
        "CreateService" => vec![ecs("CreateService"), ecs("TagResource")],
        "CreateDaemon" => vec![ecs("CreateDaemon"), ecs("TagResource")],
        other => vec![ecs(other)],
    }
}

#[tokio::test]
async fn every_call_a_function_makes_is_allowed_by_its_policies() {
    use chrono::Duration;
    use ecs_daemons::deploy::{DeployRequest, RollbackRequest, StatusRequest};
    use ecs_daemons::holds::HoldSettings;
    use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
    use ecs_daemons_sim::simulation::Harness;

    // Every function runs its paths against the model; the harness records each AWS
    // operation per function, so the list comes from the code, not from a hand-kept table.
    let cluster = "prod";
    let mut harness = Harness::new(
        cluster,
        &["general", "mi-general", "scaled"],
        ModelConfig::default(),
    );
    harness.model.set_capacity_provider_kind(
        "mi-general",
        ecs_daemons::model::CapacityProviderKind::managed_instances(),
    );
    harness
        .model
        .launch_managed_instances(cluster, "mi-general", 2);
    harness.model.add_terminate_hook(
        "general",
        "asg-general",
        "ecs-daemons-drain",
        Duration::seconds(300),
    );
    harness.set_hold_settings(HoldSettings::new(
        Duration::seconds(300),
        Duration::hours(1),
    ));
    harness.set_terminate_hook(ecs_daemons::autoscaling::TerminateHook {
        name: "ecs-daemons-drain".into(),
        groups: vec!["asg-general".into()],
    });
    let agent = |harness: &Harness| {
        harness
            .model
            .register_task_definition(TaskDefinitionModel::new("agent", 512, 512))
    };
    let first = agent(&harness);
    let job = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("batch", 256, 256));
    for _ in 0..3 {
        harness.model.add_instance(cluster, "general", 4096, 8192);
    }
    harness
        .deploy(DeployRequest::new(
            cluster,
            "agent",
            &first,
            &["general"],
            0,
        ))
        .await
        .unwrap();
    harness.run_scheduled(Duration::seconds(60), 60).await;
    let victim = harness.model.instances(cluster)[0].arn.clone();
    let batch = harness
        .model
        .start_foreign_task(cluster, &victim, &job, "family:batch", Some("nightly"))
        .unwrap();
    harness
        .run_for(Duration::seconds(10), Duration::seconds(1))
        .await;
    harness
        .model
        .scale_in(cluster, &victim)
        .expect("the hook holds it");
    // The hold is open and its heartbeat due when deploy and rollback reconcile.
    harness
        .run_for(Duration::seconds(200), Duration::seconds(5))
        .await;
    // The new revision's rollout is gated by an alarm: deploy checks it, reconciles watch it.
    let second = agent(&harness);
    harness.model.put_metric_alarm("agent-errors", 60, 3);
    harness
        .deploy(DeployRequest {
            rollout: Some(ecs_daemons::rollout::RolloutConfig {
                alarms: vec!["agent-errors".into()],
                ..Default::default()
            }),
            ..DeployRequest::new(cluster, "agent", &second, &["general"], 0)
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::seconds(120), 60).await;
    harness
        .rollback(RollbackRequest {
            cluster: cluster.into(),
            daemon: "agent".into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    harness.model.crash_task(cluster, &batch);
    harness.run_scheduled(Duration::seconds(300), 60).await;
    // A daemon as DAEMON services on a provider with managed scaling: created, a new
    // revision (UpdateService of the idle one), rolled back.
    harness.model.enable_managed_scaling(
        cluster,
        "scaled",
        ecs_daemons_sim::cluster_model::ManagedScaling::new(1, 4, 4096, 8192),
    );
    harness.model.add_instance(cluster, "scaled", 4096, 8192);
    // Its launch tags change between the two (TagResource, UntagResource on its services).
    for tags in [vec![("team", "a"), ("cost", "x")], vec![("team", "b")]] {
        let revision = agent(&harness);
        harness
            .deploy(DeployRequest {
                launch: ecs_daemons::launch::LaunchOptions {
                    tags: tags
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                },
                ..DeployRequest::new(cluster, "services-agent", &revision, &["scaled"], 0)
            })
            .await
            .unwrap();
        harness.run_scheduled(Duration::seconds(240), 60).await;
    }
    harness
        .rollback(RollbackRequest {
            cluster: cluster.into(),
            daemon: "services-agent".into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::seconds(120), 60).await;
    // Undeployed: its copies stopped, its services deleted.
    harness
        .undeploy(ecs_daemons::deploy::UndeployRequest {
            cluster: cluster.into(),
            daemon: "services-agent".into(),
            undeploy: true,
            dry_run: false,
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::seconds(120), 60).await;
    // A daemon on Managed Instances: created, then a new revision (UpdateDaemon).
    let native = |harness: &Harness| {
        harness.model.register_daemon_task_definition(
            ecs_daemons_sim::cluster_model::DaemonDefinitionModel::new("agent-daemon", 512, 512),
        )
    };
    for revision in [native(&harness), native(&harness)] {
        harness
            .deploy(DeployRequest {
                task_definition: None,
                daemon_task_definition: Some(revision),
                // Tagged at CreateDaemon.
                launch: ecs_daemons::launch::LaunchOptions {
                    tags: [("team".to_string(), "a".to_string())].into(),
                    ..Default::default()
                },
                ..DeployRequest::new(cluster, "native-agent", "unused:1", &["mi-general"], 0)
            })
            .await
            .unwrap();
    }
    harness.run_scheduled(Duration::seconds(60), 60).await;
    harness
        .rollback(RollbackRequest {
            cluster: cluster.into(),
            daemon: "native-agent".into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    harness
        .status(StatusRequest {
            cluster: cluster.into(),
            daemon: None,
        })
        .await
        .unwrap();

    let template = template();
    let policies: BTreeMap<&str, &Value> = resources_of_type(&template, "AWS::IAM::ManagedPolicy")
        .into_iter()
        .collect();
    let resource_of: BTreeMap<String, String> = functions(&template)
        .into_iter()
        .map(|(resource, binary)| (binary, resource))
        .collect();
    let made = harness.operations_by_function();
    for operation in [
        "TagResource",
        "UntagResource",
        "CreateDaemon",
        "CreateService",
    ] {
        assert!(
            made["deploy"].contains(operation),
            "deploy never called {operation}: the check would not see its permission"
        );
    }
    let mut denied = Vec::new();
    for (function, operations) in made {
        let resource = resource_of
            .get(*function)
            .unwrap_or_else(|| panic!("{function} is not a function of the template"));
        let allowed = allowed_actions(&template, &policies, resource);
        for operation in operations {
            for action in iam_actions(operation) {
                if !allowed.contains(&action) {
                    denied.push(format!(
                        "{function} calls {operation}: {action} not allowed"
                    ));
                }
            }
        }
    }
    assert!(denied.is_empty(), "{denied:#?}");
    let exercised: BTreeSet<&str> = made.keys().copied().collect();
    for function in [
        "deploy",
        "rollback",
        "status",
        "coverage-check",
        "task-events",
        "instance-events",
        "lifecycle-hook",
    ] {
        assert!(
            exercised.contains(function),
            "{function} never ran: {exercised:?}"
        );
    }
}

/// The values of an alarm's metric that EMF lines publish under the alarm's dimensions
/// (each line's "Dimensions" lists the dimension sets a value is published under).
fn alarm_values(alarm: &Value, lines: &[Value]) -> Vec<f64> {
    let metric = alarm["Properties"]["MetricName"].as_str().unwrap();
    let mut wanted: Vec<String> = as_list(&alarm["Properties"]["Dimensions"])
        .iter()
        .map(|d| d["Name"].as_str().unwrap().to_string())
        .collect();
    wanted.sort();
    lines
        .iter()
        .filter(|line| {
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|set| {
                    let mut names: Vec<String> = set
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n.as_str().unwrap().to_string())
                        .collect();
                    names.sort();
                    names == wanted
                })
        })
        .filter_map(|line| line[metric].as_f64())
        .collect()
}

/// CloudWatch's statistic over one period's values, and whether it breaches.
fn breaches(alarm: &Value, values: &[f64]) -> bool {
    let properties = &alarm["Properties"];
    let statistic = match properties["Statistic"].as_str().unwrap() {
        "Minimum" => values.iter().copied().fold(f64::INFINITY, f64::min),
        "Maximum" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "Sum" => values.iter().sum(),
        "SampleCount" => values.len() as f64,
        "Average" => values.iter().sum::<f64>() / values.len() as f64,
        other => panic!("statistic {other}"),
    };
    let threshold = properties["Threshold"].as_f64().unwrap();
    match properties["ComparisonOperator"].as_str().unwrap() {
        "GreaterThanThreshold" => statistic > threshold,
        "GreaterThanOrEqualToThreshold" => statistic >= threshold,
        "LessThanThreshold" => statistic < threshold,
        "LessThanOrEqualToThreshold" => statistic <= threshold,
        other => panic!("comparison {other}"),
    }
}

#[test]
fn the_missing_daemon_alarm_fires_when_one_of_several_daemons_is_missing() {
    use ecs_daemons::engine::Outcome;
    use ecs_daemons::plan::DaemonCoverage;
    let template = template();
    let alarm = &template["Resources"]["InstancesWithoutDaemonAlarm"];
    let coverage = |targeted, covered| DaemonCoverage {
        targeted,
        covered,
        ..DaemonCoverage::default()
    };
    let outcome = Outcome {
        cluster: "prod".into(),
        coverage: [
            ("agent".to_string(), coverage(3, 3)),
            ("logs".to_string(), coverage(3, 2)),
        ]
        .into(),
        ..Outcome::default()
    };
    let lines = ecs_daemons::metrics::outcome_lines(
        "ecs-daemons",
        "coverage-check",
        &outcome,
        chrono::Utc::now(),
    );
    let values = alarm_values(alarm, &lines);
    assert_eq!(values.len(), 2, "both daemons publish: {values:?}");
    assert!(
        breaches(alarm, &values),
        "logs misses an instance, agent covers all: the alarm must fire ({values:?} under {})",
        alarm["Properties"]["Statistic"]
    );
    let all_covered = Outcome {
        coverage: [
            ("agent".to_string(), coverage(3, 3)),
            ("logs".to_string(), coverage(3, 3)),
        ]
        .into(),
        ..outcome
    };
    let lines = ecs_daemons::metrics::outcome_lines(
        "ecs-daemons",
        "coverage-check",
        &all_covered,
        chrono::Utc::now(),
    );
    assert!(!breaches(alarm, &alarm_values(alarm, &lines)));
}

#[test]
fn every_function_outlasts_the_sdk_budget_of_a_call() {
    // A call may take the SDK's whole budget (retries and backoff); the invocation must
    // still have as long again to record and answer, or a throttled batch times out and
    // every message of it comes back instead of only the failed ones.
    let template = template();
    let budget = ecs_daemons::aws::OPERATION_TIMEOUT_SECONDS as i64;
    let global = template["Globals"]["Function"]["Timeout"].as_i64();
    for (resource, _) in functions(&template) {
        let timeout = template["Resources"][&resource]["Properties"]["Timeout"]
            .as_i64()
            .or(global)
            .unwrap_or(3);
        assert!(
            timeout >= 2 * budget,
            "{resource}: timeout {timeout} s, but one call may take {budget} s"
        );
    }
    // One attempt must leave room for retries within the call's budget.
    let (attempt, call) = (
        std::hint::black_box(ecs_daemons::aws::ATTEMPT_TIMEOUT_SECONDS),
        ecs_daemons::aws::OPERATION_TIMEOUT_SECONDS,
    );
    assert!(2 * attempt <= call, "attempt {attempt} s, call {call} s");
}

#[test]
fn the_coverage_check_is_never_retried_or_kept_waiting_by_lambda() {
    // The next scheduled run replaces a missed one: an old run waiting in Lambda's queue
    // (up to the Globals' hour) or retried would only land in the dead-letter queue late.
    let template = template();
    let function = &template["Resources"]["CoverageCheckFunction"]["Properties"];
    let config = &function["EventInvokeConfig"];
    assert_eq!(config["MaximumRetryAttempts"], 0, "{config}");
    assert_eq!(config["MaximumEventAgeInSeconds"], 60, "{config}");
    let schedule = &function["Events"]["Schedule"]["Properties"];
    assert_eq!(schedule["RetryPolicy"]["MaximumRetryAttempts"], 0);
    assert_eq!(schedule["RetryPolicy"]["MaximumEventAgeInSeconds"], 60);
}

fn allowed_pattern(template: &Value, parameter: &str) -> regex_lite::Regex {
    let pattern = template["Parameters"][parameter]["AllowedPattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{parameter} has an AllowedPattern"));
    regex_lite::Regex::new(pattern).unwrap()
}

#[test]
fn the_schedule_rate_takes_only_what_eventbridge_takes() {
    // rate(value unit): the singular unit for 1, the plural above (EventBridge user guide,
    // "Schedule expressions for rules"); and at most an hour, so a heartbeat timeout of
    // twice the interval fits the hook's 7200 s.
    let rate = allowed_pattern(&template(), "CoverageCheckRate");
    for good in ["1 minute", "2 minutes", "5 minutes", "59 minutes", "1 hour"] {
        assert!(rate.is_match(good), "{good} refused");
    }
    for bad in [
        "1 minutes",
        "5 minute",
        "0 minutes",
        "60 minutes",
        "2 hours",
        "1 hours",
        "01 minute",
        "",
    ] {
        assert!(!rate.is_match(bad), "{bad} accepted");
    }
}

#[test]
fn policies_name_no_partition_but_their_own() {
    // Every ARN in an identity or resource policy takes the partition from ${AWS::Partition}
    // or leaves it a wildcard: "arn:aws:" alone would fail in aws-cn and aws-us-gov.
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    let hard_coded: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("arn:aws:") && !line.trim_start().starts_with('#'))
        .filter(|line| !line.contains("ConstraintDescription"))
        .collect();
    assert!(hard_coded.is_empty(), "{hard_coded:#?}");
}

#[test]
fn the_dead_letter_queue_takes_messages_from_its_own_rules_only() {
    let template = template();
    let statement = &template["Resources"]["DeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]
        ["Statement"][0];
    let sources: Vec<&Value> = as_list(&statement["Condition"]["ArnEquals"]["aws:SourceArn"]);
    let names: BTreeSet<&str> = sources
        .iter()
        .map(|s| s["Fn::GetAtt"][0].as_str().expect("a rule by GetAtt"))
        .collect();
    // Every rule target that names the queue as its dead-letter queue, and nothing by prefix.
    let mut expected = BTreeSet::new();
    for (name, rule) in resources_of_type(&template, "AWS::Events::Rule") {
        if rule["Properties"]["Targets"]
            .to_string()
            .contains("DeadLetterQueue")
        {
            expected.insert(name.to_string());
        }
    }
    for (function, resource) in resources_of_type(&template, "AWS::Serverless::Function") {
        if let Some(events) = resource["Properties"]["Events"].as_object() {
            for (event, body) in events {
                if body["Properties"]["DeadLetterConfig"].is_object() {
                    // SAM names the rule it generates <function><event>.
                    expected.insert(format!("{function}{event}"));
                }
            }
        }
    }
    let names: BTreeSet<String> = names.into_iter().map(str::to_string).collect();
    assert_eq!(names, expected);
    assert!(
        statement["Condition"]["ArnLike"].is_null(),
        "no prefix match"
    );
}

#[test]
fn the_concurrency_note_says_what_lambda_keeps() {
    let template = template();
    let text = template["Parameters"]["ReserveConcurrency"]["Description"]
        .as_str()
        .unwrap();
    // "Lambda keeps at least 100 concurrent executions unreserved" (Lambda developer guide,
    // "Configuring reserved concurrency").
    assert!(text.contains("100"), "{text}");
    assert!(!text.contains("minimum of 10)"), "{text}");
}

#[test]
fn every_function_bursting_at_once_stays_within_ecs_read_limits() {
    use ecs_daemons::pacing::{Pacing, ECS_LIMITS};
    // Each function's greatest concurrency (its SQS source's MaximumConcurrency, or its
    // reservation under ReserveConcurrency) times its share, summed over every function.
    let template = template();
    let mut total = [0.0_f64; 4];
    for (resource, binary) in functions(&template) {
        let properties = &template["Resources"][&resource]["Properties"];
        let from_queue = properties["Events"]
            .as_object()
            .into_iter()
            .flat_map(|events| events.values())
            .filter_map(|e| e["Properties"]["ScalingConfig"]["MaximumConcurrency"].as_f64())
            .sum::<f64>();
        let reserved = properties["ReservedConcurrentExecutions"]["Fn::If"][1].as_f64();
        // A reservation bounds every source of the function (the coverage-check's wake queue
        // under its reservation of one).
        let concurrency = match (from_queue, reserved) {
            (n, None) if n > 0.0 => n,
            (0.0, Some(n)) => n,
            (n, Some(r)) => n.min(r),
            other => panic!("{resource}: concurrency must be bounded: {other:?}"),
        };
        let share = Pacing::share(&binary);
        for (sum, figure) in total.iter_mut().zip([
            share.read.burst,
            share.read.per_second,
            share.modify.burst,
            share.modify.per_second,
        ]) {
            *sum += concurrency * figure;
        }
    }
    let limits = [
        ECS_LIMITS.read.burst,
        ECS_LIMITS.read.per_second,
        ECS_LIMITS.modify.burst,
        ECS_LIMITS.modify.per_second,
    ];
    // Reads only: modifies are one function's bursts at a time (see Pacing::share).
    for (name, (sum, limit)) in ["read burst", "read rate"]
        .iter()
        .zip(total.iter().zip(limits))
    {
        assert!(*sum <= limit, "{name}: {sum} over ECS's {limit}");
    }
    // The read bucket of the API reference's throttling example: 50 tokens.
    assert_eq!(ECS_LIMITS.read.burst, 50.0);
}

#[test]
fn hold_parameters_stay_within_what_auto_scaling_serves() {
    use ecs_daemons::runtime::rate_seconds;
    let template = template();
    let parameter = |name: &str, field: &str| template["Parameters"][name][field].as_f64().unwrap();
    // The shortest schedule the rate pattern allows is 1 minute: the heartbeat timeout's floor
    // is twice it, and its ceiling Auto Scaling's 7200 s.
    let shortest = rate_seconds("1 minute").unwrap() as f64;
    assert!(parameter("LifecycleHeartbeatTimeout", "MinValue") >= 2.0 * shortest);
    assert!(parameter("LifecycleHeartbeatTimeout", "MaxValue") <= 7200.0);
    // 48 h at most, and the defaults within 100 x the default heartbeat timeout.
    assert!(parameter("DrainLimitSeconds", "MaxValue") <= 172_800.0);
    assert!(
        parameter("DrainLimitSeconds", "Default")
            <= 100.0 * parameter("LifecycleHeartbeatTimeout", "Default")
    );
    let default_rate = template["Parameters"]["CoverageCheckRate"]["Default"]
        .as_str()
        .unwrap();
    assert!(
        parameter("LifecycleHeartbeatTimeout", "Default")
            >= 2.0 * rate_seconds(default_rate).unwrap() as f64
    );
    // The functions see the rate, to refuse combinations the parameters cannot express.
    assert_eq!(
        template["Globals"]["Function"]["Environment"]["Variables"]["COVERAGE_CHECK_RATE"],
        reference("CoverageCheckRate")
    );
}

/// The statements of the template's managed policies that allow `action`.
fn statements_allowing(template: &Value, action: &str) -> Vec<Value> {
    resources_of_type(template, "AWS::IAM::ManagedPolicy")
        .into_iter()
        .flat_map(|(_, policy)| as_list(&policy["Properties"]["PolicyDocument"]["Statement"]))
        .filter(|s| {
            as_list(&s["Action"])
                .iter()
                .any(|a| a.as_str() == Some(action))
        })
        .cloned()
        .collect()
}

#[test]
fn starts_and_stops_are_scoped_to_the_daemons() {
    let template = template();
    // StartTask: only the families the stack is told about, on the managed clusters.
    let starts = statements_allowing(&template, "ecs:StartTask");
    assert_eq!(starts.len(), 1);
    let start = &starts[0];
    assert_eq!(
        as_list(&start["Action"]).len(),
        1,
        "StartTask alone: {start}"
    );
    let resource = start["Resource"].to_string();
    assert!(
        resource.contains("task-definition/") && resource.contains(r#"{"Ref":"DaemonFamilies"}"#),
        "StartTask by family: {resource}"
    );
    assert_eq!(
        start["Condition"]["ArnEquals"]["ecs:cluster"],
        reference("ClusterArns")
    );
    // StopTask: only tasks carrying the copies' daemon tag, on the managed clusters.
    let stops = statements_allowing(&template, "ecs:StopTask");
    assert_eq!(stops.len(), 1);
    let stop = &stops[0];
    assert_eq!(as_list(&stop["Action"]).len(), 1, "StopTask alone: {stop}");
    let tag = format!("aws:ResourceTag/{}", ecs_daemons::engine::DAEMON_TAG);
    assert_eq!(stop["Condition"]["Null"][&tag], "false", "{stop}");
    assert_eq!(
        stop["Condition"]["ArnEquals"]["ecs:cluster"],
        reference("ClusterArns")
    );
    // DescribeTaskDefinition has no resource types (Service Authorization Reference), so "*"
    // is the narrowest it takes: alone in its statement, nothing else rides on that "*".
    let describes = statements_allowing(&template, "ecs:DescribeTaskDefinition");
    assert_eq!(describes.len(), 1);
    assert_eq!(
        as_list(&describes[0]["Action"]).len(),
        1,
        "{}",
        describes[0]
    );
    // The functions know the families, so deploy refuses another with the fix.
    assert_eq!(
        template["Globals"]["Function"]["Environment"]["Variables"]["DAEMON_FAMILIES"],
        json!({"Fn::Join": [",", reference("DaemonFamilies")]})
    );
    // And the roles, so a daemon task definition naming another role is refused before
    // ECS would refuse its PassRole.
    assert_eq!(
        template["Globals"]["Function"]["Environment"]["Variables"]["DAEMON_ROLE_ARNS"],
        json!({"Fn::Join": [",", reference("DaemonRoleArns")]})
    );
}
