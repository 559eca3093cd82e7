//! The fault campaign command: `cargo run --release -p ecs-daemons-demo --bin campaign`.
//!
//! 1,000 seeds of each scenario by default, `--full` for 10,000, `--seeds N` for another count,
//! `--from N` to start the range at seed N (default 1: `--from 500000 --full` runs seeds
//! 500,000 to 509,999), `--seed N` (with `--scenario churn|rollout|managed|services`) to replay one with what the
//! store and the model hold printed. Prints runs, steps, faults injected per kind, invariant breaks (each with its
//! replay command) and the worst convergence after the faults stopped; exits 1 on any break.

use std::process::ExitCode;
use std::time::Instant;

use ecs_daemons_sim::campaign::{run_campaign, Scenario};

const USAGE: &str = "usage: campaign [--from N] [--seeds N | --full | --seed N] \
                     [--scenario churn|rollout|managed|services] [--threads N]";

struct Options {
    /// The first seed of the range and how many seeds it holds.
    from: u64,
    count: u64,
    /// One seed replayed (`--seed`), instead of the range.
    replay: Option<u64>,
    scenarios: Vec<Scenario>,
    threads: usize,
}

impl Options {
    fn seeds(&self) -> Vec<u64> {
        match self.replay {
            Some(seed) => vec![seed],
            None => (self.from..self.from.saturating_add(self.count)).collect(),
        }
    }
}

fn number(flag: &str, value: Option<String>) -> Result<u64, String> {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a whole number\n{USAGE}"))
}

fn options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        from: 1,
        count: 1_000,
        replay: None,
        scenarios: Scenario::ALL.to_vec(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--full" => options.count = 10_000,
            "--seeds" => options.count = number("--seeds", args.next())?,
            "--from" => options.from = number("--from", args.next())?,
            "--seed" => {
                options.replay = Some(number("--seed", args.next())?);
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
    let seeds = options.seeds();
    let range = match (seeds.first(), seeds.last()) {
        (Some(first), Some(last)) => format!("seeds {first}..={last}"),
        _ => "no seeds".to_string(),
    };
    println!(
        "fault campaign: {} seed(s) ({range}) × {} scenario(s) on {} thread(s)",
        seeds.len(),
        options.scenarios.len(),
        options.threads
    );
    let report = run_campaign(&seeds, &options.scenarios, options.threads);
    println!("{report}");
    println!("wall time: {:.0} s", started.elapsed().as_secs_f64());
    if report.breaks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
