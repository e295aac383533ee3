//! Builders for resources in tests: short, readable, and valid by construction.

use capstan_core::service::{DeploymentCircuitBreaker, DeploymentConfiguration};
use capstan_core::taskdef::{ContainerDefinition, PortMapping};
use capstan_core::{KeyValuePair, Service, TaskDefinition};

/// A task definition with one essential container running `command` through `sh -c`.
pub fn task_definition(family: &str, command: &str) -> TaskDefinition {
    TaskDefinition {
        family: family.to_string(),
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "capstan/busybox:test".into(),
            memory: Some(64),
            cpu: Some(128),
            entry_point: Some(vec!["sh".into(), "-c".into()]),
            command: Some(vec![command.to_string()]),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Fluent changes to a task definition.
pub trait TaskDefinitionExt {
    /// Adds a dynamic-port mapping for `container_port` to the first container.
    fn with_port(self, container_port: u32) -> Self;
    /// Adds an environment variable to the first container.
    fn with_env(self, name: &str, value: &str) -> Self;
    /// Sets task-level cpu and memory.
    fn with_resources(self, cpu: u32, memory: u32) -> Self;
}

impl TaskDefinitionExt for TaskDefinition {
    fn with_port(mut self, container_port: u32) -> Self {
        if let Some(c) = self.container_definitions.first_mut() {
            c.port_mappings.push(PortMapping {
                container_port: Some(container_port),
                ..Default::default()
            });
        }
        self
    }

    fn with_env(mut self, name: &str, value: &str) -> Self {
        if let Some(c) = self.container_definitions.first_mut() {
            c.environment.push(KeyValuePair {
                name: name.into(),
                value: value.into(),
            });
        }
        self
    }

    fn with_resources(mut self, cpu: u32, memory: u32) -> Self {
        use capstan_core::taskdef::Quantity;
        self.cpu = Some(Quantity::Text(cpu.to_string()));
        self.memory = Some(Quantity::Text(memory.to_string()));
        self
    }
}

/// A REPLICA service of `desired` tasks of `task_definition`.
pub fn service(name: &str, task_definition: &str, desired: u32) -> Service {
    Service {
        service_name: name.to_string(),
        task_definition: Some(task_definition.to_string()),
        desired_count: Some(desired),
        ..Default::default()
    }
}

/// Fluent changes to a service.
pub trait ServiceExt {
    /// Sets minimumHealthyPercent and maximumPercent.
    fn with_percents(self, min: u32, max: u32) -> Self;
    /// Enables the circuit breaker.
    fn with_breaker(self, rollback: bool) -> Self;
}

impl ServiceExt for Service {
    fn with_percents(mut self, min: u32, max: u32) -> Self {
        let cfg = self
            .deployment_configuration
            .get_or_insert_with(DeploymentConfiguration::default);
        cfg.minimum_healthy_percent = Some(min);
        cfg.maximum_percent = Some(max);
        self
    }

    fn with_breaker(mut self, rollback: bool) -> Self {
        let cfg = self
            .deployment_configuration
            .get_or_insert_with(DeploymentConfiguration::default);
        cfg.deployment_circuit_breaker = Some(DeploymentCircuitBreaker {
            enable: true,
            rollback,
            ..Default::default()
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_resources_validate() {
        let td = task_definition("web", "sleep 1")
            .with_port(8080)
            .with_env("A", "b")
            .with_resources(256, 128);
        td.validate().expect("valid task definition");
        let svc = service("web", "web:1", 3)
            .with_percents(50, 100)
            .with_breaker(true);
        svc.validate().expect("valid service");
    }
}
