//! Lifecycle hooks at the PRIMARY's current blue/green stage: WEBHOOK calls and PAUSE waits.
//!
//! A WEBHOOK is POSTed a JSON payload and answers `{"hookStatus": "SUCCEEDED" | "FAILED" |
//! "IN_PROGRESS", "callBackDelay": seconds}`: IN_PROGRESS calls again after callBackDelay (30 s by
//! default); FAILED, an error or an answer that does not parse rolls the deployment back. A
//! PAUSE hook waits for a ContinueServiceDeployment request. Either times out after
//! `timeoutInMinutes` (1440 by default) with its timeout action.

use std::time::Duration;

use capstan_core::deployment::{Deployment, HookDetail, HookStatus, RolloutState};
use capstan_core::requests::{ContinueAction, ContinueDeploymentRequest};
use capstan_core::service::{
    HookTargetType, HookTimeoutAction, LifecycleHook, LifecycleStage, Service,
};
use capstan_plan::deploy::{Hooks, stage_name};
use serde::Deserialize;

use crate::snapshot::ServiceKey;

/// Default delay before calling an IN_PROGRESS webhook again, seconds (ECS: 30).
pub const DEFAULT_CALLBACK_DELAY_SECS: f64 = 30.0;
/// Default hook timeout, minutes (ECS: 1440).
pub const DEFAULT_TIMEOUT_MINUTES: u32 = 1440;
/// How long one webhook call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook client: rustls with the ring provider (installed here; a second install is a
/// no-op), verifying against the system's roots.
pub fn http_client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// What running the hooks of one stage came to.
#[derive(Debug, Default)]
pub struct HookRun {
    /// For the planner.
    pub outcome: Hooks,
    /// The hooks' new details (replace the PRIMARY's).
    pub details: Vec<HookDetail>,
    /// Whether the ContinueServiceDeployment request was used (delete it).
    pub consumed_continue: bool,
    /// When to look again.
    pub wake_at: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    hook_status: String,
    #[serde(default)]
    call_back_delay: Option<f64>,
}

/// Inputs of [`run`].
pub struct Stage<'a> {
    /// The service.
    pub key: &'a ServiceKey,
    /// Its spec.
    pub spec: &'a Service,
    /// The PRIMARY (green) deployment.
    pub primary: &'a Deployment,
    /// Blue, if any.
    pub blue: Option<&'a Deployment>,
    /// A ContinueServiceDeployment request for the PRIMARY.
    pub continue_request: Option<&'a ContinueDeploymentRequest>,
    /// Now, epoch seconds.
    pub now: f64,
}

fn weights(green: &str, blue: Option<&Deployment>, to_green: bool) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert(
        green.to_string(),
        serde_json::json!(if to_green { 100 } else { 0 }),
    );
    if let Some(b) = blue {
        m.insert(
            b.id.clone(),
            serde_json::json!(if to_green { 0 } else { 100 }),
        );
    }
    serde_json::Value::Object(m)
}

