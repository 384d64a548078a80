//! How the worker writes to MongoDB: a batch as unordered inserts, and how a refusal is
//! classified (a document refused for what it is, or for where the server stands). The documents,
//! collections and indexes are `sluice_store`'s.
use mongodb::error::ErrorKind;
use mongodb::Collection;
use sluice_store::DUPLICATE_KEY;
/// What became of each document of a batch.
#[derive(Debug, Default, PartialEq)]
pub struct WriteReport {
    pub inserted: usize,
    pub duplicates: usize,
    /// Indexes (in the batch) of the documents that were already stored.
    pub duplicate_at: Vec<usize>,
    /// Documents the server refused for what they are (index in the batch, error): permanent.
    pub rejected: Vec<(usize, String)>,
    /// Documents the server refused for where it stands (a shard unavailable, not primary, stale
    /// config): neither stored nor refused; write them again.
    pub retry_at: Vec<usize>,
}

impl WriteReport {
    /// Adds the report of a write of `part` (indexes into the whole batch) to this one.
    pub fn absorb(&mut self, other: WriteReport, part: &[usize]) {
        let at = |i: usize| part.get(i).copied().unwrap_or(i);
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.duplicate_at
            .extend(other.duplicate_at.into_iter().map(at));
        self.rejected
            .extend(other.rejected.into_iter().map(|(i, m)| (at(i), m)));
        self.retry_at = other.retry_at.into_iter().map(at).collect();
    }
}

/// A write that did not happen for reasons outside the documents: retry the whole batch.
#[derive(Debug, thiserror::Error)]
#[error("MongoDB did not take the write: {0}")]
pub struct TransientWriteError(#[source] pub mongodb::error::Error);

/// Per-document error codes that mean "not now" (where the server stands) rather than "not this
/// document": the document is written again, never dead-lettered.
const RETRYABLE_DOCUMENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    63,    // StaleShardVersion
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    150,   // StaleEpoch
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13388, // StaleConfig
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    // Errors of a shard that cannot be reached through mongos.
    202, // NetworkInterfaceExceededTimeLimit
    279, // ClientDisconnect
];

pub fn is_retryable_document_code(code: i32) -> bool {
    RETRYABLE_DOCUMENT_CODES.contains(&code)
}

enum Failure {
    /// Nothing in the error names a document: the write is retried as a whole.
    Retry(mongodb::error::Error),
    /// The driver refused the documents before sending them (serialization, size): something in
    /// them, without saying which.
    Rejected(mongodb::error::Error),
}

/// Only a refusal the driver makes before sending is about the documents. Every server answer
/// that names no document (a command error of any code — unauthorized, a write block, a quota, a
/// shard down —, a write-concern failure, a network error) is about the server and is retried:
/// taking it as a refusal of every document would dead-letter good events, or, when the
/// dead-letter insert is refused the same way, lose them.
fn is_about_the_documents(e: &mongodb::error::Error) -> bool {
    matches!(
        &*e.kind,
        ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_)
    )
}

/// One unordered insert. Re-running it is safe: stored documents come back as duplicate-key
/// errors.
async fn insert<T: serde::Serialize + Send + Sync>(
    events: &Collection<T>,
    docs: &[&T],
) -> Result<WriteReport, Failure> {
    let total = docs.len();
    match events
        .insert_many(docs.iter().copied())
        .ordered(false)
        .await
    {
        Ok(r) => Ok(WriteReport {
            inserted: r.inserted_ids.len(),
            ..Default::default()
        }),
        Err(e) => match &*e.kind {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                let mut report = WriteReport::default();
                for we in failure.write_errors.iter().flatten() {
                    if we.code == DUPLICATE_KEY {
                        report.duplicates += 1;
                        report.duplicate_at.push(we.index);
                    } else if is_retryable_document_code(we.code) {
                        report.retry_at.push(we.index);
                    } else {
                        report
                            .rejected
                            .push((we.index, format!("code {}: {}", we.code, we.message)));
                    }
                }
                report.inserted =
                    total - report.duplicates - report.rejected.len() - report.retry_at.len();
                Ok(report)
            }
            _ if is_about_the_documents(&e) => Err(Failure::Rejected(e)),
            _ => Err(Failure::Retry(e)),
        },
    }
}

/// Writes a batch as one unordered insert; documents the server refuses are reported by index
/// (split in halves until each refusal is pinned to one document when the driver does not say
/// which), documents to write again in `retry_at`. A failure that names no document returns at
/// once, for the caller to retry the whole batch.
pub async fn write_batch<T: serde::Serialize + Send + Sync>(
    events: &Collection<T>,
    docs: &[&T],
) -> Result<WriteReport, TransientWriteError> {
    let mut report = WriteReport::default();
    let mut retry_at = Vec::new();
    let mut parts = vec![(0usize, docs)];
    while let Some((offset, part)) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let whole = part.len() == docs.len();
        match insert(events, part).await {
            Ok(r) => {
                report.inserted += r.inserted;
                report.duplicates += r.duplicates;
                report
                    .duplicate_at
                    .extend(r.duplicate_at.into_iter().map(|i| offset + i));
                report
                    .rejected
                    .extend(r.rejected.into_iter().map(|(i, m)| (offset + i, m)));
                retry_at.extend(r.retry_at.into_iter().map(|i| offset + i));
            }
            Err(Failure::Retry(e)) if whole => return Err(TransientWriteError(e)),
            Err(Failure::Retry(e)) => {
                // Halfway through a split: keep what the other parts did, write the rest again.
                tracing::warn!(error = %e, "MongoDB did not take part of a split batch; writing it again");
                retry_at.extend(offset..offset + part.len());
                for (o, p) in parts.drain(..) {
                    retry_at.extend(o..o + p.len());
                }
            }
            Err(Failure::Rejected(e)) if part.len() == 1 => {
                report.rejected.push((offset, e.to_string()));
            }
            Err(Failure::Rejected(_)) => {
                let (left, right) = part.split_at(part.len() / 2);
                parts.push((offset + left.len(), right));
                parts.push((offset, left));
            }
        }
    }
    retry_at.sort_unstable();
    report.retry_at = retry_at;
    Ok(report)
}
