//! The services placement's vocabulary (DESIGN.md, "Placements"): per daemon two
//! DAEMON-strategy services, A and B, each placed by `memberOf` on a per-instance slot
//! attribute that ecs-daemons sets to `a`, `ab` or `b`. A copy is started by adding the
//! revision's letter to the instance's value (the service's scheduler starts it) and stopped
//! by removing it (the scheduler "will stop tasks that don't meet the placement
//! constraints"). Only an idle service ever takes a new task definition, so ECS's own
//! stop-then-start deployment never touches a running copy.

use serde::{Deserialize, Serialize};

use crate::ecs::{member_of_values, ATTRIBUTE_MAX_LEN, SERVICE_NAME_MAX_LEN};

/// Prefix of the per-daemon slot attribute (`ecs-daemons.slot.<daemon>`).
pub const SLOT_ATTRIBUTE_PREFIX: &str = "ecs-daemons.slot.";
/// Prefix of the services' names (`ecs-daemons-<daemon>-a`), and so of their tasks' group
/// (`service:<name>`, as ECS sets it for a service's tasks).
pub const SERVICE_NAME_PREFIX: &str = "ecs-daemons-";

/// One of a daemon's two services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Letter {
    A,
    B,
}

impl Letter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// The service of `daemon` for `letter`.
pub fn service_name(daemon: &str, letter: Letter) -> String {
    format!("{SERVICE_NAME_PREFIX}{daemon}-{}", letter.as_str())
}

/// The slot attribute of `daemon` on each of its instances.
pub fn slot_attribute(daemon: &str) -> String {
    format!("{SLOT_ATTRIBUTE_PREFIX}{daemon}")
}

/// The `memberOf` expression of `daemon`'s service `letter`: its letter alone, or both.
pub fn member_of(daemon: &str, letter: Letter) -> String {
    member_of_values(&slot_attribute(daemon), &[letter.as_str(), "ab"])
}

/// The daemon and letter of a task whose group is `service:ecs-daemons-<daemon>-<letter>`.
pub fn daemon_of_group(group: &str) -> Option<(&str, Letter)> {
    let rest = group
        .strip_prefix("service:")?
        .strip_prefix(SERVICE_NAME_PREFIX)?;
    if let Some(daemon) = rest.strip_suffix("-a") {
        return Some((daemon, Letter::A));
    }
    rest.strip_suffix("-b").map(|daemon| (daemon, Letter::B))
}

/// Which letters an instance's slot attribute holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Letters {
    pub a: bool,
    pub b: bool,
}

impl Letters {
    /// As read from the attribute's value (`None`: no attribute, no copy).
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("a") => Self { a: true, b: false },
            Some("b") => Self { a: false, b: true },
            Some("ab") => Self { a: true, b: true },
            _ => Self::default(),
        }
    }

    pub fn with(mut self, letter: Letter, present: bool) -> Self {
        match letter {
            Letter::A => self.a = present,
            Letter::B => self.b = present,
        }
        self
    }

    pub fn has(self, letter: Letter) -> bool {
        match letter {
            Letter::A => self.a,
            Letter::B => self.b,
        }
    }

    /// The attribute's value, `None` when no letter is left (the attribute is deleted).
    pub fn value(self) -> Option<&'static str> {
        match (self.a, self.b) {
            (true, true) => Some("ab"),
            (true, false) => Some("a"),
            (false, true) => Some("b"),
            (false, false) => None,
        }
    }
}

/// Where a daemon runs as DAEMON services, and what each of its services runs: part of the
/// daemon's spec, written by deploy (the only writer of the services' task definitions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlacement {
    /// The capacity providers whose instances get the daemon through its services.
    pub capacity_providers: Vec<String>,
    /// Pinned `family:revision` of service A and of service B.
    pub a: String,
    pub b: String,
}

impl ServicePlacement {
    pub fn covers(&self, provider: Option<&str>) -> bool {
        provider.is_some_and(|p| self.capacity_providers.iter().any(|c| c == p))
    }

    /// The service that runs `revision` (A where both do: B is created with A's revision
    /// and stays idle until a rollout needs it).
    pub fn letter_for(&self, revision: &str) -> Option<Letter> {
        if self.a == revision {
            Some(Letter::A)
        } else if self.b == revision {
            Some(Letter::B)
        } else {
            None
        }
    }

    pub fn revision_of(&self, letter: Letter) -> &str {
        match letter {
            Letter::A => &self.a,
            Letter::B => &self.b,
        }
    }

    pub fn set_revision(&mut self, letter: Letter, revision: &str) {
        match letter {
            Letter::A => self.a = revision.into(),
            Letter::B => self.b = revision.into(),
        }
    }
}

/// Why a daemon name cannot have services: its service name or slot attribute would break
/// ECS's length limits.
pub fn name_fits(daemon: &str) -> Result<(), String> {
    let service = service_name(daemon, Letter::A);
    if service.len() > SERVICE_NAME_MAX_LEN {
        return Err(format!(
            "its service name {service} is longer than ECS's {SERVICE_NAME_MAX_LEN} characters"
        ));
    }
    let attribute = slot_attribute(daemon);
    if attribute.len() > ATTRIBUTE_MAX_LEN {
        return Err(format!(
            "its slot attribute {attribute} is longer than ECS's {ATTRIBUTE_MAX_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_groups_and_letters_round_trip() {
        assert_eq!(service_name("agent", Letter::B), "ecs-daemons-agent-b");
        assert_eq!(
            daemon_of_group("service:ecs-daemons-log-router-a"),
            Some(("log-router", Letter::A))
        );
        assert_eq!(daemon_of_group("service:web"), None);
        assert_eq!(daemon_of_group("daemon:agent"), None);
        assert_eq!(
            member_of("agent", Letter::A),
            "attribute:ecs-daemons.slot.agent in [a, ab]"
        );
        let letters = Letters::parse(Some("a")).with(Letter::B, true);
        assert_eq!(letters.value(), Some("ab"));
        assert_eq!(letters.with(Letter::A, false).value(), Some("b"));
        assert_eq!(
            Letters::parse(Some("b")).with(Letter::B, false).value(),
            None
        );
        assert_eq!(Letters::parse(Some("junk")), Letters::default());
        assert!(name_fits(&"x".repeat(111)).is_ok());
        assert!(name_fits(&"x".repeat(112)).is_err());
    }

    #[test]
    fn a_revision_maps_to_the_service_that_runs_it() {
        let placement = ServicePlacement {
            capacity_providers: vec!["asg".into()],
            a: "agent:1".into(),
            b: "agent:1".into(),
        };
        assert_eq!(placement.letter_for("agent:1"), Some(Letter::A));
        let mut next = placement.clone();
        next.set_revision(Letter::B, "agent:2");
        assert_eq!(next.letter_for("agent:2"), Some(Letter::B));
        assert_eq!(next.letter_for("agent:3"), None);
        assert!(next.covers(Some("asg")) && !next.covers(Some("other")) && !next.covers(None));
    }
}
