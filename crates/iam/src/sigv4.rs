//! AWS Signature Version 4, as the aws CLI and the SDKs sign ECS calls: the check of one request
//! against the secret of the access key it names. Pure: the caller finds the secret and the time.
//!
//! ```text
//! Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<yyyymmdd>/<region>/<service>/aws4_request,
//!                SignedHeaders=<h1>;<h2>…, Signature=<hex>
//! canonical   = METHOD \n URI \n QUERY \n (name:value \n)* \n h1;h2… \n hex(sha256(body))
//! to sign     = AWS4-HMAC-SHA256 \n <x-amz-date> \n <date>/<region>/<service>/aws4_request \n
//!               hex(sha256(canonical))
//! key         = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")
//! signature   = hex(HMAC(key, to sign))
//! ```
//!
//! The request's `x-amz-date` must be within [`MAX_SKEW_SECS`] of now, both ways, as AWS checks,
//! and `host` and `x-amz-date` must be among the signed headers (so a signature cannot be moved
//! to another endpoint or replayed later). Any region is accepted; the service must be the one
//! the endpoint serves.

use ring::{digest, hmac};

/// How far a request's time may be from ours (AWS: 5 minutes).
pub const MAX_SKEW_SECS: i64 = 300;

/// The one algorithm.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request's signature was not accepted; the messages are AWS's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No `Authorization` header (or not SigV4).
    #[error("Missing Authentication Token")]
    Missing,
    /// The header cannot be parsed, or a required part is missing.
    #[error("{0}")]
    Malformed(String),
    /// The request is older than the allowed skew.
    #[error("Signature expired: {request} is now earlier than {limit} ({now} - 5 min.)")]
    Expired {
        /// The request's x-amz-date.
        request: String,
        /// Now minus the skew.
        limit: String,
        /// Now.
        now: String,
    },
    /// The request is dated in the future beyond the skew.
    #[error("Signature not yet current: {request} is still later than {limit} ({now} + 5 min.)")]
    NotYetCurrent {
        /// The request's x-amz-date.
        request: String,
        /// Now plus the skew.
        limit: String,
        /// Now.
        now: String,
    },
    /// The signature is not the one the secret gives.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key_id: String,
    /// The scope's date, `yyyymmdd`.
    pub date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// Signed header names, lower case, as listed.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
}

impl Authorization {
    /// Parses the header's value.
    pub fn parse(value: &str) -> Result<Self, SigError> {
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .ok_or(SigError::Missing)?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            match k.trim() {
                "Credential" => credential = Some(v.trim()),
                "SignedHeaders" => signed = Some(v.trim()),
                "Signature" => signature = Some(v.trim()),
                _ => {}
            }
        }
        let missing = |what: &str| {
            SigError::Malformed(format!(
                "Authorization header requires '{what}' parameter. Authorization={value}"
            ))
        };
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, terminal] = scope[..] else {
            return Err(SigError::Malformed(format!(
                "Credential should be scoped to a valid region, service and date: {credential}"
            )));
        };
        if terminal != "aws4_request" || key.is_empty() || date.len() != 8 {
            return Err(SigError::Malformed(format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminal}'"
            )));
        }
        Ok(Self {
            access_key_id: key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers: signed.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature.to_ascii_lowercase(),
        })
    }
}

/// One HTTP request as received.
#[derive(Debug, Clone)]
pub struct SignedRequest<'a> {
    /// `POST`, `GET`, …
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Every header (name, value); names in any case.
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| {
            values
                .iter()
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The request's `x-amz-date`.
    pub fn amz_date(&self) -> Option<String> {
        self.header("x-amz-date")
    }
}

