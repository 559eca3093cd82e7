//! Indexing, once per plan: tasks and slots grouped per instance, daemons by position.

use super::*;

/// FNV-1a: the planner hashes 100,000s of short ids and names of the user's own cluster per
/// run, where SipHash's flood resistance buys nothing and costs a third of the time.
#[derive(Clone, Copy)]
pub(super) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(super) type FastHash = std::hash::BuildHasherDefault<Fnv>;

pub(super) fn fnv(text: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = Fnv::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

pub(super) type Groups<'a> = HashMap<&'a str, InstanceItems<'a>, FastHash>;

/// The declared daemons in planning order: start order, then name.
pub(super) fn planning_order(observation: &Observation) -> Vec<&DaemonView> {
    let mut daemons: Vec<&DaemonView> = observation.daemons.iter().collect();
    daemons.sort_by(|a, b| (a.start_order, &a.name).cmp(&(b.start_order, &b.name)));
    daemons
}

/// Tasks and slots grouped per instance, once per plan, each with its daemon's position in
/// `daemons` (so that per-instance lookups compare numbers, not names).
pub(super) fn group<'a>(observation: &'a Observation, daemons: &[&DaemonView]) -> Groups<'a> {
    // Names are short: a byte loop beats a call to memcmp, 200,000 times over.
    let same =
        |a: &str, b: &str| a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y);
    // A handful of daemons: scan their hashes, compare the bytes of the one that matches.
    let hashes: Vec<u64> = daemons.iter().map(|d| fnv(&d.name)).collect();
    let index = |name: &str| {
        let hash = fnv(name);
        hashes
            .iter()
            .zip(daemons)
            .position(|(h, d)| *h == hash && same(&d.name, name))
    };
    let prefix: &[u8; GROUP_PREFIX.len()] = GROUP_PREFIX
        .as_bytes()
        .first_chunk()
        .expect("a chunk the length of the prefix itself");
    let per_instance = daemons.len().max(1);
    let fresh = || InstanceItems {
        tasks: Vec::with_capacity(per_instance),
        slots: Vec::with_capacity(per_instance),
    };
    let mut groups: Groups =
        HashMap::with_capacity_and_hasher(observation.instances.len(), FastHash::default());
    for task in &observation.tasks {
        let (Some(group), Some(instance)) = (
            task.group.as_deref(),
            task.container_instance_arn.as_deref(),
        ) else {
            continue;
        };
        let daemon = if group.as_bytes().first_chunk() == Some(prefix) {
            &group[GROUP_PREFIX.len()..]
        } else if let Some((daemon, _)) = crate::placement::services::daemon_of_group(group) {
            // A copy one of the daemon's DAEMON services runs.
            daemon
        } else {
            continue;
        };
        groups
            .entry(resource_id(instance))
            .or_insert_with(fresh)
            .tasks
            .push((daemon, index(daemon), task));
    }
    for slot in &observation.slots {
        groups
            .entry(slot.record.instance_id.as_str())
            .or_insert_with(fresh)
            .slots
            .push((index(&slot.record.daemon), slot));
    }
    groups
}
