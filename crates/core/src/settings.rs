//! ECS account settings Capstan honours (`PutAccountSetting`, `PutAccountSettingDefault`,
//! `ListAccountSettings`, `DeleteAccountSetting`), stored under `accountsettings/<name>`.
//!
//! Capstan has one account and no per-principal scope: a setting put with either action is the
//! account's. What each setting does:
//!
//! | name | values | effect |
//! |---|---|---|
//! | `defaultLogDriverMode` | `non-blocking` (default), `blocking` | filled in as `logConfiguration.options.mode` of each container that has a `logConfiguration` without a `mode`, when a task definition is registered |
//! | `serviceLongArnFormat`, `taskLongArnFormat`, `containerInstanceLongArnFormat` | `enabled` only | Capstan's ARNs are always the long format; `disabled` is refused |
//!
//! Any other name is refused with the list above, so a setting that would be silently ignored
//! never looks applied.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::taskdef::TaskDefinition;

/// The log delivery mode setting's name.
pub const DEFAULT_LOG_DRIVER_MODE: &str = "defaultLogDriverMode";

/// Settings whose only value is `enabled` (Capstan always behaves so).
const ALWAYS_ENABLED: [&str; 3] = [
    "serviceLongArnFormat",
    "taskLongArnFormat",
    "containerInstanceLongArnFormat",
];

/// An account setting as ECS's `Setting` shape, without the principal (the API adds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSetting {
    /// The setting's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// What putting a setting means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Store it: it changes what Capstan does.
    Store(AccountSetting),
    /// Nothing to store: the value is what Capstan always does.
    Fixed(AccountSetting),
}

/// Every setting Capstan knows with its default value, in ECS's order of listing.
pub fn defaults() -> Vec<AccountSetting> {
    let mut out = vec![AccountSetting {
        name: DEFAULT_LOG_DRIVER_MODE.into(),
        value: "non-blocking".into(),
    }];
    out.extend(ALWAYS_ENABLED.iter().map(|n| AccountSetting {
        name: (*n).into(),
        value: "enabled".into(),
    }));
    out
}

/// Checks `name = value`; the error is the message for ECS's InvalidParameterException.
pub fn check(name: &str, value: &str) -> Result<Put, String> {
    let setting = AccountSetting {
        name: name.into(),
        value: value.into(),
    };
    match name {
        DEFAULT_LOG_DRIVER_MODE => match value {
            "blocking" | "non-blocking" => Ok(Put::Store(setting)),
            _ => Err(format!(
                "{DEFAULT_LOG_DRIVER_MODE} must be blocking or non-blocking, got {value:?}"
            )),
        },
        n if ALWAYS_ENABLED.contains(&n) => match value {
            "enabled" => Ok(Put::Fixed(setting)),
            _ => Err(format!(
                "{n} can only be enabled: Capstan's ARNs are always in the long format"
            )),
        },
        _ => Err(format!(
            "Capstan does not act on the account setting {name:?}; the settings it honours are {}",
            defaults()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Fills `mode` into each container's `logConfiguration.options` that names none; returns how
/// many it filled.
pub fn apply_default_log_mode(td: &mut TaskDefinition, mode: &str) -> usize {
    let mut filled = 0;
    for c in &mut td.container_definitions {
        let Some(Value::Object(config)) = c.log_configuration.as_mut() else {
            continue;
        };
        let options = config
            .entry("options")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(options) = options
            && !options.contains_key("mode")
        {
            options.insert("mode".into(), Value::String(mode.into()));
            filled += 1;
        }
    }
    filled
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_settings_capstan_acts_on_are_accepted() {
        assert!(matches!(
            check("defaultLogDriverMode", "blocking"),
            Ok(Put::Store(_))
        ));
        assert!(matches!(
            check("taskLongArnFormat", "enabled"),
            Ok(Put::Fixed(_))
        ));
        for (name, value, says) in [
            ("defaultLogDriverMode", "fast", "blocking or non-blocking"),
            ("taskLongArnFormat", "disabled", "long format"),
            ("containerInsights", "enabled", "does not act on"),
        ] {
            let e = check(name, value).expect_err(name);
            assert!(e.contains(says), "{e}");
        }
        let names: Vec<String> = defaults().into_iter().map(|s| s.name).collect();
        assert_eq!(names[0], "defaultLogDriverMode");
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn the_default_mode_fills_only_log_configurations_without_one() {
        let mut td: TaskDefinition = serde_json::from_value(json!({
            "family": "f",
            "containerDefinitions": [
                {"name": "a", "image": "x", "memory": 64,
                 "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}}},
                {"name": "b", "image": "x", "memory": 64,
                 "logConfiguration": {"logDriver": "awslogs", "options": {"mode": "non-blocking"}}},
                {"name": "c", "image": "x", "memory": 64,
                 "logConfiguration": {"logDriver": "json-file"}},
                {"name": "d", "image": "x", "memory": 64}
            ]
        }))
        .expect("task definition");
        assert_eq!(apply_default_log_mode(&mut td, "blocking"), 2);
        let modes: Vec<Value> = td
            .container_definitions
            .iter()
            .map(|c| {
                c.log_configuration
                    .as_ref()
                    .and_then(|l| l.pointer("/options/mode"))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect();
        assert_eq!(
            modes,
            vec![
                json!("blocking"),
                json!("non-blocking"),
                json!("blocking"),
                Value::Null
            ]
        );
        assert_eq!(
            td.container_definitions[0]
                .log_configuration
                .as_ref()
                .and_then(|l| l.pointer("/options/awslogs-group")),
            Some(&json!("g"))
        );
    }
}
