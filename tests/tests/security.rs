//! Security end to end: principals from certificates and bearer tokens, IAM policies on every
//! call with default deny, the audit log (file and etcd), token revocation, and IAM documents
//! that cannot be read failing closed. Real etcd, real `capstan-api`, real TLS.

use std::time::Duration;

use capstan_e2e::*;
use capstan_proto::api::v1 as pb;
use capstan_proto::auth::{ApiClient, Credentials, IamApiClient, clients};
use capstan_testing::EtcdCluster;
use serde_json::{Value, json};
use tonic::Code;

async fn connect(
    endpoint: &str,
    tls: Option<&capstan_proto::tls::TlsFiles>,
    token: Option<&str>,
) -> (ApiClient, IamApiClient) {
    let channel = capstan_proto::tls::connect(endpoint, tls)
        .await
        .expect("connect");
    clients(channel, Credentials::bearer(token).expect("token"))
}

fn audit_records(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(audit_log(dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const ARN: &str = "arn:capstan:ecs:local:000000000000:";

fn service(cluster: &str, name: &str) -> pb::CreateServiceRequest {
    pb::CreateServiceRequest {
        cluster: cluster.into(),
        service_json: json!({"serviceName": name, "taskDefinition": "web:1", "desiredCount": 0})
            .to_string(),
    }
}

#[tokio::test]
async fn policies_decide_every_call_tokens_can_be_revoked_and_the_audit_log_records_it() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = test_dir();
    let api = api_with(&etcd.endpoints(), dir.path(), None, &[]);
    let ep = api.field("grpc").to_string();

    // Default deny: a caller without credentials can do nothing, and the refusal is audited.
    let (mut anon, mut anon_iam) = connect(&ep, None, None).await;
    let e = anon
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .expect_err("anonymous ListClusters");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(exception(&e), "AccessDeniedException");
    assert!(
        e.message().contains("ecs:ListClusters") && e.message().contains("unauthenticated"),
        "{}",
        e.message()
    );
    let denied_id = e
        .metadata()
        .get("x-capstan-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id")
        .to_string();

    // Bootstrap once; a second bootstrap is refused.
    let admin_token = anon_iam
        .bootstrap(pb::BootstrapRequest::default())
        .await
        .expect("bootstrap")
        .into_inner();
    assert_eq!(admin_token.principal, "capstan://user/admin");
    let again = anon_iam
        .bootstrap(pb::BootstrapRequest::default())
        .await
        .expect_err("a second bootstrap");
    assert_eq!(again.code(), Code::PermissionDenied);
    let (mut admin, mut admin_iam) = connect(&ep, None, Some(&admin_token.token)).await;
    let me = admin_iam
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.principal, "capstan://user/admin");
    assert_eq!(me.authenticated_by, "token");
    assert_eq!(me.policies, vec!["AdministratorAccess".to_string()]);

    // The administrator sets up two clusters and a task definition.
    for c in ["prod", "production"] {
        admin
            .create_cluster(pb::CreateClusterRequest {
                cluster_json: json!({"clusterName": c}).to_string(),
            })
            .await
            .expect("create cluster");
    }
    admin
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            task_definition_json: json!({"family": "web", "containerDefinitions": [
                {"name": "web", "image": "busybox", "memory": 64, "command": ["sleep", "600"]}]})
            .to_string(),
        })
        .await
        .expect("register");

    // A policy over one cluster's services, attached to alice through a group.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "ProdServices", "Effect": "Allow", "Action": "ecs:*Service*",
         "Resource": format!("{ARN}service/prod/*")},
        {"Sid": "NoDelete", "Effect": "Deny", "Action": "ecs:DeleteService", "Resource": "*"}]});
    let put = |kind: &str, name: &str, doc: Value| pb::PutIamDocumentRequest {
        kind: kind.into(),
        name: name.into(),
        document_json: doc.to_string(),
    };
    admin_iam
        .put_document(put("policy", "prod-services", policy))
        .await
        .expect("put policy");
    admin_iam
        .put_document(put(
            "group",
            "prod-devs",
            json!({"policies": ["prod-services"]}),
        ))
        .await
        .expect("put group");
    admin_iam
        .put_document(put(
            "principal",
            "capstan://user/alice",
            json!({"groups": ["prod-devs"]}),
        ))
        .await
        .expect("attach");
    // A document IAM would misread is refused with what to fix.
    let bad = admin_iam
        .put_document(put(
            "policy",
            "sloppy",
            json!({"Statement": {"Effect": "Allow", "Action": "ecs:*", "Resource": "*",
                "Condition": {"StringEquals": {"ecs:cluster": "prod"}}}}),
        ))
        .await
        .expect_err("a policy with a Condition");
    assert_eq!(exception(&bad), "InvalidParameterException");
    assert!(bad.message().contains("Condition"), "{}", bad.message());

    let alice_token = admin_iam
        .create_token(pb::CreateTokenRequest {
            principal: "capstan://user/alice".into(),
            description: "alice's laptop".into(),
            ttl_seconds: 3600,
        })
        .await
        .expect("token for alice")
        .into_inner();
    let (mut alice, mut alice_iam) = connect(&ep, None, Some(&alice_token.token)).await;

    // The wildcard covers exactly its cluster: prod yes, production (same prefix) no.
    let created = alice
        .create_service(service("prod", "web"))
        .await
        .expect("alice creates a service in prod");
    let created_id = created
        .metadata()
        .get("x-capstan-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id")
        .to_string();
    let e = alice
        .create_service(service("production", "web"))
        .await
        .expect_err("alice in production");
    assert_eq!(exception(&e), "AccessDeniedException");
    assert!(
        e.message().contains("capstan://user/alice")
            && e.message().contains("ecs:CreateService")
            && e.message()
                .contains(&format!("{ARN}service/production/web")),
        "{}",
        e.message()
    );
    alice
        .describe_services(pb::DescribeServicesRequest {
            cluster: "prod".into(),
            services: vec!["web".into()],
        })
        .await
        .expect("alice describes prod/web");
    // An explicit Deny beats the Allow.
    let e = alice
        .delete_service(pb::DeleteServiceRequest {
            cluster: "prod".into(),
            service: "web".into(),
            force: true,
        })
        .await
        .expect_err("the Deny wins");
    assert!(e.message().contains("explicit deny"), "{}", e.message());
    // Nothing outside the policy: not clusters, not IAM.
    for e in [
        alice
            .list_clusters(pb::ListClustersRequest::default())
            .await
            .expect_err("ListClusters"),
        alice
            .register_task_definition(pb::RegisterTaskDefinitionRequest {
                task_definition_json: json!({"family": "x", "containerDefinitions": []})
                    .to_string(),
            })
            .await
            .expect_err("RegisterTaskDefinition"),
    ] {
        assert_eq!(exception(&e), "AccessDeniedException", "{}", e.message());
    }
    let e = alice_iam
        .put_document(put(
            "principal",
            "capstan://user/alice",
            json!({"policies": ["AdministratorAccess"]}),
        ))
        .await
        .expect_err("alice cannot make herself an administrator");
    assert_eq!(exception(&e), "AccessDeniedException");

    // Revoked, the token stops working at once.
    admin_iam
        .revoke_token(pb::RevokeTokenRequest {
            token_id: alice_token.token_id.clone(),
        })
        .await
        .expect("revoke");
    let e = alice
        .describe_services(pb::DescribeServicesRequest {
            cluster: "prod".into(),
            services: vec!["web".into()],
        })
        .await
        .expect_err("a revoked token");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(exception(&e), "UnrecognizedClientException");
    let listed = admin_iam
        .list_tokens(pb::ListTokensRequest {})
        .await
        .expect("list tokens")
        .into_inner();
    assert_eq!(listed.items_json.len(), 1, "only the admin's token is left");
    assert!(
        !listed.items_json[0].contains("secretHash"),
        "{:?}",
        listed.items_json
    );

    // An unreadable policy written with etcdctl fails closed and touches nothing else.
    let store = store(&etcd.endpoints()).await;
    store
        .put(
            "/capstan/iam/policies/prod-services",
            b"{\"Statement\":".to_vec(),
        )
        .await
        .expect("etcdctl-like put");
    let bob_token = admin_iam
        .create_token(pb::CreateTokenRequest {
            principal: "capstan://user/bob".into(),
            ..Default::default()
        })
        .await
        .expect("token for bob")
        .into_inner();
    admin_iam
        .put_document(put(
            "principal",
            "capstan://user/bob",
            json!({"groups": ["prod-devs"]}),
        ))
        .await
        .expect("attach bob");
    let (mut bob, _) = connect(&ep, None, Some(&bob_token.token)).await;
    let e = bob
        .describe_services(pb::DescribeServicesRequest {
            cluster: "prod".into(),
            services: vec!["web".into()],
        })
        .await
        .expect_err("a broken policy denies");
    assert!(e.message().contains("cannot be read"), "{}", e.message());
    admin
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .expect("the administrator is not affected");

    // The audit log: the anonymous denial, alice's create (allowed) and her refusal.
    let records = audit_records(dir.path());
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["requestId"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no audit record {id} in {records:#?}"))
    };
    let d = by_id(&denied_id);
    assert_eq!(d["outcome"], "denied");
    assert_eq!(d["action"], "ecs:ListClusters");
    assert_eq!(d["principal"], "");
    assert_eq!(d["errorCode"], "AccessDeniedException");
    assert!(
        d["sourceAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{d}"
    );
    let c = by_id(&created_id);
    assert_eq!(c["outcome"], "allowed");
    assert_eq!(c["principal"], "capstan://user/alice");
    assert_eq!(c["authenticatedBy"], "token");
    assert_eq!(c["resources"], json!([format!("{ARN}service/prod/web")]));
    assert!(
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("prod-services")),
        "{c}"
    );
    assert!(
        records.iter().any(|r| r["outcome"] == "denied"
            && r["principal"] == "capstan://user/alice"
            && r["action"] == "ecs:CreateService"),
        "alice's refusal is audited"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["action"] == "ecs:DescribeServices" && r["outcome"] == "allowed"),
        "reads that succeed are not audited"
    );
    // No token secret is ever written to the audit log.
    let text = std::fs::read_to_string(audit_log(dir.path())).unwrap_or_default();
    assert!(!text.contains(&alice_token.token) && !text.contains(&admin_token.token));
    // A copy of each record lands in etcd, bound to a lease.
    eventually(Duration::from_secs(10), "audit records in etcd", || async {
        let l = store.list("/capstan/audit/").await.ok()?;
        let found = l.kvs.iter().any(|kv| {
            kv.key.ends_with(&created_id)
                && kv.lease != 0
                && serde_json::from_slice::<Value>(&kv.value)
                    .is_ok_and(|v| v["principal"] == "capstan://user/alice")
        });
        found.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_certificate_names_its_principal_and_admins_are_set_on_the_command_line() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = test_dir();
    let pki = capstan_testing::pki::Pki::new().expect("pki");
    pki.issue_for("bob", &[], "capstan://user/bob")
        .expect("bob");
    pki.issue_for("ops", &[], "capstan://user/ops")
        .expect("ops");
    let api = api_with(
        &etcd.endpoints(),
        dir.path(),
        Some(&pki.files("server")),
        &["--admin", "capstan://user/ops"],
    );
    let ep = api.field("grpc").to_string();

    // The certificate's URI SAN is the principal; without a policy it may do nothing.
    let (mut bob, mut bob_iam) = connect(&ep, Some(&pki.files("bob")), None).await;
    let me = bob_iam
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.principal, "capstan://user/bob");
    assert_eq!(me.authenticated_by, "certificate");
    let e = bob
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .expect_err("bob has no policy");
    assert_eq!(exception(&e), "AccessDeniedException");
    // A CN-only certificate is a user by its CN.
    let (_, mut client_iam) = connect(&ep, Some(&pki.files("client")), None).await;
    let me = client_iam
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.principal, "capstan://user/client");

    // The administrator from --admin grants bob read access to clusters.
    let (_, mut ops_iam) = connect(&ep, Some(&pki.files("ops")), None).await;
    ops_iam
        .put_document(pb::PutIamDocumentRequest {
            kind: "policy".into(),
            name: "read-clusters".into(),
            document_json: json!({"Statement": {"Effect": "Allow",
                "Action": ["ecs:ListClusters", "ecs:DescribeClusters"], "Resource": "*"}})
            .to_string(),
        })
        .await
        .expect("put policy");
    ops_iam
        .put_document(pb::PutIamDocumentRequest {
            kind: "principal".into(),
            name: "capstan://user/bob".into(),
            document_json: json!({"policies": ["read-clusters"]}).to_string(),
        })
        .await
        .expect("attach");
    bob.list_clusters(pb::ListClustersRequest::default())
        .await
        .expect("bob may list clusters now");
    let e = bob
        .create_cluster(pb::CreateClusterRequest {
            cluster_json: json!({"clusterName": "x"}).to_string(),
        })
        .await
        .expect_err("but not create one");
    assert_eq!(exception(&e), "AccessDeniedException");
    // With administrators on the command line, Bootstrap is closed: no window in which any
    // holder of a CA certificate could make itself an administrator.
    let e = bob_iam
        .bootstrap(pb::BootstrapRequest {
            principal: "capstan://user/bob".into(),
        })
        .await
        .expect_err("bootstrap is closed");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("--admin"), "{}", e.message());
}

