//! Files and folders that hold personal data or secrets (the lake, ingest's
//! `rejects/` and `done/`, checkpoints, keys, TLS private keys): created
//! readable by the owner only, and a secret readable by others refused, so
//! a shared host's other users and a careless umask see nothing.

use std::path::Path;

/// Creates `dir` and its missing parents; the folders this call creates
/// are mode 0700 (existing ones are left as they are: an operator may
/// have chosen a group on purpose).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Options that create a file readable and writable by its owner only.
pub fn file_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Writes `bytes` to a new or truncated file of mode 0600.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)
}

/// Why a secret file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionError {
    /// Group or others may read it.
    #[error(
        "{path}: expected a secret file readable by its owner only (chmod 600), \
         found mode {mode:o}"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// It could not be looked at.
    #[error("{path}: cannot read its metadata: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Refuses a secret file (a key, a TLS private key) that group or others
/// may read or write. A Kubernetes Secret volume mounts files 0644 unless
/// `defaultMode` says otherwise; the shipped manifests set 0400.
pub fn check_secret_file(path: &Path) -> Result<(), PermissionError> {
    let meta = std::fs::metadata(path).map_err(|source| PermissionError::Io {
        path: path.display().to_string(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PermissionError::TooOpen {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_private_and_open_secrets_refused() {
        let root = std::env::temp_dir().join(format!("chitose-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("a/b");
        create_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700);
        let f = dir.join("k");
        write_file(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        check_secret_file(&f).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_secret_file(&f).unwrap_err().to_string();
        assert!(e.contains("644") && e.contains("chmod 600"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
