//! JWT authentication: HS256 with a shared secret by default, RS256 and
//! EdDSA public keys when configured, and dev tokens for development.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use proto::UserId;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Tokens longer than this are refused without parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;
/// How long a dev token lives.
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;
const SECRET_FILE: &str = "jwt-secret";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    did: Option<String>,
    /// Only written (dev tokens); jsonwebtoken checks it from the raw claims.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    iss: Option<String>,
    /// Only written (dev tokens); an `aud` may be a string or a list.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    aud: Option<String>,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user (`sub`).
    pub user: UserId,
    /// The device named by the `did` claim, not yet validated.
    pub device: Option<String>,
}

/// Claims every token must carry when configured (`iss`, `aud`).
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The required issuer, if any.
    pub issuer: Option<String>,
    /// The required audience, if any.
    pub audience: Option<String>,
}

/// Verifies tokens and mints dev tokens.
pub struct Auth {
    /// One validation per accepted algorithm, each pinned to its own key, so
    /// a token's header can never pick a key meant for another algorithm
    /// (an HS256 token "signed" with the RS256 public key is refused).
    keys: Vec<(Algorithm, DecodingKey, Validation)>,
    signing: EncodingKey,
    expected: Expected,
}

impl Auth {
    /// HS256 with `secret`, plus any configured public keys.
    pub fn new(
        secret: &SecretString,
        rs256_pem: Option<&[u8]>,
        eddsa_pem: Option<&[u8]>,
        expected: Expected,
    ) -> Result<Self> {
        let bytes = secret.expose_secret().as_bytes();
        let mut keys = vec![(Algorithm::HS256, DecodingKey::from_secret(bytes))];
        if let Some(pem) = rs256_pem {
            keys.push((
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(pem).map_err(Error::Config)?,
            ));
        }
        if let Some(pem) = eddsa_pem {
            keys.push((
                Algorithm::EdDSA,
                DecodingKey::from_ed_pem(pem).map_err(Error::Config)?,
            ));
        }
        let keys = keys
            .into_iter()
            .map(|(alg, key)| (alg, key, validation(alg, &expected)))
            .collect();
        Ok(Auth {
            keys,
            signing: EncodingKey::from_secret(bytes),
            expected,
        })
    }

    /// Checks a token: signature by a configured key, `exp` present and in
    /// the future, `sub` a valid user id. `alg: none` never matches a key.
    pub fn verify(&self, token: &str) -> Result<Identity> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::Unauthorized("token too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::Unauthorized("malformed token"))?;
        let (_, key, validation) = self
            .keys
            .iter()
            .find(|(alg, _, _)| *alg == header.alg)
            .ok_or(Error::Unauthorized("token algorithm not accepted"))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|_| Error::Unauthorized("invalid or expired token"))?;
        let user = UserId::parse(&data.claims.sub)
            .map_err(|_| Error::Unauthorized("token subject is not a valid user id"))?;
        Ok(Identity {
            user,
            device: data.claims.did,
        })
    }

    /// An HS256 token for `user`, valid for a day, with the configured
    /// `iss` and `aud` so this gateway accepts it.
    pub fn mint(&self, user: &UserId) -> Result<String> {
        let claims = Claims {
            sub: user.to_string(),
            exp: unix_now() + DEV_TOKEN_TTL_SECS,
            did: None,
            iss: self.expected.issuer.clone(),
            aud: self.expected.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.signing)
            .map_err(Error::Config)
    }
}

/// What a token signed with `alg` must satisfy: `exp` and `sub` present,
/// `exp` and `nbf` (when given) within the leeway, `iss` and `aud` when
/// configured. An `aud` is not checked unless an audience is configured.
fn validation(alg: Algorithm, expected: &Expected) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    // Off by default in jsonwebtoken: a token that is not valid yet is refused.
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &expected.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &expected.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The HS256 secret kept in `data_dir`, created (mode 0600) on first start.
pub fn load_or_create_secret(data_dir: &Path) -> std::io::Result<SecretString> {
    let path = data_dir.join(SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => {
            return Ok(SecretString::from(secret.trim().to_owned()));
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(SecretString::from(secret))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_generated_secret_file_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let secret = load_or_create_secret(dir.path()).expect("creating the secret");
        let meta = fs::metadata(dir.path().join(SECRET_FILE)).expect("the secret file exists");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(secret.expose_secret().len(), 64, "32 random bytes in hex");
        let again = load_or_create_secret(dir.path()).expect("reading it back");
        assert_eq!(again.expose_secret(), secret.expose_secret());
    }

    #[test]
    fn a_dev_token_carries_the_configured_issuer_and_audience_and_verifies() {
        let expected = Expected {
            issuer: Some("chat-tests".into()),
            audience: Some("chat".into()),
        };
        let auth = Auth::new(&SecretString::from("s3cret"), None, None, expected)
            .expect("building the verifier");
        let alice = UserId::parse("alice").expect("a user id");
        let token = auth.mint(&alice).expect("minting");
        assert_eq!(auth.verify(&token).expect("it verifies").user, alice);
    }
}
