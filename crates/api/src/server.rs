//! The tonic service: each RPC hands its request to [`Api`] and maps the result.

use std::pin::Pin;

use capstan_proto::api::v1 as pb;
use capstan_proto::api::v1::capstan_server::Capstan;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::actions::{Api, cluster_name};
use crate::error::ApiResult;
use crate::shape::name_of;

/// Capstan's gRPC service.
#[derive(Clone)]
pub struct CapstanService {
    api: Api,
    shutdown: tokio_util::sync::CancellationToken,
}

impl CapstanService {
    /// A service answering from `api`; its watch streams end when `shutdown` is cancelled, so a
    /// graceful stop does not wait on them.
    pub fn new(api: Api, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Self { api, shutdown }
    }
}

fn respond<T>(action: &str, r: ApiResult<T>) -> Result<Response<T>, Status> {
    match r {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            tracing::debug!(action, error = %e, "request refused");
            Err(e.into())
        }
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::ServiceUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Capstan for CapstanService {
    async fn register_task_definition(
        &self,
        request: Request<pb::RegisterTaskDefinitionRequest>,
    ) -> Result<Response<pb::TaskDefinitionResponse>, Status> {
        let r = self
            .api
            .register_task_definition(request.into_inner())
            .await;
        respond("RegisterTaskDefinition", r)
    }

    async fn describe_task_definition(
        &self,
        request: Request<pb::DescribeTaskDefinitionRequest>,
    ) -> Result<Response<pb::TaskDefinitionResponse>, Status> {
        let r = self
            .api
            .describe_task_definition(request.into_inner())
            .await;
        respond("DescribeTaskDefinition", r)
    }

    async fn list_task_definitions(
        &self,
        request: Request<pb::ListTaskDefinitionsRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = self.api.list_task_definitions(request.into_inner()).await;
        respond("ListTaskDefinitions", r)
    }

    async fn list_task_definition_families(
        &self,
        request: Request<pb::ListTaskDefinitionFamiliesRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = self
            .api
            .list_task_definition_families(request.into_inner())
            .await;
        respond("ListTaskDefinitionFamilies", r)
    }

    async fn deregister_task_definition(
        &self,
        request: Request<pb::DeregisterTaskDefinitionRequest>,
    ) -> Result<Response<pb::TaskDefinitionResponse>, Status> {
        let r = self
            .api
            .deregister_task_definition(request.into_inner())
            .await;
        respond("DeregisterTaskDefinition", r)
    }

    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::ClusterResponse>, Status> {
        let r = self.api.create_cluster(request.into_inner()).await;
        respond("CreateCluster", r)
    }

    async fn describe_clusters(
        &self,
        request: Request<pb::DescribeClustersRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.describe_clusters(request.into_inner()).await;
        respond("DescribeClusters", r)
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = self.api.list_clusters(request.into_inner()).await;
        respond("ListClusters", r)
    }

    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::ClusterResponse>, Status> {
        let r = self.api.delete_cluster(request.into_inner()).await;
        respond("DeleteCluster", r)
    }

    async fn put_cluster_capacity_providers(
        &self,
        request: Request<pb::PutClusterCapacityProvidersRequest>,
    ) -> Result<Response<pb::ClusterResponse>, Status> {
        let r = self
            .api
            .put_cluster_capacity_providers(request.into_inner())
            .await;
        respond("PutClusterCapacityProviders", r)
    }

    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let r = self.api.create_service(request.into_inner()).await;
        respond("CreateService", r)
    }

    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let r = self.api.update_service(request.into_inner()).await;
        respond("UpdateService", r)
    }

    async fn describe_services(
        &self,
        request: Request<pb::DescribeServicesRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.describe_services(request.into_inner()).await;
        respond("DescribeServices", r)
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = self.api.list_services(request.into_inner()).await;
        respond("ListServices", r)
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let r = self.api.delete_service(request.into_inner()).await;
        respond("DeleteService", r)
    }

    async fn list_service_deployments(
        &self,
        request: Request<pb::ListServiceDeploymentsRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self
            .api
            .list_service_deployments(request.into_inner())
            .await;
        respond("ListServiceDeployments", r)
    }

    async fn continue_service_deployment(
        &self,
        request: Request<pb::ContinueServiceDeploymentRequest>,
    ) -> Result<Response<pb::ContinueServiceDeploymentResponse>, Status> {
        let r = self
            .api
            .continue_service_deployment(request.into_inner())
            .await;
        respond("ContinueServiceDeployment", r)
    }

    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.run_task(request.into_inner()).await;
        respond("RunTask", r)
    }

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.start_task(request.into_inner()).await;
        respond("StartTask", r)
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::TaskResponse>, Status> {
        let r = self.api.stop_task(request.into_inner()).await;
        respond("StopTask", r)
    }

    async fn describe_tasks(
        &self,
        request: Request<pb::DescribeTasksRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.describe_tasks(request.into_inner()).await;
        respond("DescribeTasks", r)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = self.api.list_tasks(request.into_inner()).await;
        respond("ListTasks", r)
    }

    async fn list_container_instances(
        &self,
        request: Request<pb::ListContainerInstancesRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = self
            .api
            .list_container_instances(request.into_inner())
            .await;
        respond("ListContainerInstances", r)
    }

    async fn describe_container_instances(
        &self,
        request: Request<pb::DescribeContainerInstancesRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self
            .api
            .describe_container_instances(request.into_inner())
            .await;
        respond("DescribeContainerInstances", r)
    }

    async fn update_container_instances_state(
        &self,
        request: Request<pb::UpdateContainerInstancesStateRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self
            .api
            .update_container_instances_state(request.into_inner())
            .await;
        respond("UpdateContainerInstancesState", r)
    }

    async fn create_capacity_provider(
        &self,
        request: Request<pb::CreateCapacityProviderRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let r = self
            .api
            .create_capacity_provider(request.into_inner())
            .await;
        respond("CreateCapacityProvider", r)
    }

    async fn describe_capacity_providers(
        &self,
        request: Request<pb::DescribeByNameRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self
            .api
            .describe_capacity_providers(request.into_inner())
            .await;
        respond("DescribeCapacityProviders", r)
    }

    async fn create_target_group(
        &self,
        request: Request<pb::CreateTargetGroupRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let r = self.api.create_target_group(request.into_inner()).await;
        respond("CreateTargetGroup", r)
    }

    async fn describe_target_groups(
        &self,
        request: Request<pb::DescribeByNameRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.describe_target_groups(request.into_inner()).await;
        respond("DescribeTargetGroups", r)
    }

    async fn describe_target_health(
        &self,
        request: Request<pb::DescribeTargetHealthRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.describe_target_health(request.into_inner()).await;
        respond("DescribeTargetHealth", r)
    }

    async fn create_listener(
        &self,
        request: Request<pb::CreateListenerRequest>,
    ) -> Result<Response<pb::DocumentResponse>, Status> {
        let r = self.api.create_listener(request.into_inner()).await;
        respond("CreateListener", r)
    }

    async fn describe_listeners(
        &self,
        request: Request<pb::DescribeByNameRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let r = self.api.describe_listeners(request.into_inner()).await;
        respond("DescribeListeners", r)
    }

    type WatchServiceStream = UpdateStream;

    async fn watch_service(
        &self,
        request: Request<pb::WatchServiceRequest>,
    ) -> Result<Response<Self::WatchServiceStream>, Status> {
        let req = request.into_inner();
        let cluster = cluster_name(&req.cluster).to_string();
        let service = name_of(&req.service).to_string();
        self.api.require_service(&cluster, &service).await?;
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
