//! Privacy (docs/PRIVACY.md): `GET/PUT /api/v1/account/retention`, `POST/GET
//! /api/v1/regulations`, `GET /api/v1/regulations/{id}` and `GET /api/v1/suppressions`. A
//! regulation is recorded and answered 202 `pending`; a suppression (or its lifting) applies at
//! once on every api instance, the rest (linked identities, deletion) is carried out by a worker.
use std::collections::{BTreeMap, HashSet};

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use mongodb::bson;
use serde::{Deserialize, Serialize};
use sluice_http::cursor::Cursor;
use sluice_http::{ApiError, AuthedAccount};
use sluice_rules::store::utc;
use sluice_shared::error::ErrorBody;
use sluice_store::privacy::{
    self as store, Regulation, RegulationStatus, RegulationType, Retention, Suppression,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::state::AppState;
use crate::suppression;

/// The most userIds one regulation may name (Segment's limit).
pub const MAX_USER_IDS: usize = 5_000;
/// A regulation's body may be this large (5,000 userIds of 128 characters).
pub const REGULATION_BODY_LIMIT: usize = 1 << 20;

/// An account's retention, in days: what is older (events and quarantined events by their
/// `timestamp`, dead letters by `failedAt`, anomalies by `detectedAt`) is deleted within
/// `privacy.retention_interval_secs` plus one pass.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionView {
    pub events_days: u32,
    pub dead_letters_days: u32,
    pub quarantine_days: u32,
    pub anomalies_days: u32,
}

/// New retention settings; a field left out takes the default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionBody {
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3650)]
    pub events_days: Option<f64>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3650)]
    pub dead_letters_days: Option<f64>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3650)]
    pub quarantine_days: Option<f64>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3650)]
    pub anomalies_days: Option<f64>,
}

fn effective(state: &AppState, r: Option<&Retention>) -> RetentionView {
    let d = &state.settings.privacy;
    RetentionView {
        events_days: r.and_then(|r| r.events_days).unwrap_or(d.events_days),
        dead_letters_days: r
            .and_then(|r| r.dead_letters_days)
            .unwrap_or(d.dead_letters_days),
        quarantine_days: r
            .and_then(|r| r.quarantine_days)
            .unwrap_or(d.quarantine_days),
        anomalies_days: r.and_then(|r| r.anomalies_days).unwrap_or(d.anomalies_days),
    }
}

#[utoipa::path(get, path = "/api/v1/account/retention", tag = "privacy", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's retention in effect (defaults filled in)", body = RetentionView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get_retention(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let r = store::retention_of(&state.mongo, &account.id.to_string())
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok().json(effective(&state, r.as_ref())))
}

#[utoipa::path(put, path = "/api/v1/account/retention", tag = "privacy", security(("jwt" = [])),
    request_body(content = RetentionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The retention now in effect; it applies to data already stored", body = RetentionView),
        (status = 400, description = "Malformed JSON, or a value out of range (with its pointer)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 413, description = "A body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn put_retention(
    account: AuthedAccount,
    body: web::Json<RetentionBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let max = state.settings.privacy.max_days;
    // A JSON number with no fraction (`30`, `30.0`) is a whole number of days.
    let days = |path: &str, v: Option<f64>| -> Result<Option<u32>, ApiError> {
        v.map(|n| {
            Some(n)
                .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= f64::from(max))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    ApiError::invalid_request(
                        path,
                        format!("a whole number of days from 1 to {max}"),
                    )
                })
        })
        .transpose()
    };
    let r = Retention {
        account_id: account.id.to_string(),
        events_days: days("/eventsDays", body.events_days)?,
        dead_letters_days: days("/deadLettersDays", body.dead_letters_days)?,
        quarantine_days: days("/quarantineDays", body.quarantine_days)?,
        anomalies_days: days("/anomaliesDays", body.anomalies_days)?,
        updated_at: Some(bson::DateTime::now()),
    };
    store::set_retention(&state.mongo, &r)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok().json(effective(&state, Some(&r))))
}

/// A request to suppress or delete users.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegulationBody {
    /// `suppress`, `suppress_with_delete`, `delete_only` or `unsuppress`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(suppress|suppress_with_delete|delete_only|unsuppress)$")]
    pub kind: String,
    /// 1 to 5,000 userIds, each 1 to 128 characters (else 400 with the pointer `/userIds/<i>`);
    /// repeats count once.
    #[schema(min_items = 1, max_items = 5000)]
    pub user_ids: Vec<String>,
}

