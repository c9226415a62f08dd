//! The `switchyard` binary: parse configuration, set up logging, start and serve.
//!
//! `switchyard ctl …` is the command-line client of a running server's JSON API ([`server::ctl`]).
//!
//! Every start-up failure ends the process with a non-zero exit code and one line on standard
//! error that says what to fix: 2 for command-line usage errors, 1 for everything else.

use std::process::ExitCode;

use clap::Parser;
use server::{Config, Server, config::Cli, shutdown_signal, telemetry};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("ctl") {
        return ctl();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // Clap's own text spans several lines; its first line names the problem.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("switchyard: {first} (run `switchyard --help` for usage)");
            return ExitCode::from(2);
        }
    };
    let config = match Config::resolve(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchyard: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(&config.log, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::start(&config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("switchyard: error: {e}");
                return ExitCode::FAILURE;
            }
        };
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard: error: server stopped: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `switchyard ctl …`: 0 when the server did it, 1 when it refused or could not be reached, 2 for
/// usage errors.
fn ctl() -> ExitCode {
    use clap::Parser;
    let args = std::iter::once("switchyard ctl".to_owned()).chain(std::env::args().skip(2));
    let ctl = match server::ctl::Ctl::try_parse_from(args) {
        Ok(ctl) => ctl,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard ctl: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ctl.run()) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard ctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}
