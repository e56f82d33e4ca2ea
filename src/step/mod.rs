//! The steps: one file per subcommand, and this module, the only list of them.

pub mod check;
pub mod extract;
pub mod load;
pub mod manifest;
pub mod reload;
pub mod render;
pub mod run;
pub mod sqlcmd;
pub mod txn;
pub mod upsert;
pub mod wait;

use crate::cli::Command;
use crate::error::StepFailed;
use crate::{Ctx, Outcome};

/// Runs one subcommand, wrapping its error with the step name and table for the error line.
pub async fn run(ctx: Ctx, cmd: Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Extract(args) => {
            let table = extract::table_label(&args);
            extract::run(&ctx, args).await.map_err(|source| {
                StepFailed {
                    step: "extract".into(),
                    table,
                    source,
                }
                .into()
            })
        }
        Command::Load(args) => {
            let table = load::table_label(&args);
            load::run(&ctx, args).await.map_err(|source| {
                StepFailed {
                    step: "load".into(),
                    table,
                    source,
                }
                .into()
            })
        }
        Command::Upsert(args) => {
            let table = upsert::table_label(&args);
            upsert::run(&ctx, args).await.map_err(|source| {
                StepFailed {
                    step: upsert::STEP.into(),
                    table,
                    source,
                }
                .into()
            })
        }
        Command::Reload(args) => {
            let table = reload::table_label(&args);
            reload::run(&ctx, args).await.map_err(|source| {
                StepFailed {
                    step: reload::STEP.into(),
                    table,
                    source,
                }
                .into()
            })
        }
        Command::Sql(args) => {
            let table = sqlcmd::table_label(&args);
            sqlcmd::run(&ctx, args).await.map_err(|source| {
                StepFailed {
                    step: sqlcmd::STEP.into(),
                    table,
                    source,
                }
                .into()
            })
        }
        Command::Check(check) => {
            let table = check::table_label(&check);
            let step = check::step_name(&check);
            check::run(&ctx, check).await.map_err(|source| {
                StepFailed {
                    step,
                    table,
                    source,
                }
                .into()
            })
        }
        // `run` wraps each failed step's error itself (naming the pipeline step).
        Command::Run(args) => run::run(&ctx, args).await,
        Command::Wait(args) => wait::run(&ctx, args).await.map_err(|source| {
            StepFailed {
                step: wait::STEP.into(),
                table: None,
                source,
            }
            .into()
        }),
        Command::Manifest(cmd) => manifest::run(&ctx, cmd).await.map_err(|source| {
            StepFailed {
                step: manifest::STEP.into(),
                table: None,
                source,
            }
            .into()
        }),
        Command::Render(args) => render::run(&ctx, args).await.map_err(|source| {
            StepFailed {
                step: render::STEP.into(),
                table: None,
                source,
            }
            .into()
        }),
    }
}
