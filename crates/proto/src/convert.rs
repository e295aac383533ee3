//! Conversions between agent messages and core types.

use capstan_core::task::{
    Attachment, Container, ENI, HealthStatus, NetworkBinding, NetworkInterface, StopCode, Task,
    TaskOverride, TaskStatus,
};
use capstan_core::taskdef::Protocol;
use capstan_core::{DocumentError, TaskDefinition, Timestamp, accept};

use crate::agent::v1 as pb;

/// A message that does not convert.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// An embedded JSON document is invalid.
    #[error("{field}: {source}")]
    Document {
        /// The message field.
        field: &'static str,
        /// Why.
        #[source]
        source: DocumentError,
    },
    /// An enum value is out of range or unspecified.
    #[error("{field}: unknown value {value}")]
    Enum {
        /// The message field.
        field: &'static str,
        /// The raw value.
        value: i32,
    },
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Provisioning => pb::TaskStatus::Provisioning,
            TaskStatus::Pending => pb::TaskStatus::Pending,
            TaskStatus::Activating => pb::TaskStatus::Activating,
            TaskStatus::Running => pb::TaskStatus::Running,
            TaskStatus::Deactivating => pb::TaskStatus::Deactivating,
            TaskStatus::Stopping => pb::TaskStatus::Stopping,
            TaskStatus::Deprovisioning => pb::TaskStatus::Deprovisioning,
            TaskStatus::Stopped => pb::TaskStatus::Stopped,
        }
    }
}

/// Core status of a wire status.
pub fn task_status(field: &'static str, raw: i32) -> Result<TaskStatus, ConvertError> {
    Ok(
        match pb::TaskStatus::try_from(raw).map_err(|_| ConvertError::Enum { field, value: raw })? {
            pb::TaskStatus::Unspecified => return Err(ConvertError::Enum { field, value: raw }),
            pb::TaskStatus::Provisioning => TaskStatus::Provisioning,
            pb::TaskStatus::Pending => TaskStatus::Pending,
            pb::TaskStatus::Activating => TaskStatus::Activating,
            pb::TaskStatus::Running => TaskStatus::Running,
            pb::TaskStatus::Deactivating => TaskStatus::Deactivating,
            pb::TaskStatus::Stopping => TaskStatus::Stopping,
            pb::TaskStatus::Deprovisioning => TaskStatus::Deprovisioning,
            pb::TaskStatus::Stopped => TaskStatus::Stopped,
        },
    )
}

impl From<HealthStatus> for pb::HealthStatus {
    fn from(h: HealthStatus) -> Self {
        match h {
            HealthStatus::Healthy => pb::HealthStatus::Healthy,
            HealthStatus::Unhealthy => pb::HealthStatus::Unhealthy,
            HealthStatus::Unknown => pb::HealthStatus::Unknown,
        }
    }
}

/// Core health of a wire health (unknown values read as UNKNOWN).
pub fn health_status(raw: i32) -> HealthStatus {
    match pb::HealthStatus::try_from(raw) {
        Ok(pb::HealthStatus::Healthy) => HealthStatus::Healthy,
        Ok(pb::HealthStatus::Unhealthy) => HealthStatus::Unhealthy,
        _ => HealthStatus::Unknown,
    }
}

impl From<StopCode> for pb::StopCode {
    fn from(c: StopCode) -> Self {
        match c {
            StopCode::TaskFailedToStart => pb::StopCode::TaskFailedToStart,
            StopCode::EssentialContainerExited => pb::StopCode::EssentialContainerExited,
            StopCode::UserInitiated => pb::StopCode::UserInitiated,
            StopCode::ServiceSchedulerInitiated => pb::StopCode::ServiceSchedulerInitiated,
            StopCode::SpotInterruption => pb::StopCode::SpotInterruption,
            StopCode::TerminationNotice => pb::StopCode::TerminationNotice,
            StopCode::InfrastructureHealth => pb::StopCode::InfrastructureHealth,
        }
    }
}

