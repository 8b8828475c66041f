//! A real filesystem that fills up: a tmpfs of a given size mounted on a test's
//! directory (needs root, which CI has; without it the test says why and fails, it is
//! never counted as passed). Unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
#[derive(Debug)]
pub struct SmallFs {
    pub dir: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `size` (`"16m"`) on `dir` (created).
    pub fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "a disk-full test needs to mount a tmpfs (run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { dir: dir.to_path_buf() }
    }

    /// Gives the filesystem a new size (room comes back, or goes).
    pub fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("mount runs")
            .success();
        assert!(ok, "remount {} to {size}", self.dir.display());
    }

    /// Bytes free now.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: a process of the test may still hold a file on it.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
