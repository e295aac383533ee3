//! Lifecycle hooks at the PRIMARY's current blue/green stage: WEBHOOK calls and PAUSE waits, as
//! a state machine over each hook's `HookDetail`.
//!
//! A WEBHOOK is POSTed a JSON payload ([`payload`]) and answers `{"hookStatus": "SUCCEEDED" |
//! "FAILED" | "IN_PROGRESS", "callBackDelay": seconds}`: IN_PROGRESS calls again after
//! callBackDelay (30 s by default); FAILED, an error or an answer that does not parse rolls the
//! deployment back. A PAUSE hook waits for a ContinueServiceDeployment request. Either times out
//! after `timeoutInMinutes` (1440 by default) with its timeout action.
//!
//! Pure, in two steps within one reconcile: [`due`] lists the webhook calls to make now; the
//! deployer's executor makes them; [`plan`] takes their answers and moves every hook on.

use std::collections::BTreeMap;

use capstan_core::deployment::{Deployment, HookDetail, HookStatus, RolloutState};
use capstan_core::keys::ServiceKey;
use capstan_core::requests::{ContinueAction, ContinueDeploymentRequest};
use capstan_core::service::{
    HookTargetType, HookTimeoutAction, LifecycleHook, LifecycleStage, Service,
};
use serde::Deserialize;

use crate::deploy::{Hooks, stage_name};

/// Default delay before calling an IN_PROGRESS webhook again, seconds (ECS: 30).
pub const DEFAULT_CALLBACK_DELAY_SECS: f64 = 30.0;

/// The shortest callBackDelay honoured, seconds: a webhook cannot have itself called in a loop.
pub const MIN_CALLBACK_DELAY_SECS: f64 = 1.0;
/// Default hook timeout, minutes (ECS: 1440).
pub const DEFAULT_TIMEOUT_MINUTES: u32 = 1440;

/// What running the hooks of one stage came to.
#[derive(Debug, Default)]
pub struct HookRun {
    /// For the deployment planner.
    pub outcome: Hooks,
    /// The hooks' new details (replace the PRIMARY's).
    pub details: Vec<HookDetail>,
    /// Whether the ContinueServiceDeployment request was used (delete it).
    pub consumed_continue: bool,
    /// When to look again.
    pub wake_at: Option<f64>,
}

/// A webhook's answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// `SUCCEEDED`, `FAILED` or `IN_PROGRESS`.
    pub hook_status: String,
    /// Seconds before calling again (IN_PROGRESS).
    #[serde(default)]
    pub call_back_delay: Option<f64>,
}

/// One webhook call to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The hook's id (its index in the service's `lifecycleHooks`).
    pub hook_id: String,
    /// Where to POST.
    pub url: String,
    /// What to POST.
    pub payload: serde_json::Value,
}

/// The inputs of the hook state machine.
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

/// One hook of the current stage: its id, its spec and its detail as of now.
type CurrentHook<'a> = (String, &'a LifecycleHook, HookDetail);

/// The hooks of the PRIMARY's current stage with their details as of `now` (a hook met for the
/// first time starts now); empty when the stage has no hooks or the rollout is not running.
fn current<'a>(s: &Stage<'a>, now: f64) -> Option<(LifecycleStage, Vec<CurrentHook<'a>>)> {
    let stage = s.primary.lifecycle_stage?;
    if !stage.is_hookable() || s.primary.rollout_state != RolloutState::InProgress {
        return None;
    }
    let hooks = s
        .spec
        .deployment_configuration
        .iter()
        .flat_map(|d| d.lifecycle_hooks.iter().enumerate())
        .filter(|(_, h)| h.lifecycle_stages.contains(&stage))
        .map(|(i, hook)| {
            let id = i.to_string();
            let timeout = hook.timeout_configuration.unwrap_or_default();
            let d = s
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
            (id, hook, d)
        })
        .collect();
    Some((stage, hooks))
}

fn call_due(d: &HookDetail, now: f64) -> bool {
    let expired = d.expires_at.is_some_and(|e| now >= e);
    d.status == HookStatus::InProgress && !expired && d.next_call_at.is_none_or(|n| n <= now)
}

