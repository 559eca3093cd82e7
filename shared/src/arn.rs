//! ECS resource names. ECS hands out container-instance and task ARNs in two
//! forms: the old `…:container-instance/<id>` and the new
//! `…:container-instance/<cluster>/<id>`; both must identify the same thing.

/// The last path segment of an ARN (`…/abc` → `abc`), or the input when it has no slash.
pub fn resource_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The cluster named inside a new-form container-instance or task ARN, if any.
pub fn cluster_in_arn(arn: &str) -> Option<&str> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let mut parts = resource.split('/');
    let _kind = parts.next()?;
    let first = parts.next()?;
    parts.next().map(|_| first)
}

/// `arn:aws:ecs:region:account:cluster/name` or a bare name → the cluster name.
pub fn cluster_name(cluster: &str) -> &str {
    match cluster.split_once(":cluster/") {
        Some((_, name)) => name,
        None => cluster,
    }
}

/// Whether two container-instance references (ARN of either form, or bare id) name the same instance.
pub fn same_resource(a: &str, b: &str) -> bool {
    resource_id(a) == resource_id(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "arn:aws:ecs:us-east-1:111122223333:container-instance/b54a2a04-046f-4331-9d74-3f6d7f6ca315";
    const NEW: &str =
        "arn:aws:ecs:us-east-1:111122223333:container-instance/prod/b54a2a04-046f-4331-9d74-3f6d7f6ca315";

    #[test]
    fn both_arn_forms_give_the_same_id() {
        assert_eq!(resource_id(OLD), "b54a2a04-046f-4331-9d74-3f6d7f6ca315");
        assert_eq!(resource_id(NEW), "b54a2a04-046f-4331-9d74-3f6d7f6ca315");
        assert!(same_resource(OLD, NEW));
        assert!(same_resource(NEW, "b54a2a04-046f-4331-9d74-3f6d7f6ca315"));
        assert!(!same_resource(
            NEW,
            "arn:aws:ecs:us-east-1:1:container-instance/prod/other"
        ));
    }

    #[test]
    fn cluster_is_read_from_new_form_only() {
        assert_eq!(cluster_in_arn(OLD), None);
        assert_eq!(cluster_in_arn(NEW), Some("prod"));
        assert_eq!(cluster_in_arn("not-an-arn"), None);
    }

    #[test]
    fn cluster_name_from_arn_or_name() {
        assert_eq!(cluster_name("arn:aws:ecs:eu-west-1:1:cluster/prod"), "prod");
        assert_eq!(cluster_name("prod"), "prod");
    }
}
