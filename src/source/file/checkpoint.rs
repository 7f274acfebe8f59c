//! Checkpoints of the file source (F2): one versioned JSON file under the source's state
//! directory, written through a temporary file, `fsync` and `rename`, so a crash at any
//! moment leaves either the old or the new checkpoint whole. The previous good copy is kept
//! as `<name>.prev` and used when the current one is missing or corrupt.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The checkpoint format version this code writes and reads.
pub const VERSION: u32 = 1;

/// One file's saved state: its identity and the acknowledged offset.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path the file had when saved (informational; identity decides).
    pub path: String,
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Hash of the first `head_len` bytes.
    pub head_hash: u64,
    /// How many head bytes were hashed (min(1 KiB, size) when saved).
    pub head_len: u64,
    /// The highest contiguous acknowledged offset (never the read offset).
    pub offset: u64,
    /// Hash of the (up to) 32 bytes before `offset`.
    pub marker: u64,
}

/// The whole checkpoint file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// One entry per tracked file.
    pub files: Vec<Entry>,
}

/// Where a checkpoint lives and how it is written. Cost: one small file write + two
/// `fsync`s per [`Store::save`].
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

/// What [`Store::load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The checkpoint (empty when none was usable).
    pub checkpoint: Checkpoint,
    /// Problems met (a corrupt file and which copy was used), to report as warnings.
    pub warnings: Vec<String>,
}

impl Store {
    /// A store of `checkpoints.json` in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("checkpoints.json"),
        }
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prev(&self) -> PathBuf {
        self.path.with_extension("json.prev")
    }

    fn tmp(&self) -> PathBuf {
        self.path.with_extension("json.tmp")
    }

    /// Reads the checkpoint: the current copy, else the previous good one, else empty. Never
    /// fails: a corrupt file is reported in [`Loaded::warnings`].
    pub fn load(&self) -> Loaded {
        let mut warnings = Vec::new();
        for p in [self.path.clone(), self.prev()] {
            match std::fs::read(&p) {
                Ok(bytes) => match parse(&bytes) {
                    Ok(c) => {
                        if p != self.path && !warnings.is_empty() {
                            warnings.push(format!("using the previous checkpoint {}", p.display()));
                        }
                        return Loaded {
                            checkpoint: c,
                            warnings,
                        };
                    }
                    Err(e) => warnings.push(format!("corrupt checkpoint {}: {e}", p.display())),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warnings.push(format!("cannot read checkpoint {}: {e}", p.display())),
            }
        }
        if !warnings.is_empty() {
            warnings
                .push("no usable checkpoint: files start as if found for the first time".into());
        }
        Loaded {
            checkpoint: Checkpoint {
                version: VERSION,
                files: Vec::new(),
            },
            warnings,
        }
    }

    /// Writes `c` atomically (tmp + fsync + rename + directory fsync); the current copy
    /// becomes the previous one. On error (disk full) the old checkpoint stays in place.
    ///
    /// # Errors
    /// The I/O error, naming the file.
    pub fn save(&self, c: &Checkpoint) -> Result<(), String> {
        let tmp = self.tmp();
        let bytes = serde_json::to_vec(c).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write checkpoint {}: {e}", tmp.display()));
        }
        // A crash between these renames leaves only `.prev`, which `load` falls back to.
        if self.path.exists() {
            let _ = std::fs::rename(&self.path, self.prev());
        }
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("cannot rename checkpoint to {}: {e}", self.path.display()))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
    let c: Checkpoint = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if c.version != VERSION {
        return Err(format!(
            "unsupported version {} (expected {VERSION})",
            c.version
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64) -> Entry {
        Entry {
            path: "/a.log".into(),
            dev: 1,
            ino: 2,
            head_hash: 3,
            head_len: 4,
            offset,
            marker: 5,
        }
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn round_trip_and_previous_copy() {
        let d = dir();
        let s = Store::new(d.path());
        assert!(s.load().checkpoint.files.is_empty());
        let c1 = Checkpoint {
            version: VERSION,
            files: vec![entry(10)],
        };
        let c2 = Checkpoint {
            version: VERSION,
            files: vec![entry(20)],
        };
        s.save(&c1).unwrap();
        s.save(&c2).unwrap();
        let l = s.load();
        assert_eq!(l.checkpoint, c2);
        assert!(l.warnings.is_empty());
        assert!(!s.tmp().exists(), "temporary file left behind");
        // Corrupt current copy: the previous good one is used and the problem reported.
        std::fs::write(s.path(), b"{\"version\":1,\"files\":[{\"pa").unwrap();
        let l = s.load();
        assert_eq!(l.checkpoint, c1);
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    }

    #[test]
    fn corrupt_without_previous_starts_empty_with_warning() {
        let d = dir();
        let s = Store::new(d.path());
        std::fs::write(s.path(), b"garbage").unwrap();
        let l = s.load();
        assert!(l.checkpoint.files.is_empty());
        assert!(l.warnings.iter().any(|w| w.contains("corrupt")));
        // Wrong version is corrupt too.
        std::fs::write(s.path(), b"{\"version\":99,\"files\":[]}").unwrap();
        assert!(s.load().warnings.iter().any(|w| w.contains("version")));
    }

    #[test]
    fn truncated_file_is_corrupt() {
        let d = dir();
        let s = Store::new(d.path());
        s.save(&Checkpoint {
            version: VERSION,
            files: vec![entry(1)],
        })
        .unwrap();
        let full = std::fs::read(s.path()).unwrap();
        std::fs::write(s.path(), &full[..full.len() / 2]).unwrap();
        let l = s.load();
        assert!(l.checkpoint.files.is_empty());
        assert!(!l.warnings.is_empty());
    }

    #[test]
    fn failed_write_keeps_old_checkpoint() {
        let d = dir();
        let s = Store::new(d.path());
        let c1 = Checkpoint {
            version: VERSION,
            files: vec![entry(10)],
        };
        s.save(&c1).unwrap();
        // Make the temporary path a directory: creating the file fails like a full disk.
        std::fs::create_dir(s.tmp()).unwrap();
        let err = s.save(&Checkpoint {
            version: VERSION,
            files: vec![entry(99)],
        });
        assert!(err.unwrap_err().contains("cannot write checkpoint"));
        assert_eq!(s.load().checkpoint, c1);
    }
}
