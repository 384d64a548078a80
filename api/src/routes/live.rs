//! `POST /api/v1/live/ticket` and `GET /api/v1/live` (a WebSocket): the account's anomalies as
//! they are raised and, on request, a sampled tail of its stored events. The token never travels
//! in the URL: it comes in `Sec-WebSocket-Protocol` (`sluice.live, bearer.<JWT>`; the server
//! answers `sluice.live`), or a single-use ticket good for 30 s stands in for it (`?ticket=`).
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use base64::Engine;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_http::{ApiError, AuthedAccount};
use sluice_rules::live::{LiveMessage, TailEvent};
use sluice_shared::error::ErrorBody;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::live_hub::Membership;
use crate::state::AppState;

/// The subprotocol a client offers (with `bearer.<JWT>` beside it) and the server answers.
pub const PROTOCOL: &str = "sluice.live";
const TICKET_TTL_SECS: u64 = 30;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    /// Good for one connection within `expiresInSeconds`: `GET /api/v1/live?ticket=…`.
    pub ticket: String,
    pub expires_in_seconds: u64,
}

fn ticket_key(prefix: &str, ticket: &str) -> String {
    let hash = hex::encode(Sha256::digest(ticket.as_bytes()));
    format!("{prefix}:live:ticket:{hash}")
}

