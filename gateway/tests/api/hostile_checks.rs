//! What must hold for any token and any REST query string a client sends
//! (shared with the cargo-fuzz targets `jwt` and `rest_query` through
//! `#[path]`): nothing panics, no forged token verifies, and a query is
//! either within the documented limits or a `bad_request`.

use gateway::auth::{Auth, Expected};
use gateway::query::{MAX_HISTORY_LIMIT, history_params, sync_params};
use proto::ErrorCode;
use secrecy::SecretString;

/// The HS256 secret of the checked verifier.
pub const CHECK_SECRET: &str = "hostile-input-checks";

/// The verifier the checks run against: HS256 only.
pub fn check_auth() -> Auth {
    Auth::new(
        &SecretString::from(CHECK_SECRET),
        None,
        None,
        Expected::default(),
    )
    .expect("an HS256 verifier")
}

/// Checks one token: only a token in `valid` may verify.
pub fn check_token(auth: &Auth, valid: &[String], input: &[u8]) {
    let Ok(token) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(identity) = auth.verify(token) {
        assert!(
            valid.iter().any(|v| v == token),
            "a token nobody minted verified as {}: {token:?}",
            identity.user
        );
    }
}

/// Checks one raw query string against both REST query parsers.
pub fn check_query(input: &[u8]) {
    let Ok(raw) = std::str::from_utf8(input) else {
        return;
    };
    match history_params(Some(raw)) {
        Ok(params) => {
            let max = usize::try_from(MAX_HISTORY_LIMIT).expect("a small constant");
            assert!((1..=max).contains(&params.limit), "{raw:?}: {params:?}");
        }
        Err(err) => assert_eq!(err.code(), ErrorCode::BadRequest, "{raw:?}: {err}"),
    }
    match sync_params(Some(raw)) {
        Ok(params) => assert!((1..=proto::MAX_SYNC_LIMIT).contains(&params.limit)),
        Err(err) => assert_eq!(err.code(), ErrorCode::BadRequest, "{raw:?}: {err}"),
    }
}
