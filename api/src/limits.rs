//! Rate limits with `governor`: register/login calls per client IP, and each API key's ingest quota
//! in events per second with a burst. Both are per api process: with N instances behind a load
//! balancer the effective limits are N times these (see the README).
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::KeyOwner;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn retry_after(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

pub struct LoginLimiter(DefaultKeyedRateLimiter<IpAddr>);

impl LoginLimiter {
    pub fn per_minute(n: u32) -> Self {
        Self(RateLimiter::keyed(Quota::per_minute(nz(n))))
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.0.check_key(&ip).map_err(|not_until| {
            retry_after(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }
}

pub struct KeyQuotas {
    default: (u32, u32),
    limiters: moka::sync::Cache<(Uuid, u32, u32), Arc<DefaultDirectRateLimiter>>,
}

impl KeyQuotas {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            default: (per_sec, burst),
            limiters: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// Spends `n` events of the key's quota, or says when to retry.
    pub fn check(&self, owner: &KeyOwner, n: u32) -> Result<(), ApiError> {
        let (per_sec, burst) = owner.quota.unwrap_or(self.default);
        let limiter = self.limiters.get_with((owner.key_id, per_sec, burst), || {
            Arc::new(RateLimiter::direct(
                Quota::per_second(nz(per_sec)).allow_burst(nz(burst)),
            ))
        });
        match limiter.check_n(nz(n)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(retry_after(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            // More events in one request than the burst can ever hold.
            Err(_) => Err(retry_after(Duration::from_secs(
                (n / per_sec.max(1)).max(1) as u64,
            ))),
        }
    }
}

/// The client's address: the peer, or, when the peer is a proxy on this host (nginx), the last
/// address it appended to `X-Forwarded-For`.
pub fn client_ip(req: &actix_web::HttpRequest) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if peer.is_loopback() {
        if let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_limit_is_per_ip() {
        let l = LoginLimiter::per_minute(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let err = l.check(a).unwrap_err();
        assert!(matches!(err, ApiError::RateLimited { retry_after_secs } if retry_after_secs >= 1));
        assert!(l.check(b).is_ok());
    }

    #[test]
    fn a_key_quota_allows_its_burst_then_refuses() {
        let q = KeyQuotas::new(1_000, 1_000);
        let owner = KeyOwner {
            key_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            quota: Some((5, 5)),
        };
        assert!(q.check(&owner, 5).is_ok());
        assert!(q.check(&owner, 1).is_err());
        // Another key is not affected.
        let other = KeyOwner {
            key_id: Uuid::now_v7(),
            ..owner
        };
        assert!(q.check(&other, 5).is_ok());
        // A request larger than the burst is refused, not a panic.
        assert!(q.check(&other, 50).is_err());
    }
}
