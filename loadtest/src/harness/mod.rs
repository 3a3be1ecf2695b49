//! The load harness: scenarios run by many real clients over several
//! processes, counted exactly, reported as JSON, text and a chart.
//!
//! - [`stats`]: per-room, per-lane accounting and HDR latency histograms,
//!   mergeable across workers; `history`: the history checker (order per
//!   receiver, one message per `msg_id` per room).
//! - [`report`]: `report.json`, the human summary and the SVG chart.
//! - [`scenario`]: the scenarios, their flags and their rooms.
//! - [`coordinator`]: starts the target, spawns the workers, runs the phases,
//!   measures processes, merges the results.
//! - [`worker`] (a process of its own) and `bot`: the users of one share, on
//!   one thread; [`plan`]: what coordinator and workers say to each other
//!   (rooms, which client plays the users, commands, events).
//! - [`wire`]: the swarm's lean WebSocket client and frame scanner;
//!   `library`: the same users played by the Rust client library;
//!   `nats`: the same users against NATS, the reference broker.
//! - [`simulate`]: `--simulate`, msg-svc's fan-out core in this process
//!   with up to millions of simulated sessions and no sockets.
//! - [`hook`]: a moderation hook for `--hook-delay-ms` runs.
//!
//! [`run`] runs a scenario against its targets and writes the report.

mod bot;
pub mod coordinator;
mod history;
pub mod hook;
mod library;
mod nats;
pub mod plan;
pub mod report;
pub mod scenario;
pub mod simulate;
pub mod stats;
pub mod wire;
pub mod worker;

use std::path::Path;

use anyhow::Context as _;

use coordinator::Target;
use report::Report;
use scenario::{RunArgs, Scenario};
use simulate::SimSpec;

/// Runs `scenario` as `args` say: simulated, or against each transport's
/// target in turn (each stopped before the next starts, so no two share
/// the machine) and then the peer; prints the summary and writes
/// `report.json` and `chart.svg` under `--out`.
pub async fn run(scenario: &Scenario, args: &RunArgs) -> anyhow::Result<()> {
    if args.peer.is_some() && !matches!(scenario, Scenario::GiantRoom) {
        anyhow::bail!("--peer runs with giant-room only");
    }
    std::fs::create_dir_all(&args.out)?;
    if args.simulate {
        let spec = SimSpec::of(scenario, args)?;
        let report = tokio::task::spawn_blocking(move || simulate::run(&spec)).await?;
        return write_report(&report, &args.out);
    }
    let mut reports = Vec::new();
    for &transport in &args.transport {
        let target_args = args.clone();
        let target =
            tokio::task::spawn_blocking(move || Target::prepare(&target_args, transport)).await??;
        reports.push(coordinator::run(scenario, args, &target).await?);
        if let Some(hook) = &target.hook {
            let tally = &hook.tally;
            let read = |counter: &std::sync::atomic::AtomicU64| {
                counter.load(std::sync::atomic::Ordering::Relaxed)
            };
            println!(
                "moderation hook ({} ms): {} messages judged in {} requests, {} unsigned refused",
                args.hook_delay_ms.unwrap_or_default(),
                read(&tally.messages),
                read(&tally.requests),
                read(&tally.unsigned),
            );
        }
        drop(target);
    }
    let mut others = reports.split_off(1);
    let mut report = reports.pop().context("--transport names at least one")?;
    report.other_transports.append(&mut others);
    if let Some(peer) = &args.peer {
        let nats = Target::nats(peer, &args.out)?;
        report.peer = Some(Box::new(coordinator::run(scenario, args, &nats).await?));
    }
    write_report(&report, &args.out)
}

/// Writes `report.json` and `chart.svg` to `out` and prints the summary.
fn write_report(report: &Report, out: &Path) -> anyhow::Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("chart.svg"), report.chart())?;
    print!("{}", report.summary());
    println!(
        "  written            {}/report.json, {}/chart.svg",
        out.display(),
        out.display()
    );
    Ok(())
}
