//! The `tillgate` binary: everything is in the library; this only maps errors to exit codes.

fn main() {
    std::process::exit(tillgate::cli::main());
}
