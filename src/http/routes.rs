use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::actors::consensus::{
    now_ms, ClientCall, ClusterEvent, GetEvents, GetMemberAddrs, GetStatus, NodeStatus,
};
use crate::kv::{
    ApplyResult, ClientRequest, ClientResponse, ClientSession, KvOp, ReadConsistency, FIRST_SEQ,
    MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
use crate::node::NodeHandle;
use crate::raft::{MemberAddrs, MembershipChange, NodeId};

/// What every handler needs.
#[derive(Clone)]
pub struct GatewayState {
    node: NodeHandle,
    request_timeout: Duration,
    /// Request bodies being received or waiting for their outcome, in KiB: a node holds at
    /// most `MAX_BODY_BYTES_IN_FLIGHT` of them, however many clients send at once.
    bodies: Arc<Semaphore>,
}

/// Bytes of request bodies a node holds at once (see `GatewayState::bodies`).
pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;
/// What an overloaded node asks clients to wait, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

impl GatewayState {
    pub fn new(node: NodeHandle, request_timeout: Duration) -> Self {
        GatewayState {
            node,
            request_timeout,
            bodies: Arc::new(Semaphore::new(MAX_BODY_BYTES_IN_FLIGHT / 1024)),
        }
    }
}

/// 503 with `Retry-After`: the request was not applied; try again after a pause.
fn overloaded(message: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()))
        .json(json!({ "error": message, "leader": null }))
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: GatewayState) {
    cfg.app_data(web::Data::new(state))
        .service(web::scope("/kv").default_service(web::to(kv)))
        .route("/status", web::get().to(status))
        .route("/cluster/members", web::get().to(members))
        .route("/cluster/members", web::post().to(add_member))
        .route("/cluster/members/{id}", web::delete().to(remove_member))
        .route("/cluster/leader", web::post().to(transfer_leader))
        .route("/cluster/events", web::get().to(events))
        .route("/cluster/overview", web::get().to(overview))
        .route("/metrics", web::get().to(metrics))
        .route("/ui", web::get().to(ui))
        .default_service(web::to(not_found));
}

fn error(code: StatusCode, message: &str, leader: Option<NodeId>) -> HttpResponse {
    HttpResponse::build(code).json(json!({ "error": message, "leader": leader }))
}

/// A request refused before it reaches the protocol.
struct Rejected(StatusCode, String);

impl Rejected {
    fn response(self) -> HttpResponse {
        error(self.0, &self.1, None)
    }
}

/// The key of a `/kv/{key}` request: the rest of the path, percent-decoded strictly (a `%`
/// must start two hex digits, and the result must be UTF-8), so that one key has one
/// spelling.
fn key_of(req: &HttpRequest) -> Result<String, Rejected> {
    let raw = req.uri().path().strip_prefix("/kv/").unwrap_or_default();
    let key = percent_decode(raw).ok_or_else(|| {
        Rejected(
            StatusCode::BAD_REQUEST,
            "invalid percent-encoding in the key: '%' must start two hex digits, and the \
             decoded key must be UTF-8"
                .into(),
        )
    })?;
    if key.is_empty() {
        return Err(Rejected(StatusCode::BAD_REQUEST, "empty key".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Rejected(
            StatusCode::URI_TOO_LONG,
            format!("key of {} bytes exceeds {} bytes", key.len(), MAX_KEY_BYTES),
        ));
    }
    Ok(key)
}

/// Strict percent-decoding; `None` for a stray `%` or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `X-Client-Id` and `X-Request-Seq`: both or neither.
fn session(req: &HttpRequest) -> Result<Option<ClientSession>, Rejected> {
    let header = |name: &str| -> Result<Option<String>, Rejected> {
        match req.headers().get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| Rejected(StatusCode::BAD_REQUEST, format!("{} is not text", name))),
        }
    };
    match (header("x-client-id")?, header("x-request-seq")?) {
        (None, None) => Ok(None),
        (Some(client_id), Some(seq)) => {
            if client_id.is_empty() || client_id.len() > 128 {
                return Err(Rejected(
                    StatusCode::BAD_REQUEST,
                    "X-Client-Id must be 1 to 128 bytes".into(),
                ));
            }
            let seq = seq
                .parse::<u64>()
                .ok()
                .filter(|s| *s >= FIRST_SEQ)
                .ok_or_else(|| {
                    Rejected(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "X-Request-Seq must be an integer from {} (a session's first \
                             request) up",
                            FIRST_SEQ
                        ),
                    )
                })?;
            Ok(Some(ClientSession { client_id, seq }))
        }
        _ => Err(Rejected(
            StatusCode::BAD_REQUEST,
            "X-Client-Id and X-Request-Seq must be sent together".into(),
        )),
    }
}

