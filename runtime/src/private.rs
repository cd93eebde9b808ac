//! Files and folders that hold personal data or secrets (the lake, ingest's
//! `rejects/` and `done/`, checkpoints, keys, TLS private keys): created
//! readable by the owner only, and a secret readable by others refused, so
//! a shared host's other users see nothing.

use std::path::Path;

/// Makes everything this process creates from now on readable by its
/// owner only (umask 077: folders 0700, files 0600): the lake, ingest's
/// `done/`, `rejects/` and checkpoints, keys, logs. Called first thing by
/// the binary, so no code path can forget it; folders that already exist
/// keep the modes an operator gave them.
pub fn owner_only_umask() {
    #[cfg(unix)]
    {
        use rustix::fs::Mode;
        rustix::process::umask(Mode::RWXG | Mode::RWXO);
    }
}

/// Why a secret file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionError {
    /// Group or others may read it.
    #[error(
        "{path}: expected a secret file that others cannot read and the group \
         cannot write (chmod 600), found mode {mode:o}"
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

/// Refuses a secret file (a key, a TLS private key) that others may read
/// or write, or the group may write. Group read is tolerated: Kubernetes
/// adds it to Secret volumes of pods with an `fsGroup` (the shipped
/// manifests set `defaultMode: 0400`, which becomes 0440 there).
pub fn check_secret_file(path: &Path) -> Result<(), PermissionError> {
    let meta = std::fs::metadata(path).map_err(|source| PermissionError::Io {
        path: path.display().to_string(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o027 != 0 {
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
        owner_only_umask();
        let root = std::env::temp_dir().join(format!("chitose-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("a/b");
        std::fs::create_dir_all(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700);
        let f = dir.join("k");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        check_secret_file(&f).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o440)).unwrap();
        check_secret_file(&f).unwrap();
        for open in [0o644, 0o604, 0o620] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(open)).unwrap();
            let e = check_secret_file(&f).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{open:o}")) && e.contains("chmod 600"),
                "{e}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
