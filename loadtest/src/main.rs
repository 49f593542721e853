//! `loadtest`: runs one scenario against the chat server (or the relay),
//! prints a live progress line and a summary, writes the JSON report and the
//! plot when asked, and exits 1 when a message was lost, duplicated or out of
//! order.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadtest::report::Report;
use loadtest::scenario::{catch_up, groups, idle, pairs, storm};

#[derive(Parser)]
#[command(version, about = "Load tester for the chat backend")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Users in pairs, each sending to its peer at a fixed rate (open loop).
    Pairs(pairs::Pairs),
    /// Groups of G members; fan-out latency to every member.
    Groups(groups::Groups),
    /// Open C connections and hold them (memory per connection).
    Idle(idle::Idle),
    /// All clients drop at once, get a backlog, reconnect with jitter and sync.
    ReconnectStorm(storm::Storm),
    /// A user with N pending entries syncs them all.
    CatchUp(catch_up::CatchUp),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let (json, plot) = match &cli.scenario {
        Scenario::Pairs(o) => (o.common().json.clone(), o.common().plot.clone()),
        Scenario::Groups(o) => (o.common().json.clone(), o.common().plot.clone()),
        Scenario::Idle(o) => (o.common().json.clone(), o.common().plot.clone()),
        Scenario::ReconnectStorm(o) => (o.common().json.clone(), o.common().plot.clone()),
        Scenario::CatchUp(o) => (o.common().json.clone(), o.common().plot.clone()),
    };
    let result = match cli.scenario {
        Scenario::Pairs(o) => pairs::run(o).await,
        Scenario::Groups(o) => groups::run(o).await,
        Scenario::Idle(o) => idle::run(o).await,
        Scenario::ReconnectStorm(o) => storm::run(o).await,
        Scenario::CatchUp(o) => catch_up::run(o).await,
    };
    match result.and_then(|report| write_outputs(&report, json, plot).map(|()| report)) {
        Ok(report) => {
            print!("{}", report.summary());
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("loadtest: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn write_outputs(
    report: &Report,
    json: Option<std::path::PathBuf>,
    plot: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        report.write_json(&path)?;
    }
    if let Some(path) = plot {
        report.write_plot(&path)?;
    }
    Ok(())
}
