//! The model's ECS managed scaling, managed termination protection and managed draining for
//! Auto Scaling group capacity providers, and the application services whose tasks drive
//! them. Sources (developer guide, *Automatically manage Amazon ECS capacity with cluster
//! auto scaling*, *Amazon ECS managed scaling behavior*):
//!
//! - "Every minute, Amazon ECS collects information" and publishes
//!   `CapacityProviderReservation`: 100 when "all container instances are running at least
//!   one non-daemon task", above 100 when tasks wait for room, below 100 when "at least one
//!   container instance … is not running a non-daemon task"; "A container instance is
//!   considered empty even when daemon tasks are running", and daemon means a task of a
//!   DAEMON-strategy service: standalone tasks count as in use (containers-roadmap #689).
//!   The model computes it as M / N × 100 (M: instances needed, N: instances in the group),
//!   which gives "100 minus the number of container instances that are empty" for N = 100.
//! - Scale-out: the target tracking policy raises the desired capacity when the metric is
//!   above `targetCapacity`, by at least `minimumScalingStepSize` and at most
//!   `maximumScalingStepSize` instances, "blocked for instances that are within the
//!   instanceWarmupPeriod" (default 300 s); with no instance at all, the metric is 200.
//! - Scale-in: "CloudWatch scale-in alarms require 15 data points (15 minutes) before the
//!   scale-in process … starts"; then, each minute, by less than half of the instances
//!   ([`ScaleInStep`]: how many is not documented); a scale-out request stops it.
//! - Managed termination protection: "Amazon ECS removes the scale-in protection on the
//!   container instances that are empty", so only those terminate; without it "the Auto
//!   Scaling group selects EC2 instances using the Auto Scaling group termination policy".
//! - Managed draining: "When an EC2 instance in an Auto Scaling group is marked for
//!   termination, it enters a DRAINING status" (re:Post, *ECS retain instances running
//!   tasks*; *Configuring Amazon ECS capacity providers to safely shut down instances*:
//!   "Managed instance draining is on by default"). The termination then waits on the
//!   group's lifecycle hooks (`autoscaling.rs`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, DurationRound, Utc};

use super::{ClusterModel, World};
use ecs_daemons::model::{CapacityProviderKind, InstanceStatus, TaskStatus};

/// What the managed-scaling documentation leaves open.
#[derive(Clone, Debug)]
pub struct ScalingKnobs {
    /// From the group raising its desired capacity to the instance registering with the
    /// cluster (EC2 launch, boot, ECS agent): undocumented, depends on the AMI.
    pub launch_time: Duration,
    /// Data points above the target before scale-out. ECS's high alarm is not documented;
    /// one by default (fastest scale-out: the most instances joining during a rollout).
    pub scale_out_points: u32,
    /// How many instances a scale-in step terminates each minute: the guide bounds it ("less
    /// than half"), the number is not documented; one by default (the slowest way back to
    /// the group's minimum).
    pub scale_in_step: ScaleInStep,
    /// Which instances the group's termination policy picks without managed termination
    /// protection: the default policy goes by Availability Zone, launch template and billing
    /// hour, never by what runs there; the busiest first by default (the most application
    /// tasks to drain before the daemons may stop).
    pub termination_pick: TerminationPick,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleInStep {
    One,
    /// Up to half of the group's instances, at least one.
    UpToHalf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationPick {
    BusiestFirst,
    Random,
}

impl Default for ScalingKnobs {
    fn default() -> Self {
        Self {
            launch_time: Duration::seconds(90),
            scale_out_points: 1,
            scale_in_step: ScaleInStep::One,
            termination_pick: TerminationPick::BusiestFirst,
        }
    }
}

/// A capacity provider's managed scaling settings (API reference, *ManagedScaling*) and
/// its Auto Scaling group's bounds and instance size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedScaling {
    /// `targetCapacity`, 1 to 100 percent (default 100).
    pub target_capacity: u32,
    /// `minimumScalingStepSize` (default 1) and `maximumScalingStepSize` (default 10,000):
    /// scale-out only; "The scale in process is not affected by this parameter".
    pub minimum_scaling_step_size: usize,
    pub maximum_scaling_step_size: usize,
    /// `instanceWarmupPeriod` (default 300 s).
    pub instance_warmup: Duration,
    pub min_size: usize,
    pub max_size: usize,
    pub instance_cpu: i64,
    pub instance_memory_mib: i64,
    pub managed_termination_protection: bool,
}

impl ManagedScaling {
    /// The API's defaults, managed termination protection on.
    pub fn new(
        min_size: usize,
        max_size: usize,
        instance_cpu: i64,
        instance_memory_mib: i64,
    ) -> Self {
        Self {
            target_capacity: 100,
            minimum_scaling_step_size: 1,
            maximum_scaling_step_size: 10_000,
            instance_warmup: Duration::seconds(300),
            min_size,
            max_size,
            instance_cpu,
            instance_memory_mib,
            managed_termination_protection: true,
        }
    }
}

/// One published `CapacityProviderReservation` point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReservationPoint {
    pub at: DateTime<Utc>,
    pub value: f64,
    /// Instances in the group (N) and needed (M).
    pub instances: usize,
    pub needed: usize,
}

