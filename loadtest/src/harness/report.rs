//! A run's results: `report.json`, the human summary, and the chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats::{LaneTotals, Percentiles};

/// What a run measured. The first keys are the contract other tools read;
/// the rest add detail.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `giant-room`, `flood`, ...
    pub scenario: String,
    /// `ws` or `quic`, or `nats` for the peer.
    pub transport: String,
    /// Sockets the clients really opened.
    pub real_connections: u64,
    /// Users that were only simulated (the `--simulate` mode), 0 otherwise.
    pub simulated_users: u64,
    /// Length of the measured phase.
    pub duration_s: f64,
    /// End-to-end latency of every delivery.
    pub latency_ms: Percentiles,
    /// Deliveries per second during the measured phase.
    pub delivered_per_s: f64,
    /// Exact accounting per lane.
    pub lanes: Lanes,
    /// The target's processes, when they run on this machine.
    pub server: ServerUse,
    /// The same scenario against the peer, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Box<Report>>,
    /// The same scenario over the other transports asked for, each against
    /// a target of its own (`--transport ws,quic`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_transports: Vec<Report>,
    /// What was measured: e.g. `chatroom embedded (1 process)`.
    pub target: String,
    /// Messages accepted per second.
    pub accepted_per_s: f64,
    /// Connections established per second while connecting.
    pub connect_per_s: f64,
    /// Joins acknowledged per second (join-storm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joins_per_s: Option<f64>,
    /// Sends refused, by error code.
    pub refused: BTreeMap<String, u64>,
    /// Deliveries the rooms' stats count (the admin API's `delivered`,
    /// summed over the run's rooms), when the run could read them: what
    /// the servers say they handed members (each message once per member),
    /// to hold against what the clients took in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_stats_delivered: Option<u64>,
    /// Receivers per room, to owe them what others posted to the room
    /// (the fault suite's admin notices).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub receivers: BTreeMap<String, u64>,
    /// The load generator's own use of the machine.
    pub client: ClientUse,
    /// Per second of the measured phase.
    pub timeline: Vec<Second>,
    /// What the operator should know (limits hit, processes used).
    pub notes: Vec<String>,
}

/// Per-lane totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lanes {
    /// Ordinary chat.
    pub normal: LaneTotals,
    /// Notices and other priority messages.
    pub priority: LaneTotals,
}

/// What the target's processes used, when they run on this machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUse {
    /// CPU seconds (user + system) during the measured phase.
    pub cpu_s: Option<f64>,
    /// Resident memory added per idle, joined connection, KiB.
    pub rss_kb_per_idle_conn: Option<f64>,
    /// Deliveries per server CPU second.
    pub delivered_per_cpu_s: Option<f64>,
    /// Resident memory at the end, KiB.
    pub rss_kb: Option<u64>,
}

/// What the load generator used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientUse {
    /// CPU seconds of the worker processes during the measured phase.
    pub cpu_s: f64,
    /// Worker processes.
    pub processes: u32,
}

/// One second of the measured phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the measured phase began.
    pub t: u32,
    /// Deliveries in that second.
    pub delivered_per_s: f64,
    /// Median latency of those deliveries, ms.
    pub p50_ms: f64,
    /// 99th-percentile latency of those deliveries, ms.
    pub p99_ms: f64,
}

