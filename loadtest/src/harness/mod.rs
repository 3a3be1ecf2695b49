//! The load harness: scenarios run by many real clients over several
//! processes, counted exactly, reported as JSON, text and a chart.
//!
//! - [`stats`]: per-room, per-lane accounting and HDR latency histograms,
//!   mergeable across workers.
//! - [`report`]: `report.json`, the human summary and the SVG chart.

pub mod report;
pub mod stats;
