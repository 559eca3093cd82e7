//! How a daemon's copies are launched (deploy's `launch`): user tags, `propagateTags`, ECS
//! managed tags, ECS Exec, and environment overrides per capacity provider; each checked
//! against ECS's rules and against the task definition and placement before anything is
//! recorded. Pure: deploy validates, the placement passes the options on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::TaskDefinition;

/// ECS's limit of tags per resource (API reference, *StartTask*, `tags`: "Maximum number of
/// tags per resource - 50").
pub const MAX_TAGS_PER_RESOURCE: usize = 50;

/// Tags ecs-daemons puts on every copy itself ([`crate::placement::DAEMON_TAG`],
/// [`crate::placement::ROLLOUT_TAG`]): a user's tags share the resource's 50 with them.
pub const OWN_TAGS: usize = 2;

/// ECS's limit on one StartTask's overrides, JSON included (API reference, *StartTask*,
/// `overrides`: "A total of 8192 characters are allowed for overrides").
pub const MAX_OVERRIDES_CHARACTERS: usize = 8192;

/// Whose tags a copy also gets (API reference, *StartTask*, `propagateTags`; `SERVICE` is an
/// error for a task no service started, so it is not offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PropagateTags {
    TaskDefinition,
    None,
}

impl PropagateTags {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskDefinition => "TASK_DEFINITION",
            Self::None => "NONE",
        }
    }
}

/// The launch options of a daemon's copies. Every field has a default: none set is what
/// ecs-daemons did before they existed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LaunchOptions {
    /// User tags on every copy, beside ecs-daemons' own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `TASK_DEFINITION`: the copies get the task definition's tags too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<PropagateTags>,
    /// ECS's managed tags (`aws:ecs:clusterName`, …) on the copies.
    #[serde(
        rename = "enableECSManagedTags",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub enable_ecs_managed_tags: bool,
    /// ECS Exec into the copies' containers (their task role must allow it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enable_execute_command: bool,
    /// Per capacity provider, per container: environment variables set on the copies
    /// started there (StartTask's container overrides).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
}

