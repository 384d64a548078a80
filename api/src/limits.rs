//! Rate limits with `governor`: register/login calls per client IP (the client found through the
//! trusted proxies), each API key's ingest quota in events per second with a burst, and the slots
//! for password hashing. All are per api process: with N instances behind a load balancer the
//! effective limits are N times these (see the README).
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use sluice_http::{ApiError, Heart};

use crate::store::KeyOwner;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn retry_after(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// Register and login calls per client address. Every address it has seen stays in memory until
/// [`LoginLimiter::prune`] drops the ones whose allowance is full again.
pub struct LoginLimiter<C: Clock = DefaultClock>(
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
);

impl LoginLimiter {
    pub fn per_minute(n: u32) -> Self {
        Self::with_clock(n, DefaultClock::default())
    }
}

impl<C: Clock> LoginLimiter<C> {
    fn with_clock(n: u32, clock: C) -> Self {
        Self(RateLimiter::new(
            Quota::per_minute(nz(n)),
            DefaultKeyedStateStore::default(),
            clock,
        ))
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.0
            .check_key(&ip)
            .map_err(|not_until| retry_after(not_until.wait_time_from(self.0.clock().now())))
    }

    /// Forgets the addresses that would start afresh anyway.
    pub fn prune(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Prunes the login limiter every `every`, so a flood of addresses costs memory only for a
/// minute; beats `heart` each round.
pub fn spawn_login_limiter_pruner(
    limiter: Arc<LoginLimiter>,
    every: Duration,
    heart: Heart,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        loop {
            tick.tick().await;
            limiter.prune();
            metrics::gauge!("sluice_login_limiter_addresses").set(limiter.len() as f64);
            heart.beat();
        }
    })
}

/// Slots for argon2 work (about 19 MiB each): a login flood waits a moment for one, then gets 503.
pub struct PasswordSlots {
    slots: Arc<tokio::sync::Semaphore>,
    wait: Duration,
}

impl PasswordSlots {
    pub fn new(slots: usize, wait: Duration) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
            wait,
        }
    }

    /// A slot, held until the permit is dropped.
    pub async fn acquire(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let slots = self.slots.clone();
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) if self.wait.is_zero() => Err(ApiError::PasswordHashingBusy),
            Err(_) => tokio::time::timeout(self.wait, slots.acquire_owned())
                .await
                .map_err(|_| ApiError::PasswordHashingBusy)?
                .map_err(|_| ApiError::PasswordHashingBusy),
        };
        if permit.is_err() {
            metrics::counter!("sluice_password_hashes_refused_total").increment(1);
        }
        permit
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

/// One `address/prefix` network (an address alone is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or CIDR"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
            let keep = u32::from(prefix).min(width);
            if keep == 0 {
                0
            } else {
                bits >> (width - keep)
            }
        }
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), 32, self.prefix)
                    == masked(u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`api.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn parse(cidrs: &[String]) -> anyhow::Result<Self> {
        cidrs
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e| anyhow::anyhow!("invalid setting `api.trusted_proxies`: {e}"))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client: walking from the peer back through `X-Forwarded-For` (right to left), the
    /// first address that is not a trusted proxy. Hops left of it are the client's own words.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = peer.to_canonical();
        let hops = forwarded_for.iter().rev().flat_map(|h| h.rsplit(','));
        for hop in hops {
            if !self.trusts(client) {
                break;
            }
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => client = ip.to_canonical(),
                // A hop a trusted proxy would not write: the proxy's own peer is all we know.
                Err(_) => break,
            }
        }
        client
    }
}

/// The client's address as the login limiter counts it.
pub fn client_ip(req: &actix_web::HttpRequest, trusted: &TrustedProxies) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    trusted.client(peer, &forwarded)
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
    fn idle_addresses_are_pruned_from_the_login_limiter() {
        let clock = governor::clock::FakeRelativeClock::default();
        let l = LoginLimiter::with_clock(5, clock.clone());
        for i in 0..1000u32 {
            assert!(l.check(IpAddr::from(i.to_be_bytes())).is_ok());
        }
        assert_eq!(l.len(), 1000);
        l.prune();
        assert_eq!(l.len(), 1000, "still inside their minute");
        clock.advance(Duration::from_secs(61));
        l.prune();
        assert_eq!(l.len(), 0);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy() {
        let loopback = TrustedProxies::parse(&["127.0.0.0/8".into(), "::1/128".into()]).unwrap();
        let both = TrustedProxies::parse(&["127.0.0.0/8".into(), "10.0.0.0/8".into()]).unwrap();
        let none = TrustedProxies::default();
        let cases: &[(&TrustedProxies, &str, &[&str], &str)] = &[
            (&loopback, "127.0.0.1", &[], "127.0.0.1"),
            (&loopback, "127.0.0.1", &["203.0.113.9"], "203.0.113.9"),
            (
                &loopback,
                "127.0.0.1",
                &["6.6.6.6, 203.0.113.9"],
                "203.0.113.9",
            ),
            (&loopback, "::1", &["203.0.113.9"], "203.0.113.9"),
            (&loopback, "198.51.100.7", &["6.6.6.6"], "198.51.100.7"),
            (&none, "127.0.0.1", &["6.6.6.6"], "127.0.0.1"),
            (
                &both,
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.1, 10.1.2.3"],
                "198.51.100.1",
            ),
            (
                &both,
                "127.0.0.1",
                &["6.6.6.6", "198.51.100.1, 10.1.2.3"],
                "198.51.100.1",
            ),
            (&both, "127.0.0.1", &["10.0.0.2, 10.1.2.3"], "10.0.0.2"),
            (&loopback, "127.0.0.1", &["garbage"], "127.0.0.1"),
            (
                &loopback,
                "127.0.0.1",
                &["::ffff:203.0.113.9"],
                "203.0.113.9",
            ),
        ];
        for (trusted, peer, xff, want) in cases {
            assert_eq!(trusted.client(ip(peer), xff), ip(want), "{peer} {xff:?}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        let one: Cidr = "192.0.2.1".parse().unwrap();
        assert!(one.contains(ip("192.0.2.1")) && !one.contains(ip("192.0.2.2")));
        for bad in ["", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(TrustedProxies::parse(&["nope".into()])
            .unwrap_err()
            .to_string()
            .contains("api.trusted_proxies"));
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
