//! Start-up repair of files left `.partial` by a crash or power loss.
//!
//! Everything acknowledged was fsynced, so only bytes after the last acknowledged
//! shipment can be torn. Plain files are cut after their last newline; gzip files after
//! their last complete member. The records past the cut were never acknowledged and
//! are shipped again from the cursor.

use crate::file::{final_name, sync_dir, PARTIAL};
use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;

pub fn finish_leftovers(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.to_string_lossy();
        if !name.ends_with(PARTIAL) {
            continue;
        }
        let data = std::fs::read(&path)?;
        let keep = if name.ends_with(&format!(".gz{PARTIAL}")) {
            complete_gzip_prefix(&data)
        } else {
            data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
        };
        if keep == 0 {
            std::fs::remove_file(&path)?;
            tracing::warn!(file = %path.display(), "archive: removed a leftover file with no complete record");
            continue;
        }
        if keep < data.len() {
            tracing::warn!(file = %path.display(), cut = data.len() - keep, "archive: cut a torn tail left by a crash");
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(keep as u64)?;
            f.sync_all()?;
        }
        std::fs::rename(&path, final_name(&path))?;
    }
    sync_dir(dir)
}

/// Length of the longest prefix of `data` made of complete gzip members.
pub fn complete_gzip_prefix(data: &[u8]) -> usize {
    let mut offset = 0;
    while offset < data.len() {
        let mut rest = &data[offset..];
        let mut dec = flate2::bufread::GzDecoder::new(&mut rest);
        let mut sink = Vec::new();
        if dec.read_to_end(&mut sink).is_err() {
            break;
        }
        drop(dec);
        let consumed = data.len() - offset - rest.len();
        if consumed == 0 {
            break;
        }
        offset += consumed;
    }
    offset
}
