//! The HttpGateway: actix-web routes for `/kv/{key}` and `/status`. Every request enters
//! the protocol through the consensus actor (which forwards to the leader when needed).

mod routes;

pub use routes::{configure, dispatch, status_code, GatewayState, MAX_BODY_BYTES_IN_FLIGHT};

use std::time::Duration;

use crate::actors::consensus::GetStatus;
use crate::config::Config;
use crate::kv::{ClientRequest, ClientResponse};
use crate::node::NodeHandle;

const HTTP_WORKERS: usize = 2;
/// Client connections served at once; more wait to be accepted.
pub const MAX_CLIENT_CONNECTIONS: usize = 4096;

/// Serves the client API until the server is stopped (SIGINT/SIGTERM).
pub async fn serve(config: &Config, node: NodeHandle) -> Result<(), String> {
    let state = GatewayState::new(node.clone(), config.request_timeout());
    let handover = config.raft_options().election_timeout_max * 4;
    let https = config.https_config()?;
    let listen = config
        .http_listen
        .clone()
        .unwrap_or_else(|| config.http_addr.clone());
    let metrics = node.metrics.clone();
    let server = actix_web::HttpServer::new(move || {
        let metrics = metrics.clone();
        actix_web::App::new()
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let route = routes::route_label(req.path());
                let started = std::time::Instant::now();
                let metrics = metrics.clone();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    let class = match res.status().as_u16() {
                        200..=299 => "2xx",
                        300..=399 => "3xx",
                        400..=499 => "4xx",
                        _ => "5xx",
                    };
                    metrics
                        .http_requests
                        .with_label_values(&[route, class])
                        .inc();
                    metrics
                        .http_latency
                        .with_label_values(&[route, class])
                        .observe(started.elapsed().as_secs_f64());
                    Ok(res)
                }
            })
            .configure(|cfg| configure(cfg, state.clone()))
    })
    .workers(HTTP_WORKERS)
    // Connections beyond this wait in the listen backlog (each costs buffers and a task).
    .max_connections(MAX_CLIENT_CONNECTIONS / HTTP_WORKERS)
    .shutdown_timeout(2)
    .disable_signals();
    let bound = match https {
        Some(tls) => server.bind_rustls_0_23(&listen, tls),
        None => server.bind(&listen),
    };
    let server = bound.map_err(|e| format!("cannot listen for clients on {}: {}", listen, e))?;
    let server = server.run();
    actix::spawn(stop_on_signal(node, server.handle(), handover));
    server
        .await
        .map_err(|e| format!("http server failed: {}", e))
}

/// On SIGTERM or SIGINT a leader first hands leadership to its most up-to-date follower
/// (trying again until `handover` is spent), so a rolling restart costs no election
/// timeout; then the server stops.
async fn stop_on_signal(
    node: NodeHandle,
    server: actix_web::dev::ServerHandle,
    handover: Duration,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("[node {}] cannot install signal handlers", node.id);
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let leads = matches!(
        node.consensus.send(GetStatus).await,
        Ok(s) if s.role == "leader"
    );
    if leads {
        log::info!(
            "[node {}] {}: hands leadership over before stopping",
            node.id,
            name
        );
        // One attempt gives up after an election timeout, for instance when the chosen
        // follower's disk was slow for a moment; try again while the budget lasts.
        let deadline = tokio::time::Instant::now() + handover;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = dispatch(&node, ClientRequest::TransferLeader(None), left).await;
            match answer {
                ClientResponse::LeaderIs { leader } => {
                    log::info!("[node {}] node {} leads now; stopping", node.id, leader);
                    break;
                }
                ClientResponse::Unavailable { leader, .. }
                    if leader == Some(node.id)
                        && tokio::time::Instant::now() + handover / 4 < deadline =>
                {
                    log::info!(
                        "[node {}] leadership hand-over did not complete in time; tries again",
                        node.id
                    );
                }
                other => {
                    log::info!(
                        "[node {}] leadership hand-over did not complete ({:?}); stopping anyway",
                        node.id,
                        other
                    );
                    break;
                }
            }
        }
    } else {
        log::info!("[node {}] {}: stopping", node.id, name);
    }
    server.stop(true).await;
}
