//! History requests (`GET /v1/conversations/{id}/messages`) answered on the
//! low-priority thread when the message service is remote: the whole
//! request (token check, read limits, the call, the JSON page), so that a
//! history flood takes CPU from nothing but history. Everything else runs
//! where it was. Requests beyond the runtime's queue bound are answered
//! 503 `unavailable` at once.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::state::AppState;

/// Whether a request reads a page of history.
fn is_history(request: &Request) -> bool {
    request.method() == Method::GET
        && request
            .uri()
            .path()
            .strip_prefix("/v1/conversations/")
            .is_some_and(|rest| rest.ends_with("/messages") && rest.matches('/').count() == 1)
}

/// Middleware: runs history requests on `state.history_runtime`, if any.
pub async fn history_in_background(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(background) = state.history_runtime.clone() else {
        return next.run(request).await;
    };
    if !is_history(&request) {
        return next.run(request).await;
    }
    match background.run(next.run(request)).await {
        Ok(response) => response,
        Err(not_run) => Error::from(msg_service::Error::from(storage::Error::Unavailable(
            format!("history was not read: {not_run:?}").into(),
        )))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap_or_default()
    }

    #[test]
    fn only_history_reads_go_to_the_background() {
        assert!(is_history(&request(
            Method::GET,
            "/v1/conversations/g:x/messages?limit=5"
        )));
        assert!(is_history(&request(
            Method::GET,
            "/v1/conversations/dm:a:b/messages"
        )));
        assert!(!is_history(&request(
            Method::POST,
            "/v1/conversations/g:x/messages"
        )));
        assert!(!is_history(&request(Method::GET, "/v1/conversations/g:x")));
        assert!(!is_history(&request(
            Method::GET,
            "/v1/conversations/g:x/members/messages"
        )));
        assert!(!is_history(&request(Method::GET, "/v1/sync")));
    }
}
