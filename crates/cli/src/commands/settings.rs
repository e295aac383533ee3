//! `capstan account-setting …`

use super::*;

/// `capstan account-setting …` (ECS's account settings Capstan honours).
#[derive(Debug, Subcommand)]
pub enum AccountSettingCmd {
    /// Set a setting for the account (`defaultLogDriverMode blocking`).
    Put {
        /// Setting name.
        name: String,
        /// Its value.
        value: String,
    },
    /// Settings set for the account; with --effective every setting as it applies.
    List {
        /// Include the settings left at their defaults.
        #[arg(long)]
        effective: bool,
    },
    /// Return a setting to its default.
    Delete {
        /// Setting name.
        name: String,
    },
}

/// Columns of a setting.
const SETTING_COLUMNS: &[Column] = &[
    ("NAME", |v| field(v, "name")),
    ("VALUE", |v| field(v, "value")),
    ("TYPE", |v| field(v, "type")),
];

/// Runs `capstan account-setting …`.
pub async fn account_setting(
    conn: &Conn,
    out: Format,
    cmd: AccountSettingCmd,
) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    let docs = match cmd {
        AccountSettingCmd::Put { name, value } => {
            let r = c
                .put_account_setting(pb::PutAccountSettingRequest {
                    name,
                    value,
                    account_default: true,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            vec![r.json]
        }
        AccountSettingCmd::List { effective } => {
            c.list_account_settings(pb::ListAccountSettingsRequest {
                effective_settings: effective,
                ..Default::default()
            })
            .await
            .map_err(api_error)?
            .into_inner()
            .items_json
        }
        AccountSettingCmd::Delete { name } => {
            let r = c
                .delete_account_setting(pb::DeleteAccountSettingRequest { name })
                .await
                .map_err(api_error)?
                .into_inner();
            vec![r.json]
        }
    };
    output::docs(out, &output::parse_all(&docs), SETTING_COLUMNS);
    Ok(0)
}
