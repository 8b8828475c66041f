//! The status page as a browser shows it: headless Chromium driven over the DevTools
//! protocol by `tests/kit/python/page_check.py` (Debian's chromium and
//! python3-websocket), which follows the first alert's clip link and waits for the
//! video to play.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/page_check.py")
}

/// Loads `url` (giving the page `token` when it asks), plays the first alert's clip,
/// saves a screenshot at `png`; what the page showed, or a panic with the script's
/// complaint.
pub fn look_at_page(url: &str, token: &str, png: &Path) -> serde_json::Value {
    let out = Command::new("/usr/bin/python3")
        .arg(script())
        .args([url, token])
        .arg(png)
        .output()
        .expect("run page_check.py (needs chromium and python3-websocket)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "page_check.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("page_check.py printed {stdout:?}: {e}"))
}
