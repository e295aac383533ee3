//! Access keys for the ECS endpoint: an id and a secret, as the aws CLI and SDKs hold them.
//! SigV4 needs the secret itself to check a signature (a hash would not do), so it is stored
//! sealed with AES-256-GCM under the API's encryption key ([`SealingKey`], a file only the API
//! reads): a copy of etcd alone holds no working key. The key id is the sealed data's
//! associated data, so a sealed secret cannot be moved to another key's record.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::principal::Principal;

/// Start of every Capstan access key id (AWS's are `AKIA…`; ours cannot be mistaken for them).
pub const KEY_ID_PREFIX: &str = "AKCS";

/// Why a key or a sealed secret could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The encryption key file does not hold 32 bytes (raw, or 64 hex digits).
    #[error("an encryption key is 32 bytes: 64 hex digits (openssl rand -hex 32) or 32 raw bytes")]
    BadKey,
    /// The sealed text is not `v1:<nonce>:<ciphertext>`.
    #[error("the sealed secret is not in the v1 format")]
    Format,
    /// The secret does not open under this key (another key, or tampered with).
    #[error("the sealed secret does not open with this API's encryption key")]
    Open,
    /// No randomness.
    #[error("the system's random number generator failed")]
    Random,
}

/// The API's key for secrets at rest.
pub struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

impl SealingKey {
    /// A new key file's contents: 32 fresh random bytes as 64 hex digits and a newline.
    pub fn generate(rng: &dyn SecureRandom) -> Result<String, SealError> {
        let mut key = [0u8; 32];
        rng.fill(&mut key).map_err(|_| SealError::Random)?;
        Ok(format!("{}\n", hex::encode(key)))
    }

    /// A key from a key file's contents: 64 hex digits (whitespace around ignored) or 32 bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let text = std::str::from_utf8(bytes).map(str::trim).ok();
        let raw = match text {
            Some(t) if t.len() == 64 => hex::decode(t).map_err(|_| SealError::BadKey)?,
            _ if bytes.len() == 32 => bytes.to_vec(),
            _ => return Err(SealError::BadKey),
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Seals `secret` for the record of `key_id`.
    pub fn seal(
        &self,
        key_id: &str,
        secret: &str,
        rng: &dyn SecureRandom,
    ) -> Result<String, SealError> {
        let mut nonce = [0u8; 12];
        rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(key_id)),
                &mut data,
            )
            .map_err(|_| SealError::Random)?;
        Ok(format!("v1:{}:{}", hex::encode(nonce), hex::encode(data)))
    }

    /// Opens what [`SealingKey::seal`] made for `key_id`.
    pub fn open(&self, key_id: &str, sealed: &str) -> Result<String, SealError> {
        let mut parts = sealed.split(':');
        let (Some("v1"), Some(nonce), Some(data), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Format);
        };
        let nonce: [u8; 12] = hex::decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SealError::Format)?;
        let mut data = hex::decode(data).map_err(|_| SealError::Format)?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(key_id)),
                &mut data,
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

fn aad(key_id: &str) -> Vec<u8> {
    format!("capstan access key {key_id}").into_bytes()
}

/// A new access key as its holder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// `AKCS` and 16 characters of base32.
    pub id: String,
    /// 40 characters of base64's alphabet, as AWS's secrets look.
    pub secret: String,
}

impl AccessKey {
    /// A new random key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, SealError> {
        const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut id = [0u8; 16];
        let mut secret = [0u8; 40];
        rng.fill(&mut id).map_err(|_| SealError::Random)?;
        rng.fill(&mut secret).map_err(|_| SealError::Random)?;
        // 32 and 64 divide 256, so masking keeps every character equally likely.
        Ok(Self {
            id: KEY_ID_PREFIX
                .chars()
                .chain(id.iter().map(|b| B32[usize::from(b & 31)] as char))
                .collect(),
            secret: secret
                .iter()
                .map(|b| B64[usize::from(b & 63)] as char)
                .collect(),
        })
    }
}

/// Whether `id` looks like a Capstan access key id (the key under `/capstan/iam/access-keys/`).
pub fn valid_key_id(id: &str) -> bool {
    id.len() == 20
        && id.starts_with(KEY_ID_PREFIX)
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// A stored access key, at `/capstan/iam/access-keys/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessKeyRecord {
    /// The id (the key's last segment).
    pub access_key_id: String,
    /// Who requests signed with it act as.
    pub principal: Principal,
    /// The secret, sealed with [`SealingKey::seal`].
    pub sealed_secret: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// When it was made, epoch seconds.
    pub created_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn key(byte: u8) -> SealingKey {
        SealingKey::from_file_bytes(hex::encode([byte; 32]).as_bytes()).expect("a key")
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_for_its_id() {
        let rng = SystemRandom::new();
        let k = AccessKey::generate(&rng).expect("rng");
        assert!(valid_key_id(&k.id), "{}", k.id);
        assert_eq!(k.secret.len(), 40);
        let sealed = key(1).seal(&k.id, &k.secret, &rng).expect("seals");
        assert!(!sealed.contains(&k.secret));
        assert_eq!(key(1).open(&k.id, &sealed), Ok(k.secret.clone()));
        assert_eq!(key(2).open(&k.id, &sealed), Err(SealError::Open));
        let other = AccessKey::generate(&rng).expect("rng");
        assert_eq!(key(1).open(&other.id, &sealed), Err(SealError::Open));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('0') { '1' } else { '0' });
        assert_eq!(key(1).open(&k.id, &tampered), Err(SealError::Open));
        assert_eq!(key(1).open(&k.id, "v2:00:00"), Err(SealError::Format));
    }

    #[test]
    fn key_files_hold_hex_or_raw_bytes() {
        assert!(SealingKey::from_file_bytes(format!("{}\n", "ab".repeat(32)).as_bytes()).is_ok());
        assert!(SealingKey::from_file_bytes(&[7u8; 32]).is_ok());
        for bad in [&b"short"[..], &[0u8; 31][..], "zz".repeat(32).as_bytes()] {
            assert_eq!(
                SealingKey::from_file_bytes(bad).map(|_| ()),
                Err(SealError::BadKey)
            );
        }
    }

    #[test]
    fn key_ids_are_checked() {
        assert!(valid_key_id("AKCSABCDEFGHIJ234567"));
        for bad in ["AKIAABCDEFGHIJ234567", "AKCSabcdefghij234567", "AKCS1", ""] {
            assert!(!valid_key_id(bad), "{bad}");
        }
    }
}
