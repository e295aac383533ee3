//! `capstan auth`: the Iam service — bootstrap, who am I, tokens, and the policy, group and
//! principal documents under `/capstan/iam/` (docs/security.md).

use std::path::PathBuf;

use capstan_proto::api::v1 as pb;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::commands::read_doc;
use crate::output::{self, Format, field};
use crate::{Conn, api_error};

/// `capstan auth …`.
#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Once per cluster: make PRINCIPAL an administrator and print a token for it.
    Bootstrap {
        /// The administrator to make.
        #[arg(long, default_value = "capstan://user/admin")]
        principal: String,
    },
    /// Who the API takes you for, and the policies that apply.
    Whoami,
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Access keys for the ECS endpoint (aws CLI and SDKs, SigV4).
    #[command(subcommand)]
    AccessKey(AccessKeyCmd),
    /// Policy documents (IAM's JSON).
    #[command(subcommand)]
    Policy(DocCmd),
    /// Groups: `{"policies": [...]}`.
    #[command(subcommand)]
    Group(DocCmd),
    /// Principals' attachments: `{"policies": [...], "groups": [...]}`.
    #[command(subcommand)]
    Principal(DocCmd),
    /// Attach policies or groups to a principal (keeping what it has).
    Attach(AttachArgs),
    /// Detach policies or groups from a principal.
    Detach(AttachArgs),
}

/// `capstan auth token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// A new token acting as PRINCIPAL; its secret is printed once.
    Create {
        /// e.g. capstan://user/ci.
        principal: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime, e.g. 30d or 12h; never expires without it.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Stored tokens (never their secrets).
    List,
    /// Revoke a token: it stops working at once.
    Revoke {
        /// Its id (the hex after `capstan_`, shown by `list`).
        token_id: String,
    },
}

/// `capstan auth access-key …`.
#[derive(Debug, Subcommand)]
pub enum AccessKeyCmd {
    /// A new access key acting as PRINCIPAL; its secret is printed once, as shell exports.
    Create {
        /// e.g. capstan://user/ci.
        principal: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Stored access keys (never their secrets).
    List,
    /// Delete an access key: it stops working at once.
    Delete {
        /// Its id (AKCS…).
        access_key_id: String,
    },
}

/// `capstan auth policy|group|principal …`.
#[derive(Debug, Subcommand)]
pub enum DocCmd {
    /// Create or replace NAME from a JSON file (`-` for stdin).
    Put {
        /// Policy or group name, or principal URI.
        name: String,
        /// The document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print NAME's document.
    Get {
        /// Policy or group name, or principal URI.
        name: String,
    },
    /// List names.
    List,
    /// Delete NAME.
    Delete {
        /// Policy or group name, or principal URI.
        name: String,
    },
}

/// What `attach`/`detach` change.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The principal, e.g. capstan://user/alice.
    pub principal: String,
    /// A policy name (repeatable).
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    /// A group name (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
}

/// `capstan webhook …`.
#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Print the secret of the hook at URL under the deployer's signing key (give it to the
    /// receiver; it is HMAC-SHA256 over "<X-Capstan-Timestamp>.<body>").
    Secret {
        /// The deployer's --webhook-signing-key-file.
        #[arg(long)]
        key_file: PathBuf,
        /// The hook's URL, exactly as in the service's lifecycleHooks.
        url: String,
    },
}

/// Runs a `capstan webhook` command.
pub fn webhook(cmd: WebhookCmd) -> anyhow::Result<i32> {
    match cmd {
        WebhookCmd::Secret { key_file, url } => {
            let key = std::fs::read(&key_file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", key_file.display()))?;
            println!("{}", capstan_iam::webhook::hook_secret(&key, &url));
        }
    }
    Ok(0)
}

fn print_token(t: &pb::TokenResponse) {
    println!("principal: {}", t.principal);
    println!("token id:  {}", t.token_id);
    println!("token:     {}", t.token);
    eprintln!("(shown once: keep it, e.g. export CAPSTAN_TOKEN=<token>)");
}

fn print_json(text: &str) {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_string())
        ),
        Err(_) => println!("{text}"),
    }
}