/// Core stop code of a wire stop code (`None` when unspecified).
pub fn stop_code(raw: i32) -> Option<StopCode> {
    match pb::StopCode::try_from(raw).ok()? {
        pb::StopCode::Unspecified => None,
        pb::StopCode::TaskFailedToStart => Some(StopCode::TaskFailedToStart),
        pb::StopCode::EssentialContainerExited => Some(StopCode::EssentialContainerExited),
        pb::StopCode::UserInitiated => Some(StopCode::UserInitiated),
        pb::StopCode::ServiceSchedulerInitiated => Some(StopCode::ServiceSchedulerInitiated),
        pb::StopCode::SpotInterruption => Some(StopCode::SpotInterruption),
        pb::StopCode::TerminationNotice => Some(StopCode::TerminationNotice),
        pb::StopCode::InfrastructureHealth => Some(StopCode::InfrastructureHealth),
    }
}

fn timestamp(t: Option<&prost_types::Timestamp>) -> Option<Timestamp> {
    t.map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

/// A wire timestamp of epoch seconds.
pub fn to_timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.trunc() as i64,
        nanos: ((t.fract() * 1e9) as i32).clamp(0, 999_999_999),
    }
}

impl pb::StartTaskRequest {
    /// The task definition it carries, parsed and validated.
    pub fn task_definition(&self) -> Result<TaskDefinition, ConvertError> {
        accept::<TaskDefinition>(self.task_definition_json.as_bytes())
            .map(|a| a.value)
            .map_err(|source| ConvertError::Document {
                field: "task_definition_json",
                source,
            })
    }

    /// The overrides it carries, if any.
    pub fn overrides(&self) -> Result<Option<TaskOverride>, ConvertError> {
        if self.overrides_json.trim().is_empty() {
            return Ok(None);
        }
        capstan_core::parse_json(self.overrides_json.as_bytes())
            .map(Some)
            .map_err(|source| ConvertError::Document {
                field: "overrides_json",
                source,
            })
    }
}

