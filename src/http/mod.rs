//! The HttpGateway: actix-web routes for `/kv/{key}` and `/status`. Every request enters
//! the protocol through the consensus actor (which forwards to the leader when needed).

mod routes;

pub use routes::{configure, dispatch, status_code, GatewayState};

use crate::config::Config;
use crate::node::NodeHandle;

/// Serves the client API until the server is stopped (SIGINT/SIGTERM).
pub async fn serve(config: &Config, node: NodeHandle) -> Result<(), String> {
    let state = GatewayState::new(node, config.request_timeout());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(|cfg| configure(cfg, state.clone()))
    })
    .workers(2)
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
