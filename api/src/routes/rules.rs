//! `POST/GET /api/v1/rules`, `GET/PUT/PATCH/DELETE /api/v1/rules/{id}`: an account's rules
//! (docs/RULES.md). Every change raises the rules version and announces it, so every worker
//! evaluates the new rule set within a second. Another account's rule is 404, never 403.
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use fred::prelude::*;
use mongodb::bson;
use serde::Serialize;
use sluice_http::{ApiError, AuthedAccount};
use sluice_rules::live::{rules_channel, rules_version_key};
use sluice_rules::store::{self, RuleDoc};
use sluice_rules::{RulePatch, RuleSpec};
use sluice_shared::error::ErrorBody;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::state::AppState;

/// A rule as stored: its spec, with its id, version and times.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub severity: sluice_rules::Severity,
    pub condition: sluice_rules::Condition,
    pub cooldown_seconds: u32,
    pub channels: Vec<Uuid>,
    /// Raised by every change (the window counts start afresh with each version).
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct RuleList {
    pub rules: Vec<RuleView>,
}

fn view(doc: &RuleDoc) -> Result<RuleView, ApiError> {
    let spec = doc.spec()?;
    Ok(RuleView {
        id: doc.id.parse().map_err(anyhow::Error::from)?,
        name: spec.name,
        enabled: spec.enabled,
        severity: spec.severity,
        condition: spec.condition,
        cooldown_seconds: spec.cooldown_seconds,
        channels: spec.channels,
        version: doc.version,
        created_at: sluice_rules::store::utc(doc.created_at),
        updated_at: sluice_rules::store::utc(doc.updated_at),
    })
}

fn rule_id(path: &str) -> Result<Uuid, ApiError> {
    path.parse()
        .map_err(|_| ApiError::not_found("no such rule"))
}

/// The spec's own rules, then that every channel it names is the account's.
async fn check(spec: &RuleSpec, account: &str, state: &AppState) -> Result<(), ApiError> {
    if let Some((at, message)) = spec.problem() {
        return Err(ApiError::invalid_request(&at, message));
    }
    let owned = sluice_rules::channels::channel_ids(&state.mongo, account)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if let Some(i) = spec.channels.iter().position(|c| !owned.contains(c)) {
        return Err(ApiError::invalid_request(
            &format!("/channels/{i}"),
            "no such channel in this account",
        ));
    }
    Ok(())
}

/// Raises the rules version and announces it to every worker. A failed announcement is logged:
/// the workers' periodic reload (`rules.reload_secs`) heals it.
async fn announce(state: &AppState) {
    let prefix = &state.settings.redis.key_prefix;
    let result: Result<(), fred::error::Error> = async {
        let version: i64 = state.redis.incr(rules_version_key(prefix)).await?;
        state
            .redis
            .publish::<i64, _, _>(rules_channel(prefix), version)
            .await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot announce a rule change; workers pick it up at their next reload");
    }
}

fn stored(spec: &RuleSpec) -> Result<String, ApiError> {
    Ok(serde_json::to_string(spec).map_err(anyhow::Error::from)?)
}

#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", security(("jwt" = [])),
    request_body(content = RuleSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "The new rule", body = RuleView),
        (status = 400, description = "Malformed JSON, or a field that breaks its rule (with its pointer)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 409, description = "The account holds as many rules as it may (`rules.max_per_account`)", body = ErrorBody),
        (status = 413, description = "A body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn create(
    account: AuthedAccount,
    body: web::Json<RuleSpec>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner();
    let acct = account.id.to_string();
    check(&spec, &acct, &state).await?;
    let max = state.settings.rules.max_per_account;
    let held = store::count_rules(&state.mongo, &acct)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if held >= max {
        return Err(ApiError::TooManyRules(max as i64));
    }
    let now = bson::DateTime::now();
    let doc = RuleDoc {
        id: Uuid::now_v7().to_string(),
        account_id: acct,
        version: 1,
        enabled: spec.enabled,
        spec: stored(&spec)?,
        created_at: now,
        updated_at: now,
    };
    store::insert_rule(&state.mongo, &doc)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    announce(&state).await;
    Ok(HttpResponse::Created().json(view(&doc)?))
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's rules, oldest first", body = RuleList),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let docs = store::account_rules(&state.mongo, &account.id.to_string())
        .await
        .map_err(ApiError::StoreUnavailable)?;
    let rules = docs.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(RuleList { rules }))
}

async fn find(account: &AuthedAccount, id: Uuid, state: &AppState) -> Result<RuleDoc, ApiError> {
    store::rule_of_account(&state.mongo, &account.id.to_string(), &id.to_string())
        .await
        .map_err(ApiError::StoreUnavailable)?
        .ok_or_else(|| ApiError::not_found("no such rule"))
}

#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "The rule", body = RuleView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such rule in this account", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get_one(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = find(&account, rule_id(&path)?, &state).await?;
    Ok(HttpResponse::Ok().json(view(&doc)?))
}

/// Stores `spec` as the rule's next version, unless another change got there first (409).
async fn save(
    mut doc: RuleDoc,
    spec: RuleSpec,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    check(&spec, &doc.account_id, state).await?;
    let expected = doc.version;
    doc.version += 1;
    doc.enabled = spec.enabled;
    doc.spec = stored(&spec)?;
    doc.updated_at = bson::DateTime::now();
    let saved = store::replace_rule(&state.mongo, &doc, expected)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if !saved {
        return Err(ApiError::EditConflict(
            "the rule changed (or was deleted) meanwhile; read it again".into(),
        ));
    }
    announce(state).await;
    Ok(HttpResponse::Ok().json(view(&doc)?))
}

#[utoipa::path(put, path = "/api/v1/rules/{id}", tag = "rules", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The rule's id")),
    request_body(content = RuleSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "The rule, replaced (its version raised)", body = RuleView),
        (status = 400, description = "Malformed JSON, or a field that breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such rule in this account", body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile", body = ErrorBody),
        (status = 413, description = "A body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn replace(
    account: AuthedAccount,
    path: web::Path<String>,
    body: web::Json<RuleSpec>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = find(&account, rule_id(&path)?, &state).await?;
    save(doc, body.into_inner(), &state).await
}

#[utoipa::path(patch, path = "/api/v1/rules/{id}", tag = "rules", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The rule's id")),
    request_body(content = RulePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The rule, with the fields given changed (its version raised)", body = RuleView),
        (status = 400, description = "Malformed JSON, or a field that breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such rule in this account", body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile", body = ErrorBody),
        (status = 413, description = "A body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn patch(
    account: AuthedAccount,
    path: web::Path<String>,
    body: web::Json<RulePatch>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = find(&account, rule_id(&path)?, &state).await?;
    let mut spec = doc.spec()?;
    body.into_inner().apply(&mut spec);
    save(doc, spec, &state).await
}

#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The rule's id")),
    responses(
        (status = 204, description = "Deleted: no worker evaluates it after the announcement (within a second)"),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such rule in this account", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn delete(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = rule_id(&path)?;
    let deleted = store::delete_rule(&state.mongo, &account.id.to_string(), &id.to_string())
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if !deleted {
        return Err(ApiError::not_found("no such rule"));
    }
    announce(&state).await;
    Ok(HttpResponse::NoContent().finish())
}
