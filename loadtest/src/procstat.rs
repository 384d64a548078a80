//! CPU time and resident memory of the services under test, read from /proc.
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    /// Peak resident set (VmHWM).
    pub hwm_kib: u64,
}

const WATCHED: [(&str, &str); 5] = [
    ("api", "sluice-api"),
    ("worker", "sluice-worker"),
    ("analytics", "sluice-analytics"),
    ("redis", "redis-server"),
    ("mongodb", "secantusd"),
];

/// One sample per watched service (summed over its processes).
pub fn sample() -> BTreeMap<&'static str, Sample> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let Some((name, _)) = WATCHED.iter().find(|(_, needle)| {
            cmdline
                .split_whitespace()
                .take(2)
                .any(|arg| arg.rsplit('/').next().unwrap_or("").starts_with(needle))
        }) else {
            continue;
        };
        let s = out.entry(*name).or_insert_with(Sample::default);
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name, which ends with the last ')'.
            if let Some(rest) = stat.rsplit(')').next() {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
                let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
                s.cpu_ticks += ut + st;
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                let kib = || {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmRSS:") {
                    s.rss_kib += kib();
                } else if line.starts_with("VmHWM:") {
                    s.hwm_kib += kib();
                }
            }
        }
    }
    out
}
