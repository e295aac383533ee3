//! Signing webhook calls: each hook gets its own secret, derived from the deployer's signing
//! key and the hook's URL, so a receiver holds only its own and the deployer holds one key.
//! A call carries `X-Capstan-Timestamp: <epoch seconds>` and `X-Capstan-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the hook's secret>`; receivers check
//! the signature and refuse old timestamps (replays).

use ring::hmac;

/// Header with the signature.
pub const SIGNATURE_HEADER: &str = "x-capstan-signature";
/// Header with the timestamp the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-capstan-timestamp";

/// The secret of the hook at `url` under the deployer's signing `key` (hex, what `capstan
/// webhook secret` prints for the receiver).
pub fn hook_secret(key: &[u8], url: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    hex::encode(hmac::sign(&k, format!("capstan webhook v1\n{url}").as_bytes()).as_ref())
}

/// The `X-Capstan-Signature` value for `body` sent at `timestamp` with the hook's `secret`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(format!("{timestamp}.").as_bytes());
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hook_has_its_own_secret_and_signatures_cover_time_and_body() {
        let a = hook_secret(b"key", "https://a.example/hook");
        let b = hook_secret(b"key", "https://b.example/hook");
        assert_ne!(a, b);
        assert_eq!(a, hook_secret(b"key", "https://a.example/hook"));
        assert_ne!(a, hook_secret(b"other", "https://a.example/hook"));
        let s = signature(&a, 100, b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_ne!(s, signature(&a, 101, b"{}"));
        assert_ne!(s, signature(&a, 100, b"{ }"));
        assert_ne!(s, signature(&b, 100, b"{}"));
    }
}
