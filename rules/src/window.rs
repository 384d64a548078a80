//! The window state every worker shares: per rule, a Redis hash of event-time buckets → counts,
//! updated and judged in one Lua call (so 1 or N workers raise an anomaly once), with an edge flag
//! (a rule fires when its condition starts to hold, not on every batch while it holds) and a
//! cooldown. Every key of a rule carries its account's hash tag `{a<accountId>}`.
use crate::model::{Condition, Direction, Operator};

/// Buckets in a threshold rule's window at most: its bucket is `windowSeconds / 60` (at least 1 s).
pub const WINDOW_BUCKETS: u32 = 60;

/// The size of a threshold rule's buckets for a window of `window_secs`.
pub fn threshold_bucket_secs(window_secs: u32) -> u32 {
    window_secs.div_ceil(WINDOW_BUCKETS).max(1)
}

/// Bucket size and buckets a rule reads at once (the window, or the baseline and the bucket
/// judged).
pub fn geometry(c: &Condition) -> (u32, u32) {
    match c {
        Condition::Threshold(t) => {
            let g = threshold_bucket_secs(t.window_seconds);
            (g, t.window_seconds.div_ceil(g))
        }
        Condition::Zscore(z) => (z.bucket_seconds, z.baseline_buckets),
    }
}

/// How long a rule's counts live after their last update: twice what it reads, plus a minute.
pub fn ttl_secs(c: &Condition) -> u64 {
    let (g, n) = geometry(c);
    u64::from(g) * (2 * u64::from(n) + 2) + 60
}

/// The keys of one rule's state, all tagged with its account.
pub struct RuleKeys {
    pub counts: String,
    pub on_up: String,
    pub on_down: String,
    pub cooldown: String,
}

impl RuleKeys {
    /// Counts are per rule version: an edited rule starts counting afresh.
    pub fn new(prefix: &str, account: &str, rule: &str, version: i64) -> Self {
        let base = format!("{prefix}:{{a{account}}}:rule:{rule}");
        Self {
            counts: format!("{base}:v{version}:counts"),
            on_up: format!("{base}:v{version}:on"),
            on_down: format!("{base}:v{version}:on-down"),
            cooldown: format!("{base}:cooldown"),
        }
    }
}

/// The z-score of `count` against `baseline`: (count − mean) / σ, with σ at least √max(mean, 1)
/// (the noise of a Poisson count), so a perfectly steady baseline does not turn every wobble
/// into an infinite score. The same formula as the Lua below.
pub fn zscore(count: f64, baseline: &[f64]) -> (f64, f64, f64) {
    let n = baseline.len().max(1) as f64;
    let mean = baseline.iter().sum::<f64>() / n;
    let var = baseline.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / n;
    let sigma = var.sqrt().max(mean.max(1.0).sqrt());
    ((count - mean) / sigma, mean, sigma)
}

/// What one call judges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judge {
    /// Only add the counts (a condition judged on closed buckets by the timer).
    Nothing,
    /// Threshold: the window ending at bucket `at`.
    Threshold { op: Operator, value: f64 },
    /// Z-score: bucket `at` against the buckets before it, looking `up` (a spike) or down.
    ZScore { up: bool, threshold: f64 },
}

impl Judge {
    pub fn code(&self) -> (&'static str, &'static str, f64) {
        match *self {
            Judge::Nothing => ("n", "", 0.0),
            Judge::Threshold { op, value } => ("t", op.as_str(), value),
            Judge::ZScore { up, threshold } => ("z", if up { "up" } else { "down" }, threshold),
        }
    }
}

/// How a condition is judged when its events arrive (as they are stored).
pub fn on_arrival(c: &Condition) -> Judge {
    match c {
        // A count that can hold on absence is judged on closed buckets only: a partly filled
        // bucket would make `<` hold for every early event.
        Condition::Threshold(t) if c.holds_on_absence() => {
            let _ = t;
            Judge::Nothing
        }
        Condition::Threshold(t) => Judge::Threshold {
            op: t.operator,
            value: t.value,
        },
        Condition::Zscore(z) if z.direction == Direction::Down => Judge::Nothing,
        Condition::Zscore(z) => Judge::ZScore {
            up: true,
            threshold: z.threshold,
        },
    }
}

/// How the timer judges a condition on the last closed bucket, when it can hold on absence.
pub fn on_timer(c: &Condition) -> Option<Judge> {
    match c {
        Condition::Threshold(t) if c.holds_on_absence() => Some(Judge::Threshold {
            op: t.operator,
            value: t.value,
        }),
        Condition::Zscore(z) if z.direction != Direction::Up => Some(Judge::ZScore {
            up: false,
            threshold: z.threshold,
        }),
        _ => None,
    }
}

