//! Shared setup for tests against the local moto server started by scripts/test.sh.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_ecs::types::{ContainerDefinition, HealthCheck};

/// The moto endpoint; a test run without it is a setup error, not a skip.
pub fn endpoint() -> String {
    let url = std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run these tests through scripts/test.sh, which starts moto",
    );
    assert!(
        url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:"),
        "tests only talk to a loopback moto server, not {url}"
    );
    url
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    endpoint();
    ecs_daemons::aws::load_config().await
}

/// A name no other test of this run uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// EC2 `RunInstances` on moto over its query protocol (the project has no EC2 SDK
/// dependency; container instance registration needs a real instance id in moto).
pub fn run_ec2_instances(count: usize) -> Vec<String> {
    let url = endpoint();
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let body = format!(
        "Action=RunInstances&Version=2016-11-15&ImageId=ami-760aaa0f&InstanceType=m5.large&MinCount={count}&MaxCount={count}"
    );
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20261124/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(&address).expect("connect to moto");
    stream
        .write_all(request.as_bytes())
        .expect("send RunInstances");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("read RunInstances answer");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "RunInstances failed: {answer}"
    );
    let ids: Vec<String> = answer
        .split("<instanceId>")
        .skip(1)
        .filter_map(|rest| rest.split("</instanceId>").next())
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), count, "RunInstances answer: {answer}");
    ids
}

/// Creates a cluster and registers `count` container instances; returns their ARNs.
pub async fn cluster_with_instances(
    client: &aws_sdk_ecs::Client,
    cluster: &str,
    count: usize,
) -> Vec<String> {
    client
        .create_cluster()
        .cluster_name(cluster)
        .send()
        .await
        .expect("CreateCluster");
    let mut arns = Vec::with_capacity(count);
    for instance_id in run_ec2_instances(count) {
        let document = format!(r#"{{"instanceId": "{instance_id}"}}"#);
        let registered = client
            .register_container_instance()
            .cluster(cluster)
            .instance_identity_document(document)
            .send()
            .await
            .expect("RegisterContainerInstance");
        arns.push(
            registered
                .container_instance()
                .unwrap()
                .container_instance_arn()
                .unwrap()
                .to_string(),
        );
    }
    arns
}

/// Registers a daemon-like task definition: 256 CPU, 128 MiB, optional execution role and health check.
pub async fn register_daemon_definition(
    client: &aws_sdk_ecs::Client,
    family: &str,
    execution_role: Option<&str>,
    with_health_check: bool,
) -> String {
    let mut container = ContainerDefinition::builder()
        .name("agent")
        .image("public.ecr.aws/cloudwatch-agent/cloudwatch-agent:latest")
        .cpu(256)
        .memory(128)
        .essential(true);
    if with_health_check {
        container = container.health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("exit 0")
                .interval(10)
                .build()
                .unwrap(),
        );
    }
    let registered = client
        .register_task_definition()
        .family(family)
        .set_execution_role_arn(execution_role.map(str::to_string))
        .container_definitions(container.build())
        .send()
        .await
        .expect("RegisterTaskDefinition");
    let definition = registered.task_definition().unwrap();
    format!("{}:{}", definition.family().unwrap(), definition.revision())
}
