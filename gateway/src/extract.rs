//! Request extractors that answer bad input with this API's error bodies:
//! the caller's identity from `Authorization`, JSON bodies, query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header, request::Parts};
use proto::UserId;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::state::AppState;

/// The authenticated caller of a REST request (`Authorization: Bearer`).
pub struct Caller(pub UserId);

/// The bearer token of a request's `Authorization` header, if it has one.
/// A header that is present but not a bearer token is an error.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthorized("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(Error::Unauthorized("Authorization must be `Bearer <jwt>`")),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token =
            bearer_token(&parts.headers)?.ok_or(Error::Unauthorized("missing bearer token"))?;
        Ok(Caller(state.auth.verify(token)?.user))
    }
}

/// A JSON request body within the body limit.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(Error::BadRequest(
                "the body must be application/json".into(),
            ));
        }
        let limit = state.limits.max_body_bytes;
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| {
                Error::Invalid(proto::ProtoError::TooLarge {
                    what: "request body",
                    limit,
                })
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            // serde quotes the offending value: keep the echo short.
            .map_err(|e| {
                Error::BadRequest(format!(
                    "invalid JSON body: {}",
                    proto::excerpt(&e.to_string())
                ))
            })
    }
}