/// KEYS: counts, edge flag, cooldown.
/// ARGV: judge (`n` | `t` | `z`), how (operator, or `up` / `down`), value, bucket seconds, bucket
/// judged, buckets read, first bucket that may be read (before it the rule did not count), cooldown
/// seconds, TTL of the counts, then bucket/increment pairs.
/// Returns {fired (0/1), observed, reference, spread} (numbers as strings).
pub const EVALUATE_LUA: &str = r#"
local counts, on, cool = KEYS[1], KEYS[2], KEYS[3]
local judge, how, value = ARGV[1], ARGV[2], tonumber(ARGV[3])
local at, n, since = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local cooldown, ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
if #ARGV >= 10 then
  for i = 10, #ARGV, 2 do redis.call('HINCRBY', counts, ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', counts, ttl)
  if redis.call('HLEN', counts) > 3 * n + 4 then
    local keys = redis.call('HKEYS', counts)
    for _, b in ipairs(keys) do
      if tonumber(b) < at - 2 * n - 1 then redis.call('HDEL', counts, b) end
    end
  end
end
if judge == 'n' then return {0, '0', '0', '0'} end
local function read(from, to)
  local fields = {}
  for b = from, to do fields[#fields + 1] = tostring(b) end
  local got = redis.call('HMGET', counts, unpack(fields))
  local out = {}
  for i = 1, #got do out[i] = tonumber(got[i] or '0') end
  return out
end
local holds, observed, reference, spread = false, 0, value, 0
if judge == 't' then
  local first = at - n + 1
  if first < since then return {0, '0', '0', '0'} end
  for _, c in ipairs(read(first, at)) do observed = observed + c end
  if how == '>' then holds = observed > value
  elseif how == '>=' then holds = observed >= value
  elseif how == '<' then holds = observed < value
  elseif how == '<=' then holds = observed <= value
  elseif how == '==' then holds = observed == value
  else holds = observed ~= value end
else
  if at - n < since then return {0, '0', '0', '0'} end
  local base = read(at - n, at - 1)
  observed = read(at, at)[1]
  local sum = 0
  for _, c in ipairs(base) do sum = sum + c end
  local mean = sum / n
  local var = 0
  for _, c in ipairs(base) do var = var + (c - mean) ^ 2 end
  local sigma = math.max(math.sqrt(var / n), math.sqrt(math.max(mean, 1)))
  local z = (observed - mean) / sigma
  if how == 'up' then holds = z >= value else holds = z <= -value end
  reference, spread = mean, sigma
end
local function num(x) return string.format('%.17g', x) end
if not holds then
  redis.call('DEL', on)
  return {0, num(observed), num(reference), num(spread)}
end
if redis.call('EXISTS', on) == 1 then
  local g = tonumber(ARGV[4])
  local span = g
  if judge == 't' then span = g * n end
  redis.call('EXPIRE', on, math.max(1, span))
  return {0, num(observed), num(reference), num(spread)}
end
-- The edge flag lasts what the condition looks at (the window, or the bucket) and is renewed
-- while the condition holds: once it lapses, the next crossing fires again.
local g = tonumber(ARGV[4])
local span = g
if judge == 't' then span = g * n end
redis.call('SET', on, '1', 'EX', math.max(1, span))
if cooldown > 0 and not redis.call('SET', cool, '1', 'NX', 'EX', cooldown) then
  return {0, num(observed), num(reference), num(spread)}
end
return {1, num(observed), num(reference), num(spread)}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_has_at_most_sixty_buckets() {
        assert_eq!(threshold_bucket_secs(60), 1);
        assert_eq!(threshold_bucket_secs(61), 2);
        assert_eq!(threshold_bucket_secs(86_400), 1_440);
        for w in [1u32, 59, 60, 61, 119, 3_600, 86_400] {
            let g = threshold_bucket_secs(w);
            assert!(w.div_ceil(g) <= WINDOW_BUCKETS, "window {w}");
        }
    }

    #[test]
    fn a_steady_baseline_scores_a_spike_and_not_itself() {
        let base = [10.0; 5];
        assert!(zscore(10.0, &base).0.abs() < 1e-9);
        assert!(zscore(12.0, &base).0 < 3.0);
        assert!(zscore(40.0, &base).0 >= 3.0);
        let noisy = [8.0, 12.0, 9.0, 11.0, 10.0];
        assert!(zscore(11.0, &noisy).0 < 3.0);
        assert!(zscore(0.0, &[50.0; 5]).0 <= -3.0);
    }

    #[test]
    fn keys_share_the_account_tag() {
        let k = RuleKeys::new("sluice", "acct", "r1", 3);
        for key in [&k.counts, &k.on_up, &k.on_down, &k.cooldown] {
            assert!(key.contains("{aacct}"), "{key}");
        }
        assert_ne!(k.counts, RuleKeys::new("sluice", "acct", "r1", 4).counts);
    }
}
