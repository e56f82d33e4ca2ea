//! A local S3 endpoint for scripts and the README's sample pipeline: the same in-process
//! emulator the integration tests use (s3s-fs plus the gap fillers in
//! `tests/common/s3emu.rs`), served until SIGINT or SIGTERM.
//!
//! ```text
//! cargo run --example s3_emulator -- --port 9000 --dir /tmp/ductwork-s3 --bucket etl-bucket [--bucket other]
//! ```
//!
//! Prints `s3-emulator: listening on http://127.0.0.1:9000 root=/tmp/ductwork-s3` once ready.
//! Clients sign with access key `test`, secret `test`, region `us-east-1`, path-style URLs.

#![allow(clippy::print_stdout)]

#[path = "../tests/common/s3emu.rs"]
mod s3emu;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: s3_emulator [--port PORT] [--dir DIR] [--bucket NAME]...\n\
     defaults: --port 9000 --dir /tmp/ductwork-s3; buckets are created if missing";

struct Args {
    port: u16,
    dir: PathBuf,
    buckets: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 9000,
        dir: PathBuf::from("/tmp/ductwork-s3"),
        buckets: Vec::new(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                args.port = v.parse().map_err(|_| format!("bad --port {v:?}"))?;
            }
            "--dir" => args.dir = PathBuf::from(value()?),
            "--bucket" => args.buckets.push(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("s3-emulator: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let emu = match s3emu::S3Emulator::start_at(args.port, &args.dir) {
        Ok(emu) => emu,
        Err(e) => {
            eprintln!(
                "s3-emulator: cannot start on 127.0.0.1:{} with root {}: {e}",
                args.port,
                args.dir.display()
            );
            return ExitCode::from(1);
        }
    };
    for bucket in &args.buckets {
        if let Err(e) = emu.create_bucket(bucket) {
            eprintln!("s3-emulator: cannot create bucket {bucket}: {e}");
            return ExitCode::from(1);
        }
    }
    // Handlers first, so the ready line means SIGINT/SIGTERM already stop us cleanly.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3-emulator: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let signals = {
        let _entered = runtime.enter();
        Signals::install()
    };
    let signals = match signals {
        Ok(s) => s,
        Err(e) => {
            eprintln!("s3-emulator: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };

    let mut out = std::io::stdout().lock();
    if writeln!(
        out,
        "s3-emulator: listening on {} root={}",
        emu.endpoint,
        args.dir.display()
    )
    .and_then(|()| out.flush())
    .is_err()
    {
        return ExitCode::from(1);
    }
    drop(out);

    runtime.block_on(signals.wait());
    emu.stop();
    ExitCode::SUCCESS
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