/// Checks `req`, signed as `auth` says, with `secret` for `service`, at `now` (epoch seconds).
pub fn verify(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
    service: &str,
    now: i64,
) -> Result<(), SigError> {
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigError::Malformed(format!(
                "'{required}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    if auth.service != service {
        return Err(SigError::Malformed(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    let amz_date = req
        .amz_date()
        .ok_or_else(|| SigError::Malformed("Missing X-Amz-Date header".into()))?;
    let when = parse_amz_date(&amz_date).ok_or_else(|| {
        SigError::Malformed(format!(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\": {amz_date}"
        ))
    })?;
    if when < now - MAX_SKEW_SECS {
        return Err(SigError::Expired {
            request: amz_date,
            limit: format_amz_date(now - MAX_SKEW_SECS),
            now: format_amz_date(now),
        });
    }
    if when > now + MAX_SKEW_SECS {
        return Err(SigError::NotYetCurrent {
            request: amz_date,
            limit: format_amz_date(now + MAX_SKEW_SECS),
            now: format_amz_date(now),
        });
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::Malformed(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            &amz_date[..8]
        )));
    }
    let expected = signature(req, auth, secret, &amz_date)?;
    let given = hex::decode(&auth.signature).map_err(|_| SigError::Mismatch)?;
    // Constant time: verify the expected MAC against the given bytes with a throwaway key.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"capstan sigv4 compare");
    let tag = hmac::sign(&key, &expected);
    hmac::verify(&key, &given, tag.as_ref()).map_err(|_| SigError::Mismatch)
}

/// The signature (raw bytes) `req` should carry under `auth`'s scope with `secret`.
pub fn signature(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
    amz_date: &str,
) -> Result<Vec<u8>, SigError> {
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let value = req.header(name).ok_or_else(|| {
            SigError::Malformed(format!("the signed header '{name}' is not in the request"))
        })?;
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        if req.path.is_empty() {
            "/".to_string()
        } else {
            encode(req.path, false)
        },
        canonical_query(req.query),
        canonical_headers,
        auth.signed_headers.join(";"),
        hex::encode(digest::digest(&digest::SHA256, req.body))
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [
        auth.date.as_str(),
        auth.region.as_str(),
        auth.service.as_str(),
        "aws4_request",
    ] {
        key = mac(&key, part.as_bytes());
    }
    Ok(mac(&key, to_sign.as_bytes()))
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// Percent-encodes as SigV4 does: unreserved characters kept, `/` kept in paths.
fn encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k), true), encode(&decode(v), true))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `yyyymmddThhmmssZ` as epoch seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Epoch seconds as `yyyymmddThhmmssZ`.
pub fn format_amz_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// Howard Hinnant's civil calendar algorithms (days since 1970-01-01).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's published example credentials (the SigV4 test suite's).
    const KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn headers(date: &str) -> Vec<(String, String)> {
        [("Host", "example.amazonaws.com"), ("X-Amz-Date", date)]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_sigv4_test_suites_get_vanilla_signature() {
        let h = headers("20150830T123600Z");
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        let auth = Authorization::parse(&format!(
            "AWS4-HMAC-SHA256 Credential={KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ))
        .expect("parses");
        let sig = signature(&req, &auth, SECRET, "20150830T123600Z").expect("signs");
        assert_eq!(hex::encode(sig), auth.signature);
        let now = parse_amz_date("20150830T123600Z").expect("date");
        assert_eq!(verify(&req, &auth, SECRET, "service", now), Ok(()));
    }

    fn signed(date: &str, body: &'static [u8]) -> (Vec<(String, String)>, Authorization) {
        let h = headers(date);
        let mut auth = Authorization {
            access_key_id: KEY.into(),
            date: date[..8].into(),
            region: "eu-west-3".into(),
            service: "ecs".into(),
            signed_headers: vec!["host".into(), "x-amz-date".into()],
            signature: String::new(),
        };
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body,
        };
        auth.signature = hex::encode(signature(&req, &auth, SECRET, date).expect("signs"));
        (h, auth)
    }

    #[test]
    fn a_changed_body_secret_service_or_time_is_refused() {
        let date = "20261202T100000Z";
        let now = parse_amz_date(date).expect("date");
        let (h, auth) = signed(date, b"{}");
        let req = |body: &'static [u8]| SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body,
        };
        assert_eq!(verify(&req(b"{}"), &auth, SECRET, "ecs", now), Ok(()));
        assert_eq!(
            verify(&req(b"{\"a\":1}"), &auth, SECRET, "ecs", now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(&req(b"{}"), &auth, "another secret", "ecs", now),
            Err(SigError::Mismatch)
        );
        assert!(matches!(
            verify(&req(b"{}"), &auth, SECRET, "logs", now),
            Err(SigError::Malformed(_))
        ));
        assert_eq!(
            verify(&req(b"{}"), &auth, SECRET, "ecs", now + MAX_SKEW_SECS),
            Ok(()),
            "five minutes late is still on time"
        );
        let late = verify(&req(b"{}"), &auth, SECRET, "ecs", now + MAX_SKEW_SECS + 1);
        assert_eq!(
            late.map_err(|e| e.to_string()),
            Err("Signature expired: 20261202T100000Z is now earlier than 20261202T100001Z (20261202T100501Z - 5 min.)".to_string())
        );
        assert!(matches!(
            verify(&req(b"{}"), &auth, SECRET, "ecs", now - MAX_SKEW_SECS - 1),
            Err(SigError::NotYetCurrent { .. })
        ));
    }

    #[test]
    fn host_and_date_must_be_signed() {
        let date = "20261202T100000Z";
        let now = parse_amz_date(date).expect("date");
        let (h, mut auth) = signed(date, b"{}");
        auth.signed_headers.retain(|n| n != "host");
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"{}",
        };
        assert!(matches!(
            verify(&req, &auth, SECRET, "ecs", now),
            Err(SigError::Malformed(m)) if m.contains("'host'")
        ));
    }

    #[test]
    fn headers_that_are_not_sigv4_are_told_apart() {
        assert_eq!(Authorization::parse("Bearer x"), Err(SigError::Missing));
        for bad in [
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=K/20261202/r/ecs/aws4_request, Signature=00",
            "AWS4-HMAC-SHA256 Credential=K/20261202/ecs/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=K/20261202/r/ecs/other, SignedHeaders=host, Signature=00",
        ] {
            assert!(
                matches!(Authorization::parse(bad), Err(SigError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        for s in ["19700101T000000Z", "20261202T235959Z", "20240229T120000Z"] {
            let t = parse_amz_date(s).expect(s);
            assert_eq!(format_amz_date(t), s);
        }
        assert_eq!(parse_amz_date("20261202T100000Z"), Some(1_796_205_600));
        for bad in [
            "2026-12-02T10:00:00Z",
            "20261302T100000Z",
            "20261202T100000",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_are_sorted_and_encoded() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a%20b&x"), "k=a%20b&x=");
        assert_eq!(encode("/a b/c", false), "/a%20b/c");
    }
}
