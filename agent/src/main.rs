//! The `tillgate` binary: everything is in the library; this only maps errors to exit codes.

/// The process's allocator: mimalloc (its v2 allocator, transparent huge pages off).
///
/// glibc's allocator handed a start's rule state (hundreds of MB of small windows and
/// decoded snapshot vectors) fresh pages again and again: in `make bench`'s rules suite
/// 42 % of the writer's time before the first decision after `kill -9` was the kernel
/// zeroing new pages (`perf`: `clear_page_erms`, most of it under `sysmalloc`), and that
/// start took 1.5–1.9 s; under mimalloc it takes 0.84–0.87 s (BENCHMARKS.md, "The
/// allocator"). Huge pages are off (the crate's `no_thp` feature; `MIMALLOC_ALLOW_THP=0`
/// in the systemd unit): with them an idle agent held 77 MB instead of 23. The bench
/// binaries that run the journal in process declare the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // rustls' provider for every TLS client of the process (the AWS SDK's, rumqttc's,
    // reqwest's): aws-lc-rs, the only one linked; see tillgate_aws::https.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::process::exit(tillgate::cli::main());
}
