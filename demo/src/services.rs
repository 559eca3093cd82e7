//! The seed's scenario on an EC2 capacity provider with managed scaling: the agent runs as
//! two DAEMON services steered per instance by its slot attribute, so ECS counts its copies
//! as daemons. Applications arrive and the group scales out (each new instance gets its
//! copy first, then becomes ready); a new revision rolls out from the idle service, the new
//! copy beside the old one; the applications leave and the group scales back in while the
//! daemons still run (standalone copies would hold `CapacityProviderReservation` at 100 %).

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::rollout::{Amount, RolloutConfig};
use ecs_daemons_sim::cluster_model::{ManagedScaling, TaskDefinitionModel};

use super::{Demo, CLUSTER};

pub const SCALED_PROVIDER: &str = "asg-scaled";
const DAEMON: &str = "otel-collector-daemon";

impl Demo {
    /// Names the provider's instances ECS launched by itself, in the order they registered.
    fn name_launched(&mut self, provider: &str) {
        let mut launched: Vec<_> = self
            .harness
            .model
            .instances(CLUSTER)
            .into_iter()
            .filter(|i| i.capacity_provider.as_deref() == Some(provider))
            .filter(|i| !self.names.contains_key(i.id()))
            .collect();
        launched.sort_by_key(|i| i.registered_at);
        for instance in launched {
            let counter = self.counters.entry(provider.to_string()).or_default();
            *counter += 1;
            let name = format!("{provider}-{counter:02}");
            self.names.insert(instance.id().to_string(), name);
        }
    }

    /// The group as ECS sees it: instances, the last reservation point, the copies running.
    fn scaling_line(&self) -> String {
        let model = &self.harness.model;
        let reservation = model
            .capacity_provider_reservation(CLUSTER, SCALED_PROVIDER)
            .last()
            .map_or("-".to_string(), |p| format!("{:.0} %", p.value));
        let active: Vec<String> = model
            .instances(CLUSTER)
            .into_iter()
            .filter(|i| i.capacity_provider.as_deref() == Some(SCALED_PROVIDER))
            .filter(|i| i.status == InstanceStatus::Active)
            .map(|i| i.id().to_string())
            .collect();
        let tasks = model.tasks(CLUSTER);
        let running = |group: &str| {
            tasks
                .iter()
                .filter(|t| active.contains(&t.instance_id))
                .filter(|t| t.group.starts_with(group) && t.last_status == TaskStatus::Running)
                .count()
        };
        format!(
            "{SCALED_PROVIDER}: {} instance(s) in the group, CapacityProviderReservation {reservation}, {} daemon copies and {} application task(s) running",
            model.group_size(CLUSTER, SCALED_PROVIDER),
            running(&format!("service:ecs-daemons-{DAEMON}-")),
            running("service:orders"),
        )
    }

    fn active_names(&self, provider: &str) -> Vec<String> {
        self.harness
            .model
            .instances(CLUSTER)
            .into_iter()
            .filter(|i| i.capacity_provider.as_deref() == Some(provider))
            .filter(|i| i.status == InstanceStatus::Active)
            .map(|i| self.name(i.id()))
            .collect()
    }

    async fn run_scaled(&mut self, seconds: i64) {
        let done = self
            .harness
            .run_scheduled(Duration::seconds(seconds), 60)
            .await;
        self.name_launched(SCALED_PROVIDER);
        self.show(&done);
    }
}

pub async fn daemon_services(demo: &mut Demo) {
    demo.headline(&format!(
        "EC2 capacity provider {SCALED_PROVIDER} with managed scaling (target 100 %, 1 to 6 instances of 4 vCPU) and managed termination protection: 2 instances"
    ));
    let model = &demo.harness.model;
    model.enable_managed_scaling(
        CLUSTER,
        SCALED_PROVIDER,
        ManagedScaling::new(1, 6, 4096, 8192),
    );
    let v1 = model.register_task_definition(TaskDefinitionModel::new(DAEMON, 512, 512));
    let v2 = model.register_task_definition(TaskDefinitionModel::new(DAEMON, 512, 512));
    let orders = model.register_task_definition(TaskDefinitionModel::new("orders", 1024, 2048));
    for _ in 0..2 {
        demo.add_instance(SCALED_PROVIDER);
    }
    demo.note(
        "ECS counts a task as a daemon only when a DAEMON service runs it: standalone copies would keep every instance \"in use\" and the group could never scale in",
    );

    demo.headline(&format!(
        "deploy {DAEMON} ({v1}) to {SCALED_PROVIDER}: placement auto picks DAEMON services"
    ));
    demo.deploy(DeployRequest::new(
        CLUSTER,
        DAEMON,
        &v1,
        &[SCALED_PROVIDER],
        0,
    ))
    .await;
    demo.note(&format!(
        "services ecs-daemons-{DAEMON}-a ({v1}) and -b (idle) run one copy on each instance whose attribute ecs-daemons.slot.{DAEMON} names their letter"
    ));
    demo.run_scaled(90).await;
    let line = demo.scaling_line();
    demo.note(&line);

    demo.headline("service orders wants 10 tasks (1 vCPU, 2 GiB): the reservation climbs, ECS launches instances, each gets its copy before it is ready");
    demo.harness
        .model
        .set_application(CLUSTER, "orders", &orders, SCALED_PROVIDER, 10);
    for _ in 0..3 {
        demo.run_scaled(120).await;
        let line = demo.scaling_line();
        demo.note(&line);
    }

    let rollout = RolloutConfig {
        max_parallel: Amount::Count(2),
        min_healthy_seconds: 30,
        ..RolloutConfig::default()
    };
    demo.headline(&format!(
        "rolling update to {v2} on services: service B gets {v2}, each instance's letter goes a → ab (the new copy starts beside the old) → b"
    ));
    demo.deploy(DeployRequest {
        rollout: Some(rollout),
        ..DeployRequest::new(CLUSTER, DAEMON, &v2, &[SCALED_PROVIDER], 0)
    })
    .await;
    demo.run_scaled(300).await;
    let line = demo.scaling_line();
    demo.note(&line);

    demo.headline("service orders scales to 0: only daemon copies are left, so managed scaling scales the group in (15 one-minute points below target, then ECS's own steps)");
    demo.harness
        .model
        .set_application(CLUSTER, "orders", &orders, SCALED_PROVIDER, 0);
    for _ in 0..5 {
        let before = demo.active_names(SCALED_PROVIDER);
        demo.run_scaled(300).await;
        let after = demo.active_names(SCALED_PROVIDER);
        let gone: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
        if !gone.is_empty() {
            demo.note(&format!(
                "scaled in, daemons running until the end: {} (empty but for its daemon copy; ECS drained it, the copy stopped last)",
                gone.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let line = demo.scaling_line();
        demo.note(&line);
    }
}
