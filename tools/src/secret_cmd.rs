//! `synod secret generate FILE`, and the check of a secret file's mode
//! that a node makes before it reads one.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rand::RngCore as _;
use synod_engine::runtime::node::create_dir_durably;

/// Bytes of randomness in a generated secret (written as hex).
const SECRET_BYTES: usize = 32;

/// `synod secret` commands.
#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Write a new random cluster secret to FILE, readable by its owner
    /// only (mode 0600), creating its missing parent directories (mode
    /// 0700). Refuses to overwrite an existing file.
    Generate {
        /// Where to write it.
        file: PathBuf,
    },
}

/// Why a secret file was not written, or is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file exists: a running cluster's secret is never replaced by
    /// accident.
    #[error("{}: already exists; remove it first to replace the secret", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A missing parent directory could not be created.
    #[error("{}: creating its directory: {source}", path.display())]
    CreateDir {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Creating or writing the file failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its metadata could not be read.
    #[error("--secret-file {}: {source}", path.display())]
    Stat {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Every user of the machine can read or change it.
    #[error("--secret-file {}: mode {mode:03o} lets any user of this machine read or change the secret; run `chmod 600 {}`", path.display(), path.display())]
    OpenToOthers {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Runs one `synod secret` command.
pub fn run(command: SecretCommand) -> ExitCode {
    match command {
        SecretCommand::Generate { file } => match generate(&file) {
            Ok(()) => {
                println!("{}: new secret, mode 600", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("synod secret: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes a fresh secret to `path`: created with mode 0600, so it is never
/// readable by others even for a moment, and never over an existing file.
/// Missing parent directories are made private to the owner (mode 0700),
/// and every new entry is synced, so the secret survives a power cut.
pub fn generate(path: &Path) -> Result<(), SecretError> {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let write_error = |source| SecretError::Write {
        path: path.to_path_buf(),
        source,
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    create_dir_durably(parent, 0o700).map_err(|source| SecretError::CreateDir {
        path: path.to_path_buf(),
        source,
    })?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => SecretError::Exists {
                path: path.to_path_buf(),
            },
            _ => write_error(source),
        })?;
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::File::open(parent)?.sync_all())
        .map_err(write_error)
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("--secret-file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is too short to prove anything.
    #[error("--secret-file {}: the secret must be at least 16 bytes", path.display())]
    Short {
        /// The file.
        path: PathBuf,
    },
    /// The file is open to other users.
    #[error(transparent)]
    Mode(#[from] SecretError),
}

/// A secret from its file: private to its owner, at least 16 bytes once a
/// trailing newline is cut.
pub fn read_secret(path: PathBuf) -> Result<Vec<u8>, SecretFileError> {
    let mut bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(source) => return Err(SecretFileError::Read { path, source }),
    };
    check_mode(&path)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.len() < 16 {
        return Err(SecretFileError::Short { path });
    }
    Ok(bytes)
}

/// Refuses a secret file that other users can read or write; warns when
/// its group can (a deployment may share it with a service group).
pub fn check_mode(path: &Path) -> Result<(), SecretError> {
    let mode = std::fs::metadata(path)
        .map_err(|source| SecretError::Stat {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o007 != 0 {
        return Err(SecretError::OpenToOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    if mode & 0o070 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:03o}"),
            "the secret file's group can read it; chmod 600 keeps it to its owner"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_private_long_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim_end().len(), SECRET_BYTES * 2);
        check_mode(&path).unwrap();
        let error = generate(&path).unwrap_err();
        assert!(matches!(error, SecretError::Exists { .. }), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn missing_directories_are_created_private_and_a_file_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc").join("synod").join("secret");
        generate(&path).unwrap();
        for made in [dir.path().join("etc"), dir.path().join("etc").join("synod")] {
            let mode = std::fs::metadata(&made).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{}: {mode:o}", made.display());
        }
        check_mode(&path).unwrap();
        let blocked = path.join("secret");
        let error = generate(&blocked).unwrap_err();
        assert!(matches!(error, SecretError::CreateDir { .. }), "{error}");
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn a_secret_open_to_every_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = check_mode(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        check_mode(&path).unwrap();
    }
}
