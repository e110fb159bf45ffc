//! The HttpGateway: actix-web routes for `/kv/{key}` and `/status`. Every request enters
//! the protocol through the consensus actor (which forwards to the leader when needed).

mod routes;

pub use routes::{configure, dispatch, status_code, GatewayState, MAX_BODY_BYTES_IN_FLIGHT};

use crate::config::Config;
use crate::node::NodeHandle;

const HTTP_WORKERS: usize = 2;
/// Client connections served at once; more wait to be accepted.
pub const MAX_CLIENT_CONNECTIONS: usize = 4096;

/// Serves the client API until the server is stopped (SIGINT/SIGTERM).
pub async fn serve(config: &Config, node: NodeHandle) -> Result<(), String> {
    let state = GatewayState::new(node, config.request_timeout());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(|cfg| configure(cfg, state.clone()))
    })
    .workers(HTTP_WORKERS)
    // Connections beyond this wait in the listen backlog (each costs buffers and a task).
    .max_connections(MAX_CLIENT_CONNECTIONS / HTTP_WORKERS)
    .shutdown_timeout(2)
    .bind(&config.http_addr)
    .map_err(|e| {
        format!(
            "cannot listen for clients on http_addr {}: {}",
            config.http_addr, e
        )
    })?;
    server
        .run()
        .await
        .map_err(|e| format!("http server failed: {}", e))
}
