//! Request authentication: API keys and HMAC-SHA256 signatures.
//!
//! * `api-key`: `X-Api-Key: <secret>` or `Authorization: Bearer <secret>`.
//! * `hmac-sha256`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`; a
//!   request without a body (a pixel) signs its query string instead, with the signature in
//!   the `sig` parameter and the string signed being the query without `sig`, in order.
//!
//! Every comparison runs in constant time, and no error says which byte was wrong.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::secrets::Secret;
use crate::spec::AuthSpec;

/// The query parameter that carries a pixel's signature.
pub const PIXEL_SIGNATURE_PARAM: &str = "sig";
/// The header that carries a body signature, as Meta names it.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

const SIGNATURE_PREFIX: &str = "sha256=";

/// Why a request was refused (`401`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No credential was sent.
    #[error("missing credentials: send {0}")]
    Missing(&'static str),
    /// A credential was sent and is wrong.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A credential was sent in an unreadable form.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// Which credential.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The parts of a request a credential can cover.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// The raw query string without `?`.
    pub query: &'a str,
    /// The raw body.
    pub body: &'a [u8],
    /// Whether the request carries a body (`POST`); otherwise the query is signed.
    pub has_body: bool,
}

/// Checks `request` against the pipeline's auth scheme and its current secret.
pub fn authenticate(
    scheme: &AuthSpec,
    secret: Option<&Secret>,
    request: Signed<'_>,
) -> Result<(), AuthError> {
    match (scheme, secret) {
        (AuthSpec::None, _) => Ok(()),
        (AuthSpec::ApiKey { .. }, Some(secret)) => check_api_key(secret, request.headers),
        (AuthSpec::HmacSha256 { .. }, Some(secret)) if request.has_body => {
            check_body_signature(secret, request.headers, request.body)
        }
        (AuthSpec::HmacSha256 { .. }, Some(secret)) => check_query_signature(secret, request.query),
        // A scheme that needs a secret without one refuses everybody.
        (_, None) => Err(AuthError::Invalid("credentials")),
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_api_key(secret: &Secret, headers: &http::HeaderMap) -> Result<(), AuthError> {
    let key = header(headers, API_KEY_HEADER).or_else(|| {
        header(headers, http::header::AUTHORIZATION.as_str()).and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    });
    match key {
        None => Err(AuthError::Missing(
            "an X-Api-Key header or Authorization: Bearer",
        )),
        Some(key) if secret.matches(key.trim().as_bytes()) => Ok(()),
        Some(_) => Err(AuthError::Invalid("API key")),
    }
}

fn check_body_signature(
    secret: &Secret,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    let value = header(headers, SIGNATURE_HEADER).ok_or(AuthError::Missing(
        "an X-Hub-Signature-256: sha256=<hex> header",
    ))?;
    let hex_sig = value
        .trim()
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(AuthError::Malformed {
            what: "X-Hub-Signature-256",
            why: "expected `sha256=<hex>`",
        })?;
    verify(secret, body, hex_sig, "X-Hub-Signature-256")
}

fn check_query_signature(secret: &Secret, query: &str) -> Result<(), AuthError> {
    let mut signature = None;
    let mut signed = String::with_capacity(query.len());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((PIXEL_SIGNATURE_PARAM, value)) => signature = Some(value),
            _ => {
                if !signed.is_empty() {
                    signed.push('&');
                }
                signed.push_str(pair);
            }
        }
    }
    let signature = signature.ok_or(AuthError::Missing("a `sig` query parameter"))?;
    let signature = signature
        .strip_prefix(SIGNATURE_PREFIX)
        .unwrap_or(signature);
    verify(
        secret,
        signed.as_bytes(),
        signature,
        "`sig` query parameter",
    )
}

fn verify(
    secret: &Secret,
    message: &[u8],
    hex_sig: &str,
    what: &'static str,
) -> Result<(), AuthError> {
    let expected = hex::decode(hex_sig).map_err(|_| AuthError::Malformed {
        what,
        why: "not hexadecimal",
    })?;
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose())
        .map_err(|_| AuthError::Invalid(what))?;
    mac.update(message);
    mac.verify_slice(&expected)
        .map_err(|_| AuthError::Invalid(what))
}

/// The hex HMAC-SHA256 of `message` under `secret`: what a partner puts after `sha256=`.
/// Used by tests, examples and the benchmark's load generator.
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(message);
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC accepts keys of any length.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SecretRef;

    fn hmac_scheme() -> AuthSpec {
        AuthSpec::HmacSha256 {
            secret_ref: SecretRef {
                name: "a".into(),
                key: "k".into(),
            },
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn post<'a>(h: &'a http::HeaderMap, body: &'a [u8]) -> Signed<'a> {
        Signed {
            headers: h,
            query: "",
            body,
            has_body: true,
        }
    }

    #[test]
    fn a_body_signed_with_the_secret_passes_and_any_change_fails() {
        let secret = Secret::new(b"topsecret".to_vec());
        let body = br#"{"id":"1"}"#;
        let good = headers(&[(
            SIGNATURE_HEADER,
            &format!("sha256={}", sign(b"topsecret", body)),
        )]);
        assert_eq!(
            authenticate(&hmac_scheme(), Some(&secret), post(&good, body)),
            Ok(())
        );
        assert_eq!(
            authenticate(&hmac_scheme(), Some(&secret), post(&good, br#"{"id":"2"}"#)),
            Err(AuthError::Invalid("X-Hub-Signature-256"))
        );
        let none = headers(&[]);
        assert!(matches!(
            authenticate(&hmac_scheme(), Some(&secret), post(&none, body)),
            Err(AuthError::Missing(_))
        ));
        let junk = headers(&[(SIGNATURE_HEADER, "sha256=zz")]);
        assert!(matches!(
            authenticate(&hmac_scheme(), Some(&secret), post(&junk, body)),
            Err(AuthError::Malformed { .. })
        ));
    }

    #[test]
    fn a_pixel_signs_its_query_without_sig() {
        let secret = Secret::new(b"pixel-secret".to_vec());
        let query = "type=imp&session=s1&ts=1700000000000";
        let sig = sign(b"pixel-secret", query.as_bytes());
        let h = headers(&[]);
        let signed = format!("type=imp&sig={sig}&session=s1&ts=1700000000000");
        let get = |q: &str| {
            authenticate(
                &hmac_scheme(),
                Some(&secret),
                Signed {
                    headers: &h,
                    query: q,
                    body: b"",
                    has_body: false,
                },
            )
        };
        assert_eq!(get(&signed), Ok(()));
        assert!(get(&signed.replace("s1", "s2")).is_err());
        assert!(matches!(get(query), Err(AuthError::Missing(_))));
    }

    #[test]
    fn api_keys_come_in_either_header() {
        let scheme = AuthSpec::ApiKey {
            secret_ref: SecretRef {
                name: "a".into(),
                key: "k".into(),
            },
        };
        let secret = Secret::new(b"key-1".to_vec());
        for h in [
            headers(&[(API_KEY_HEADER, "key-1")]),
            headers(&[("authorization", "Bearer key-1")]),
        ] {
            assert_eq!(authenticate(&scheme, Some(&secret), post(&h, b"")), Ok(()));
        }
        let wrong = headers(&[(API_KEY_HEADER, "key-2")]);
        assert_eq!(
            authenticate(&scheme, Some(&secret), post(&wrong, b"")),
            Err(AuthError::Invalid("API key"))
        );
    }
}
