//! The `secateur` binary: parse the command line, run the subcommand, print errors with their
//! causes and exit non-zero.

/// Output to a closed pipe (`secateur profile M | head`) ends the run quietly with success, as
/// in other command-line tools; every other panic keeps the default report.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

fn main() {
    quiet_on_closed_stdout();
    std::process::exit(secateur::cli::main_with(std::env::args_os()));
}
