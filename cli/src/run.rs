//! Each command carried out: its request built, its function invoked, its answer printed,
//! and the exit code it ends with.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::args::{Command, RolloutCommand};
use crate::error::{exit, CliError};
use crate::functions::{Function, Functions};
use crate::watch::{Ended, Follow, Progress, Verdict};
use crate::{payloads, render};

/// Where the answers go: `out` (stdout), raw JSON or for people; `live`: draw progress bars
/// (on stderr, a terminal) instead of progress lines.
pub struct Output<'a> {
    pub out: &'a mut dyn Write,
    pub json: bool,
    pub live: bool,
}

impl Output<'_> {
    fn print(&mut self, text: &str) -> Result<(), CliError> {
        writeln!(self.out, "{text}")
            .map_err(|e| CliError::Usage(format!("writing the answer: {e}")))
    }

    fn answer(&mut self, command: &str, answer: &Value) -> Result<(), CliError> {
        if self.json {
            self.print(&answer.to_string())
        } else {
            self.print(&render::answer(command, answer))
        }
    }
}

/// Carries `command` out; answers its exit code.
pub async fn run<F: Functions>(
    functions: &F,
    command: &Command,
    output: &mut Output<'_>,
) -> Result<i32, CliError> {
    let (name, function, payload) = match command {
        Command::Deploy(args) => {
            let file = match &args.file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| CliError::Usage(format!("reading {}: {e}", path.display())))?,
                ),
                None => None,
            };
            (
                "deploy",
                Function::Deploy,
                payloads::deploy(args, file.as_deref())?,
            )
        }
        Command::Undeploy(args) => ("undeploy", Function::Deploy, payloads::undeploy(args)),
        Command::Rollback(args) => ("rollback", Function::Rollback, payloads::rollback(args)),
        Command::Pause(args) => (
            "pause",
            Function::Rollback,
            payloads::control("pause", args),
        ),
        Command::Resume(args) => (
            "resume",
            Function::Rollback,
            payloads::control("resume", args),
        ),
        Command::Promote(args) => (
            "promote",
            Function::Rollback,
            payloads::control("promote", args),
        ),
        Command::Status(args) if args.watch => {
            let how = Follow {
                cluster: &args.cluster,
                daemon: args.daemon.as_deref(),
                rollout: None,
                latest: false,
                interval: Duration::from_secs(args.interval.max(1)),
                timeout: None,
            };
            return watch(functions, &how, output).await;
        }
        Command::Status(args) => {
            let answer = functions
                .invoke(
                    Function::Status,
                    &payloads::status(&args.cluster, args.daemon.as_deref()),
                )
                .await?;
            if output.json {
                output.print(&answer.to_string())?;
            } else {
                output.print(&render::status(&answer))?;
            }
            return Ok(exit::OK);
        }
        Command::Rollout(RolloutCommand::Wait(args)) => {
            let how = Follow {
                cluster: &args.target.cluster,
                daemon: Some(&args.target.daemon),
                rollout: args.rollout.as_deref(),
                latest: true,
                interval: Duration::from_secs(args.interval.max(1)),
                timeout: Some(Duration::from_secs(args.timeout)),
            };
            return watch(functions, &how, output).await;
        }
    };
    let answer = functions.invoke(function, &payload).await?;
    output.answer(name, &answer)?;
    Ok(exit::OK)
}

/// Live bars (a terminal) or one line per change (a log, a pipeline) for each rollout.
struct Display {
    bars: MultiProgress,
    shown: BTreeMap<String, ProgressBar>,
    last_lines: BTreeMap<String, String>,
}

impl Display {
    fn new(live: bool) -> Self {
        let target = if live {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            bars: MultiProgress::with_draw_target(target),
            shown: BTreeMap::new(),
            last_lines: BTreeMap::new(),
        }
    }

    fn show(&mut self, progress: &[Progress], output: &mut Output<'_>, status: &Value) {
        if output.json {
            let _ = output.print(&status.to_string());
            return;
        }
        for p in progress {
            let line = render::progress_line(p);
            if self.bars.is_hidden() {
                if self.last_lines.get(&p.id) != Some(&line) {
                    let _ = output.print(&line);
                    self.last_lines.insert(p.id.clone(), line);
                }
                continue;
            }
            let bar = self.shown.entry(p.id.clone()).or_insert_with(|| {
                let bar = self.bars.add(ProgressBar::new(p.total.max(1)));
                bar.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("{} {}", p.daemon, p.kind));
                bar
            });
            bar.set_length(p.total.max(1));
            bar.set_position(p.done);
            let mut message = format!(
                "{} {} failures {}/{}",
                p.to_task_definition, p.state, p.failures, p.threshold
            );
            if let Some(note) = &p.note {
                message.push_str(&format!(": {note}"));
            }
            bar.set_message(message);
            if p.state != "IN_PROGRESS" {
                bar.finish();
            }
        }
    }
}

/// Follows the rollouts (`status --watch`, `rollout wait`), then prints the outcome.
async fn watch<F: Functions>(
    functions: &F,
    how: &Follow<'_>,
    output: &mut Output<'_>,
) -> Result<i32, CliError> {
    let mut display = Display::new(output.live && !output.json);
    let (ended, status) = {
        let mut report =
            |progress: &[Progress], status: &Value| display.show(progress, output, status);
        crate::watch::follow(functions, how, &mut report).await?
    };
    let _ = display.bars.clear();
    let (code, verdict) = match ended {
        Ended::Judged(Verdict::Succeeded) => (exit::OK, "succeeded"),
        Ended::Judged(_) => (
            exit::ROLLOUT_FAILED,
            "did not succeed (failed, rolled back or superseded)",
        ),
        Ended::TimedOut => (exit::TIMED_OUT, "still in progress at --timeout"),
        Ended::NothingInProgress => (exit::OK, "none in progress"),
    };
    if !output.json {
        if how.rollout.is_none() && how.latest || ended != Ended::NothingInProgress {
            output.print(&format!("rollout {verdict}"))?;
        }
        output.print(&render::status(&status))?;
    }
    Ok(code)
}