impl LaunchOptions {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    /// The first option set that applies to every copy (tags, propagation, managed tags,
    /// ECS Exec), by its field name; `environment` names its providers itself.
    pub fn applies_to_every_copy(&self) -> Option<&'static str> {
        if !self.tags.is_empty() {
            Some("tags")
        } else if self.propagate_tags.is_some() {
            Some("propagateTags")
        } else if self.enable_ecs_managed_tags {
            Some("enableECSManagedTags")
        } else if self.enable_execute_command {
            Some("enableExecuteCommand")
        } else {
            None
        }
    }

    /// The container overrides of copies started on `provider`: `(container, [(name,
    /// value)])`, in name order.
    pub fn environment_on(&self, provider: Option<&str>) -> Vec<(String, Vec<(String, String)>)> {
        provider
            .and_then(|p| self.environment.get(p))
            .map(|containers| {
                containers
                    .iter()
                    .map(|(container, variables)| {
                        let variables = variables
                            .iter()
                            .map(|(name, value)| (name.clone(), value.clone()))
                            .collect();
                        (container.clone(), variables)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn reserved(text: &str) -> bool {
    text.get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
}

/// The request's own checks: ECS's tag rules (API reference, *StartTask*, `tags`), names
/// not reserved for ecs-daemons, environment names and sizes.
pub fn check(options: &LaunchOptions, own_tag_keys: &[&str]) -> Result<(), String> {
    let allowed = MAX_TAGS_PER_RESOURCE - OWN_TAGS;
    if options.tags.len() > allowed {
        return Err(format!(
            "`launch.tags` has {} tags; at most {allowed} (ECS allows {MAX_TAGS_PER_RESOURCE} per task, ecs-daemons uses {OWN_TAGS})",
            options.tags.len()
        ));
    }
    for (key, value) in &options.tags {
        if !(1..=128).contains(&key.chars().count()) {
            return Err(format!(
                "`launch.tags` key {key:?} must be 1 to 128 characters"
            ));
        }
        if value.chars().count() > 256 {
            return Err(format!(
                "`launch.tags.{key}` must be at most 256 characters"
            ));
        }
        if reserved(key) || reserved(value) {
            return Err(format!(
                "`launch.tags.{key}`: the aws: prefix is reserved for AWS, in keys and values"
            ));
        }
        if own_tag_keys.contains(&key.as_str()) {
            return Err(format!(
                "`launch.tags.{key}` is ecs-daemons' own tag; choose another key"
            ));
        }
    }
    for (provider, containers) in &options.environment {
        if containers.is_empty() {
            return Err(format!(
                "`launch.environment.{provider}` names no container"
            ));
        }
        for (container, variables) in containers {
            for name in variables.keys() {
                let valid = !name.is_empty()
                    && name.len() <= 255
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "`launch.environment.{provider}.{container}`: {name:?} is not an environment variable name (letters, digits, underscores; not starting with a digit)"
                    ));
                }
            }
        }
        let size = overrides_characters(&options.environment_on(Some(provider)));
        if size > MAX_OVERRIDES_CHARACTERS {
            return Err(format!(
                "`launch.environment.{provider}` makes overrides of {size} characters; ECS takes at most {MAX_OVERRIDES_CHARACTERS}"
            ));
        }
    }
    Ok(())
}

/// The characters StartTask's `overrides` takes for these container environments (its JSON).
pub fn overrides_characters(environment: &[(String, Vec<(String, String)>)]) -> usize {
    let containers: Vec<serde_json::Value> = environment
        .iter()
        .map(|(name, variables)| {
            serde_json::json!({
                "name": name,
                "environment": variables
                    .iter()
                    .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "containerOverrides": containers })
        .to_string()
        .len()
}

/// Where the options meet the deploy: environment overrides only on providers the daemon
/// targets that run standalone copies (`standalone`), only for containers its task
/// definition has; ECS Exec only with a task role to carry its permissions.
pub fn check_against(
    options: &LaunchOptions,
    definition: &TaskDefinition,
    targeted: &[String],
    standalone: &[String],
) -> Result<(), String> {
    for (provider, containers) in &options.environment {
        if !targeted.contains(provider) {
            return Err(format!(
                "`launch.environment.{provider}`: the daemon does not target capacity provider {provider} (capacityProviders: {})",
                targeted.join(", ")
            ));
        }
        if !standalone.contains(provider) {
            return Err(format!(
                "`launch.environment.{provider}`: {provider} does not run standalone copies (DAEMON services and ECS's managed daemons take no per-task overrides); register a task definition revision with this environment instead"
            ));
        }
        for container in containers.keys() {
            if !definition.containers.iter().any(|c| &c.name == container) {
                let known: Vec<&str> = definition
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(format!(
                    "`launch.environment.{provider}.{container}`: {} has no container {container} (it has {})",
                    definition.family_revision(),
                    known.join(", ")
                ));
            }
        }
    }
    check_execute_command(
        options,
        &definition.family_revision(),
        definition.task_role_arn.as_deref(),
    )
}

/// ECS Exec only with a task role to carry its permissions.
pub fn check_execute_command(
    options: &LaunchOptions,
    definition: &str,
    task_role_arn: Option<&str>,
) -> Result<(), String> {
    if options.enable_execute_command && task_role_arn.is_none() {
        return Err(format!(
            "`launch.enableExecuteCommand`: {definition} has no task role; ECS Exec needs one allowing ssmmessages:CreateControlChannel, CreateDataChannel, OpenControlChannel and OpenDataChannel (developer guide, Using Amazon ECS Exec): register a revision with taskRoleArn set"
        ));
    }
    Ok(())
}

/// What the options can mean where the daemon runs as DAEMON services (`services`: such a
/// provider) or as ECS's managed daemon (`managed`). Their copies get tags by propagation
/// from one source only (API reference, *CreateService* and *CreateDaemon*
/// `propagateTags`): `launch.tags` go on the service or daemon and reach the copies from
/// there, so they do not go with `propagateTags`; ECS's managed daemon propagates its own
/// tags (`DAEMON`) or none, never the task definition's.
pub fn check_placements(
    options: &LaunchOptions,
    services: Option<&str>,
    managed: Option<&str>,
) -> Result<(), String> {
    let elsewhere = services
        .map(|p| (p, "runs the daemon as DAEMON services"))
        .or_else(|| managed.map(|p| (p, "runs ECS's managed daemon")));
    if let (Some(propagate), false, Some((provider, how))) =
        (options.propagate_tags, options.tags.is_empty(), elsewhere)
    {
        return Err(format!(
            "`launch.propagateTags` {}: capacity provider {provider} {how}, whose copies get tags from one source, and `launch.tags` reach them from it; leave propagateTags out to tag them, or drop the tags",
            propagate.as_str()
        ));
    }
    if let (Some(PropagateTags::TaskDefinition), Some(provider)) = (options.propagate_tags, managed)
    {
        return Err(format!(
            "`launch.propagateTags` TASK_DEFINITION: capacity provider {provider} runs ECS's managed daemon, which propagates only its own tags (DAEMON) or none (API reference, CreateDaemon); use NONE, or leave it out and set `launch.tags`"
        ));
    }
    Ok(())
}

/// `propagateTags` of ECS's managed daemon: `DAEMON` so `launch.tags` reach its copies,
/// `NONE` when asked, else not sent (ECS's default: not propagated).
pub fn managed_propagate_tags(options: &LaunchOptions) -> Option<&'static str> {
    match options.propagate_tags {
        Some(PropagateTags::None) => Some("NONE"),
        _ if !options.tags.is_empty() => Some("DAEMON"),
        _ => None,
    }
}

/// The options that mean something to ECS's managed daemon: the environment belongs to
/// standalone copies only.
pub fn for_managed(options: &LaunchOptions) -> LaunchOptions {
    LaunchOptions {
        environment: BTreeMap::new(),
        ..options.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: serde_json::Value) -> LaunchOptions {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn launch_options_read_as_ecs_names_them() {
        let parsed = options(serde_json::json!({
            "tags": {"team": "platform"},
            "propagateTags": "TASK_DEFINITION",
            "enableECSManagedTags": true,
            "enableExecuteCommand": true,
            "environment": {"asg-general": {"agent": {"LOG_LEVEL": "debug"}}}
        }));
        assert_eq!(parsed.propagate_tags, Some(PropagateTags::TaskDefinition));
        assert!(parsed.enable_ecs_managed_tags && parsed.enable_execute_command);
        assert_eq!(
            parsed.environment_on(Some("asg-general")),
            vec![(
                "agent".to_string(),
                vec![("LOG_LEVEL".to_string(), "debug".to_string())]
            )]
        );
        assert!(parsed.environment_on(Some("asg-batch")).is_empty());
        assert!(serde_json::from_value::<LaunchOptions>(
            serde_json::json!({"propagateTags": "SERVICE"})
        )
        .is_err());
        assert!(LaunchOptions::default().is_default());
    }

    #[test]
    fn tags_follow_ecs_rules() {
        let own = ["ecs-daemons:daemon"];
        let with_tags = |tags: Vec<(String, String)>| LaunchOptions {
            tags: tags.into_iter().collect(),
            ..LaunchOptions::default()
        };
        assert!(check(&with_tags(vec![("team".into(), "platform".into())]), &own).is_ok());
        let many = (0..49).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check(&with_tags(many), &own)
            .unwrap_err()
            .contains("at most 48"));
        let cases = [
            (("".to_string(), "x".to_string()), "1 to 128"),
            (("k".repeat(129), "x".into()), "1 to 128"),
            (("k".into(), "v".repeat(257)), "at most 256"),
            (("AWS:cost".into(), "x".into()), "reserved"),
            (("team".into(), "aws:x".into()), "reserved"),
            (("ecs-daemons:daemon".into(), "x".into()), "own tag"),
        ];
        for (tag, fix) in cases {
            let error = check(&with_tags(vec![tag]), &own).unwrap_err();
            assert!(error.contains(fix), "{error}");
        }
    }

    #[test]
    fn services_and_managed_daemons_take_tags_from_one_source() {
        let tagged = options(serde_json::json!({"tags": {"team": "obs"}}));
        assert!(check_placements(&tagged, Some("scaled"), Some("mi")).is_ok());
        assert_eq!(managed_propagate_tags(&tagged), Some("DAEMON"));
        assert_eq!(managed_propagate_tags(&LaunchOptions::default()), None);
        let both = options(
            serde_json::json!({"tags": {"team": "obs"}, "propagateTags": "TASK_DEFINITION"}),
        );
        assert!(check_placements(&both, None, None).is_ok());
        let error = check_placements(&both, Some("scaled"), None).unwrap_err();
        assert!(
            error.contains("scaled runs the daemon as DAEMON services"),
            "{error}"
        );
        let none = options(serde_json::json!({"tags": {"team": "obs"}, "propagateTags": "NONE"}));
        assert!(check_placements(&none, None, Some("mi"))
            .unwrap_err()
            .contains("ECS's managed daemon"));
        let definition_tags = options(serde_json::json!({"propagateTags": "TASK_DEFINITION"}));
        assert!(check_placements(&definition_tags, Some("scaled"), None).is_ok());
        let error = check_placements(&definition_tags, None, Some("mi")).unwrap_err();
        assert!(error.contains("only its own tags (DAEMON)"), "{error}");
        let off = options(serde_json::json!({"propagateTags": "NONE"}));
        assert_eq!(managed_propagate_tags(&off), Some("NONE"));
        let with_environment = options(
            serde_json::json!({"enableExecuteCommand": true, "environment": {"p": {"c": {"A": "b"}}}}),
        );
        let managed = for_managed(&with_environment);
        assert!(managed.environment.is_empty() && managed.enable_execute_command);
    }

    #[test]
    fn environment_names_and_sizes_are_checked() {
        let own: [&str; 0] = [];
        let bad_name = options(serde_json::json!({"environment": {"p": {"c": {"1X": "v"}}}}));
        assert!(check(&bad_name, &own)
            .unwrap_err()
            .contains("not an environment variable name"));
        let empty = options(serde_json::json!({"environment": {"p": {}}}));
        assert!(check(&empty, &own)
            .unwrap_err()
            .contains("names no container"));
        let big =
            options(serde_json::json!({"environment": {"p": {"c": {"BIG": "v".repeat(9000)}}}}));
        assert!(check(&big, &own).unwrap_err().contains("at most 8192"));
    }

    #[test]
    fn options_are_checked_against_the_task_definition_and_placement() {
        let definition = TaskDefinition {
            arn: "arn:aws:ecs:us-east-1:1:task-definition/agent:3".into(),
            family: "agent".into(),
            revision: 3,
            status: "ACTIVE".into(),
            execution_role_arn: Some("arn:aws:iam::1:role/exec".into()),
            task_role_arn: None,
            cpu: Some(256),
            memory_mib: Some(256),
            containers: vec![crate::model::ContainerDefinition {
                name: "agent".into(),
                essential: true,
                has_health_check: false,
                health_check_grace_seconds: None,
            }],
            network_mode: None,
        };
        let targeted = vec!["asg-general".to_string(), "scaled".to_string()];
        let standalone = vec!["asg-general".to_string()];
        let env = |provider: &str, container: &str| {
            options(serde_json::json!({"environment": {provider: {container: {"A": "b"}}}}))
        };
        assert!(check_against(
            &env("asg-general", "agent"),
            &definition,
            &targeted,
            &standalone
        )
        .is_ok());
        let cases = [
            (env("asg-gpu", "agent"), "does not target"),
            (env("scaled", "agent"), "does not run standalone copies"),
            (
                env("asg-general", "sidecar"),
                "has no container sidecar (it has agent)",
            ),
        ];
        for (given, fix) in cases {
            let error = check_against(&given, &definition, &targeted, &standalone).unwrap_err();
            assert!(error.contains(fix), "{error}");
        }
        let exec = options(serde_json::json!({"enableExecuteCommand": true}));
        let error = check_against(&exec, &definition, &targeted, &standalone).unwrap_err();
        assert!(error.contains("taskRoleArn"), "{error}");
        let with_role = TaskDefinition {
            task_role_arn: Some("arn:aws:iam::1:role/agent".into()),
            ..definition
        };
        assert!(check_against(&exec, &with_role, &targeted, &standalone).is_ok());
    }
}
