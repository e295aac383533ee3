//! The tonic service: each RPC hands its request to [`Api`] and maps the result.

use std::pin::Pin;

use capstan_proto::api::v1 as pb;
use capstan_proto::api::v1::capstan_server::Capstan;
use capstan_proto::api::v1::iam_server::Iam;
use futures::StreamExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::actions::{Api, cluster_name};
use crate::auth::Auth;
use crate::authz;
use crate::error::ApiResult;
use crate::shape::name_of;

/// Capstan's gRPC service.
#[derive(Clone)]
pub struct CapstanService {
    api: Api,
    auth: Auth,
    shutdown: tokio_util::sync::CancellationToken,
}

impl CapstanService {
    /// A service answering from `api` to the callers `auth` admits; its watch streams end when
    /// `shutdown` is cancelled, so a graceful stop does not wait on them.
    pub fn new(api: Api, auth: Auth, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Self {
            api,
            auth,
            shutdown,
        }
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::ServiceUpdate, Status>> + Send>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<pb::TaskLogEvent, Status>> + Send>>;
type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecuteCommandOutput, Status>> + Send>>;

#[tonic::async_trait]
impl Capstan for CapstanService {
    async fn tag_resource(
        &self,
        request: Request<pb::TagResourceRequest>,
    ) -> Result<Response<pb::TagsResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.tag_resource(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn untag_resource(
        &self,
        request: Request<pb::UntagResourceRequest>,
    ) -> Result<Response<pb::TagsResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.untag_resource(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_tags_for_resource(
        &self,
        request: Request<pb::ListTagsForResourceRequest>,
    ) -> Result<Response<pb::TagsResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_tags_for_resource(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn put_secret(
        &self,
        request: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::SecretResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.put_secret(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn get_secret_value(
        &self,
        request: Request<pb::GetSecretValueRequest>,
    ) -> Result<Response<pb::SecretValueResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.get_secret_value(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_secrets(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::SecretResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.delete_secret(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn register_task_definition(
        &self,
        request: Request<pb::RegisterTaskDefinitionRequest>,
    ) -> Result<Response<pb::TaskDefinitionResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .register_task_definition(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn describe_task_definition(
        &self,
        request: Request<pb::DescribeTaskDefinitionRequest>,
    ) -> Result<Response<pb::TaskDefinitionResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .describe_task_definition(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn list_task_definitions(
        &self,
        request: Request<pb::ListTaskDefinitionsRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_task_definitions(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_task_definition_families(
        &self,
        request: Request<pb::ListTaskDefinitionFamiliesRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .list_task_definition_families(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn deregister_task_definition(
        &self,
        request: Request<pb::DeregisterTaskDefinitionRequest>,
    ) -> Result<Response<pb::TaskDefinitionResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .deregister_task_definition(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::ClusterResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.create_cluster(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn describe_clusters(
        &self,
        request: Request<pb::DescribeClustersRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.describe_clusters(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_clusters(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::ClusterResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.delete_cluster(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn put_cluster_capacity_providers(
        &self,
        request: Request<pb::PutClusterCapacityProvidersRequest>,
    ) -> Result<Response<pb::ClusterResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .put_cluster_capacity_providers(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.create_service(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.update_service(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn describe_services(
        &self,
        request: Request<pb::DescribeServicesRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.describe_services(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_services(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.delete_service(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_service_deployments(
        &self,
        request: Request<pb::ListServiceDeploymentsRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .list_service_deployments(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn continue_service_deployment(
        &self,
        request: Request<pb::ContinueServiceDeploymentRequest>,
    ) -> Result<Response<pb::ContinueServiceDeploymentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .continue_service_deployment(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn stop_service_deployment(
        &self,
        request: Request<pb::StopServiceDeploymentRequest>,
    ) -> Result<Response<pb::StopServiceDeploymentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.stop_service_deployment(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.run_task(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.start_task(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::TaskResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.stop_task(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn describe_tasks(
        &self,
        request: Request<pb::DescribeTasksRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.describe_tasks(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_tasks(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn put_account_setting(
        &self,
        request: Request<pb::PutAccountSettingRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.put_account_setting(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn delete_account_setting(
        &self,
        request: Request<pb::DeleteAccountSettingRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.delete_account_setting(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_account_settings(
        &self,
        request: Request<pb::ListAccountSettingsRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_account_settings(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn update_task_protection(
        &self,
        request: Request<pb::UpdateTaskProtectionRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.update_task_protection(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn get_task_protection(
        &self,
        request: Request<pb::GetTaskProtectionRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.get_task_protection(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    type GetTaskLogsStream = LogStream;

    async fn get_task_logs(
        &self,
        request: Request<pb::GetTaskLogsRequest>,
    ) -> Result<Response<Self::GetTaskLogsStream>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.task_logs(request.into_inner()).await;
        let lines = self.auth.finish(admitted, r)?.into_inner();
        let shutdown = self.shutdown.clone();
        let events = lines
            .map(|l| {
                l.map(|e| pb::TaskLogEvent {
                    timestamp: e.timestamp,
                    container: e.container,
                    stream: e.stream,
                    message: e.message,
                })
                .map_err(|s| {
                    Status::unavailable(format!(
                        "the stream from the task's agent ended: {}",
                        s.message()
                    ))
                })
            })
            .take_until(async move { shutdown.cancelled().await });
        Ok(Response::new(Box::pin(events)))
    }

    type ExecuteCommandStream = ExecStream;

    async fn execute_command(
        &self,
        mut request: Request<tonic::Streaming<pb::ExecuteCommandInput>>,
    ) -> Result<Response<Self::ExecuteCommandStream>, Status> {
        use capstan_proto::agent::v1 as agent;
        use pb::execute_command_input::Input;
        use pb::execute_command_output::Output;
        let start = match request.get_mut().message().await? {
            Some(pb::ExecuteCommandInput {
                input: Some(Input::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "an ExecuteCommand stream must begin with its start (task, container, command)",
                ));
            }
        };
        let admitted = self
            .auth
            .admit_ask(&request, crate::authz::Guarded::ask(&start))
            .await?;
        // The caller's input for the agent; a failed caller stream ends it.
        let input = request
            .into_inner()
            .take_while(|m| futures::future::ready(m.is_ok()))
            .filter_map(|m| {
                futures::future::ready(m.ok().and_then(|m| {
                    let input = match m.input? {
                        Input::Stdin(b) => agent::exec_input::Input::Stdin(b),
                        Input::Resize(s) => agent::exec_input::Input::Resize(agent::TerminalSize {
                            rows: s.rows,
                            cols: s.cols,
                        }),
                        Input::CloseStdin(b) => agent::exec_input::Input::CloseStdin(b),
                        Input::Start(_) => return None,
                    };
                    Some(agent::ExecInput { input: Some(input) })
                }))
            });
        let r = self.api.execute_command(start, input).await;
        let output = self.auth.finish(admitted, r)?.into_inner();
        let shutdown = self.shutdown.clone();
        let events = output
            .map(|o| {
                o.map(|o| pb::ExecuteCommandOutput {
                    output: o.output.map(|o| match o {
                        agent::exec_output::Output::Stdout(b) => Output::Stdout(b),
                        agent::exec_output::Output::Stderr(b) => Output::Stderr(b),
                        agent::exec_output::Output::ExitCode(c) => Output::ExitCode(c),
                    }),
                })
                .map_err(|s| {
                    Status::unavailable(format!(
                        "the session with the task's agent ended: {}",
                        s.message()
                    ))
                })
            })
            .take_until(async move { shutdown.cancelled().await });
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_container_instances(
        &self,
        request: Request<pb::ListContainerInstancesRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .list_container_instances(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn describe_container_instances(
        &self,
        request: Request<pb::DescribeContainerInstancesRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .describe_container_instances(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn update_container_instances_state(
        &self,
        request: Request<pb::UpdateContainerInstancesStateRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .update_container_instances_state(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn create_capacity_provider(
        &self,
        request: Request<pb::CreateCapacityProviderRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .create_capacity_provider(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn update_capacity_provider(
        &self,
        request: Request<pb::UpdateCapacityProviderRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .update_capacity_provider(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn delete_capacity_provider(
        &self,
        request: Request<pb::DeleteCapacityProviderRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self
            .api
            .delete_capacity_provider(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn describe_capacity_providers(
        &self,
        request: Request<pb::DescribeByNameRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self
            .auth
            .admit_ask(
                &request,
                authz::describe_by_name(
                    "ecs:DescribeCapacityProviders",
                    "capacity-provider",
                    request.get_ref(),
                ),
            )
            .await?;
        let r = self
            .api
            .describe_capacity_providers(request.into_inner())
            .await;
        self.auth.finish(admitted, r)
    }

    async fn create_target_group(
        &self,
        request: Request<pb::CreateTargetGroupRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.create_target_group(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn describe_target_groups(
        &self,
        request: Request<pb::DescribeByNameRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self
            .auth
            .admit_ask(
                &request,
                authz::describe_by_name(
                    "elasticloadbalancing:DescribeTargetGroups",
                    "targetgroup",
                    request.get_ref(),
                ),
            )
            .await?;
        let r = self.api.describe_target_groups(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn describe_target_health(
        &self,
        request: Request<pb::DescribeTargetHealthRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.describe_target_health(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn create_listener(
        &self,
        request: Request<pb::CreateListenerRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.create_listener(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn describe_listeners(
        &self,
        request: Request<pb::DescribeByNameRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self
            .auth
            .admit_ask(
                &request,
                authz::describe_by_name(
                    "elasticloadbalancing:DescribeListeners",
                    "listener",
                    request.get_ref(),
                ),
            )
            .await?;
        let r = self.api.describe_listeners(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    type WatchServiceStream = UpdateStream;

    async fn watch_service(
        &self,
        request: Request<pb::WatchServiceRequest>,
    ) -> Result<Response<Self::WatchServiceStream>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let req = request.into_inner();
        let cluster = cluster_name(&req.cluster).to_string();
        let service = name_of(&req.service).to_string();
        let found = self.api.require_service(&cluster, &service).await;
        self.auth.finish(admitted, found)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let watch = crate::watch::watch_service(self.api.clone(), cluster, service, tx);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = watch => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// How long an IAM write waits for this replica's cache to see it, so the caller's next
/// request is decided with it.
const IAM_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// The Iam gRPC service.
#[derive(Clone)]
pub struct IamService {
    api: Api,
    auth: Auth,
}

impl IamService {
    /// A service answering from `api` to the callers `auth` admits.
    pub fn new(api: Api, auth: Auth) -> Self {
        Self { api, auth }
    }

    /// Waits (a bounded time) for the IAM cache to reach `written`'s revision; passes it on.
    async fn settled<T>(&self, written: ApiResult<(T, i64)>) -> ApiResult<T> {
        let (v, rev) = written?;
        let _ = tokio::time::timeout(IAM_CATCH_UP, self.auth.caught_up(rev)).await;
        Ok(v)
    }
}

#[tonic::async_trait]
impl Iam for IamService {
    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let admitted = self.auth.admit_unchecked(&request).await?;
        let r = if self.auth.has_admins() {
            Err(crate::ApiError::new(
                crate::Exception::AccessDenied,
                "Bootstrap is closed: this API has administrators (--admin); ask one for a token",
            ))
        } else {
            self.api.bootstrap(request.into_inner()).await
        };
        let r = self.settled(r).await;
        self.auth.finish(admitted, r)
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let admitted = self.auth.admit_unchecked(&request).await?;
        let r = self.auth.directory().map(|d| {
            let caller = &admitted.caller;
            let (policies, administrator) = match &caller.principal {
                Some(p) => (d.policies_of(p).unwrap_or_default(), d.is_admin(p)),
                None => (vec![], false),
            };
            pb::WhoAmIResponse {
                principal: caller
                    .principal
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                authenticated_by: caller.authenticated_by.to_string(),
                policies,
                administrator,
            }
        });
        self.auth.finish(admitted, r)
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.create_token(request.into_inner()).await;
        let r = self.settled(r).await;
        self.auth.finish(admitted, r)
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_tokens().await;
        self.auth.finish(admitted, r)
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.revoke_token(request.into_inner()).await;
        let r = self.settled(r).await;
        self.auth.finish(admitted, r)
    }

    async fn create_access_key(
        &self,
        request: Request<pb::CreateAccessKeyRequest>,
    ) -> Result<Response<pb::AccessKeyResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.create_access_key(request.into_inner()).await;
        let r = self.settled(r).await;
        self.auth.finish(admitted, r)
    }

    async fn list_access_keys(
        &self,
        request: Request<pb::ListAccessKeysRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_access_keys().await;
        self.auth.finish(admitted, r)
    }

    async fn delete_access_key(
        &self,
        request: Request<pb::DeleteAccessKeyRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.delete_access_key(request.into_inner()).await;
        let r = self.settled(r).await;
        self.auth.finish(admitted, r)
    }

    async fn put_document(
        &self,
        request: Request<pb::PutIamDocumentRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.put_iam_document(request.into_inner()).await;
        let r = self.settled(r).await;
        self.auth.finish(admitted, r)
    }

    async fn get_document(
        &self,
        request: Request<pb::IamDocumentRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.get_iam_document(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListIamDocumentsRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let admitted = self.auth.admit(&request).await?;
        let r = self.api.list_iam_documents(request.into_inner()).await;
        self.auth.finish(admitted, r)
    }

    async fn delete_document(
        &self,
        request: Request<pb::IamDocumentRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let admitted = self
            .auth
            .admit_ask(&request, authz::delete_document(request.get_ref()))
            .await?;
        let r = self.api.delete_iam_document(request.into_inner()).await;
        let r = self.settled(r).await;
        self.auth.finish(admitted, r)
    }
}
