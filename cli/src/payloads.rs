//! The invoke payloads each command sends, built from its arguments (the request shapes of
//! the README's *Invoke API*).

use serde_json::{json, Map, Value};

use crate::args::{ControlArgs, DeployArgs, RollbackArgs, UndeployArgs};
use crate::error::CliError;

/// A deploy request: the file's (if any), with the flags' fields set over it.
pub fn deploy(args: &DeployArgs, file: Option<&str>) -> Result<Value, CliError> {
    let mut request = match file {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                return Err(CliError::Usage(
                    "the deploy request file must hold a JSON object".into(),
                ))
            }
            Err(error) => {
                return Err(CliError::Usage(format!(
                    "the deploy request file is not JSON: {error}"
                )))
            }
        },
        None => Map::new(),
    };
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            request.insert(key.to_string(), value);
        }
    };
    set("cluster", args.cluster.clone().map(Value::from));
    set("daemon", args.daemon.clone().map(Value::from));
    set(
        "taskDefinition",
        args.task_definition.clone().map(Value::from),
    );
    set(
        "daemonTaskDefinition",
        args.daemon_task_definition.clone().map(Value::from),
    );
    set(
        "capacityProviders",
        (!args.capacity_providers.is_empty()).then(|| json!(args.capacity_providers)),
    );
    set("dryRun", args.dry_run.then_some(Value::Bool(true)));
    for field in ["cluster", "daemon"] {
        if !request.get(field).is_some_and(Value::is_string) {
            return Err(CliError::Usage(format!(
                "deploy needs --{field} (or \"{field}\" in --file)"
            )));
        }
    }
    Ok(Value::Object(request))
}

pub fn rollback(args: &RollbackArgs) -> Value {
    let mut request = json!({"cluster": args.target.cluster, "daemon": args.target.daemon});
    if let Some(revision) = args.to_revision {
        request["toRevision"] = json!(revision);
    }
    if args.dry_run {
        request["dryRun"] = json!(true);
    }
    request
}

pub fn undeploy(args: &UndeployArgs) -> Value {
    json!({
        "cluster": args.target.cluster,
        "daemon": args.target.daemon,
        "undeploy": true,
        "dryRun": args.dry_run,
    })
}

/// `pause`, `resume` or `promote` (the rollback function's `control`).
pub fn control(verb: &str, args: &ControlArgs) -> Value {
    let mut request = json!({
        "cluster": args.target.cluster,
        "daemon": args.target.daemon,
        "control": verb,
    });
    if let Some(by) = &args.by {
        request["by"] = json!(by);
    }
    if let Some(reason) = &args.reason {
        request["reason"] = json!(reason);
    }
    request
}

pub fn status(cluster: &str, daemon: Option<&str>) -> Value {
    match daemon {
        Some(daemon) => json!({"cluster": cluster, "daemon": daemon}),
        None => json!({"cluster": cluster}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Target;

    fn deploy_args() -> DeployArgs {
        DeployArgs {
            file: None,
            cluster: Some("prod".into()),
            daemon: Some("cwagent".into()),
            task_definition: Some("cwagent:3".into()),
            daemon_task_definition: None,
            capacity_providers: vec!["asg-general".into()],
            dry_run: false,
        }
    }

    #[test]
    fn flags_override_the_request_file() {
        let file = r#"{"cluster": "stage", "daemon": "cwagent", "taskDefinition": "cwagent:2",
                       "capacityProviders": ["a", "b"], "rollout": {"maxParallel": 2}}"#;
        let request = deploy(&deploy_args(), Some(file)).unwrap();
        assert_eq!(request["cluster"], "prod");
        assert_eq!(request["taskDefinition"], "cwagent:3");
        assert_eq!(request["capacityProviders"], json!(["asg-general"]));
        assert_eq!(
            request["rollout"]["maxParallel"], 2,
            "the file's settings stay"
        );
        assert!(request.get("dryRun").is_none());
        let only_file = DeployArgs {
            cluster: None,
            daemon: None,
            task_definition: None,
            capacity_providers: vec![],
            dry_run: true,
            ..deploy_args()
        };
        let request = deploy(&only_file, Some(file)).unwrap();
        assert_eq!(request["capacityProviders"], json!(["a", "b"]));
        assert_eq!(request["dryRun"], true);
    }

    #[test]
    fn a_deploy_without_its_target_or_with_a_bad_file_is_a_usage_error() {
        let nameless = DeployArgs {
            daemon: None,
            ..deploy_args()
        };
        let error = deploy(&nameless, None).unwrap_err();
        assert!(error.to_string().contains("--daemon"), "{error}");
        assert!(deploy(&deploy_args(), Some("[1]")).is_err());
        assert!(deploy(&deploy_args(), Some("{")).is_err());
    }

    #[test]
    fn the_other_requests_take_the_invoke_api_shapes() {
        let target = || Target {
            cluster: "prod".into(),
            daemon: "cwagent".into(),
        };
        let back = rollback(&RollbackArgs {
            target: target(),
            to_revision: Some(1),
            dry_run: false,
        });
        assert_eq!(
            back,
            json!({"cluster": "prod", "daemon": "cwagent", "toRevision": 1})
        );
        let gone = undeploy(&UndeployArgs {
            target: target(),
            dry_run: true,
        });
        assert_eq!(gone["undeploy"], true);
        assert_eq!(gone["dryRun"], true);
        let paused = control(
            "pause",
            &ControlArgs {
                target: target(),
                by: Some("alice".into()),
                reason: None,
            },
        );
        assert_eq!(
            paused,
            json!({"cluster": "prod", "daemon": "cwagent", "control": "pause", "by": "alice"})
        );
        assert_eq!(status("prod", None), json!({"cluster": "prod"}));
    }
}
