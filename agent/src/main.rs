//! The `tillgate` binary: everything is in the library; this only maps errors to exit codes.

fn main() {
    // rustls' provider for every TLS client of the process (the AWS SDK's, rumqttc's,
    // reqwest's): aws-lc-rs, the only one linked; see tillgate_aws::https.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::process::exit(tillgate::cli::main());
}
