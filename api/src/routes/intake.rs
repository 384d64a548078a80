//! What the SDK intakes (`segment.rs`, `posthog.rs`) share once they have mapped a request's
//! messages onto events: the account's tracking plan, then the one enqueue.
use sluice_http::ApiError;
use sluice_shared::event::QueuedEvent;

use crate::ingest::{BatchReply, BatchStatus, JudgedBatch};
use crate::state::{AppState, WorkerEnqueuer};

/// Queues the valid ones of `items` (the rest are reported as rejected), all or nothing per
/// partition as Sluice's own batches are, after the account's tracking plan judged them; the
/// status follows the batch rule of the contract.
pub async fn queue(
    req: &actix_web::HttpRequest,
    state: &AppState,
    account: uuid::Uuid,
    items: Vec<Result<QueuedEvent, ApiError>>,
    request_id: &str,
) -> Result<(BatchStatus, BatchReply), ApiError> {
    let mut judged = JudgedBatch::from_items(items);
    let plan = state.plans.get(&state.pool, account).await;
    judged.apply_plan(&plan);
    judged.suppress(&*state.suppressed(account).await?);
    let outcomes = if judged.events.is_empty() {
        Vec::new()
    } else {
        WorkerEnqueuer::of(req, state)
            .enqueue(&judged.events, request_id)
            .await
            .map_err(ApiError::QueueUnavailable)?
    };
    Ok(judged.reply(outcomes))
}
