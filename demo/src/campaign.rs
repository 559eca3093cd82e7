//! The fault campaign command: `cargo run --release -p ecs-daemons-demo --bin campaign`.
//!
//! 1,000 seeds of each scenario by default, `--full` for 10,000, `--seeds N` for another count,
//! `--seed N` (with `--scenario churn|rollout`) to replay one with what the store and the model
//! hold printed. Prints runs, steps, faults injected per kind, invariant breaks (each with its
//! replay command) and the worst convergence after the faults stopped; exits 1 on any break.

use std::process::ExitCode;
use std::time::Instant;

use ecs_daemons::campaign::{run_campaign, Scenario};

const USAGE: &str =
    "usage: campaign [--seeds N | --full | --seed N] [--scenario churn|rollout] [--threads N]";

struct Options {
    seeds: Vec<u64>,
    scenarios: Vec<Scenario>,
    threads: usize,
}

fn number(flag: &str, value: Option<String>) -> Result<u64, String> {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a whole number\n{USAGE}"))
}

fn options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        seeds: (1..=1_000).collect(),
        scenarios: Scenario::ALL.to_vec(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--full" => options.seeds = (1..=10_000).collect(),
            "--seeds" => options.seeds = (1..=number("--seeds", args.next())?).collect(),
            "--seed" => {
                let seed = number("--seed", args.next())?;
                options.seeds = vec![seed];
                // Replaying one seed prints what the store and the model hold when it breaks.
                std::env::set_var("CAMPAIGN_VERBOSE", "1");
            }
            "--scenario" => {
                let name = args.next().unwrap_or_default();
                let scenario = Scenario::parse(&name)
                    .ok_or_else(|| format!("unknown scenario {name:?}\n{USAGE}"))?;
                options.scenarios = vec![scenario];
            }
            "--threads" => options.threads = number("--threads", args.next())?.max(1) as usize,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    println!(
        "fault campaign: {} seed(s) × {} scenario(s) on {} thread(s)",
        options.seeds.len(),
        options.scenarios.len(),
        options.threads
    );
    let report = run_campaign(&options.seeds, &options.scenarios, options.threads);
    println!("{report}");
    println!("wall time: {:.0} s", started.elapsed().as_secs_f64());
    if report.breaks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