async fn call(state: &GatewayState, request: ClientRequest) -> ClientResponse {
    dispatch(&state.node, request, state.request_timeout).await
}

/// While the leader refuses proposals for overload, a write is refused here, at once,
/// with the core's reason (`Shedding`): not queued behind the requests in the consensus
/// actor's mailbox only to be refused there.
fn shed(node: &NodeHandle) -> Option<ClientResponse> {
    let reason = node.shedding.refusing()?;
    node.metrics.proposals.with_label_values(&["shed"]).inc();
    Some(ClientResponse::Overloaded { reason })
}

/// Sends a client request into `node` and waits at most `timeout` for the outcome: the
/// exact path every HTTP handler takes (the simulator's clients use it too).
pub async fn dispatch(
    node: &NodeHandle,
    request: ClientRequest,
    timeout: Duration,
) -> ClientResponse {
    let is_write = matches!(request, ClientRequest::Write { .. });
    if is_write {
        if let Some(refused) = shed(node) {
            return refused;
        }
    }
    let call = node.consensus.send(ClientCall {
        request,
        forwarded: false,
    });
    // The answer comes on its own channel, straight from whichever actor gives it.
    let answer = async move { call.await.ok()?.await.ok() };
    match tokio::time::timeout(timeout, answer).await {
        Ok(Some(response)) => response,
        // The node stopped (or dropped the request) while it was in progress: a write may
        // already be in the log (or forwarded), so its outcome is unknown.
        Ok(None) if is_write => ClientResponse::Unknown {
            reason: "node stopped while the write was in progress".into(),
            leader: None,
        },
        Ok(None) => ClientResponse::Unavailable {
            reason: "node is shutting down".into(),
            leader: None,
        },
        Err(_) => {
            if is_write {
                node.metrics.proposals.with_label_values(&["timeout"]).inc();
            }
            ClientResponse::Unknown {
                reason: format!(
                    "timed out after {:?}; {}",
                    timeout,
                    if is_write {
                        "the write may or may not be applied"
                    } else {
                        "the read was not answered"
                    }
                ),
                leader: None,
            }
        }
    }
}

/// The HTTP status a response maps to.
pub fn status_code(response: &ClientResponse) -> u16 {
    match response {
        ClientResponse::Written { .. }
        | ClientResponse::Value(Some(_))
        | ClientResponse::Members(_)
        | ClientResponse::LeaderIs { .. } => 200,
        ClientResponse::Value(None) => 404,
        ClientResponse::Unavailable { .. } | ClientResponse::Overloaded { .. } => 503,
        ClientResponse::Unknown { .. } => 504,
        ClientResponse::SessionExpired { .. } | ClientResponse::Rejected { .. } => 409,
    }
}