impl Report {
    /// The human summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        self.describe(&mut out, "");
        for other in &self.other_transports {
            out.push('\n');
            other.describe(&mut out, &format!("{} ", other.transport));
            let _ = writeln!(out, "\n{} / {}", self.transport, other.transport);
            self.compare(&mut out, other);
        }
        if let Some(peer) = &self.peer {
            out.push('\n');
            peer.describe(&mut out, "peer ");
            out.push_str("\nchatroom / peer\n");
            self.compare(&mut out, peer);
        }
        out
    }

    /// This run's figures as ratios to `other`'s.
    fn compare(&self, out: &mut String, other: &Report) {
        let ratio = |ours: f64, theirs: f64| {
            if theirs > 0.0 {
                format!("{:.2}x", ours / theirs)
            } else {
                "n/a".to_owned()
            }
        };
        let _ = writeln!(
            out,
            "  delivered/s        {}",
            ratio(self.delivered_per_s, other.delivered_per_s)
        );
        let _ = writeln!(
            out,
            "  p99 latency        {} (lower is better)",
            ratio(self.latency_ms.p99, other.latency_ms.p99)
        );
        if let (Some(ours), Some(theirs)) = (
            self.server.delivered_per_cpu_s,
            other.server.delivered_per_cpu_s,
        ) {
            let _ = writeln!(out, "  delivered/CPU-s    {}", ratio(ours, theirs));
        }
        if let (Some(ours), Some(theirs)) = (
            self.server.rss_kb_per_idle_conn,
            other.server.rss_kb_per_idle_conn,
        ) {
            let _ = writeln!(
                out,
                "  KiB/idle conn      {} (lower is better)",
                ratio(ours, theirs)
            );
        }
    }

    fn describe(&self, out: &mut String, prefix: &str) {
        let _ = writeln!(
            out,
            "{prefix}{} against {} ({})",
            self.scenario, self.target, self.transport
        );
        let users = if self.simulated_users > 0 {
            format!(
                "{} simulated users (in one process), {} real sockets",
                self.simulated_users, self.real_connections
            )
        } else {
            format!("{} real connections", self.real_connections)
        };
        let _ = writeln!(out, "  {users}, measured for {:.1} s", self.duration_s);
        if self.connect_per_s > 0.0 {
            let _ = writeln!(out, "  connected          {:.0}/s", self.connect_per_s);
        }
        if let Some(joins) = self.joins_per_s {
            let _ = writeln!(out, "  joined             {joins:.0}/s");
        }
        let _ = writeln!(out, "  accepted           {:.0} msg/s", self.accepted_per_s);
        let _ = writeln!(
            out,
            "  delivered          {:.0} msg/s",
            self.delivered_per_s
        );
        let p = self.latency_ms;
        let _ = writeln!(
            out,
            "  latency ms         p50 {:.1}  p90 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}",
            p.p50, p.p90, p.p99, p.p999, p.max
        );
        for (name, lane) in [
            ("normal", self.lanes.normal),
            ("priority", self.lanes.priority),
        ] {
            let _ = writeln!(
                out,
                "  {name:<9}          accepted {}  delivered {} of {}  dropped {}  lost {}",
                lane.accepted, lane.delivered, lane.expected, lane.dropped, lane.lost
            );
        }
        if let Some(stats) = self.room_stats_delivered {
            let lanes = [self.lanes.normal, self.lanes.priority];
            let took: u64 = lanes.iter().map(|lane| lane.delivered).sum();
            let again: u64 = lanes.iter().map(|lane| lane.redundant).sum();
            // A message a member was handed already is not counted again.
            let verdict = match stats.cmp(&took) {
                std::cmp::Ordering::Equal => "equal".to_owned(),
                std::cmp::Ordering::Greater => format!("{} more", stats - took),
                std::cmp::Ordering::Less => format!("{} fewer", took - stats),
            };
            let _ = writeln!(
                out,
                "  room stats         delivered {stats}, clients took in {took}: {verdict} \
                 ({again} sent again, not counted)"
            );
        }
        if !self.refused.is_empty() {
            let refused: Vec<String> = self
                .refused
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "  refused sends      {}", refused.join(", "));
        }
        let server = &self.server;
        if let Some(cpu) = server.cpu_s {
            let _ = write!(out, "  server             {cpu:.2} CPU-s");
            if let Some(per) = server.delivered_per_cpu_s {
                let _ = write!(out, ", {per:.0} delivered/CPU-s");
            }
            if let Some(kb) = server.rss_kb_per_idle_conn {
                let per = if self.simulated_users > 0 {
                    "simulated session"
                } else {
                    "idle connection"
                };
                let _ = write!(out, ", {kb:.2} KiB per {per}");
            }
            out.push('\n');
        }
        if self.client.processes > 0 {
            let _ = writeln!(
                out,
                "  load generator     {:.2} CPU-s in {} processes",
                self.client.cpu_s, self.client.processes
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }

    /// An SVG chart of the timeline: delivered rate above, latency
    /// percentiles below; the peer's lines dashed.
    pub fn chart(&self) -> String {
        let (width, height, margin) = (900.0, 560.0, 60.0);
        let panel = (height - 3.0 * margin) / 2.0;
        let mut series: Vec<(&str, &Report)> = vec![(self.transport.as_str(), self)];
        for other in &self.other_transports {
            series.push((other.transport.as_str(), other));
        }
        if let Some(peer) = &self.peer {
            series.push(("peer", peer));
        }
        let span = series
            .iter()
            .flat_map(|(_, r)| r.timeline.iter().map(|s| s.t))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let rate_top = nice_ceiling(
            series
                .iter()
                .flat_map(|(_, r)| r.timeline.iter().map(|s| s.delivered_per_s))
                .fold(0.0, f64::max),
        );
        let latency_top = nice_ceiling(
            series
                .iter()
                .flat_map(|(_, r)| r.timeline.iter().map(|s| s.p99_ms))
                .fold(0.0, f64::max),
        );
        let x = |t: u32| margin + (width - 2.0 * margin) * f64::from(t) / span;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="{width}" height="{height}" fill="white"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{margin}" y="24" font-size="15">{} — {} ({} connections)</text>"#,
            escape(&self.scenario),
            escape(&self.target),
            self.real_connections + self.simulated_users
        );
        for (index, (title, top, unit)) in [
            ("delivered messages per second", rate_top, "msg/s"),
            (
                "latency per second (p50 solid thin, p99 solid thick)",
                latency_top,
                "ms",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let y0 = margin + index as f64 * (panel + margin);
            let _ = writeln!(svg, r#"<text x="{margin}" y="{}">{title}</text>"#, y0 - 8.0);
            let _ = writeln!(
                svg,
                r##"<rect x="{margin}" y="{y0}" width="{}" height="{panel}" fill="none" stroke="#999"/>"##,
                width - 2.0 * margin
            );
            for tick in 0..=4 {
                let value = top * f64::from(tick) / 4.0;
                let y = y0 + panel - panel * f64::from(tick) / 4.0;
                let _ = writeln!(
                    svg,
                    r##"<line x1="{margin}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{} {unit}</text>"##,
                    width - margin,
                    margin - 4.0,
                    y + 4.0,
                    short(value)
                );
            }
            let y = |value: f64| y0 + panel - panel * (value / top).min(1.0);
            for (series_index, (_, report)) in series.iter().enumerate() {
                let dash = if series_index == 0 {
                    ""
                } else {
                    r#" stroke-dasharray="6 4""#
                };
                let color = COLORS[series_index % COLORS.len()];
                let lines: Vec<(Vec<f64>, f64)> = if index == 0 {
                    vec![(
                        report.timeline.iter().map(|s| s.delivered_per_s).collect(),
                        2.0,
                    )]
                } else {
                    vec![
                        (report.timeline.iter().map(|s| s.p50_ms).collect(), 1.0),
                        (report.timeline.iter().map(|s| s.p99_ms).collect(), 2.5),
                    ]
                };
                for (values, stroke) in lines {
                    let points: Vec<String> = report
                        .timeline
                        .iter()
                        .zip(values)
                        .map(|(s, v)| format!("{:.1},{:.1}", x(s.t), y(v)))
                        .collect();
                    let _ = writeln!(
                        svg,
                        r#"<polyline fill="none" stroke="{color}" stroke-width="{stroke}"{dash} points="{}"/>"#,
                        points.join(" ")
                    );
                }
            }
        }
        let legend_y = height - 18.0;
        for (index, (name, _)) in series.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            let lx = margin + index as f64 * 160.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" x2="{}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
                lx + 24.0,
                lx + 30.0,
                legend_y + 4.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{legend_y}" text-anchor="end">seconds 0 to {span}</text>"#,
            width - margin
        );
        svg.push_str("</svg>\n");
        svg
    }
}

