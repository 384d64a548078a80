//! The load generator's parts: the event mix, the schedule, the measurements and the report.
pub mod events;
pub mod procstat;
pub mod report;
pub mod schedule;