fn respond(response: ClientResponse) -> HttpResponse {
    match response {
        ClientResponse::Written { index, result } => match result {
            ApplyResult::Put => HttpResponse::Ok().json(json!({ "index": index })),
            ApplyResult::Deleted { existed } => {
                HttpResponse::Ok().json(json!({ "index": index, "existed": existed }))
            }
            ApplyResult::Superseded => {
                HttpResponse::Ok().json(json!({ "index": index, "duplicate": true }))
            }
            ApplyResult::Configured => HttpResponse::Ok().json(json!({ "index": index })),
        },
        ClientResponse::Members(members) => HttpResponse::Ok().json(json!({ "members": members })),
        ClientResponse::LeaderIs { leader } => HttpResponse::Ok().json(json!({ "leader": leader })),
        ClientResponse::Rejected { reason } => error(StatusCode::CONFLICT, &reason, None),
        ClientResponse::Value(Some(v)) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(v),
        ClientResponse::Value(None) => error(StatusCode::NOT_FOUND, "key not found", None),
        ClientResponse::Unavailable { reason, leader } => {
            error(StatusCode::SERVICE_UNAVAILABLE, &reason, leader)
        }
        ClientResponse::Unknown { reason, leader } => {
            error(StatusCode::GATEWAY_TIMEOUT, &reason, leader)
        }
        ClientResponse::SessionExpired { reason } => error(StatusCode::CONFLICT, &reason, None),
        ClientResponse::Overloaded { reason } => overloaded(&reason),
    }
}

async fn put(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    mut body: web::Payload,
) -> HttpResponse {
    let key = match key_of(&req) {
        Ok(k) => k,
        Err(r) => return r.response(),
    };
    let session = match session(&req) {
        Ok(s) => s,
        Err(r) => return r.response(),
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_VALUE_BYTES) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("value exceeds {} bytes", MAX_VALUE_BYTES),
            None,
        );
    }
    // Not worth reading the body of a write that will be refused.
    if let Some(refused) = shed(&state.node) {
        return respond(refused);
    }
    // Room for the body among the bodies in flight (a chunked body may be the largest),
    // now or never: an overloaded node answers at once, before it reads the body, instead
    // of keeping the client (and a task, and the connection's buffers) waiting.
    let kib = (declared.unwrap_or(MAX_VALUE_BYTES).div_ceil(1024)).max(1) as u32;
    let _room = match state.bodies.clone().try_acquire_many_owned(kib) {
        Ok(permit) => permit,
        Err(_) => {
            return overloaded(&format!(
                "overloaded: {} MiB of request bodies are in flight; not applied, retry later",
                MAX_BODY_BYTES_IN_FLIGHT >> 20
            ))
        }
    };
    let mut value = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad body: {}", e), None),
        };
        if value.len() + chunk.len() > MAX_VALUE_BYTES {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("value exceeds {} bytes", MAX_VALUE_BYTES),
                None,
            );
        }
        value.extend_from_slice(&chunk);
    }
    respond(
        call(
            &state,
            ClientRequest::Write {
                op: KvOp::Put { key, value },
                session,
            },
        )
        .await,
    )
}

async fn get(state: web::Data<GatewayState>, req: HttpRequest) -> HttpResponse {
    let key = match key_of(&req) {
        Ok(k) => k,
        Err(r) => return r.response(),
    };
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let consistency = match query.get("consistency").map(String::as_str) {
        None | Some("linearizable") => ReadConsistency::Linearizable,
        Some("stale") => ReadConsistency::Stale,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "consistency must be 'linearizable' or 'stale', not '{}'",
                    other
                ),
                None,
            )
        }
    };
    respond(call(&state, ClientRequest::Read { key, consistency }).await)
}

async fn delete(state: web::Data<GatewayState>, req: HttpRequest) -> HttpResponse {
    let key = match key_of(&req) {
        Ok(k) => k,
        Err(r) => return r.response(),
    };
    let session = match session(&req) {
        Ok(s) => s,
        Err(r) => return r.response(),
    };
    respond(
        call(
            &state,
            ClientRequest::Write {
                op: KvOp::Delete { key },
                session,
            },
        )
        .await,
    )
}

/// Every request under `/kv`: one prefix match, then the method. (Routes on
/// `/kv/{key:.*}` cost a regex match per route tried, up to four per request: 1.6 % of a
/// leader's CPU during a fill.) The key is read from the raw path by `key_of`.
async fn kv(state: web::Data<GatewayState>, req: HttpRequest, body: web::Payload) -> HttpResponse {
    if req.path() == "/kv" {
        return empty_key().await;
    }
    if !req.path().starts_with("/kv/") {
        return not_found().await;
    }
    match *req.method() {
        Method::PUT => put(state, req, body).await,
        Method::GET => get(state, req).await,
        Method::DELETE => delete(state, req).await,
        _ => method_not_allowed().await,
    }
}

