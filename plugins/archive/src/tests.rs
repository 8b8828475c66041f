use super::*;
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use std::io::Read;

fn rec(seq: u64, channel: Channel) -> Record {
    Record {
        seq,
        channel,
        txn_id: format!("t{seq}"),
        partition_key: "s1/t1".into(),
        received_ms: 0,
        body: Bytes::from(format!("{{\"txn_id\":\"t{seq}\",\"pad\":\"{}\"}}", "x".repeat(80))),
    }
}

fn read_lines(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let raw = std::fs::read(&f).unwrap();
        let text = if f.to_string_lossy().contains(".gz") {
            let mut s = String::new();
            MultiGzDecoder::new(&raw[..]).read_to_string(&mut s).unwrap();
            s
        } else {
            String::from_utf8(raw).unwrap()
        };
        out.extend(text.lines().map(str::to_string));
    }
    out
}

fn config(dir: &std::path::Path, compression: Compression, max: u64) -> ArchiveConfig {
    ArchiveConfig {
        dir: dir.to_path_buf(),
        max_file_bytes: tillgate_sdk::ByteSize(max),
        compression,
        ..ArchiveConfig::default()
    }
}

#[tokio::test]
async fn rotates_by_size_and_keeps_every_record_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = ArchiveSink::new("archive", config(tmp.path(), Compression::None, 1000));
    let recs: Vec<Record> = (1..=50).map(|s| rec(s, Channel::Transactions)).collect();
    sink.ship(&recs[..20]).await.unwrap();
    sink.ship(&recs[20..]).await.unwrap();
    sink.close().await.unwrap();
    let dir = tmp.path().join("transactions");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert!(files >= 5, "expected size rotation, got {files} files");
    let lines = read_lines(&dir);
    let ids: Vec<String> = lines
        .iter()
        .map(|l| l[11..].split('"').next().unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=50).map(|s| format!("t{s}")).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn gzip_members_concatenate_into_one_readable_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = ArchiveSink::new("archive", config(tmp.path(), Compression::Gzip, 1 << 20));
    for s in 1..=10 {
        sink.ship(&[rec(s, Channel::Decisions)]).await.unwrap();
    }
    sink.close().await.unwrap();
    let dir = tmp.path().join("decisions");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    assert_eq!(read_lines(&dir).len(), 10);
}

#[tokio::test]
async fn torn_gzip_tail_is_cut_at_the_last_complete_member() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = ArchiveSink::new("archive", config(tmp.path(), Compression::Gzip, 1 << 20));
    for s in 1..=3 {
        sink.ship(&[rec(s, Channel::Transactions)]).await.unwrap();
    }
    // Simulate a crash: the partial file stays, and a torn member is appended.
    let dir = tmp.path().join("transactions");
    let partial = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let mut data = std::fs::read(&partial).unwrap();
    data.extend_from_slice(&[0x1f, 0x8b, 0x08, 0, 0, 0]);
    std::fs::write(&partial, data).unwrap();
    drop(sink);

    let mut again = ArchiveSink::new("archive", config(tmp.path(), Compression::Gzip, 1 << 20));
    again.ship(&[rec(4, Channel::Transactions)]).await.unwrap();
    again.close().await.unwrap();
    let lines = read_lines(&dir);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(std::fs::read_dir(&dir)
        .unwrap()
        .all(|e| !e.unwrap().path().to_string_lossy().ends_with(".partial")));
}

#[tokio::test]
async fn torn_plain_tail_is_cut_after_the_last_newline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("transactions");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("transactions-1-x.ndjson.partial"),
        b"{\"a\":1}\n{\"a\":2}\n{\"a\"",
    )
    .unwrap();
    let mut sink = ArchiveSink::new("archive", config(tmp.path(), Compression::None, 1 << 20));
    sink.ship(&[]).await.unwrap();
    assert_eq!(read_lines(&dir), vec!["{\"a\":1}", "{\"a\":2}"]);
}

#[tokio::test]
async fn unwritable_destination_is_an_error_not_a_panic_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("archive");
    std::fs::write(&blocker, b"a file where the directory should be").unwrap();
    let mut sink = ArchiveSink::new("archive", config(&blocker, Compression::None, 1 << 20));
    let err = sink.ship(&[rec(1, Channel::Transactions)]).await.unwrap_err();
    assert!(err.to_string().contains("archive"), "{err}");
    std::fs::remove_file(&blocker).unwrap();
    sink.ship(&[rec(1, Channel::Transactions)]).await.unwrap();
    sink.close().await.unwrap();
    assert_eq!(read_lines(&blocker.join("transactions")).len(), 1);
}

#[tokio::test]
async fn an_idle_file_older_than_max_age_is_finished_for_collectors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), Compression::None, 1 << 20);
    cfg.max_file_age = tillgate_sdk::HumanDuration::millis(0);
    let mut sink = ArchiveSink::new("archive", cfg);
    sink.ship(&[rec(1, Channel::Alerts)]).await.unwrap();
    let dir = tmp.path().join("alerts");
    let names = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(names()[0].ends_with(".partial"), "{:?}", names());
    sink.idle().await.unwrap();
    assert!(names()[0].ends_with(".ndjson"), "{:?}", names());
    assert_eq!(read_lines(&dir).len(), 1);
}

