//! `ecs-daemons`: parse, find the functions, run the command, exit with its code.

use std::io::IsTerminal;

use clap::Parser;
use ecs_daemons_cli::args::Cli;
use ecs_daemons_cli::error::{exit, CliError};
use ecs_daemons_cli::functions::{names_from_stack, FunctionNames, LambdaFunctions};
use ecs_daemons_cli::run::{run, Output};

/// The functions' names: from the stack's outputs, or each given by flag (or environment).
async fn function_names(
    cli: &Cli,
    config: &aws_config::SdkConfig,
) -> Result<FunctionNames, CliError> {
    match (
        &cli.stack,
        &cli.deploy_function,
        &cli.rollback_function,
        &cli.status_function,
    ) {
        (_, Some(deploy), Some(rollback), Some(status)) => Ok(FunctionNames {
            deploy: deploy.clone(),
            rollback: rollback.clone(),
            status: status.clone(),
        }),
        (Some(stack), ..) => {
            let found =
                names_from_stack(&aws_sdk_cloudformation::Client::new(config), stack).await?;
            Ok(FunctionNames {
                deploy: cli.deploy_function.clone().unwrap_or(found.deploy),
                rollback: cli.rollback_function.clone().unwrap_or(found.rollback),
                status: cli.status_function.clone().unwrap_or(found.status),
            })
        }
        _ => Err(CliError::Usage(
            "name the stack (--stack or ECS_DAEMONS_STACK), or all three functions \
             (--deploy-function, --rollback-function, --status-function)"
                .into(),
        )),
    }
}

#[tokio::main]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            std::process::exit(if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let config = aws_config::load_from_env().await;
    let code = async {
        let names = function_names(&cli, &config).await?;
        let functions = LambdaFunctions::new(aws_sdk_lambda::Client::new(&config), names);
        let mut stdout = std::io::stdout();
        let mut output = Output {
            out: &mut stdout,
            json: cli.json,
            live: std::io::stderr().is_terminal(),
        };
        run(&functions, &cli.command, &mut output).await
    }
    .await
    .unwrap_or_else(|error: CliError| {
        eprintln!("error: {error}");
        error.exit_code()
    });
    std::process::exit(code);
}