/// A regulation and what became of it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegulationView {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^(suppress|suppress_with_delete|delete_only|unsuppress)$")]
    pub kind: String,
    pub user_ids: Vec<String>,
    /// `pending` → `running` → `finished` | `failed`.
    #[schema(pattern = "^(pending|running|finished|failed)$")]
    pub status: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    /// What was done, per store: `events`, `quarantine`, `deadLetters`, `anomalySamples`,
    /// `topUsers` (documents or members deleted), `identities` (userIds and linked
    /// anonymousIds), `suppressed` / `unsuppressed`.
    pub counts: BTreeMap<String, i64>,
}

fn kind_name(k: RegulationType) -> &'static str {
    match k {
        RegulationType::Suppress => "suppress",
        RegulationType::SuppressWithDelete => "suppress_with_delete",
        RegulationType::DeleteOnly => "delete_only",
        RegulationType::Unsuppress => "unsuppress",
    }
}

impl From<&Regulation> for RegulationView {
    fn from(r: &Regulation) -> Self {
        Self {
            id: r.id.clone(),
            kind: kind_name(r.kind).into(),
            user_ids: r.user_ids.clone(),
            status: r.status.as_str().into(),
            created_at: utc(r.created_at),
            started_at: r.started_at.map(utc),
            finished_at: r.finished_at.map(utc),
            error: r.error.clone(),
            counts: r.counts.clone(),
        }
    }
}

fn parse_kind(s: &str) -> Option<RegulationType> {
    Some(match s {
        "suppress" => RegulationType::Suppress,
        "suppress_with_delete" => RegulationType::SuppressWithDelete,
        "delete_only" => RegulationType::DeleteOnly,
        "unsuppress" => RegulationType::Unsuppress,
        _ => return None,
    })
}

