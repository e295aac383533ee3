//! Spec documents as users write them: ECS's samples register unchanged, mistakes are named.

use capstan_core::taskdef::Quantity;
use capstan_core::{DocumentError, Service, TaskDefinition, accept};
use serde_json::{Value, json};

const SAMPLE_FARGATE: &str = include_str!("fixtures/sample-fargate.json");

fn parse_error(err: DocumentError) -> (String, String) {
    match err {
        DocumentError::Parse { path, message } => (path, message),
        other => panic!("expected a parse error, got {other}"),
    }
}

#[test]
fn ecs_sample_fargate_registers_unchanged() {
    let accepted = accept::<TaskDefinition>(SAMPLE_FARGATE.as_bytes()).expect("sample is valid");
    let td = accepted.value;
    assert_eq!(td.family, "sample-fargate");
    assert_eq!(td.cpu, Some(Quantity::Text("256".into())));
    assert_eq!(td.reserved_cpu(), 256);
    assert_eq!(td.reserved_memory(), 512);
    let c = &td.container_definitions[0];
    assert_eq!(c.name, "fargate-app");
    assert_eq!(
        c.entry_point.as_deref(),
        Some(&["sh".to_string(), "-c".to_string()][..])
    );
    assert_eq!(c.port_mappings[0].container_port, Some(80));
    assert!(c.is_essential());

    // Round trip: what we store is what the user wrote, field for field.
    let original: Value = serde_json::from_str(SAMPLE_FARGATE).expect("json");
    let stored = serde_json::to_value(&td).expect("serialises");
    assert_eq!(stored, original);
}

#[test]
fn unknown_task_definition_field_is_named_with_its_path() {
    let mut doc: Value = serde_json::from_str(SAMPLE_FARGATE).expect("json");
    doc["containerDefinitions"][0]["imagePullPolicy"] = json!("Always");
    let err = accept::<TaskDefinition>(doc.to_string().as_bytes()).expect_err("unknown field");
    let (path, message) = parse_error(err);
    assert_eq!(path, "containerDefinitions[0].imagePullPolicy");
    assert!(
        message.contains("unknown field `imagePullPolicy`"),
        "{message}"
    );
}

#[test]
fn unknown_top_level_field_is_rejected() {
    let err = accept::<TaskDefinition>(br#"{"family":"a","containerDefinitions":[],"replicas":3}"#)
        .expect_err("unknown field");
    let (path, _) = parse_error(err);
    assert_eq!(path, "replicas");
}

#[test]
fn ecs_fields_capstan_ignores_are_kept_with_warnings() {
    let doc = json!({
        "family": "web",
        "executionRoleArn": "arn:aws:iam::1:role/x",
        "containerDefinitions": [{
            "name": "app", "image": "busybox", "memory": 64,
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}}
        }, {
            "name": "side", "image": "busybox", "memory": 64, "essential": false,
            "logConfiguration": {"logDriver": "splunk"}
        }]
    });
    let accepted = accept::<TaskDefinition>(doc.to_string().as_bytes()).expect("valid");
    let paths: Vec<&str> = accepted.warnings.iter().map(|w| w.path.as_str()).collect();
    // awslogs names the logs (no warning); another driver is not used, and says so.
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths.contains(&"executionRoleArn"));
    assert!(paths.contains(&"containerDefinitions[1].logConfiguration.logDriver"));
    let stored = serde_json::to_value(&accepted.value).expect("serialises");
    assert_eq!(stored, doc, "ignored fields are kept as written");
}

#[test]
fn task_definition_rules_name_their_fields() {
    let cases = [
        (
            json!({"family": "a", "containerDefinitions": [{"name": "c", "image": "i"}]}),
            "At least one of 'memory' or 'memoryReservation' must be specified",
        ),
        (
            json!({"family": "a", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64, "essential": false}]}),
            "containerDefinitions: at least one container must be essential",
        ),
        (
            json!({"family": "a b", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64}]}),
            "family: \"a b\" is not a valid name",
        ),
        (
            json!({"family": "a", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64,
                "portMappings": [{"containerPort": 70000}]}]}),
            "containerDefinitions[0].portMappings[0].containerPort: must be between 1 and 65535",
        ),
        (
            json!({"family": "a", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64,
                "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 1}}]}),
            "containerDefinitions[0].healthCheck.interval: must be between 5 and 300",
        ),
        (
            json!({"family": "a", "cpu": "lots", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64}]}),
            "cpu: Text(\"lots\") is not a valid amount",
        ),
        (
            json!({"family": "a", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64,
                "dependsOn": [{"containerName": "nope", "condition": "START"}]}]}),
            "containerDefinitions[0].dependsOn[0].containerName: no container named \"nope\"",
        ),
        (
            json!({"family": "a", "networkMode": "awsvpc", "containerDefinitions": [{"name": "c",
                "image": "i", "memory": 64, "extraHosts": [{"hostname": "h", "ipAddress": "10.0.0.1"}]}]}),
            "containerDefinitions[0].extraHosts: extraHosts is not allowed with networkMode awsvpc",
        ),
        (
            json!({"family": "a", "networkMode": "awsvpc", "containerDefinitions": [{"name": "c",
                "image": "i", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 8080}]}]}),
            "containerDefinitions[0].portMappings[0].hostPort: with this networkMode hostPort must be empty or equal to containerPort (80)",
        ),
        (
            json!({"family": "a", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64,
                "logConfiguration": {"logDriver": "awslogs", "options": {"mode": "fast"}}}]}),
            "containerDefinitions[0].logConfiguration.options.mode: \"fast\" is not a mode: blocking or non-blocking",
        ),
        (
            json!({"family": "a", "containerDefinitions": [{"name": "c", "image": "i", "memory": 64,
                "logConfiguration": {"logDriver": "json-file",
                    "options": {"mode": "blocking", "max-buffer-size": "4m"}}}]}),
            "containerDefinitions[0].logConfiguration.options.max-buffer-size: applies only with mode non-blocking",
        ),
    ];
    for (doc, expected) in cases {
        let err = accept::<TaskDefinition>(doc.to_string().as_bytes()).expect_err("invalid");
        assert!(
            err.to_string().contains(expected),
            "{doc}\n  got: {err}\n  want: {expected}"
        );
    }
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("c{i}"), "image": "i", "memory": 64}))
        .collect();
    let doc = json!({"family": "a", "containerDefinitions": eleven});
    let err = accept::<TaskDefinition>(doc.to_string().as_bytes()).expect_err("11 containers");
    assert!(err.to_string().contains("at most 10 containers"), "{err}");
}

