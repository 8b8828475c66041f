//! The `tillgate` binary: everything is in the library; this only maps errors to exit codes.

fn main() {
    // Both of rustls' crypto back ends are linked (the AWS SDK brings aws-lc-rs, other
    // crates ring); rustls then needs the process to pick one, before any TLS is set up.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::process::exit(tillgate::cli::main());
}