async fn empty_key() -> HttpResponse {
    error(StatusCode::BAD_REQUEST, "empty key: use /kv/{key}", None)
}

async fn status(state: web::Data<GatewayState>) -> HttpResponse {
    match state.node.consensus.send(GetStatus).await {
        Ok(s) => {
            let mut v = serde_json::to_value(&s).unwrap_or_else(|_| json!({}));
            if let Some(obj) = v.as_object_mut() {
                obj.insert("pid".into(), json!(std::process::id()));
            }
            HttpResponse::Ok().json(v)
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is shutting down",
            None,
        ),
    }
}

async fn members(state: web::Data<GatewayState>) -> HttpResponse {
    respond(call(&state, ClientRequest::Members).await)
}

/// `POST /cluster/members` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    id: NodeId,
    raft_addr: String,
    http_addr: String,
}

/// A JSON body, or a 400 that says what is wrong with it.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, Rejected> {
    serde_json::from_slice(body).map_err(|e| {
        Rejected(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {}: {}", expected, e),
        )
    })
}

async fn add_member(state: web::Data<GatewayState>, body: web::Bytes) -> HttpResponse {
    const SHAPE: &str =
        r#"{"id": 4, "raft_addr": "127.0.0.1:9004", "http_addr": "127.0.0.1:8004"}"#;
    let m: NewMember = match json_body(&body, SHAPE) {
        Ok(m) => m,
        Err(r) => return r.response(),
    };
    if m.id == 0 || m.raft_addr.trim().is_empty() || m.http_addr.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "id must be at least 1 and both addresses given, as in {}",
                SHAPE
            ),
            None,
        );
    }
    let change = MembershipChange::AddLearner {
        id: m.id,
        addrs: MemberAddrs {
            raft_addr: m.raft_addr,
            http_addr: m.http_addr,
        },
    };
    match call(&state, ClientRequest::ChangeMembership(change)).await {
        ClientResponse::Written { index, .. } => HttpResponse::Ok().json(json!({
            "index": index,
            "id": m.id,
            "role": "learner",
            "note": "the leader promotes it to voter once it has caught up",
        })),
        other => respond(other),
    }
}

async fn remove_member(state: web::Data<GatewayState>, req: HttpRequest) -> HttpResponse {
    let id = match req
        .match_info()
        .get("id")
        .and_then(|s| s.parse::<NodeId>().ok())
    {
        Some(id) => id,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "the member id must be a number",
                None,
            )
        }
    };
    let change = MembershipChange::Remove { id };
    match call(&state, ClientRequest::ChangeMembership(change)).await {
        ClientResponse::Written { index, .. } => {
            HttpResponse::Ok().json(json!({ "index": index, "removed": id }))
        }
        other => respond(other),
    }
}

/// `POST /cluster/leader` body (optional).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TransferTo {
    target: Option<NodeId>,
}

async fn transfer_leader(state: web::Data<GatewayState>, body: web::Bytes) -> HttpResponse {
    let to: TransferTo = if body.iter().all(u8::is_ascii_whitespace) {
        TransferTo::default()
    } else {
        match json_body(&body, r#"{"target": 2} or an empty body"#) {
            Ok(t) => t,
            Err(r) => return r.response(),
        }
    };
    respond(call(&state, ClientRequest::TransferLeader(to.target)).await)
}

async fn metrics(state: web::Data<GatewayState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.node.metrics.render())
}

async fn events(state: web::Data<GatewayState>) -> HttpResponse {
    match state.node.consensus.send(GetEvents).await {
        Ok(events) => HttpResponse::Ok()
            .insert_header(("Access-Control-Allow-Origin", "*"))
            .json(json!({ "id": state.node.id, "now_ms": now_ms(), "events": events })),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is shutting down",
            None,
        ),
    }
}

