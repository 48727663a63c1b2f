use std::process::ExitCode;

use registry_rubber::cli;

fn main() -> ExitCode {
    let (cli, flags) = cli::parse();
    if matches!(cli.command, cli::Command::Serve) {
        // SIGHUP asks a running service to reload; until the doors are up
        // there is nothing to reload, and it must not stop the start-up.
        cli::ignore_hangup();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("registry-rubber: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    let code = runtime.block_on(cli::run(cli, flags));
    // Work still on the blocking pool (a slow hash for a request whose client
    // left) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
