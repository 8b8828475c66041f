//! Reading the archive the agent wrote (plain or gzip NDJSON).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Every line of every file of `channel` under `archive`, in file-name order.
pub fn archive_lines(archive: &Path, channel: &str) -> Vec<serde_json::Value> {
    let dir = archive.join(channel);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = rd.map(|e| e.expect("dir entry").path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let raw = std::fs::read(&f).expect("archive file reads");
        let text = if f.to_string_lossy().contains(".gz") {
            let mut s = String::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .expect("valid gzip");
            s
        } else {
            String::from_utf8(raw).expect("UTF-8 archive")
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", f.display())));
        }
    }
    out
}

/// How many times each txn_id appears on the transactions channel.
pub fn archive_txn_ids(archive: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for v in archive_lines(archive, "transactions") {
        let id = v["txn_id"].as_str().expect("archived txn has txn_id").to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Up to five of `acked` that never reached the archive's transactions channel.
pub fn missing_from_archive<'a>(archive: &Path, acked: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let archived = archive_txn_ids(archive);
    acked
        .into_iter()
        .filter(|id| !archived.contains_key(*id))
        .take(5)
        .cloned()
        .collect()
}
