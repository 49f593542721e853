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
}

/// Who a valid token speaks for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user (`sub`).
    pub user: UserId,
    /// The device named by the `did` claim, not yet validated.
    pub device: Option<String>,
}

/// Verifies tokens and mints dev tokens.
pub struct Auth {
    keys: Vec<(Algorithm, DecodingKey)>,
    signing: EncodingKey,
}

impl Auth {
    /// HS256 with `secret`, plus any configured public keys.
    pub fn new(
        secret: &SecretString,
        rs256_pem: Option<&[u8]>,
        eddsa_pem: Option<&[u8]>,
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
        Ok(Auth {
            keys,
            signing: EncodingKey::from_secret(bytes),
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
        let (alg, key) = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or(Error::Unauthorized("token algorithm not accepted"))?;
        let mut validation = Validation::new(*alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|_| Error::Unauthorized("invalid or expired token"))?;
        let user = UserId::parse(&data.claims.sub)
            .map_err(|_| Error::Unauthorized("token subject is not a valid user id"))?;
        Ok(Identity {
            user,
            device: data.claims.did,
        })
    }

    /// An HS256 token for `user`, valid for a day.
    pub fn mint(&self, user: &UserId) -> Result<String> {
        let claims = Claims {
            sub: user.to_string(),
            exp: unix_now() + DEV_TOKEN_TTL_SECS,
            did: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.signing)
            .map_err(Error::Config)
    }
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
