//! Secrets at rest: client secrets and passwords are sealed with AES-256-GCM before they reach the store, under a
//! key from `DYNSYNC_SECRET_KEY` or from a key file created on first start that only its owner can read.
//! A sealed value is bound to the resource it belongs to, so it cannot be moved to another row.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use dataverse::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("DYNSYNC_SECRET_KEY is not a key: give 32 random bytes in base64 (for example `openssl rand -base64 32`)")]
    BadKey,
    #[error(
        "the key file {path} is not a key (32 bytes in base64): restore it from your backup, or remove it only if the store is new"
    )]
    BadKeyFile { path: PathBuf },
    #[error("could not read or create the key file {path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error(
        "a stored secret cannot be decrypted with this key: dynsync was started with another DYNSYNC_SECRET_KEY or key file than the one that stored it"
    )]
    WrongKey,
}

/// The key that seals and opens secrets.
pub struct SecretKey {
    cipher: Aes256Gcm,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

const SEALED_PREFIX: &str = "v1:";
pub const KEY_FILE: &str = "secret.key";

impl SecretKey {
    pub fn from_base64(text: &str) -> Option<SecretKey> {
        let bytes = BASE64.decode(text.trim()).ok()?;
        (bytes.len() == 32).then(|| SecretKey { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)) })
    }

    /// The key from `DYNSYNC_SECRET_KEY` if given, else from `<data_dir>/secret.key`, created with mode 0600 when
    /// it is not there yet.
    pub fn load(from_environment: Option<&str>, data_dir: &Path) -> Result<SecretKey, SecretError> {
        if let Some(text) = from_environment {
            return SecretKey::from_base64(text).ok_or(SecretError::BadKey);
        }
        let path = data_dir.join(KEY_FILE);
        let io = |source| SecretError::KeyFile { path: path.clone(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => SecretKey::from_base64(&text).ok_or_else(|| SecretError::BadKeyFile { path: path.clone() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let text = BASE64.encode(key);
                write_private(&path, &format!("{text}\n")).map_err(io)?;
                tracing::info!(path = %path.display(), "created the key that encrypts stored secrets; back it up");
                Ok(SecretKey::from_base64(&text).expect("a fresh key is valid"))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Encrypts a secret for the resource `context`.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce_bytes: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .expect("AES-GCM encrypts any message of this size");
        let mut out = nonce_bytes.to_vec();
        out.extend(sealed);
        format!("{SEALED_PREFIX}{}", BASE64.encode(out))
    }

    /// Decrypts what [`SecretKey::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, SecretError> {
        let bytes =
            sealed.strip_prefix(SEALED_PREFIX).and_then(|b| BASE64.decode(b).ok()).ok_or(SecretError::WrongKey)?;
        if bytes.len() < 12 {
            return Err(SecretError::WrongKey);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| SecretError::WrongKey)
    }
}

/// Writes a file only its owner can read (0600 on Unix), refusing to overwrite one that exists.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// A new random token: `prefix`, then 32 random bytes in hex. The prefix says what it opens (`dsk_` the operator's
/// API token, `dst_` a token made through the API, `lis_` a lead intake's URL), so a leaked one is recognized.
pub fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let key = SecretKey::from_base64(&BASE64.encode([7u8; 32])).unwrap();
        let sealed = key.seal("abcde~secret", "connection:1");
        assert!(!sealed.contains("abcde"));
        assert_ne!(sealed, key.seal("abcde~secret", "connection:1"), "a fresh nonce each time");
        assert_eq!(key.open(&sealed, "connection:1").unwrap().expose(), "abcde~secret");
        assert!(matches!(key.open(&sealed, "connection:2"), Err(SecretError::WrongKey)));
        let other = SecretKey::from_base64(&BASE64.encode([8u8; 32])).unwrap();
        assert!(matches!(other.open(&sealed, "connection:1"), Err(SecretError::WrongKey)));
        assert!(SecretKey::from_base64("c2hvcnQ=").is_none());
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretKey::load(None, dir.path()).unwrap();
        let sealed = first.seal("s", "c");
        let again = SecretKey::load(None, dir.path()).unwrap();
        assert_eq!(again.open(&sealed, "c").unwrap().expose(), "s");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(SecretKey::load(Some("nope"), dir.path()), Err(SecretError::BadKey)));
    }
}