/// One member as the cluster page sees it.
#[derive(serde::Serialize)]
struct NodeView {
    id: NodeId,
    http_addr: String,
    /// This node got an answer from it.
    reachable: bool,
    status: Option<serde_json::Value>,
    events: Vec<ClusterEvent>,
}

/// `GET /status` and `GET /cluster/events` of another member, over plain HTTP.
async fn peer_view(id: NodeId, addr: String) -> NodeView {
    let a = addr.clone();
    let fetched = tokio::task::spawn_blocking(move || {
        let get = |path: &str| -> Option<serde_json::Value> {
            let r =
                crate::client::http_request(&a, "GET", path, &[], b"", Duration::from_millis(800))
                    .ok()?;
            (r.status == 200)
                .then(|| serde_json::from_slice(&r.body).ok())
                .flatten()
        };
        (get("/status"), get("/cluster/events"))
    })
    .await
    .unwrap_or((None, None));
    let events = fetched
        .1
        .and_then(|v| serde_json::from_value::<Vec<ClusterEvent>>(v["events"].clone()).ok())
        .unwrap_or_default();
    NodeView {
        id,
        http_addr: addr,
        reachable: fetched.0.is_some(),
        status: fetched.0,
        events,
    }
}

/// Everything the cluster page shows, gathered by this node: every member's status and
/// events, and the leader's view of replication.
async fn overview(state: web::Data<GatewayState>) -> HttpResponse {
    let node = &state.node;
    let (Ok(members), Ok(status), Ok(events)) = (
        node.consensus.send(GetMemberAddrs).await,
        node.consensus.send(GetStatus).await,
        node.consensus.send(GetEvents).await,
    ) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is shutting down",
            None,
        );
    };
    let mut views = Vec::new();
    let mut pending = Vec::new();
    for (id, addr) in members.iter().cloned() {
        if id == node.id {
            continue;
        }
        pending.push(tokio::spawn(peer_view(id, addr)));
    }
    let own: NodeStatus = status;
    views.push(NodeView {
        id: node.id,
        http_addr: members
            .iter()
            .find(|(id, _)| *id == node.id)
            .map(|(_, a)| a.clone())
            .unwrap_or_default(),
        reachable: true,
        status: serde_json::to_value(&own).ok(),
        events,
    });
    for p in pending {
        if let Ok(v) = p.await {
            views.push(v);
        }
    }
    views.sort_by_key(|v| v.id);
    let replication = match dispatch(node, ClientRequest::Members, Duration::from_secs(1)).await {
        ClientResponse::Members(m) => serde_json::to_value(m).ok(),
        _ => None,
    };
    HttpResponse::Ok().json(json!({
        "self": node.id,
        "now_ms": now_ms(),
        "nodes": views,
        "replication": replication,
    }))
}

async fn ui() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("ui.html"))
}

/// The route label of a path, for the request metrics.
pub fn route_label(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/kv") => "/kv",
        "/status" => "/status",
        "/metrics" => "/metrics",
        "/ui" => "/ui",
        p if p.starts_with("/cluster/members") => "/cluster/members",
        "/cluster/leader" => "/cluster/leader",
        "/cluster/events" => "/cluster/events",
        "/cluster/overview" => "/cluster/overview",
        _ => "other",
    }
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", "GET, PUT, DELETE"))
        .json(json!({ "error": "use GET, PUT or DELETE on /kv/{key}", "leader": null }))
}

async fn not_found() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: use /kv/{key} (PUT, GET, DELETE), GET /status, GET /metrics, \
         GET /ui, /cluster/members (GET, POST, DELETE /cluster/members/{id}), \
         POST /cluster/leader or GET /cluster/events",
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%25ZZ").as_deref(), Some("%ZZ"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        for bad in ["%ZZ", "abc%", "a%2", "%C3%28", "%G1"] {
            assert_eq!(percent_decode(bad), None, "{}", bad);
        }
    }
}
