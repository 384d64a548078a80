//! The sketches the worker keeps beside the rollups (Redis): a HyperLogLog of userIds per account
//! and minute or hour, and a sorted set of per-user counts per account and hour or day. Read only:
//! the union of the top sets is computed by a read-only script, never stored.
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use sluice_shared::rollup::{cover, floor_to, hll_key, top_key, DAY_MS, HOUR_MS, MINUTE_MS};

use super::{redis_failed, Result};

fn buckets(range: std::ops::Range<i64>, step: i64) -> impl Iterator<Item = i64> {
    (range.start..range.end).step_by(step.max(1) as usize)
}

/// Unique users of `[start, end)`: one PFCOUNT over the hour HLLs of whole hours and the minute
/// HLLs of the edges (HyperLogLog, standard error 0.81%).
pub async fn unique_users(redis: &Client, account: &str, start: i64, end: i64) -> Result<u64> {
    let c = cover(start, end, MINUTE_MS, HOUR_MS).with_open_tail(HOUR_MS);
    let mut keys: Vec<String> = buckets(c.coarse.clone(), HOUR_MS)
        .map(|h| hll_key(account, 'h', h))
        .collect();
    for r in &c.fine {
        keys.extend(buckets(r.clone(), MINUTE_MS).map(|m| hll_key(account, 'm', m)));
    }
    if keys.is_empty() {
        return Ok(0);
    }
    redis
        .pfcount(keys)
        .await
        .map_err(redis_failed("counting unique users"))
}

/// `ARGV[1]` members of the union of `KEYS` with the highest scores, highest first, as
/// `[member, score, …]`; ties fall as `ZREVRANGE` orders them (the union is ascending, read from
/// its end). Read-only (`EVAL_RO`): `ZUNION` answers the union without storing it.
const TOP_OF_UNION: &str = r"
local args = {'ZUNION', #KEYS}
for _, k in ipairs(KEYS) do args[#args + 1] = k end
args[#args + 1] = 'WITHSCORES'
local all = redis.call(unpack(args))
local n = tonumber(ARGV[1])
local out = {}
local i = #all - 1
while i >= 1 and #out < 2 * n do
  out[#out + 1] = all[i]
  out[#out + 1] = all[i + 1]
  i = i - 2
end
return out
";

/// The heaviest users of the window, from per-day and per-hour top sets (the window's edges are
/// rounded out to whole hours).
pub async fn top_users(
    redis: &Client,
    account: &str,
    start: i64,
    end: i64,
    n: usize,
) -> Result<Vec<(String, i64)>> {
    let c = cover(floor_to(start, HOUR_MS), end, HOUR_MS, DAY_MS);
    let mut keys: Vec<String> = buckets(c.coarse.clone(), DAY_MS)
        .map(|d| top_key(account, 'd', d))
        .collect();
    for r in &c.fine {
        keys.extend(buckets(r.clone(), HOUR_MS).map(|h| top_key(account, 'h', h)));
    }
    if keys.is_empty() || n == 0 {
        return Ok(Vec::new());
    }
    // Every key carries the account's hash tag: the first decides the node on a cluster.
    let slot = ClusterHash::from(keys[0].as_str());
    let mut args: Vec<Value> = vec![TOP_OF_UNION.into(), (keys.len() as i64).into()];
    args.extend(keys.into_iter().map(Value::from));
    args.push((n as i64).into());
    let ranked: Value = redis
        .custom(CustomCommand::new_static("EVAL_RO", slot, false), args)
        .await
        .map_err(redis_failed("ranking top users"))?;
    Ok(ranked_pairs(ranked.into_array()))
}

/// `[member, score, …]` as `(member, count)` pairs; pure.
fn ranked_pairs(flat: Vec<Value>) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut it = flat.into_iter();
    while let (Some(user), Some(score)) = (it.next(), it.next()) {
        if let (Some(user), Some(score)) = (user.as_string(), score.as_f64()) {
            out.push((user, score as i64));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_pairs_read_members_and_scores_and_skip_a_dangling_member() {
        let flat = vec![
            Value::from("whale"),
            Value::from("20"),
            Value::from("minnow"),
            Value::from(3_i64),
            Value::from("dangling"),
        ];
        assert_eq!(
            ranked_pairs(flat),
            vec![("whale".to_owned(), 20), ("minnow".to_owned(), 3)]
        );
    }
}