/// An API that starts while etcd has no quorum cannot load its IAM documents yet: a call that
/// arrives then waits for the load and is decided (here: denied by default deny), rather than
/// being refused as UNAVAILABLE (what a compose deployment's first calls used to see).
#[tokio::test]
async fn a_call_to_an_api_still_loading_its_policies_waits_for_them() {
    let mut etcd = EtcdCluster::three().await.expect("etcd");
    let dir = test_dir();
    etcd.kill(1);
    etcd.kill(2);
    // One member of three: it accepts connections but cannot serve reads without a leader.
    let api = api_with(&[etcd.endpoint(0)], dir.path(), None, &[]);
    let ep = api.field("grpc").to_string();
    let (mut anon, _) = connect(&ep, None, None).await;
    let mut call = tokio::spawn(async move {
        anon.list_clusters(pb::ListClustersRequest::default())
            .await
            .map(|_| ())
    });
    // Without quorum nothing can load the documents, so an answer now would be a refusal.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut call)
            .await
            .is_err(),
        "the call was answered before the API could read its policies"
    );
    etcd.restart(1).await.expect("quorum is back");
    let e = call
        .await
        .expect("the call's task")
        .expect_err("an anonymous ListClusters is denied");
    assert_eq!(
        (e.code(), exception(&e)),
        (Code::PermissionDenied, "AccessDeniedException".to_string()),
        "{}",
        e.message()
    );
}