#[utoipa::path(post, path = "/api/v1/live/ticket", tag = "rules", security(("jwt" = [])),
    responses(
        (status = 201, description = "A single-use ticket for `GET /api/v1/live?ticket=`, good for 30 s", body = Ticket),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn ticket(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw: [u8; 32] = rand::random();
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let key = ticket_key(&state.settings.redis.key_prefix, &ticket);
    state
        .redis
        .set::<(), _, _>(
            key,
            account.id.to_string(),
            Some(Expiration::EX(TICKET_TTL_SECS as i64)),
            None,
            false,
        )
        .await
        .map_err(|e| ApiError::QueueUnavailable(e.into()))?;
    Ok(HttpResponse::Created().json(Ticket {
        ticket,
        expires_in_seconds: TICKET_TTL_SECS,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// A ticket from `POST /api/v1/live/ticket` (else the JWT in `Sec-WebSocket-Protocol`).
    #[param(max_length = 100)]
    ticket: Option<String>,
}

/// The account a connection is for: its ticket (used up), or the JWT among its subprotocols.
async fn account_of(
    req: &HttpRequest,
    q: &LiveQuery,
    state: &AppState,
) -> Result<(Uuid, bool), ApiError> {
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let speaks = offered.iter().any(|p| p == PROTOCOL);
    if let Some(ticket) = q.ticket.as_deref() {
        if ticket.len() > 100 {
            return Err(ApiError::Unauthorized);
        }
        let key = ticket_key(&state.settings.redis.key_prefix, ticket);
        let owner: Option<String> = state
            .redis
            .getdel(key)
            .await
            .map_err(|e| ApiError::QueueUnavailable(e.into()))?;
        let id = owner
            .and_then(|o| o.parse().ok())
            .ok_or(ApiError::Unauthorized)?;
        return Ok((id, speaks));
    }
    let id = offered
        .iter()
        .find_map(|p| p.strip_prefix("bearer."))
        .and_then(|token| state.jwt.verify(token))
        .and_then(|claims| claims.sub.parse().ok())
        .ok_or(ApiError::Unauthorized)?;
    Ok((id, speaks))
}

#[utoipa::path(get, path = "/api/v1/live", tag = "rules",
    params(LiveQuery),
    responses(
        (status = 101, description = "A WebSocket: `{\"type\": \"hello\"}`, then `{\"type\": \"anomaly\", \"anomaly\"}` as they are raised; send `{\"subscribe\": \"events\", \"eventType\"?}` for `{\"type\": \"event\", \"event\"}` (at most `rules.live_events_per_sec` a second, `{\"type\": \"skipped\", \"count\"}` for the rest)"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "No valid ticket, and no valid JWT in `Sec-WebSocket-Protocol` (`bearer.<JWT>`)", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    q: web::Query<LiveQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (account, speaks) = account_of(&req, &q, &state).await?;
    let (mut response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::invalid_request("", format!("not a WebSocket upgrade: {e}")))?;
    if speaks {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(PROTOCOL),
        );
    }
    let membership = state.live.join(&account.to_string());
    let rules = &state.settings.rules;
    let limits = Limits {
        events_per_sec: rules.live_events_per_sec,
        ping_every: Duration::from_secs(rules.live_ping_secs.max(1)),
    };
    let stream = stream
        .max_frame_size(16 * 1024)
        .aggregate_continuations()
        .max_continuation_size(16 * 1024);
    let tail_mark = TailMark {
        redis: state.redis.clone(),
        prefix: state.settings.redis.key_prefix.clone(),
    };
    actix_web::rt::spawn(serve(
        session, stream, membership, account, limits, tail_mark,
    ));
    Ok(response)
}

/// Marks the account as tailed at once when a client subscribes (the hub renews it), so the
/// workers publish its events within their next tick rather than the hub's.
struct TailMark {
    redis: Client,
    prefix: String,
}

impl TailMark {
    fn now(&self, account: Uuid) {
        let (redis, prefix) = (self.redis.clone(), self.prefix.clone());
        tokio::spawn(async move {
            let until = chrono::Utc::now() + chrono::Duration::seconds(30);
            if let Err(e) =
                sluice_rules::live::mark_tailed(&redis, &prefix, &[account.to_string()], until)
                    .await
            {
                tracing::debug!(error = %e, "cannot mark the account as tailed");
            }
        });
    }
}

#[derive(Clone, Copy)]
struct Limits {
    events_per_sec: u32,
    ping_every: Duration,
}

/// What a client may send.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Command {
    subscribe: Option<String>,
    unsubscribe: Option<String>,
    event_type: Option<String>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    Hello {
        #[serde(rename = "accountId")]
        account_id: String,
    },
    Anomaly {
        anomaly: &'a sluice_rules::live::AnomalyView,
    },
    Event {
        event: &'a TailEvent,
    },
    Skipped {
        count: u64,
    },
    Subscribed {
        stream: &'static str,
        #[serde(rename = "eventType", skip_serializing_if = "Option::is_none")]
        event_type: Option<&'a str>,
    },
    Unsubscribed {
        stream: &'static str,
    },
    Error {
        message: String,
    },
}

async fn send(session: &mut Session, out: &Outgoing<'_>) -> bool {
    match serde_json::to_string(out) {
        Ok(text) => session.text(text).await.is_ok(),
        Err(_) => true,
    }
}

/// The tail's sampling: at most `per_sec` events a second; the rest counted and reported.
struct Sampler {
    per_sec: u32,
    second: Instant,
    sent: u32,
    skipped: u64,
}

impl Sampler {
    fn admit(&mut self) -> bool {
        if self.second.elapsed() >= Duration::from_secs(1) {
            self.second = Instant::now();
            self.sent = 0;
        }
        if self.sent < self.per_sec {
            self.sent += 1;
            true
        } else {
            self.skipped += 1;
            false
        }
    }
}

/// What the loop does after one event: go on, or close (with a reason, or without when the
/// client is gone).
enum Flow {
    Go,
    Close(Option<CloseReason>),
}

impl Flow {
    fn sent(ok: bool) -> Self {
        if ok {
            Flow::Go
        } else {
            Flow::Close(None)
        }
    }
}

fn close(code: CloseCode, why: &str) -> Flow {
    Flow::Close(Some(CloseReason {
        code,
        description: Some(why.into()),
    }))
}

/// One connected client: its session, its place in the hub, and what it asked for.
struct LiveClient {
    session: Session,
    membership: Membership,
    account: Uuid,
    tail_mark: TailMark,
    /// `Some(type filter)` while it tails the account's events.
    tail: Option<Option<String>>,
    sampler: Sampler,
}

impl LiveClient {
    /// A message from the hub: an anomaly, or stored events (sampled, for a tailing client).
    async fn deliver(&mut self, message: &LiveMessage) -> Flow {
        match message {
            LiveMessage::Anomaly { anomaly, .. } => {
                Flow::sent(send(&mut self.session, &Outgoing::Anomaly { anomaly }).await)
            }
            LiveMessage::Events {
                events, skipped, ..
            } => {
                let Some(wanted) = &self.tail else {
                    return Flow::Go;
                };
                self.sampler.skipped += skipped;
                let of_type = |e: &&TailEvent| wanted.as_ref().is_none_or(|t| *t == e.event_type);
                for event in events.iter().filter(of_type) {
                    if self.sampler.admit()
                        && !send(&mut self.session, &Outgoing::Event { event }).await
                    {
                        return Flow::Close(None);
                    }
                }
                Flow::Go
            }
        }
    }

    /// A frame from the client.
    async fn heard(&mut self, msg: Option<Result<AggregatedMessage, ProtocolError>>) -> Flow {
        match msg {
            Some(Ok(AggregatedMessage::Text(text))) => self.command(&text).await,
            Some(Ok(AggregatedMessage::Ping(bytes))) => {
                Flow::sent(self.session.pong(&bytes).await.is_ok())
            }
            Some(Ok(AggregatedMessage::Pong(_))) => Flow::Go,
            Some(Ok(AggregatedMessage::Binary(_))) => {
                let message = "binary frames are not read here".to_owned();
                Flow::sent(send(&mut self.session, &Outgoing::Error { message }).await)
            }
            Some(Ok(AggregatedMessage::Close(_))) | None => Flow::Close(None),
            Some(Err(_)) => Flow::Close(Some(CloseReason {
                code: CloseCode::Protocol,
                description: None,
            })),
        }
    }

    /// `{"subscribe": "events", "eventType"?}` or `{"unsubscribe": "events"}`.
    async fn command(&mut self, text: &str) -> Flow {
        let reply = match serde_json::from_str::<Command>(text) {
            Ok(Command {
                subscribe: Some(s),
                event_type,
                ..
            }) if s == "events" => {
                self.membership.set_tailing(true);
                self.tail_mark.now(self.account);
                self.tail = Some(event_type.clone());
                let reply = Outgoing::Subscribed {
                    stream: "events",
                    event_type: event_type.as_deref(),
                };
                return Flow::sent(send(&mut self.session, &reply).await);
            }
            Ok(Command {
                unsubscribe: Some(s),
                ..
            }) if s == "events" => {
                self.membership.set_tailing(false);
                self.tail = None;
                Outgoing::Unsubscribed { stream: "events" }
            }
            _ => Outgoing::Error {
                message: "expected {\"subscribe\": \"events\", \"eventType\"?} or {\"unsubscribe\": \"events\"}".to_owned(),
            },
        };
        Flow::sent(send(&mut self.session, &reply).await)
    }

    /// Once a second: how many tail events were skipped, if any.
    async fn report(&mut self) -> Flow {
        if self.sampler.skipped == 0 {
            return Flow::Go;
        }
        let count = std::mem::take(&mut self.sampler.skipped);
        Flow::sent(send(&mut self.session, &Outgoing::Skipped { count }).await)
    }
}

async fn serve(
    session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
    membership: Membership,
    account: Uuid,
    limits: Limits,
    tail_mark: TailMark,
) {
    let mut client = LiveClient {
        session,
        membership,
        account,
        tail_mark,
        tail: None,
        sampler: Sampler {
            per_sec: limits.events_per_sec,
            second: Instant::now(),
            sent: 0,
            skipped: 0,
        },
    };
    let hello = Outgoing::Hello {
        account_id: account.to_string(),
    };
    if !send(&mut client.session, &hello).await {
        return;
    }
    let mut ping = tokio::time::interval(limits.ping_every);
    let mut report = tokio::time::interval(Duration::from_secs(1));
    let mut last_heard = Instant::now();
    loop {
        let flow = tokio::select! {
            delivery = client.membership.rx.recv() => match delivery {
                Some(message) => client.deliver(&message).await,
                None => close(CloseCode::Policy, "too slow: messages were piling up"),
            },
            msg = stream.recv() => {
                last_heard = Instant::now();
                client.heard(msg).await
            }
            _ = report.tick() => client.report().await,
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.ping_every * 3 {
                    close(CloseCode::Away, "no answer to pings")
                } else {
                    Flow::sent(client.session.ping(b"").await.is_ok())
                }
            }
        };
        if let Flow::Close(reason) = flow {
            let _ = client.session.close(reason).await;
            return;
        }
    }
}
