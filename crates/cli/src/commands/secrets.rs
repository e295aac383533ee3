//! `capstan secret …`

use super::*;

/// `capstan secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Put a new version of a secret (the first creates it); the value from --from-file, or
    /// stdin, never from the command line (it would stay in shell history and `ps`).
    Put {
        /// Name (`prod/db/password`).
        name: String,
        /// Read the value from this file (`-` for stdin, the default).
        #[arg(long, default_value = "-")]
        from_file: PathBuf,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Print a secret's value (the latest version unless --version).
    Get {
        /// Name.
        name: String,
        /// This version (`--version` is the CLI's own).
        #[arg(long, default_value_t = 0)]
        version_id: u32,
    },
    /// List secrets (names only).
    List,
    /// Delete a secret and every version of it.
    Delete {
        /// Name.
        name: String,
    },
}

/// Runs `capstan secret …`.
pub async fn secret(conn: &Conn, out: Format, cmd: SecretCmd) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    match cmd {
        SecretCmd::Put {
            name,
            from_file,
            description,
        } => {
            let mut value = Vec::new();
            if from_file == Path::new("-") {
                std::io::stdin()
                    .read_to_end(&mut value)
                    .context("reading stdin")?;
            } else {
                value = std::fs::read(&from_file)
                    .with_context(|| format!("reading {}", from_file.display()))?;
            }
            let value = String::from_utf8(value).context("a secret value must be UTF-8 text")?;
            // A trailing newline from `echo` or an editor is not part of the value.
            let value = value.strip_suffix('\n').unwrap_or(&value).to_string();
            let r = c
                .put_secret(pb::PutSecretRequest {
                    name,
                    value,
                    description,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&[r.secret_json]), SECRET_COLUMNS);
        }
        SecretCmd::Get { name, version_id } => {
            let r = c
                .get_secret_value(pb::GetSecretValueRequest {
                    name,
                    version: version_id,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            match out {
                Format::Json => println!(
                    "{}",
                    json!({"name": r.name, "version": r.version, "value": r.value})
                ),
                Format::Table => println!("{}", r.value),
            }
        }
        SecretCmd::List => {
            let r = c
                .list_secrets(pb::ListSecretsRequest {})
                .await
                .map_err(api_error)?
                .into_inner();
            output::list(out, "SECRET", &r.arns);
        }
        SecretCmd::Delete { name } => {
            let r = c
                .delete_secret(pb::DeleteSecretRequest { name })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&[r.secret_json]), SECRET_COLUMNS);
        }
    }
    Ok(0)
}

/// Columns of a secret (never its value).
const SECRET_COLUMNS: &[Column] = &[
    ("SECRET", |v| field(v, "name")),
    ("VERSIONS", |v| {
        v["versions"].as_array().map_or(0, Vec::len).to_string()
    }),
    ("LATEST", |v| {
        v["versions"]
            .as_array()
            .and_then(|a| a.last())
            .map_or(String::new(), |l| l["version"].to_string())
    }),
];
