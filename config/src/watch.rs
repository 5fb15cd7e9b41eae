//! A config file that reloads: every Meridian process re-reads its file on a change, SIGHUP or an
//! admin request. This remembers the bytes last read (by any trigger), so a poller reacts only to
//! content nobody has read yet, and a rejected file is not retried until it changes again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::ConfigErrors;
use crate::load::load_str;
use crate::snapshot::Snapshot;

/// A config file and what was last read from it.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    last: Mutex<Vec<u8>>,
}

impl ConfigFile {
    /// A config file not read yet.
    pub fn new(path: &Path) -> Self {
        ConfigFile {
            path: path.to_path_buf(),
            last: Mutex::new(Vec::new()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, validates and compiles the file, remembering the bytes read even when they are invalid.
    pub fn load(&self) -> Result<Snapshot, ConfigErrors> {
        let file = self.path.display().to_string();
        let bytes = std::fs::read(&self.path)
            .map_err(|e| ConfigErrors::file(&file, format!("cannot read config file: {e}")))?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = bytes.clone();
        let text = String::from_utf8(bytes).map_err(|_| ConfigErrors::file(&file, "the config file is not UTF-8"))?;
        let base = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        load_str(&text, &file, &base).map(Snapshot::compile)
    }

    /// Whether the file on disk differs from what was last read.
    pub fn changed(&self) -> bool {
        std::fs::read(&self.path).is_ok_and(|now| now != *self.last.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_seen_once_whoever_reads() {
        let dir = std::env::temp_dir().join(format!("meridian-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.yaml");
        std::fs::write(&path, "regions: [{ name: r, zones: [z] }]\n").unwrap();
        let f = ConfigFile::new(&path);
        assert!(f.changed(), "never read");
        f.load().unwrap();
        assert!(!f.changed());
        std::fs::write(&path, "regions: oops\n").unwrap();
        assert!(f.changed());
        assert!(f.load().is_err());
        assert!(!f.changed(), "an invalid file is not retried until it changes");
        std::fs::remove_dir_all(&dir).ok();
    }
}