/// Runs a `capstan auth` command.
pub async fn run(conn: &Conn, out: Format, cmd: AuthCmd) -> anyhow::Result<i32> {
    let mut c = conn.iam().await?;
    match cmd {
        AuthCmd::Bootstrap { principal } => {
            let t = c
                .bootstrap(pb::BootstrapRequest { principal })
                .await
                .map_err(api_error)?
                .into_inner();
            print_token(&t);
        }
        AuthCmd::Whoami => {
            let w = c
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(api_error)?
                .into_inner();
            let v = json!({"principal": w.principal, "authenticatedBy": w.authenticated_by,
                "policies": w.policies, "administrator": w.administrator});
            output::docs(
                out,
                &[v],
                &[
                    ("PRINCIPAL", |v| field(v, "principal")),
                    ("BY", |v| field(v, "authenticatedBy")),
                    ("ADMIN", |v| field(v, "administrator")),
                    ("POLICIES", |v| {
                        v["policies"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default()
                    }),
                ],
            );
        }
        AuthCmd::Token(TokenCmd::Create {
            principal,
            description,
            ttl,
        }) => {
            let t = c
                .create_token(pb::CreateTokenRequest {
                    principal,
                    description,
                    ttl_seconds: ttl.map(|d| d.as_secs()).unwrap_or(0),
                })
                .await
                .map_err(api_error)?
                .into_inner();
            print_token(&t);
        }
        AuthCmd::Token(TokenCmd::List) => {
            let r = c
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(api_error)?
                .into_inner();
            let rc = output::described(
                out,
                &r,
                &[
                    ("TOKEN ID", |v| field(v, "tokenId")),
                    ("PRINCIPAL", |v| field(v, "principal")),
                    ("EXPIRES", |v| field(v, "expiresAt")),
                    ("DESCRIPTION", |v| field(v, "description")),
                ],
            );
            if rc != 0 {
                return Ok(rc);
            }
        }
        AuthCmd::Token(TokenCmd::Revoke { token_id }) => {
            c.revoke_token(pb::RevokeTokenRequest {
                token_id: token_id.clone(),
            })
            .await
            .map_err(api_error)?;
            println!("revoked token {token_id}");
        }
        AuthCmd::AccessKey(AccessKeyCmd::Create {
            principal,
            description,
        }) => {
            let k = c
                .create_access_key(pb::CreateAccessKeyRequest {
                    principal,
                    description,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            println!("export AWS_ACCESS_KEY_ID={}", k.access_key_id);
            println!("export AWS_SECRET_ACCESS_KEY={}", k.secret_access_key);
            eprintln!(
                "(acts as {}; the secret is shown once: keep it)",
                k.principal
            );
        }
        AuthCmd::AccessKey(AccessKeyCmd::List) => {
            let r = c
                .list_access_keys(pb::ListAccessKeysRequest {})
                .await
                .map_err(api_error)?
                .into_inner();
            let rc = output::described(
                out,
                &r,
                &[
                    ("ACCESS KEY ID", |v| field(v, "accessKeyId")),
                    ("PRINCIPAL", |v| field(v, "principal")),
                    ("CREATED", |v| field(v, "createdAt")),
                    ("DESCRIPTION", |v| field(v, "description")),
                ],
            );
            if rc != 0 {
                return Ok(rc);
            }
        }
        AuthCmd::AccessKey(AccessKeyCmd::Delete { access_key_id }) => {
            c.delete_access_key(pb::DeleteAccessKeyRequest {
                access_key_id: access_key_id.clone(),
            })
            .await
            .map_err(api_error)?;
            println!("deleted access key {access_key_id}");
        }
        AuthCmd::Policy(d) => document(&mut c, "policy", d).await?,
        AuthCmd::Group(d) => document(&mut c, "group", d).await?,
        AuthCmd::Principal(d) => document(&mut c, "principal", d).await?,
        AuthCmd::Attach(a) => attach(&mut c, a, true).await?,
        AuthCmd::Detach(a) => attach(&mut c, a, false).await?,
    }
    Ok(0)
}

async fn document(
    c: &mut capstan_proto::auth::IamApiClient,
    kind: &str,
    cmd: DocCmd,
) -> anyhow::Result<()> {
    let kind = kind.to_string();
    match cmd {
        DocCmd::Put { name, file } => {
            let document_json = read_doc(&file)?;
            c.put_document(pb::PutIamDocumentRequest {
                kind: kind.clone(),
                name: name.clone(),
                document_json,
            })
            .await
            .map_err(api_error)?;
            println!("stored {kind} {name}");
        }
        DocCmd::Get { name } => {
            let d = c
                .get_document(pb::IamDocumentRequest { kind, name })
                .await
                .map_err(api_error)?
                .into_inner();
            print_json(&d.json);
        }
        DocCmd::List => {
            let l = c
                .list_documents(pb::ListIamDocumentsRequest { kind })
                .await
                .map_err(api_error)?
                .into_inner();
            for n in l.arns {
                println!("{n}");
            }
        }
        DocCmd::Delete { name } => {
            c.delete_document(pb::IamDocumentRequest {
                kind: kind.clone(),
                name: name.clone(),
            })
            .await
            .map_err(api_error)?;
            println!("deleted {kind} {name}");
        }
    }
    Ok(())
}

/// Read, change and write back a principal's attachments.
async fn attach(
    c: &mut capstan_proto::auth::IamApiClient,
    a: AttachArgs,
    add: bool,
) -> anyhow::Result<()> {
    let req = pb::IamDocumentRequest {
        kind: "principal".into(),
        name: a.principal.clone(),
    };
    let mut doc: Value = match c.get_document(req).await {
        Ok(d) => serde_json::from_str(&d.into_inner().json).unwrap_or_else(|_| json!({})),
        Err(s) if s.code() == tonic::Code::NotFound => json!({}),
        Err(s) => return Err(api_error(s)),
    };
    if !doc.is_object() {
        doc = json!({});
    }
    for (field, names) in [("policies", &a.policies), ("groups", &a.groups)] {
        let mut have: Vec<String> = doc[field]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for n in names {
            if add && !have.contains(n) {
                have.push(n.clone());
            } else if !add {
                have.retain(|h| h != n);
            }
        }
        doc[field] = json!(have);
    }
    c.put_document(pb::PutIamDocumentRequest {
        kind: "principal".into(),
        name: a.principal.clone(),
        document_json: doc.to_string(),
    })
    .await
    .map_err(api_error)?;
    println!("{}: {}", a.principal, doc);
    Ok(())
}
