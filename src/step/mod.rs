//! The steps: one file per subcommand, and this module, the only list of them.

pub mod extract;
pub mod load;

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
    }
}