/// Line colours of the chart's series: this run, then the others.
const COLORS: [&str; 3] = ["#1f6feb", "#d1242f", "#1a7f37"];

/// A round number at or above `value`, for an axis.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            scenario: "giant-room".into(),
            transport: "ws".into(),
            real_connections: 1_000,
            duration_s: 3.0,
            delivered_per_s: 200_000.0,
            accepted_per_s: 200.0,
            target: "chatroom embedded <1 process>".into(),
            timeline: (0..3)
                .map(|t| Second {
                    t,
                    delivered_per_s: 200_000.0,
                    p50_ms: 40.0,
                    p99_ms: 95.0,
                })
                .collect(),
            server: ServerUse {
                cpu_s: Some(1.5),
                delivered_per_cpu_s: Some(400_000.0),
                rss_kb_per_idle_conn: Some(2.8),
                rss_kb: Some(40_000),
            },
            ..Report::default()
        }
    }

    #[test]
    fn report_json_has_the_contract_keys() {
        let mut report = sample();
        report.peer = Some(Box::new(sample()));
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        for key in [
            "scenario",
            "transport",
            "real_connections",
            "simulated_users",
            "duration_s",
            "latency_ms",
            "delivered_per_s",
            "lanes",
            "server",
            "peer",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json["latency_ms"].get(key).is_some(), "latency_ms.{key}");
        }
        for lane in ["normal", "priority"] {
            for key in ["accepted", "delivered", "dropped", "lost"] {
                assert!(json["lanes"][lane].get(key).is_some(), "lanes.{lane}.{key}");
            }
        }
        for key in ["cpu_s", "rss_kb_per_idle_conn", "delivered_per_cpu_s"] {
            assert!(json["server"].get(key).is_some(), "server.{key}");
            assert!(
                json["peer"]["server"].get(key).is_some(),
                "peer.server.{key}"
            );
        }
        assert!(
            serde_json::to_value(sample())
                .unwrap()
                .get("peer")
                .is_none()
        );
    }

    #[test]
    fn summary_shows_ratios_against_the_peer() {
        let mut report = sample();
        let mut peer = sample();
        peer.delivered_per_s = 50_000.0;
        report.peer = Some(Box::new(peer));
        let summary = report.summary();
        assert!(summary.contains("delivered/s        4.00x"), "{summary}");
        assert!(summary.contains("1000 real connections"), "{summary}");
    }

    #[test]
    fn chart_is_an_svg_with_a_line_per_series() {
        let mut report = sample();
        report.peer = Some(Box::new(sample()));
        let svg = report.chart();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Delivered, p50 and p99 for each of the two series.
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert!(svg.contains("&lt;1 process&gt;"), "titles are escaped");
    }

    #[test]
    fn axes_round_up() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(180_000.0), 200_000.0);
        assert_eq!(nice_ceiling(95.0), 100.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
    }
}
