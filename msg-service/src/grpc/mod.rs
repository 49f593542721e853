//! The message service over gRPC: the server msg-service runs, and the
//! client gateways use, which implements the same [`crate::MessageApi`].

mod client;
mod convert;
mod server;

pub use client::{ClientConfig, RemoteMessageService};
pub(crate) use convert::is_shard_not_served;
pub use server::GrpcService;

use std::future::Future;
use std::sync::Arc;

use proto::grpc::messages_server::MessagesServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Serves `api` over gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    api: Arc<dyn crate::MessageApi>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, GrpcService::new(api), shutdown).await
}

/// Serves `service` (see [`GrpcService::replica`]) on `listener` until
/// `shutdown` resolves.
pub async fn serve_with(
    listener: TcpListener,
    service: GrpcService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(MessagesServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