#[tokio::test]
async fn a_busy_file_is_rotated_by_age_too() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), Compression::None, 1 << 20);
    cfg.max_file_age = tillgate_sdk::HumanDuration::millis(30);
    let mut sink = ArchiveSink::new("archive", cfg);
    for s in 1..=4 {
        sink.ship(&[rec(s, Channel::Transactions)]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sink.close().await.unwrap();
    let dir = tmp.path().join("transactions");
    assert!(
        std::fs::read_dir(&dir).unwrap().count() >= 2,
        "no age rotation while shipping"
    );
    assert_eq!(read_lines(&dir).len(), 4);
}

#[test]
fn finishing_never_replaces_a_complete_file() {
    let tmp = tempfile::tempdir().unwrap();
    let done = tmp.path().join("transactions-1-T.ndjson");
    std::fs::write(&done, "kept\n").unwrap();
    let name = file::final_name(&tmp.path().join("transactions-1-T.ndjson.partial"));
    assert_eq!(name, tmp.path().join("transactions-1-T-1.ndjson"));
}

#[tokio::test]
async fn over_max_total_bytes_the_oldest_complete_files_go_first_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), Compression::None, 2_000);
    cfg.channels = vec![Channel::Transactions];
    cfg.max_total_bytes = tillgate_sdk::ByteSize(6_000);
    let registry = prometheus::Registry::new();
    let mut sink = ArchiveSink::new("archive", cfg).with_metrics(&registry).unwrap();
    for seq in 1..=200 {
        sink.ship(&[rec(seq, Channel::Transactions)]).await.unwrap();
    }
    let dir = tmp.path().join("transactions");
    let total: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 6_000, "the archive holds {total} bytes");
    let lines = read_lines(&dir);
    let last: Vec<String> = (180..=200).map(|s| format!("\"t{s}\"")).collect();
    for want in &last {
        assert!(
            lines.iter().any(|l| l.contains(want.as_str())),
            "the newest records stay: {want}"
        );
    }
    assert!(!lines.iter().any(|l| l.contains("\"t1\"")), "the oldest went");
    let deleted = registry
        .gather()
        .into_iter()
        .find(|m| m.name() == "archive_files_deleted_total")
        .map(|m| m.get_metric()[0].get_counter().get_value())
        .unwrap_or(0.0);
    assert!(deleted >= 1.0, "deletions are counted");
}

#[tokio::test]
async fn complete_files_past_retention_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), Compression::None, 1 << 20);
    cfg.max_file_age = tillgate_sdk::HumanDuration::millis(0);
    cfg.retention = tillgate_sdk::HumanDuration::millis(200);
    let mut sink = ArchiveSink::new("archive", cfg);
    sink.ship(&[rec(1, Channel::Transactions)]).await.unwrap();
    sink.idle().await.unwrap();
    let dir = tmp.path().join("transactions");
    assert_eq!(read_lines(&dir).len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    sink.idle().await.unwrap();
    assert!(read_lines(&dir).is_empty(), "past retention, the file went");
}

/// A real filesystem that fills up (tmpfs; mounting needs root, which CI has).
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &std::path::Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir.to_path_buf())
    }
}

impl SmallFs {
    fn grow(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount runs")
            .success();
        assert!(ok, "remount");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_mid_shipment_leaves_no_torn_bytes_and_the_retry_writes_each_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = SmallFs::mount(&tmp.path().join("small"), "64k");
    // Files of ~2 KB: shipments of 10 records (~1.1 KB) often span a rotation.
    let mut sink = ArchiveSink::new("archive", config(&fs.0, Compression::None, 2_000));
    let mut acked = 0u64;
    let mut failed = None;
    for batch in 0..200u64 {
        let records: Vec<Record> = (0..10)
            .map(|i| rec(batch * 10 + i + 1, Channel::Transactions))
            .collect();
        match sink.ship(&records).await {
            Ok(()) => acked = batch * 10 + 10,
            Err(e) => {
                failed = Some((batch, e));
                break;
            }
        }
    }
    let (batch, err) = failed.expect("a 64 KiB filesystem fills up");
    assert!(err.to_string().contains("No space left"), "{err}");
    // What is on disk is exactly the acknowledged records, whole, in every file.
    let dir = fs.0.join("transactions");
    for f in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(f.unwrap().path()).unwrap();
        // (A file opened by the failed shipment is cut back to nothing.)
        assert!(
            data.is_empty() || data.last() == Some(&b'\n'),
            "no torn bytes after the last record"
        );
    }
    assert_eq!(
        read_lines(&dir).len() as u64,
        acked,
        "nothing of the failed shipment stays"
    );
    // Room again (the filesystem grows): the retry writes the failed batch once.
    fs.grow("1m");
    let records: Vec<Record> = (0..10)
        .map(|i| rec(batch * 10 + i + 1, Channel::Transactions))
        .collect();
    sink.ship(&records).await.expect("room again");
    sink.close().await.unwrap();
    let lines = read_lines(&fs.0.join("transactions"));
    let want: Vec<String> = (1..=acked + 10).map(|s| format!("t{s}")).collect();
    let got: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("every line is whole JSON")["txn_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, want, "every record once, in order, none torn");
    drop(fs);
}