fn check_user_ids(ids: Vec<String>) -> Result<Vec<String>, ApiError> {
    if ids.is_empty() || ids.len() > MAX_USER_IDS {
        return Err(ApiError::invalid_request(
            "/userIds",
            format!("1 to {MAX_USER_IDS} userIds"),
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        if !(1..=128).contains(&id.chars().count()) {
            return Err(ApiError::invalid_request(
                &format!("/userIds/{i}"),
                "a userId of 1 to 128 characters",
            ));
        }
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

#[utoipa::path(post, path = "/api/v1/regulations", tag = "privacy", security(("jwt" = [])),
    request_body(content = RegulationBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded; a suppression (or its lifting) already applies on every api instance, the rest is carried out by a worker", body = RegulationView),
        (status = 400, description = "Malformed JSON, an unknown type, or userIds that break their rule (with the pointer)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 413, description = "A body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn create_regulation(
    account: AuthedAccount,
    body: web::Json<RegulationBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let RegulationBody { kind, user_ids } = body.into_inner();
    let kind = parse_kind(&kind).ok_or_else(|| {
        ApiError::invalid_request(
            "/type",
            "one of suppress, suppress_with_delete, delete_only, unsuppress",
        )
    })?;
    let user_ids = check_user_ids(user_ids)?;
    let acct = account.id.to_string();
    let regulation = Regulation {
        id: Uuid::now_v7().to_string(),
        account_id: acct.clone(),
        kind,
        user_ids,
        status: RegulationStatus::Pending,
        created_at: bson::DateTime::now(),
        started_at: None,
        finished_at: None,
        error: None,
        counts: BTreeMap::new(),
        worker: None,
        lease_until: None,
    };
    store::regulations(&state.mongo)
        .insert_one(&regulation)
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.into()))?;
    let ids = &regulation.user_ids;
    // The Redis set is what ingest reads: changed here, so it applies now. The worker records
    // the change in MongoDB (with the identities linked to these users) and counts it.
    if kind.suppresses() {
        suppression::add(&state.redis, &state.suppressions, account.id, ids)
            .await
            .map_err(ApiError::QueueUnavailable)?;
    } else if kind == RegulationType::Unsuppress {
        let linked = store::suppressed_via(&state.mongo, &acct, ids)
            .await
            .map_err(ApiError::StoreUnavailable)?;
        let all: Vec<String> = ids.iter().cloned().chain(linked).collect();
        suppression::remove(&state.redis, &state.suppressions, account.id, &all)
            .await
            .map_err(ApiError::QueueUnavailable)?;
    }
    tracing::info!(regulation = %regulation.id, kind = kind_name(kind), users = ids.len(), "regulation recorded");
    Ok(HttpResponse::Accepted().json(RegulationView::from(&regulation)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct RegulationsQuery {
    /// Only regulations in this status.
    #[param(pattern = "^(pending|running|finished|failed)$")]
    status: Option<String>,
    /// Only regulations naming this userId.
    #[param(min_length = 1, max_length = 128)]
    user_id: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `nextBefore` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$", max_length = 320)]
    before: Option<String>,
}

/// A page of regulations, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegulationPage {
    pub regulations: Vec<RegulationView>,
    /// The cursor of the next (older) page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$")]
    pub next_before: Option<String>,
}

fn before_of(raw: Option<&str>) -> Result<Option<(i64, String)>, ApiError> {
    // Any instant the pattern allows names a page; regulations and suppressions are dated by
    // this service (after 1970, before 10000), so the instant is brought into that span, which
    // every store's date type holds.
    const LAST_OF_9999: i64 = 253_402_300_799_999;
    raw.map(Cursor::parse)
        .transpose()
        .map(|c| c.map(|c| (c.millis.clamp(0, LAST_OF_9999), c.id)))
}

#[utoipa::path(get, path = "/api/v1/regulations", tag = "privacy", security(("jwt" = [])),
    params(RegulationsQuery),
    responses(
        (status = 200, description = "The account's regulations, newest first", body = RegulationPage),
        (status = 400, description = "A query parameter breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list_regulations(
    account: AuthedAccount,
    q: web::Query<RegulationsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| match s {
            "pending" => Ok(RegulationStatus::Pending),
            "running" => Ok(RegulationStatus::Running),
            "finished" => Ok(RegulationStatus::Finished),
            "failed" => Ok(RegulationStatus::Failed),
            _ => Err(ApiError::invalid_request(
                "/status",
                "one of pending, running, finished, failed",
            )),
        })
        .transpose()?;
    if q.user_id
        .as_deref()
        .is_some_and(|u| !(1..=128).contains(&u.chars().count()))
    {
        return Err(ApiError::invalid_request(
            "/userId",
            "a userId of 1 to 128 characters",
        ));
    }
    let limit = Cursor::page_limit(q.limit.as_deref())?;
    let before = before_of(q.before.as_deref())?;
    let docs = store::list_regulations(
        &state.mongo,
        &account.id.to_string(),
        status,
        q.user_id.as_deref(),
        before,
        limit,
    )
    .await
    .map_err(ApiError::StoreUnavailable)?;
    let next_before =
        Cursor::after_full_page(&docs, limit, |d| (d.created_at.timestamp_millis(), &d.id));
    Ok(HttpResponse::Ok().json(RegulationPage {
        regulations: docs.iter().map(RegulationView::from).collect(),
        next_before,
    }))
}

#[utoipa::path(get, path = "/api/v1/regulations/{id}", tag = "privacy", security(("jwt" = [])),
    params(("id" = String, Path, description = "The regulation's id")),
    responses(
        (status = 200, description = "The regulation, with its counts", body = RegulationView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such regulation in this account", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get_regulation(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let found = store::regulations(&state.mongo)
        .find_one(bson::doc! {"_id": path.as_str(), "accountId": account.id.to_string()})
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.into()))?
        .ok_or_else(|| ApiError::not_found("no such regulation"))?;
    Ok(HttpResponse::Ok().json(RegulationView::from(&found)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionsQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `nextBefore` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$", max_length = 320)]
    before: Option<String>,
}

/// A suppressed identity.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionView {
    pub user_id: String,
    /// The userId a regulation named: this one, or the user an anonymousId is linked to.
    pub via: String,
    pub regulation_id: String,
    pub since: DateTime<Utc>,
}

impl From<&Suppression> for SuppressionView {
    fn from(s: &Suppression) -> Self {
        Self {
            user_id: s.user_id.clone(),
            via: s.via.clone(),
            regulation_id: s.regulation_id.clone(),
            since: utc(s.since),
        }
    }
}

/// A page of suppressed identities, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionPage {
    pub suppressions: Vec<SuppressionView>,
    /// The cursor of the next (older) page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$")]
    pub next_before: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/suppressions", tag = "privacy", security(("jwt" = [])),
    params(SuppressionsQuery),
    responses(
        (status = 200, description = "The account's suppressed identities, newest first", body = SuppressionPage),
        (status = 400, description = "A query parameter breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list_suppressions(
    account: AuthedAccount,
    q: web::Query<SuppressionsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = Cursor::page_limit(q.limit.as_deref())?;
    let before = before_of(q.before.as_deref())?;
    let docs = store::list_suppressions(&state.mongo, &account.id.to_string(), before, limit)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    let next_before =
        Cursor::after_full_page(&docs, limit, |d| (d.since.timestamp_millis(), &d.id));
    Ok(HttpResponse::Ok().json(SuppressionPage {
        suppressions: docs.iter().map(SuppressionView::from).collect(),
        next_before,
    }))
}