impl pb::TaskState {
    /// Applies what the agent reports to the scheduler's task record.
    pub fn apply_to(&self, task: &mut Task) -> Result<(), ConvertError> {
        task.last_status = task_status("last_status", self.last_status)?;
        task.health_status = health_status(self.health_status);
        task.stop_code = stop_code(self.stop_code).or(task.stop_code);
        if !self.stopped_reason.is_empty() {
            task.stopped_reason = Some(self.stopped_reason.clone());
        }
        task.started_at = timestamp(self.started_at.as_ref()).or(task.started_at);
        task.stopped_at = timestamp(self.stopped_at.as_ref()).or(task.stopped_at);
        task.containers = self
            .containers
            .iter()
            .map(|c| {
                Ok(Container {
                    name: c.name.clone(),
                    image: task
                        .containers
                        .iter()
                        .find(|old| old.name == c.name)
                        .map(|old| old.image.clone())
                        .unwrap_or_default(),
                    last_status: task_status("containers.last_status", c.last_status)?,
                    exit_code: c.exit_code,
                    reason: (!c.reason.is_empty()).then(|| c.reason.clone()),
                    network_bindings: c
                        .network_bindings
                        .iter()
                        .map(|b| NetworkBinding {
                            bind_ip: b.bind_ip.clone(),
                            container_port: b.container_port,
                            host_port: b.host_port,
                            protocol: if b.protocol == "udp" {
                                Protocol::Udp
                            } else {
                                Protocol::Tcp
                            },
                        })
                        .collect(),
                    health_status: health_status(c.health_status),
                    runtime_id: (!c.runtime_id.is_empty()).then(|| c.runtime_id.clone()),
                    restart_count: c.restart_count,
                    network_interfaces: (!c.private_ipv4_address.is_empty())
                        .then(|| NetworkInterface {
                            attachment_id: Some(eni_id(task.id())),
                            private_ipv4_address: Some(c.private_ipv4_address.clone()),
                        })
                        .into_iter()
                        .collect(),
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        // awsvpc: the task's interface, as ECS reports it, once its address is known.
        if let Some(ip) = self
            .containers
            .iter()
            .map(|c| c.private_ipv4_address.as_str())
            .find(|ip| !ip.is_empty())
        {
            let id = eni_id(task.id());
            let detail = |name: &str, value: String| capstan_core::KeyValuePair {
                name: name.into(),
                value,
            };
            task.attachments = vec![Attachment {
                id: id.clone(),
                kind: ENI.into(),
                status: if task.last_status == TaskStatus::Stopped {
                    "DELETED".into()
                } else {
                    "ATTACHED".into()
                },
                details: vec![
                    detail("networkInterfaceId", id),
                    detail("privateIPv4Address", ip.to_string()),
                    detail("subnetId", format!("capstan-{}", task.cluster())),
                ],
            }];
        }
        Ok(())
    }
}

/// The id of task `task_id`'s network interface (awsvpc).
pub fn eni_id(task_id: &str) -> String {
    format!("eni-{}", task_id.chars().take(17).collect::<String>())
}

/// One task's outcome in a StartTasks answer.
pub fn start_result(task_id: &str, r: Result<pb::TaskState, tonic::Status>) -> pb::StartTaskResult {
    match r {
        Ok(task) => pb::StartTaskResult {
            task_id: task_id.to_string(),
            task: Some(task),
            code: 0,
            message: String::new(),
        },
        Err(status) => pb::StartTaskResult {
            task_id: task_id.to_string(),
            task: None,
            code: status.code() as i32,
            message: status.message().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            TaskStatus::Provisioning,
            TaskStatus::Pending,
            TaskStatus::Activating,
            TaskStatus::Running,
            TaskStatus::Deactivating,
            TaskStatus::Stopping,
            TaskStatus::Deprovisioning,
            TaskStatus::Stopped,
        ] {
            let raw = pb::TaskStatus::from(s) as i32;
            assert_eq!(task_status("s", raw).expect("converts"), s);
        }
        assert!(task_status("s", 0).is_err());
        assert!(task_status("s", 99).is_err());
        for c in [
            StopCode::EssentialContainerExited,
            StopCode::InfrastructureHealth,
        ] {
            assert_eq!(stop_code(pb::StopCode::from(c) as i32), Some(c));
        }
        assert_eq!(stop_code(0), None);
    }

    #[test]
    fn agent_reports_update_the_task_record() {
        let mut task = Task {
            containers: vec![Container {
                name: "app".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let state = pb::TaskState {
            task_id: "t1".into(),
            last_status: pb::TaskStatus::Stopped as i32,
            stop_code: pb::StopCode::EssentialContainerExited as i32,
            stopped_reason: "Essential container in task exited".into(),
            stopped_at: Some(to_timestamp(1_700_000_000.5)),
            containers: vec![pb::ContainerState {
                name: "app".into(),
                last_status: pb::TaskStatus::Stopped as i32,
                exit_code: Some(3),
                network_bindings: vec![pb::NetworkBinding {
                    bind_ip: "127.0.0.1".into(),
                    container_port: 80,
                    host_port: 49153,
                    protocol: "tcp".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        state.apply_to(&mut task).expect("applies");
        assert_eq!(task.last_status, TaskStatus::Stopped);
        assert_eq!(task.stop_code, Some(StopCode::EssentialContainerExited));
        assert_eq!(task.stopped_at, Some(1_700_000_000.5));
        assert_eq!(task.containers[0].exit_code, Some(3));
        assert_eq!(task.containers[0].image, "busybox");
        assert_eq!(task.containers[0].network_bindings[0].host_port, 49153);
    }

    #[test]
    fn start_requests_validate_their_task_definition() {
        let ok = pb::StartTaskRequest {
            task_definition_json:
                r#"{"family":"a","containerDefinitions":[{"name":"c","image":"i","memory":64}]}"#
                    .into(),
            ..Default::default()
        };
        assert_eq!(ok.task_definition().expect("valid").family, "a");
        assert!(ok.overrides().expect("empty is none").is_none());
        let bad = pb::StartTaskRequest {
            task_definition_json: r#"{"family":"a","containerDefinitions":[],"x":1}"#.into(),
            ..Default::default()
        };
        let err = bad.task_definition().expect_err("unknown field");
        assert!(
            err.to_string().starts_with("task_definition_json: x:"),
            "{err}"
        );
    }
}
