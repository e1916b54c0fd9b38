//! The `happyx` binary: parses the command line and reports errors at the edge.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = happyx::cli::Cli::parse();
    use happyx::cli::Command as C;
    if matches!(
        cli.command,
        C::Serve(_)
            | C::Token(_)
            | C::Prune { .. }
            | C::Export { .. }
            | C::Import { .. }
            | C::Audit(_)
    ) {
        // Everything a host creates in its data dir (database, WAL, keys, sockets, caches)
        // is private to its user: files 0600, directories 0700, whichever library creates
        // them. (Client commands such as `plugin new` or `man` keep the user's umask.)
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    }
    if matches!(cli.command, happyx::cli::Command::PtyHolder) {
        // Before any runtime exists: the holder closes inherited descriptors first.
        return happyx::pty::holder::main();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("happyx: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(happyx::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A command that asks for an exit status has said everything it had to say.
            if let Some(happyx::ops::Exit(code)) = e.downcast_ref() {
                return std::process::ExitCode::from(*code);
            }
            // `{:#}` prints the cause chain on one line without a backtrace.
            eprintln!("happyx: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