/// The webhook calls due at `now`.
pub fn due(s: &Stage<'_>, now: f64) -> Vec<Call> {
    let Some((stage, hooks)) = current(s, now) else {
        return Vec::new();
    };
    hooks
        .into_iter()
        .filter(|(_, _, d)| call_due(d, now))
        .map(|(id, hook, _)| Call {
            payload: payload(s, stage, &id, hook),
            url: hook.url.clone().unwrap_or_default(),
            hook_id: id,
        })
        .collect()
}

/// Moves every hook of the PRIMARY's current stage on at `now`, with the `answers` to the calls
/// [`due`] listed (by hook id; a call that failed is its error message). A due call without an
/// answer is left for the next round.
pub fn plan<R: rand::Rng + ?Sized>(
    s: &Stage<'_>,
    answers: &BTreeMap<String, Result<Answer, String>>,
    now: f64,
    _rng: &mut R,
) -> HookRun {
    let mut out = HookRun {
        details: s.primary.lifecycle_hook_details.clone(),
        ..HookRun::default()
    };
    let Some((_, hooks)) = current(s, now) else {
        return out;
    };
    let mut details = Vec::new();
    let mut rollback: Option<String> = None;
    let mut waiting = false;
    for (id, hook, mut d) in hooks {
        let timeout = hook.timeout_configuration.unwrap_or_default();
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
            HookStatus::InProgress if call_due(&d, now) => match answers.get(&id) {
                Some(Ok(a)) => match a.hook_status.as_str() {
                    "SUCCEEDED" => d.status = HookStatus::Succeeded,
                    "IN_PROGRESS" => {
                        let delay = a
                            .call_back_delay
                            .unwrap_or(DEFAULT_CALLBACK_DELAY_SECS)
                            .max(MIN_CALLBACK_DELAY_SECS);
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
                Some(Err(e)) => {
                    d.status = HookStatus::Failed;
                    d.reason = Some(e.clone());
                }
                None => {}
            },
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

    fn at(
        spec: &Service,
        primary: &Deployment,
        req: Option<&ContinueDeploymentRequest>,
        now: f64,
    ) -> HookRun {
        at_with(spec, primary, req, now, &BTreeMap::new())
    }

    fn at_with(
        spec: &Service,
        primary: &Deployment,
        req: Option<&ContinueDeploymentRequest>,
        now: f64,
        answers: &BTreeMap<String, Result<Answer, String>>,
    ) -> HookRun {
        let key = ServiceKey::new("default", "web");
        let stage = Stage {
            key: &key,
            spec,
            primary,
            blue: None,
            continue_request: req,
        };
        plan(&stage, answers, now, &mut rand::rng())
    }

    #[test]
    fn pause_waits_then_continue_or_rollback_answers_it() {
        let s = spec(pause(None));
        let mut g = green();
        let first = at(&s, &g, None, 100.0);
        assert_eq!(first.outcome, Hooks::Waiting);
        assert_eq!(first.details[0].status, HookStatus::AwaitingAction);
        assert_eq!(first.details[0].expires_at, Some(160.0));
        assert_eq!(first.wake_at, Some(160.0));
        g.lifecycle_hook_details = first.details;
        let go = ContinueDeploymentRequest::default();
        let r = at(&s, &g, Some(&go), 110.0);
        assert_eq!(r.outcome, Hooks::Done);
        assert!(r.consumed_continue);
        let back = ContinueDeploymentRequest {
            action: ContinueAction::Rollback,
            hook_id: Some("0".into()),
            ..Default::default()
        };
        let r = at(&s, &g, Some(&back), 110.0);
        assert!(matches!(r.outcome, Hooks::Rollback(_)));
        // A request for another hook does not answer this one.
        let other = ContinueDeploymentRequest {
            action: ContinueAction::Continue,
            hook_id: Some("3".into()),
            ..Default::default()
        };
        assert_eq!(at(&s, &g, Some(&other), 110.0).outcome, Hooks::Waiting);
    }

    #[test]
    fn a_timed_out_hook_applies_its_timeout_action() {
        for (action, expect_rollback) in [
            (None, true),
            (Some(HookTimeoutAction::Rollback), true),
            (Some(HookTimeoutAction::Continue), false),
        ] {
            let s = spec(pause(action));
            let mut g = green();
            g.lifecycle_hook_details = at(&s, &g, None, 100.0).details;
            let r = at(&s, &g, None, 161.0);
            assert_eq!(r.details[0].status, HookStatus::TimedOut);
            assert_eq!(
                matches!(r.outcome, Hooks::Rollback(_)),
                expect_rollback,
                "{action:?}"
            );
        }
    }

    #[test]
    fn a_webhook_is_called_when_due_and_its_answer_moves_it_on() {
        let s = spec(LifecycleHook {
            target_type: HookTargetType::Webhook,
            url: Some("http://127.0.0.1:9/hook".into()),
            ..pause(None)
        });
        let mut g = green();
        let key = ServiceKey::new("default", "web");
        let stage = |g: &Deployment| {
            due(
                &Stage {
                    key: &key,
                    spec: &s,
                    primary: g,
                    blue: None,
                    continue_request: None,
                },
                100.0,
            )
        };
        let calls = stage(&g);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].url, "http://127.0.0.1:9/hook");
        assert_eq!(calls[0].payload["hookId"], "0");

        let answer = |status: &str, delay| {
            BTreeMap::from([(
                "0".to_string(),
                Ok(Answer {
                    hook_status: status.into(),
                    call_back_delay: delay,
                }),
            )])
        };
        let r = at_with(&s, &g, None, 100.0, &answer("IN_PROGRESS", Some(5.0)));
        assert_eq!(r.outcome, Hooks::Waiting);
        assert_eq!(r.details[0].next_call_at, Some(105.0));
        assert_eq!(r.wake_at, Some(105.0));
        // A webhook cannot ask to be called again at once, forever.
        for (asked, next) in [
            (Some(0.0), 101.0),
            (Some(-5.0), 101.0),
            (Some(f64::NAN), 101.0),
        ] {
            let r = at_with(&s, &g, None, 100.0, &answer("IN_PROGRESS", asked));
            assert_eq!(
                r.details[0].next_call_at,
                Some(next),
                "callBackDelay {asked:?}"
            );
        }
        g.lifecycle_hook_details = r.details;
        assert!(
            due(
                &Stage {
                    key: &key,
                    spec: &s,
                    primary: &g,
                    blue: None,
                    continue_request: None,
                },
                101.0
            )
            .is_empty(),
            "not due again before callBackDelay"
        );
        let r = at_with(&s, &g, None, 105.0, &answer("SUCCEEDED", None));
        assert_eq!(r.outcome, Hooks::Done);
        for (status, why) in [
            ("FAILED", "answered FAILED"),
            ("MAYBE", "unknown hookStatus"),
        ] {
            let r = at_with(&s, &g, None, 105.0, &answer(status, None));
            assert!(
                matches!(r.outcome, Hooks::Rollback(ref w) if w.contains(why)),
                "{status}: {:?}",
                r.outcome
            );
        }
        let failed = BTreeMap::from([("0".to_string(), Err("call failed: refused".to_string()))]);
        let r = at_with(&s, &g, None, 105.0, &failed);
        assert_eq!(r.details[0].status, HookStatus::Failed);
        assert!(matches!(r.outcome, Hooks::Rollback(ref w) if w.contains("call failed")));
        // A due call with no answer yet is left as it was.
        assert_eq!(at(&s, &g, None, 105.0).outcome, Hooks::Waiting);
    }

    #[test]
    fn payload_carries_weights_and_details() {
        let s = spec(pause(None));
        let g = green();
        let blue = Deployment {
            id: "b".into(),
            ..Deployment::default()
        };
        let key = ServiceKey::new("default", "web");
        let stage = Stage {
            key: &key,
            spec: &s,
            primary: &g,
            blue: Some(&blue),
            continue_request: None,
        };
        let hook = pause(None);
        let p = payload(&stage, LifecycleStage::PostTestTrafficShift, "0", &hook);
        assert_eq!(p["lifecycleStage"], "POST_TEST_TRAFFIC_SHIFT");
        assert_eq!(p["testTrafficWeights"]["g"], 100);
        assert_eq!(p["productionTrafficWeights"]["b"], 100);
        assert_eq!(p["serviceArn"], "default/web");
    }
}