#[derive(Clone, Debug)]
struct Group {
    settings: ManagedScaling,
    /// When each instance the group launched registers.
    launching: Vec<DateTime<Utc>>,
    /// Instances the group is terminating (excluded from N).
    terminating: BTreeSet<String>,
    above: u32,
    below: u32,
    points: Vec<ReservationPoint>,
}

/// An application service: `wanted` tasks of `definition`, placed like a service whose
/// placement constraint is `memberOf(attribute:ecs-daemons.ready == true)`, on instances of
/// `provider` with room; the rest wait (PROVISIONING) and make the group scale out.
#[derive(Clone, Debug)]
pub(super) struct Application {
    definition: String,
    provider: String,
    wanted: usize,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Scaling {
    /// By (cluster, provider).
    groups: BTreeMap<(String, String), Group>,
    /// By (cluster, service).
    pub(super) applications: BTreeMap<(String, String), Application>,
    /// The next whole minute ECS collects information at.
    next_tick: Option<DateTime<Utc>>,
}

impl World {
    /// The next moment managed scaling does something, if it runs at all.
    pub(super) fn next_scaling_moment(&self) -> Option<DateTime<Utc>> {
        let launches = self
            .scaling
            .groups
            .values()
            .flat_map(|g| g.launching.iter().copied());
        launches.chain(self.scaling.next_tick).min()
    }

    /// Launches that registered and the minutes that passed, up to `until`.
    pub(super) fn run_scaling(&mut self, until: DateTime<Utc>) {
        let keys: Vec<(String, String)> = self.scaling.groups.keys().cloned().collect();
        for (cluster, provider) in &keys {
            let due: Vec<DateTime<Utc>> = self.scaling.groups[&(cluster.clone(), provider.clone())]
                .launching
                .iter()
                .copied()
                .filter(|at| *at <= until)
                .collect();
            if due.is_empty() {
                continue;
            }
            if let Some(group) = self
                .scaling
                .groups
                .get_mut(&(cluster.clone(), provider.clone()))
            {
                group.launching.retain(|at| *at > until);
            }
            let (cpu, memory) = {
                let settings = &self.scaling.groups[&(cluster.clone(), provider.clone())].settings;
                (settings.instance_cpu, settings.instance_memory_mib)
            };
            for _ in due {
                self.register(cluster, provider, cpu, memory);
            }
        }
        while let Some(tick) = self.scaling.next_tick.filter(|at| *at <= until) {
            self.scaling.next_tick = Some(tick + Duration::minutes(1));
            self.scaling_tick();
        }
    }

    /// Whether `instance_id` runs a task ECS counts as in use (any but a DAEMON service's).
    fn in_use(&self, cluster: &str, instance_id: &str) -> bool {
        self.clusters[cluster].tasks.values().any(|t| {
            t.instance_id == instance_id
                && !t.last_status.is_terminal()
                && !self.is_daemon_service_task(cluster, &t.group)
        })
    }

    fn scaling_tick(&mut self) {
        self.place_applications();
        let keys: Vec<(String, String)> = self.scaling.groups.keys().cloned().collect();
        for key in keys {
            self.scale_group(&key.0, &key.1);
        }
    }

    /// Places every application task that waits, where a ready instance has room.
    fn place_applications(&mut self) {
        let apps: Vec<((String, String), Application)> = self
            .scaling
            .applications
            .iter()
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        for ((cluster, service), app) in apps {
            let missing = app
                .wanted
                .saturating_sub(self.application_tasks(&cluster, &service));
            for _ in 0..missing {
                if self
                    .place_application(&cluster, &service, &app.definition, Some(&app.provider))
                    .is_none()
                {
                    break;
                }
            }
        }
    }