#[test]
fn task_level_units_accept_ecs_spellings() {
    let doc = json!({"family": "a", "cpu": "1 vCPU", "memory": "2 GB",
        "containerDefinitions": [{"name": "c", "image": "i"}]});
    let td = accept::<TaskDefinition>(doc.to_string().as_bytes())
        .expect("valid")
        .value;
    assert_eq!(td.reserved_cpu(), 1024);
    assert_eq!(td.reserved_memory(), 2048);
}

fn service(extra: Value) -> Value {
    let mut doc = json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 2});
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    doc
}

#[test]
fn service_with_maximum_percent_50_is_rejected() {
    let doc = service(json!({"deploymentConfiguration": {"maximumPercent": 50}}));
    let err = accept::<Service>(doc.to_string().as_bytes()).expect_err("max 50");
    assert_eq!(
        err.to_string(),
        "deploymentConfiguration.maximumPercent: must be between 100 and 2000, got 50"
    );
}

#[test]
fn service_defaults_are_ecs() {
    let svc = accept::<Service>(service(json!({})).to_string().as_bytes())
        .expect("valid")
        .value;
    assert_eq!(svc.minimum_healthy_percent(), 100);
    assert_eq!(svc.maximum_percent(), 200);
    let daemon = accept::<Service>(
        json!({"serviceName": "d", "taskDefinition": "d", "schedulingStrategy": "DAEMON"})
            .to_string()
            .as_bytes(),
    )
    .expect("valid")
    .value;
    assert_eq!(daemon.minimum_healthy_percent(), 0);
    assert_eq!(daemon.maximum_percent(), 100);
}

#[test]
fn service_rules_name_their_fields() {
    let cases = [
        (
            service(json!({"taskDefinition": "web:0"})),
            "taskDefinition: Invalid revision number. Number: 0",
        ),
        (
            service(json!({"desiredCount": null})),
            "desiredCount: desiredCount is required",
        ),
        (
            service(json!({"deploymentConfiguration": {"minimumHealthyPercent": 101}})),
            "deploymentConfiguration.minimumHealthyPercent: must be between 0 and 100",
        ),
        (
            service(json!({"placementStrategy": [{"type": "binpack", "field": "disk"}]})),
            "placementStrategy[0].field: binpack needs field cpu or memory",
        ),
        (
            service(
                json!({"placementConstraints": [{"type": "distinctInstance", "expression": "x"}]}),
            ),
            "placementConstraints[0].expression: distinctInstance takes no expression",
        ),
        (
            service(
                json!({"launchType": "EC2", "capacityProviderStrategy": [{"capacityProvider": "a", "weight": 1}]}),
            ),
            "Specify either Launch Type or Capacity Provider Strategy, but not both.",
        ),
        (
            service(
                json!({"capacityProviderStrategy": [{"capacityProvider": "a", "base": 1, "weight": 1}, {"capacityProvider": "b", "base": 2, "weight": 1}]}),
            ),
            "only one capacity provider in a strategy may have a base",
        ),
        (
            service(
                json!({"deploymentConfiguration": {"strategy": "BLUE_GREEN", "lifecycleHooks": [
                {"targetType": "PAUSE", "lifecycleStages": ["PRODUCTION_TRAFFIC_SHIFT"]}]}}),
            ),
            "deploymentConfiguration.lifecycleHooks[0].lifecycleStages[0]: PAUSE hooks cannot run",
        ),
        (
            service(json!({"loadBalancers": [{"targetGroupArn": "blue", "containerName": "app"}]})),
            "loadBalancers[0].containerPort: containerPort is required",
        ),
    ];
    for (doc, expected) in cases {
        let err = accept::<Service>(doc.to_string().as_bytes()).expect_err("invalid");
        assert!(
            err.to_string().contains(expected),
            "{doc}\n  got: {err}\n  want: {expected}"
        );
    }
}

#[test]
fn service_unknown_nested_field_is_named() {
    let doc = service(json!({"deploymentConfiguration": {"maxSurge": 1}}));
    let (path, _) =
        parse_error(accept::<Service>(doc.to_string().as_bytes()).expect_err("unknown"));
    assert_eq!(path, "deploymentConfiguration.maxSurge");
}
