//! The run's measurements: per-second timeline, latency histograms, status counts, and the
//! report written as JSON and as an SVG chart of rate and p99 latency over time.
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    pub t: u64,
    pub events_ok: u64,
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub count: u64,
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        count: h.len(),
    }
}

/// Microseconds, up to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub accepted_ids: u64,
    pub stored: u64,
    pub missing: u64,
    pub seconds_until_all_stored: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub url: String,
    pub batch_size: usize,
    pub gzip: bool,
    pub duration_secs: f64,
    pub asked_events_per_sec: Option<f64>,
    pub achieved_events_per_sec: f64,
    pub achieved_requests_per_sec: f64,
    pub events_sent: u64,
    pub events_accepted: u64,
    pub events_duplicate: u64,
    pub events_rejected: u64,
    pub status_counts: BTreeMap<String, u64>,
    pub transport_errors: u64,
    pub latency: Percentiles,
    pub end_to_end: Option<EndToEnd>,
    pub services: BTreeMap<String, ServiceUse>,
    pub timeline: Vec<Second>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceUse {
    /// CPU cores used on average over the measured window.
    pub cpu_cores: f64,
    pub rss_mib_end: f64,
    pub rss_mib_peak: f64,
}

impl Report {
    pub fn human(&self) -> String {
        let mut s = format!(
            "mode {} · batch {} · gzip {} · {:.1} s\n\
             events/s achieved {:.0}{} · requests/s {:.0}\n\
             events accepted {} · duplicate {} · rejected {} · transport errors {}\n\
             latency ms p50 {:.2} · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2}\n\
             statuses {:?}\n",
            self.mode,
            self.batch_size,
            self.gzip,
            self.duration_secs,
            self.achieved_events_per_sec,
            self.asked_events_per_sec
                .map(|r| format!(" (asked {r:.0})"))
                .unwrap_or_default(),
            self.achieved_requests_per_sec,
            self.events_accepted,
            self.events_duplicate,
            self.events_rejected,
            self.transport_errors,
            self.latency.p50_ms,
            self.latency.p90_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.latency.max_ms,
            self.status_counts,
        );
        for (name, u) in &self.services {
            s.push_str(&format!(
                "{name}: {:.2} cores, RSS {:.1} MiB (peak {:.1})\n",
                u.cpu_cores, u.rss_mib_end, u.rss_mib_peak
            ));
        }
        if let Some(e) = &self.end_to_end {
            s.push_str(&format!(
                "end to end: {} accepted ids, {} stored, {} missing, all stored after {}\n",
                e.accepted_ids,
                e.stored,
                e.missing,
                e.seconds_until_all_stored
                    .map(|t| format!("{t:.1} s"))
                    .unwrap_or_else(|| "— (timed out)".into())
            ));
        }
        s
    }

    /// Rate and p99 latency per second, one panel each.
    pub fn chart(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(320);
        let n = self.timeline.len().max(1) as u64;
        let max_rate = self
            .timeline
            .iter()
            .map(|s| s.events_ok)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_p99 = self
            .timeline
            .iter()
            .map(|s| s.p99_ms)
            .fold(1.0f64, f64::max);
        let mut rate = ChartBuilder::on(&top)
            .caption("accepted events per second", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(70)
            .build_cartesian_2d(0u64..n, 0f64..max_rate * 1.1)?;
        rate.configure_mesh().x_desc("second").draw()?;
        rate.draw_series(LineSeries::new(
            self.timeline.iter().map(|s| (s.t, s.events_ok as f64)),
            &BLUE,
        ))?;
        let mut lat = ChartBuilder::on(&bottom)
            .caption(
                "p99 latency (ms, from the scheduled send time)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(70)
            .build_cartesian_2d(0u64..n, 0f64..max_p99 * 1.1)?;
        lat.configure_mesh().x_desc("second").draw()?;
        lat.draw_series(LineSeries::new(
            self.timeline.iter().map(|s| (s.t, s.p99_ms)),
            &RED,
        ))?;
        root.present()?;
        Ok(())
    }
}
