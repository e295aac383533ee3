//! ECS's wire API end to end: the real aws CLI and boto3 (tests/python/ecs_api_test.py, from
//! tests/python/requirements.txt) against `capstan dev`'s ECS endpoint, signed with the access
//! key dev prints: the tutorial flow, waiters, pagination, clientToken and the errors.

use std::io::{BufRead, BufReader};
use std::process::Command;

use capstan_e2e::{Dev, test_dir};

#[test]
fn the_aws_cli_and_boto3_drive_capstan_dev_unmodified() {
    let dir = test_dir();
    let mut guard = Dev::spawn(&dir.path().join("dev"));
    let stdout = guard.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut ecs = None;
    let mut keys = None;
    for line in lines.by_ref().map_while(Result::ok) {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("ECS API:") {
            ecs = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = l.strip_prefix("aws keys:") {
            let value = |name: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .map(str::to_string)
            };
            keys = value("AWS_ACCESS_KEY_ID").zip(value("AWS_SECRET_ACCESS_KEY"));
        }
        if l.starts_with("Ctrl-C") {
            break;
        }
    }
    let ecs = ecs.expect("capstan dev prints its ECS endpoint");
    let (key_id, secret) = keys.expect("capstan dev prints an access key");
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ecs_api_test.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("ECS_ENDPOINT", &ecs)
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        // No profile or credentials of the machine's own may leak in.
        .env("AWS_CONFIG_FILE", dir.path().join("aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("aws-credentials"),
        )
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .expect("python3 runs (pip install -r tests/python/requirements.txt)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the aws CLI / boto3 checks failed (they need tests/python/requirements.txt installed):\n{text}"
    );
    assert!(text.contains("all ECS endpoint checks passed"), "{text}");
    println!("{text}");
}

/// One boto3 ListClusters over `endpoint` (TLS checked against `ca`) with a key: `ok` or the
/// error code the SDK read.
fn boto3_list_clusters(endpoint: &str, ca: &std::path::Path, id: &str, secret: &str) -> String {
    const SCRIPT: &str = r#"
import os, boto3
from botocore.exceptions import ClientError
ecs = boto3.client("ecs", endpoint_url=os.environ["EP"], region_name="us-east-1",
                   verify=os.environ["CA"], aws_access_key_id=os.environ["KID"],
                   aws_secret_access_key=os.environ["SECRET"])
try:
    ecs.list_clusters()
    print("ok")
except ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .env("EP", endpoint)
        .env("CA", ca)
        .env("KID", id)
        .env("SECRET", secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn access_keys_are_sealed_at_rest_served_over_tls_decided_by_policy_and_deletable() {
    use capstan_proto::api::v1 as pb;
    let etcd = capstan_testing::EtcdCluster::single().await.expect("etcd");
    let dir = test_dir();
    let pki = capstan_testing::pki::Pki::new().expect("pki");
    pki.issue_for("ops", &[], "capstan://user/ops")
        .expect("ops");
    let key_file = dir.path().join("encryption.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).expect("key file");
    let key_arg = key_file.display().to_string();
    let api = capstan_e2e::api_with(
        &etcd.endpoints(),
        dir.path(),
        Some(&pki.files("server")),
        &[
            "--admin",
            "capstan://user/ops",
            "--encryption-key-file",
            &key_arg,
            "--ecs-listen",
            "127.0.0.1:0",
        ],
    );
    let ecs = api.field("ecs").to_string();
    assert!(
        ecs.starts_with("https://"),
        "TLS like the gRPC listener: {ecs}"
    );
    let channel = capstan_proto::tls::connect(api.field("grpc"), Some(&pki.files("ops")))
        .await
        .expect("connect");
    let (_, mut iam) = capstan_proto::auth::clients(channel, Default::default());
    let mut key_for = async |principal: &str| {
        iam.create_access_key(pb::CreateAccessKeyRequest {
            principal: principal.into(),
            description: "test".into(),
        })
        .await
        .expect("create access key")
        .into_inner()
    };
    let ops = key_for("capstan://user/ops").await;
    let bob = key_for("capstan://user/bob").await;

    // At rest: sealed, the secret nowhere in etcd; listings never show even the sealed form.
    let store = capstan_e2e::store(&etcd.endpoints()).await;
    let kv = store
        .get(&format!("/capstan/iam/access-keys/{}", ops.access_key_id))
        .await
        .expect("get")
        .expect("the record");
    let stored = String::from_utf8_lossy(&kv.value).to_string();
    assert!(stored.contains("sealedSecret"), "{stored}");
    assert!(!stored.contains(&ops.secret_access_key), "{stored}");
    let ca = pki.files("ops").ca;
    let listed = {
        let channel = capstan_proto::tls::connect(api.field("grpc"), Some(&pki.files("ops")))
            .await
            .expect("connect");
        let (_, mut iam) = capstan_proto::auth::clients(channel, Default::default());
        iam.list_access_keys(pb::ListAccessKeysRequest {})
            .await
            .expect("list")
            .into_inner()
    };
    assert_eq!(listed.items_json.len(), 2);
    assert!(
        listed.items_json.iter().all(|j| !j.contains("sealed")),
        "{:?}",
        listed.items_json
    );

    // Over TLS, the key acts as its principal: ops is an administrator, bob has no policy.
    let ecs_for = ecs.clone();
    let ca_for = ca.clone();
    let (ops_id, ops_secret) = (ops.access_key_id.clone(), ops.secret_access_key.clone());
    let check = move |id: String, secret: String| {
        let (ep, ca) = (ecs_for.clone(), ca_for.clone());
        tokio::task::spawn_blocking(move || boto3_list_clusters(&ep, &ca, &id, &secret))
    };
    assert_eq!(
        check(ops_id.clone(), ops_secret.clone())
            .await
            .expect("join"),
        "ok"
    );
    assert_eq!(
        check(bob.access_key_id.clone(), bob.secret_access_key.clone())
            .await
            .expect("join"),
        "AccessDeniedException"
    );
    let audit = std::fs::read_to_string(capstan_e2e::audit_log(dir.path())).unwrap_or_default();
    assert!(
        audit.lines().any(|l| l.contains("capstan://user/bob")
            && l.contains("\"authenticatedBy\":\"access-key\"")
            && l.contains("ecs:ListClusters")),
        "bob's refusal is audited with how he was identified:\n{audit}"
    );

    // Deleted, the key stops working at once.
    {
        let channel = capstan_proto::tls::connect(api.field("grpc"), Some(&pki.files("ops")))
            .await
            .expect("connect");
        let (_, mut iam) = capstan_proto::auth::clients(channel, Default::default());
        iam.delete_access_key(pb::DeleteAccessKeyRequest {
            access_key_id: ops_id.clone(),
        })
        .await
        .expect("delete");
    }
    assert_eq!(
        check(ops_id, ops_secret).await.expect("join"),
        "UnrecognizedClientException"
    );
}
