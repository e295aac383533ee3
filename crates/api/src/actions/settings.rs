//! Account settings: PutAccountSetting(Default), DeleteAccountSetting, ListAccountSettings, over
//! `accountsettings/<name>` (see `capstan_core::settings` for what each setting does).

use capstan_core::settings::{self, AccountSetting, DEFAULT_LOG_DRIVER_MODE, Put};

use super::*;

/// The principal every setting belongs to: Capstan's one account.
fn account_principal() -> String {
    format!("{}root", capstan_iam::IAM_ARN_PREFIX)
}

/// ECS's `Setting` document: `type` is `user` for a stored value, `aws_managed` for a default.
fn setting_doc(s: &AccountSetting, stored: bool) -> String {
    json!({
        "name": s.name,
        "value": s.value,
        "principalArn": account_principal(),
        "type": if stored { "user" } else { "aws_managed" },
    })
    .to_string()
}

impl Api {
    /// PutAccountSetting / PutAccountSettingDefault: validates, then stores what changes
    /// Capstan's behaviour (a fixed setting put to its only value is answered, not stored).
    pub async fn put_account_setting(
        &self,
        req: pb::PutAccountSettingRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let put = settings::check(&req.name, &req.value).map_err(ApiError::invalid)?;
        let json = match put {
            Put::Store(s) => {
                self.store
                    .put_json(&self.keys().key(Family::AccountSettings, &[&s.name]), &s)
                    .await?;
                setting_doc(&s, true)
            }
            Put::Fixed(s) => setting_doc(&s, false),
        };
        Ok(pb::DocumentResponse {
            json,
            warnings: Vec::new(),
        })
    }

    /// DeleteAccountSetting: back to the default; answers the setting as it was.
    pub async fn delete_account_setting(
        &self,
        req: pb::DeleteAccountSettingRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let Some(default) = settings::defaults()
            .into_iter()
            .find(|s| s.name == req.name)
        else {
            settings::check(&req.name, "").map_err(ApiError::invalid)?;
            return Err(ApiError::invalid(format!("unknown setting {:?}", req.name)));
        };
        let key = self.keys().key(Family::AccountSettings, &[&req.name]);
        let stored = self.get::<AccountSetting>(&key).await?;
        self.store.delete(&key).await?;
        let json = match stored {
            Some((s, _)) => setting_doc(&s, true),
            None => setting_doc(&default, false),
        };
        Ok(pb::DocumentResponse {
            json,
            warnings: Vec::new(),
        })
    }

    /// ListAccountSettings: the stored settings, or with `effective_settings` every setting as
    /// it applies; filtered by name and value.
    pub async fn list_account_settings(
        &self,
        req: pb::ListAccountSettingsRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let stored: BTreeMap<String, AccountSetting> = self
            .list::<AccountSetting>(&self.keys().list(Family::AccountSettings, &[]))
            .await?
            .into_iter()
            .map(|(s, _)| (s.name.clone(), s))
            .collect();
        let mut out = pb::DescribeResponse::default();
        for default in settings::defaults() {
            let (s, is_stored) = match stored.get(&default.name) {
                Some(s) => (s.clone(), true),
                None if req.effective_settings => (default, false),
                None => continue,
            };
            if (!req.name.is_empty() && s.name != req.name)
                || (!req.value.is_empty() && s.value != req.value)
            {
                continue;
            }
            out.items_json.push(setting_doc(&s, is_stored));
        }
        Ok(out)
    }

    /// The `defaultLogDriverMode` set for the account, if one is.
    pub(crate) async fn default_log_driver_mode(&self) -> ApiResult<Option<String>> {
        Ok(self
            .get::<AccountSetting>(
                &self
                    .keys()
                    .key(Family::AccountSettings, &[DEFAULT_LOG_DRIVER_MODE]),
            )
            .await?
            .map(|(s, _)| s.value))
    }
}
