//! The 200-seed slice of the fault campaign (`ecs_daemons_sim::campaign`): every scenario, every
//! fault kind, every invariant checked after every simulated second.
//!
//! Replay one seed: `SIM_SEED=<n> cargo test -p integration-tests --test simulation -- --nocapture`
//! (or `cargo run --release -p ecs-daemons-demo --bin campaign -- --seed <n>`).
//! More seeds: `SIM_SEEDS=<count>`; the full campaign is the `campaign` binary.

use ecs_daemons_sim::campaign::{run_campaign, CampaignReport, Scenario};

fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let count: u64 = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (1..=count).collect()
        }
    }
}

fn slice(scenario: Scenario) -> CampaignReport {
    let seeds = seeds();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = run_campaign(&seeds, &[scenario], threads);
    println!("{report}");
    assert!(
        report.breaks.is_empty(),
        "{} of {} seeds broke an invariant:\n{}",
        report.breaks.len(),
        seeds.len(),
        report
            .breaks
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    report
}

#[test]
fn seeded_fault_campaign_keeps_every_invariant() {
    let report = slice(Scenario::Churn);
    if report.runs > 1 {
        for (kind, count) in report.faults.kinds() {
            assert!(count > 0, "no {kind} injected: {:?}", report.faults);
        }
    }
}

#[test]
fn seeded_rollouts_keep_every_invariant() {
    let report = slice(Scenario::Rollout);
    if report.runs > 1 {
        assert!(
            report.faults.events_dropped > 0
                && report.faults.invocations_crashed > 0
                && report.faults.store_conflicts > 0
                && report.faults.throttling_bursts > 0,
            "faults were injected: {:?}",
            report.faults
        );
    }
}

#[test]
fn seeded_managed_daemons_keep_every_promise() {
    let report = slice(Scenario::Managed);
    if report.runs > 1 {
        assert!(
            report.faults.events_dropped > 0
                && report.faults.events_duplicated > 0
                && report.faults.invocations_crashed > 0
                && report.faults.store_conflicts > 0
                && report.faults.throttled_calls > 0,
            "faults were injected: {:?}",
            report.faults
        );
    }
}

#[test]
fn seeded_daemon_services_keep_every_promise() {
    let report = slice(Scenario::Services);
    if report.runs > 1 {
        for (kind, count) in report.faults.kinds() {
            assert!(count > 0, "no {kind} injected: {:?}", report.faults);
        }
        assert!(report.faults.terminations_held > 0, "the group scaled in");
    }
}
