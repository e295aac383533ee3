//! Bearer tokens: `capstan_<id>_<secret>`. Only a keyed hash of the secret is stored, so a copy
//! of etcd does not hold working tokens. Secrets are 256 random bits, so one HMAC-SHA256 is
//! enough (no password hashing needed: there is nothing to guess), and the check is constant
//! time.

use ring::hmac;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::principal::Principal;

/// Start of every token.
pub const TOKEN_PREFIX: &str = "capstan_";

/// Hex digits in a token id.
const ID_HEX: usize = 16;
/// Hex digits in a token secret.
const SECRET_HEX: usize = 64;

/// Fixed HMAC key for stored hashes: it separates these hashes from any other SHA-256 use.
const HASH_KEY: &[u8] = b"capstan token secret v1";

/// A token as a caller presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    /// The id: the key under `/capstan/iam/tokens/`.
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl Bearer {
    /// Parses `capstan_<id>_<secret>`; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex_of(id, ID_HEX) && hex_of(secret, SECRET_HEX)).then(|| Self {
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }

    /// A new random token.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, ring::error::Unspecified> {
        let mut id = [0u8; ID_HEX / 2];
        let mut secret = [0u8; SECRET_HEX / 2];
        rng.fill(&mut id)?;
        rng.fill(&mut secret)?;
        Ok(Self {
            id: hex::encode(id),
            secret: hex::encode(secret),
        })
    }

    /// The text the caller sends.
    pub fn text(&self) -> String {
        format!("{TOKEN_PREFIX}{}_{}", self.id, self.secret)
    }

    /// The hash stored for its secret (hex).
    pub fn secret_hash(&self) -> String {
        hex::encode(hmac::sign(&hash_key(), self.secret.as_bytes()).as_ref())
    }
}

fn hash_key() -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, HASH_KEY)
}

/// A stored token, at `/capstan/iam/tokens/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRecord {
    /// The id (the key's last segment).
    pub token_id: String,
    /// Who the token acts as.
    pub principal: Principal,
    /// HMAC-SHA256 of the secret under a fixed key, hex.
    pub secret_hash: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// When it was made, epoch seconds.
    pub created_at: u64,
    /// When it stops working, epoch seconds; never if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl TokenRecord {
    /// Whether `bearer` is this token and it has not expired at `now` (epoch seconds).
    pub fn accepts(&self, bearer: &Bearer, now: u64) -> bool {
        let Ok(stored) = hex::decode(&self.secret_hash) else {
            return false;
        };
        let live = self.expires_at.is_none_or(|t| now < t);
        let same = hmac::verify(&hash_key(), bearer.secret.as_bytes(), &stored).is_ok();
        self.token_id == bearer.id && same && live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn a_generated_token_parses_back_and_its_record_accepts_only_it() {
        let t = Bearer::generate(&SystemRandom::new()).expect("rng");
        assert_eq!(Bearer::parse(&t.text()), Some(t.clone()));
        let record = TokenRecord {
            token_id: t.id.clone(),
            principal: Principal::parse("capstan://user/ci").expect("valid"),
            secret_hash: t.secret_hash(),
            description: String::new(),
            created_at: 100,
            expires_at: Some(200),
        };
        assert!(record.accepts(&t, 150));
        assert!(!record.accepts(&t, 200), "expired");
        let mut other = t.clone();
        other.secret = "0".repeat(SECRET_HEX);
        assert!(!record.accepts(&other, 150));
        assert!(!record.secret_hash.contains(&t.secret));
    }

    #[test]
    fn only_well_formed_tokens_parse() {
        let id = "0123456789abcdef";
        let secret = "a".repeat(SECRET_HEX);
        assert!(Bearer::parse(&format!("capstan_{id}_{secret}")).is_some());
        for bad in [
            format!("capstan_{id}{secret}"),
            format!("capstan_{id}_{}", &secret[1..]),
            format!("token_{id}_{secret}"),
            format!("capstan_{id}_{}g", &secret[1..]),
            String::new(),
        ] {
            assert!(Bearer::parse(&bad).is_none(), "{bad}");
        }
    }
}