/// The JSON a webhook is POSTed.
pub fn payload(
    s: &Stage<'_>,
    stage: LifecycleStage,
    hook_id: &str,
    hook: &LifecycleHook,
) -> serde_json::Value {
    let green = &s.primary.id;
    serde_json::json!({
        "serviceArn": format!("{}/{}", s.key.cluster, s.key.service),
        "cluster": s.key.cluster,
        "serviceName": s.key.service,
        "deploymentId": green,
        "targetServiceRevisionArn": s.primary.task_definition,
        "lifecycleStage": stage_name(stage),
        "hookId": hook_id,
        "testTrafficWeights": weights(green, s.blue, stage > LifecycleStage::TestTrafficShift),
        "productionTrafficWeights": weights(green, s.blue, stage > LifecycleStage::ProductionTrafficShift),
        "hookDetails": hook.hook_details,
    })
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<Answer, String> {
    let resp = http
        .post(url)
        .timeout(CALL_TIMEOUT)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("call failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("answered HTTP {status}"));
    }
    resp.json::<Answer>()
        .await
        .map_err(|e| format!("answer is not a hook result: {e}"))
}

/// Runs the hooks of the PRIMARY's current stage.
pub async fn run(http: &reqwest::Client, s: &Stage<'_>) -> HookRun {
    let mut out = HookRun {
        details: s.primary.lifecycle_hook_details.clone(),
        ..HookRun::default()
    };
    let Some(stage) = s.primary.lifecycle_stage else {
        return out;
    };
    if !stage.is_hookable() || s.primary.rollout_state != RolloutState::InProgress {
        return out;
    }
    let hooks: Vec<(String, &LifecycleHook)> = s
        .spec
        .deployment_configuration
        .iter()
        .flat_map(|d| d.lifecycle_hooks.iter().enumerate())
        .filter(|(_, h)| h.lifecycle_stages.contains(&stage))
        .map(|(i, h)| (i.to_string(), h))
        .collect();
    let now = s.now;
    let mut details = Vec::new();
    let mut rollback: Option<String> = None;
    let mut waiting = false;
    for (id, hook) in hooks {
        let timeout = hook.timeout_configuration.unwrap_or_default();
        let mut d = s
            .primary
            .lifecycle_hook_details
            .iter()
            .find(|d| d.hook_id == id && d.lifecycle_stage == Some(stage))
            .cloned()
            .unwrap_or_else(|| HookDetail {
                hook_id: id.clone(),
                lifecycle_stage: Some(stage),
                status: if hook.target_type == HookTargetType::Pause {
                    HookStatus::AwaitingAction
                } else {
                    HookStatus::InProgress
                },
                started_at: Some(now),
                next_call_at: Some(now),
                expires_at: Some(
                    now + f64::from(
                        timeout
                            .timeout_in_minutes
                            .unwrap_or(DEFAULT_TIMEOUT_MINUTES),
                    ) * 60.0,
                ),
                reason: None,
            });
        let expired = d.expires_at.is_some_and(|e| now >= e);
        match d.status {
            HookStatus::AwaitingAction => {
                if let Some(req) = s.continue_request
                    && req.hook_id.as_deref().is_none_or(|h| h == id)
                {
                    out.consumed_continue = true;
                    d.status = match req.action {
                        ContinueAction::Continue => HookStatus::Succeeded,
                        ContinueAction::Rollback => HookStatus::Failed,
                    };
                    d.reason =
                        Some(format!("ContinueServiceDeployment {:?}", req.action).to_uppercase());
                } else if expired {
                    d.status = HookStatus::TimedOut;
                }
            }
            HookStatus::InProgress if expired => d.status = HookStatus::TimedOut,
            HookStatus::InProgress if d.next_call_at.is_none_or(|n| n <= now) => {
                let url = hook.url.clone().unwrap_or_default();
                match call(http, &url, &payload(s, stage, &id, hook)).await {
                    Ok(a) => match a.hook_status.as_str() {
                        "SUCCEEDED" => d.status = HookStatus::Succeeded,
                        "IN_PROGRESS" => {
                            let delay = a
                                .call_back_delay
                                .unwrap_or(DEFAULT_CALLBACK_DELAY_SECS)
                                .max(0.0);
                            d.next_call_at = Some(now + delay);
                            d.reason = Some("answered IN_PROGRESS".into());
                        }
                        "FAILED" => {
                            d.status = HookStatus::Failed;
                            d.reason = Some("answered FAILED".into());
                        }
                        other => {
                            d.status = HookStatus::Failed;
                            d.reason = Some(format!("answered an unknown hookStatus {other:?}"));
                        }
                    },
                    Err(e) => {
                        d.status = HookStatus::Failed;
                        d.reason = Some(e);
                    }
                }
            }
            _ => {}
        }
        match d.status {
            HookStatus::Failed => {
                rollback.get_or_insert_with(|| {
                    format!(
                        "hook {id} {}",
                        d.reason.clone().unwrap_or_else(|| "failed".into())
                    )
                });
            }
            HookStatus::TimedOut
                if timeout.action.unwrap_or_default() == HookTimeoutAction::Rollback =>
            {
                rollback.get_or_insert_with(|| format!("hook {id} timed out"));
            }
            HookStatus::AwaitingAction | HookStatus::InProgress => {
                waiting = true;
                let next = match d.status {
                    HookStatus::InProgress => d
                        .next_call_at
                        .into_iter()
                        .chain(d.expires_at)
                        .fold(f64::INFINITY, f64::min),
                    _ => d.expires_at.unwrap_or(f64::INFINITY),
                };
                if next.is_finite() {
                    out.wake_at = Some(out.wake_at.map_or(next, |w: f64| w.min(next)));
                }
            }
            _ => {}
        }
        details.push(d);
    }
    out.details = details;
    out.outcome = match (rollback, waiting) {
        (Some(why), _) => Hooks::Rollback(why),
        (None, true) => Hooks::Waiting,
        (None, false) => Hooks::Done,
    };
    out
}

#[cfg(test)]
mod tests {
    use capstan_core::service::{DeploymentConfiguration, HookTimeout};

    use super::*;

    fn spec(hook: LifecycleHook) -> Service {
        Service {
            deployment_configuration: Some(DeploymentConfiguration {
                lifecycle_hooks: vec![hook],
                ..DeploymentConfiguration::default()
            }),
            ..Service::default()
        }
    }

    fn pause(action: Option<HookTimeoutAction>) -> LifecycleHook {
        LifecycleHook {
            target_type: HookTargetType::Pause,
            url: None,
            lifecycle_stages: vec![LifecycleStage::PostScaleUp],
            hook_details: None,
            timeout_configuration: Some(HookTimeout {
                timeout_in_minutes: Some(1),
                action,
            }),
            hook_target_arn: None,
            role_arn: None,
        }
    }

    fn green() -> Deployment {
        Deployment {
            id: "g".into(),
            lifecycle_stage: Some(LifecycleStage::PostScaleUp),
            ..Deployment::default()
        }
    }

    async fn at(
        spec: &Service,
        primary: &Deployment,
        req: Option<&ContinueDeploymentRequest>,
        now: f64,
    ) -> HookRun {
        let key = ServiceKey {
            cluster: "default".into(),
            service: "web".into(),
        };
        run(
            &http_client().expect("client"),
            &Stage {
                key: &key,
                spec,
                primary,
                blue: None,
                continue_request: req,
                now,
            },
        )
        .await
    }

    #[tokio::test]
    async fn pause_waits_then_continue_or_rollback_answers_it() {
        let s = spec(pause(None));
        let mut g = green();
        let first = at(&s, &g, None, 100.0).await;
        assert_eq!(first.outcome, Hooks::Waiting);
        assert_eq!(first.details[0].status, HookStatus::AwaitingAction);
        assert_eq!(first.details[0].expires_at, Some(160.0));
        assert_eq!(first.wake_at, Some(160.0));
        g.lifecycle_hook_details = first.details;
        let go = ContinueDeploymentRequest::default();
        let r = at(&s, &g, Some(&go), 110.0).await;
        assert_eq!(r.outcome, Hooks::Done);
        assert!(r.consumed_continue);
        let back = ContinueDeploymentRequest {
            action: ContinueAction::Rollback,
            hook_id: Some("0".into()),
        };
        let r = at(&s, &g, Some(&back), 110.0).await;
        assert!(matches!(r.outcome, Hooks::Rollback(_)));
        // A request for another hook does not answer this one.
        let other = ContinueDeploymentRequest {
            action: ContinueAction::Continue,
            hook_id: Some("3".into()),
        };
        assert_eq!(
            at(&s, &g, Some(&other), 110.0).await.outcome,
            Hooks::Waiting
        );
    }

    #[tokio::test]
    async fn a_timed_out_hook_applies_its_timeout_action() {
        for (action, expect_rollback) in [
            (None, true),
            (Some(HookTimeoutAction::Rollback), true),
            (Some(HookTimeoutAction::Continue), false),
        ] {
            let s = spec(pause(action));
            let mut g = green();
            g.lifecycle_hook_details = at(&s, &g, None, 100.0).await.details;
            let r = at(&s, &g, None, 161.0).await;
            assert_eq!(r.details[0].status, HookStatus::TimedOut);
            assert_eq!(
                matches!(r.outcome, Hooks::Rollback(_)),
                expect_rollback,
                "{action:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_webhook_rolls_back() {
        let s = spec(LifecycleHook {
            target_type: HookTargetType::Webhook,
            url: Some("http://127.0.0.1:9/hook".into()),
            ..pause(None)
        });
        let r = at(&s, &green(), None, 100.0).await;
        assert_eq!(r.details[0].status, HookStatus::Failed);
        assert!(
            matches!(r.outcome, Hooks::Rollback(ref why) if why.contains("call failed")),
            "{:?}",
            r.outcome
        );
    }

    #[test]
    fn payload_carries_weights_and_details() {
        let s = spec(pause(None));
        let g = green();
        let blue = Deployment {
            id: "b".into(),
            ..Deployment::default()
        };
        let key = ServiceKey {
            cluster: "default".into(),
            service: "web".into(),
        };
        let stage = Stage {
            key: &key,
            spec: &s,
            primary: &g,
            blue: Some(&blue),
            continue_request: None,
            now: 0.0,
        };
        let hook = pause(None);
        let p = payload(&stage, LifecycleStage::PostTestTrafficShift, "0", &hook);
        assert_eq!(p["lifecycleStage"], "POST_TEST_TRAFFIC_SHIFT");
        assert_eq!(p["testTrafficWeights"]["g"], 100);
        assert_eq!(p["productionTrafficWeights"]["b"], 100);
        assert_eq!(p["serviceArn"], "default/web");
    }
}
