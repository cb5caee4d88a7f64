//! Atomic file output shared by every crate that writes results: bytes go to a temporary
//! file in the destination's directory, are synced, then renamed over the destination, so a
//! crash never leaves a half-written model, checkpoint or report behind. A new file gets the
//! permissions any other program would give it (0666 less the user's umask, so 0644 under the
//! usual 022); a file replaced keeps its permissions.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".secateur-").suffix(".tmp");
    let existing = std::fs::metadata(path).ok().map(|m| m.permissions());
    #[cfg(unix)]
    let new_file = {
        use std::os::unix::fs::PermissionsExt;
        // open(2) applies the umask to the mode asked for
        std::fs::Permissions::from_mode(0o666)
    };
    #[cfg(unix)]
    builder.permissions(new_file);
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if let Some(perms) = existing {
        tmp.as_file().set_permissions(perms)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_directory(dir);
    Ok(())
}

/// Makes the rename durable where the platform allows (a best effort: some file systems refuse
/// to sync a directory, and the data itself is already on disk).
fn sync_directory(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::write_atomic;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_files_follow_the_umask_and_replaced_files_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // whatever the umask of the test process, the temp-file default 0600 is not forced
        // on a file the umask allows more for, and nothing beyond 0666 is granted
        assert_eq!(mode & !0o666, 0, "{mode:o}");
        assert!(mode & 0o600 == 0o600, "{mode:o}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
