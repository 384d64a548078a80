//! Readiness and liveness. Readiness is a switch: on while the service takes traffic, off while it
//! starts and from the first moment of shutdown. Liveness follows heartbeats of the loops that
//! matter: each loop gets a [`Heart`] with the age after which it counts as stalled, and
//! `/api/live` is 503 while any heart is stale. A heart counts from the moment it is registered, so
//! a loop that never starts shows as stalled too.
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug)]
struct HeartState {
    name: &'static str,
    last_ms: AtomicI64,
    stale_after: Duration,
}

/// One watched loop's heartbeat.
#[derive(Debug, Clone)]
pub struct Heart(Arc<HeartState>);

impl Heart {
    pub fn beat(&self) {
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn name(&self) -> &'static str {
        self.0.name
    }
}

#[derive(Debug)]
struct Inner {
    ready: AtomicBool,
    hearts: Mutex<Vec<Arc<HeartState>>>,
    /// The heart [`Lifecycle::beat`] beats, for a service with one main loop.
    main_stale_after: Duration,
}

#[derive(Debug, Clone)]
pub struct Lifecycle(Arc<Inner>);

/// One heart as `/api/live` shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeartView {
    pub name: &'static str,
    pub last_beat_ms_ago: i64,
    pub stale_after_ms: u64,
    pub stalled: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl Lifecycle {
    /// `main_stale_after` is the age after which the heart [`Lifecycle::beat`] beats is stale.
    pub fn new(main_stale_after: Duration) -> Self {
        Self(Arc::new(Inner {
            ready: AtomicBool::new(false),
            hearts: Mutex::new(Vec::new()),
            main_stale_after,
        }))
    }

    /// A heart for the loop `name`, stalled once it has not beaten for `stale_after`.
    pub fn heart(&self, name: &'static str, stale_after: Duration) -> Heart {
        let mut hearts = self.hearts();
        if let Some(h) = hearts.iter().find(|h| h.name == name) {
            return Heart(h.clone());
        }
        let h = Arc::new(HeartState {
            name,
            last_ms: AtomicI64::new(now_ms()),
            stale_after,
        });
        hearts.push(h.clone());
        Heart(h)
    }

    /// Beats the main loop's heart (`main`), registering it on first use.
    pub fn beat(&self) {
        self.heart("main", self.0.main_stale_after).beat();
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }

    /// Every heart and whether it is stale.
    pub fn hearts_view(&self) -> Vec<HeartView> {
        let now = now_ms();
        self.hearts()
            .iter()
            .map(|h| {
                let ago = now - h.last_ms.load(Ordering::Relaxed);
                HeartView {
                    name: h.name,
                    last_beat_ms_ago: ago,
                    stale_after_ms: h.stale_after.as_millis() as u64,
                    stalled: ago > h.stale_after.as_millis() as i64,
                }
            })
            .collect()
    }

    /// Alive unless a watched loop has stopped beating.
    pub fn is_alive(&self) -> bool {
        self.hearts_view().iter().all(|h| !h.stalled)
    }

    fn hearts(&self) -> std::sync::MutexGuard<'_, Vec<Arc<HeartState>>> {
        // A panic while holding this lock leaves a plain Vec behind: still usable.
        self.0.hearts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heart_that_stops_beating_turns_liveness_off_and_a_beat_turns_it_back_on() {
        let life = Lifecycle::new(Duration::from_secs(60));
        assert!(life.is_alive(), "no heart watched: alive");
        let heart = life.heart("reader", Duration::from_millis(30));
        assert!(life.is_alive());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!life.is_alive());
        let view = life.hearts_view();
        assert_eq!(view.len(), 1);
        assert!(view[0].stalled && view[0].name == "reader");
        heart.beat();
        assert!(life.is_alive());
    }

    #[test]
    fn the_same_name_is_the_same_heart() {
        let life = Lifecycle::default();
        let a = life.heart("x", Duration::from_secs(1));
        let _b = life.heart("x", Duration::from_secs(1));
        a.beat();
        assert_eq!(life.hearts_view().len(), 1);
    }

    #[test]
    fn readiness_is_a_switch_that_starts_off() {
        let life = Lifecycle::default();
        assert!(!life.is_ready());
        life.set_ready(true);
        assert!(life.is_ready());
    }
}