    fn application_tasks(&self, cluster: &str, service: &str) -> usize {
        let group = format!("service:{service}");
        self.clusters.get(cluster).map_or(0, |c| {
            c.tasks
                .values()
                .filter(|t| t.group == group && t.desired_status == TaskStatus::Running)
                .count()
        })
    }

    /// Instances needed for the tasks of `provider` that wait for room (binpacked on the
    /// group's instance size: "This calculation uses a binpack strategy").
    fn needed_for_provisioning(&self, cluster: &str, provider: &str, size: (i64, i64)) -> usize {
        let mut needed = 0;
        for ((c, service), app) in &self.scaling.applications {
            if c != cluster || app.provider != provider {
                continue;
            }
            let waiting = app
                .wanted
                .saturating_sub(self.application_tasks(c, service));
            let Some((_, definition)) = self.definitions.get(&app.definition) else {
                continue;
            };
            let per_instance = (size.0 / definition.cpu.max(1))
                .min(size.1 / definition.memory_mib.max(1))
                .max(0) as usize;
            // "If the smallest instance type can't run at least one instance of the task, the
            // calculation considers the task as not compatible".
            if per_instance > 0 {
                needed += waiting.div_ceil(per_instance);
            }
        }
        needed
    }

    fn scale_group(&mut self, cluster: &str, provider: &str) {
        let key = (cluster.to_string(), provider.to_string());
        let Some(group) = self.scaling.groups.get(&key).cloned() else {
            return;
        };
        let settings = &group.settings;
        let Some(state) = self.clusters.get(cluster) else {
            return;
        };
        let members: Vec<String> = state
            .instances
            .values()
            .filter(|i| i.provider == provider && !group.terminating.contains(&i.id))
            .map(|i| i.id.clone())
            .collect();
        let in_use = members.iter().filter(|id| self.in_use(cluster, id)).count();
        let instances = members.len() + group.launching.len();
        let needed = in_use
            + self.needed_for_provisioning(
                cluster,
                provider,
                (settings.instance_cpu, settings.instance_memory_mib),
            );
        let value = if instances == 0 {
            if needed > 0 {
                200.0
            } else {
                100.0
            }
        } else {
            needed as f64 * 100.0 / instances as f64
        };
        let target = f64::from(settings.target_capacity);
        let wanted = ((needed as f64 * 100.0) / target).ceil() as usize;
        let now = self.now;
        let warming = !group.launching.is_empty()
            || members.iter().any(|id| {
                self.clusters[cluster].instances[id].registered_at + settings.instance_warmup > now
            });
        let Some(group) = self.scaling.groups.get_mut(&key) else {
            return;
        };
        group.points.push(ReservationPoint {
            at: now,
            value,
            instances,
            needed,
        });
        if value > target {
            group.below = 0;
            group.above += 1;
            let knobs = self.config.scaling.clone();
            if group.above >= knobs.scale_out_points && !warming {
                let settings = &group.settings;
                let step = wanted.saturating_sub(instances).clamp(
                    settings.minimum_scaling_step_size,
                    settings.maximum_scaling_step_size,
                );
                let launch = step.min(settings.max_size.saturating_sub(instances));
                for _ in 0..launch {
                    group.launching.push(now + knobs.launch_time);
                }
            }
        } else if value < target {
            group.above = 0;
            group.below += 1;
            if group.below >= 15 {
                let floor = wanted.max(group.settings.min_size);
                let excess = instances.saturating_sub(floor);
                let most = match self.config.scaling.scale_in_step {
                    ScaleInStep::One => 1,
                    ScaleInStep::UpToHalf => (instances.saturating_sub(1) / 2).max(1),
                };
                let step = excess.min(most);
                if excess > 0 {
                    let protected = group.settings.managed_termination_protection;
                    self.scale_in_group(cluster, provider, &members, step, protected);
                }
            }
        } else {
            group.above = 0;
            group.below = 0;
        }
    }

    /// Terminates `count` instances of the group: with managed termination protection only
    /// empty ones (ECS lifts protection from those alone), else the group's termination
    /// policy's picks ([`TerminationPick`]). Each enters DRAINING
    /// (managed draining) and waits on the group's lifecycle hooks.
    fn scale_in_group(
        &mut self,
        cluster: &str,
        provider: &str,
        members: &[String],
        count: usize,
        protected: bool,
    ) {
        let mut candidates: Vec<String> = members
            .iter()
            .filter(|id| !protected || !self.in_use(cluster, id))
            .cloned()
            .collect();
        if !protected && self.config.scaling.termination_pick == TerminationPick::BusiestFirst {
            let busy = |world: &Self, id: &String| {
                world.clusters[cluster]
                    .tasks
                    .values()
                    .filter(|t| {
                        &t.instance_id == id
                            && !t.last_status.is_terminal()
                            && !world.is_daemon_service_task(cluster, &t.group)
                    })
                    .count()
            };
            let mut ranked: Vec<(usize, String)> = candidates
                .into_iter()
                .map(|id| (busy(self, &id), id))
                .collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            candidates = ranked.into_iter().map(|(_, id)| id).collect();
        }
        let mut chosen = Vec::new();
        while chosen.len() < count && !candidates.is_empty() {
            let pick =
                if protected || self.config.scaling.termination_pick != TerminationPick::Random {
                    0
                } else {
                    self.rng.below(candidates.len() as u64) as usize
                };
            chosen.push(candidates.remove(pick));
        }
        let key = (cluster.to_string(), provider.to_string());
        for id in chosen {
            if let Some(group) = self.scaling.groups.get_mut(&key) {
                group.terminating.insert(id.clone());
            }
            self.drain(cluster, &id);
            self.terminate(cluster, &id);
        }
    }

    /// An instance left: the group no longer counts it as terminating.
    pub(super) fn forget_instance_for_scaling(&mut self, cluster: &str, instance: &str) {
        for ((c, _), group) in self.scaling.groups.iter_mut() {
            if c == cluster {
                group.terminating.remove(instance);
            }
        }
    }
}

impl ClusterModel {
    /// Turns on managed scaling for `provider` in `cluster` (DescribeCapacityProviders then
    /// reports it, with managed termination protection as set). ECS starts collecting at the
    /// next whole minute.
    pub fn enable_managed_scaling(&self, cluster: &str, provider: &str, settings: ManagedScaling) {
        let mut world = self.world();
        world.provider_kinds.insert(
            provider.into(),
            CapacityProviderKind::AutoScalingGroup {
                managed_scaling: true,
                managed_termination_protection: settings.managed_termination_protection,
            },
        );
        let next_minute = world
            .now
            .duration_trunc(Duration::minutes(1))
            .unwrap_or(world.now)
            + Duration::minutes(1);
        world.scaling.next_tick.get_or_insert(next_minute);
        world.scaling.groups.insert(
            (cluster.into(), provider.into()),
            Group {
                settings,
                launching: Vec::new(),
                terminating: BTreeSet::new(),
                above: 0,
                below: 0,
                points: Vec::new(),
            },
        );
    }

    /// An application service wants `count` tasks of `definition` on `provider` (0 to end
    /// it: its tasks are stopped at once, as a service scaled to zero stops them).
    pub fn set_application(
        &self,
        cluster: &str,
        service: &str,
        definition: &str,
        provider: &str,
        count: usize,
    ) {
        let mut world = self.world();
        world.scaling.applications.insert(
            (cluster.into(), service.into()),
            Application {
                definition: definition.into(),
                provider: provider.into(),
                wanted: count,
            },
        );
        let group = format!("service:{service}");
        let extra: Vec<String> = world
            .clusters
            .get(cluster)
            .map(|c| {
                c.tasks
                    .values()
                    .filter(|t| t.group == group && t.desired_status == TaskStatus::Running)
                    .map(|t| t.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for task in extra.iter().skip(count) {
            world.stop_task(
                cluster,
                task,
                "ServiceSchedulerInitiated",
                "Service scaled in",
            );
        }
        world.place_applications();
    }

    /// Every `CapacityProviderReservation` point published for the provider so far.
    pub fn capacity_provider_reservation(
        &self,
        cluster: &str,
        provider: &str,
    ) -> Vec<ReservationPoint> {
        self.world()
            .scaling
            .groups
            .get(&(cluster.to_string(), provider.to_string()))
            .map(|g| g.points.clone())
            .unwrap_or_default()
    }

    /// Instances of the provider's group: registered (not terminating) and launching.
    pub fn group_size(&self, cluster: &str, provider: &str) -> usize {
        let world = self.world();
        let Some(group) = world
            .scaling
            .groups
            .get(&(cluster.to_string(), provider.to_string()))
        else {
            return 0;
        };
        let registered = world.clusters.get(cluster).map_or(0, |c| {
            c.instances
                .values()
                .filter(|i| {
                    i.provider == provider
                        && !group.terminating.contains(&i.id)
                        && i.status != InstanceStatus::Inactive
                })
                .count()
        });
        registered + group.launching.len()
    }
}
