//! Bad input: every validation error is typed, names the field, and maps to
//! a stable wire code; storage failures map to retryable or internal errors.

use std::error::Error as _;

use msg_service::Error;
use proto::{ErrorCode, MAX_BODY_BYTES, ProtoError, SendRequest};

/// The fields of a send frame: `client_msg_id`, `conv_id`, `to`, `kind`, `body`.
type Fields<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<String>,
);

fn request(fields: Fields<'_>) -> Result<SendRequest, ProtoError> {
    let (id, conv, to, kind, body) = fields;
    SendRequest::new(id, conv, to, kind, body)
}

fn ok_body() -> Option<String> {
    Some("hi".to_owned())
}

#[test]
fn send_requests_with_bad_fields_are_refused_with_errors_naming_the_field() {
    let long_id = "x".repeat(65);
    let cases: Vec<(&str, Fields<'_>, &str)> = vec![
        (
            "id with a space",
            (Some("a b"), None, Some("bob"), None, ok_body()),
            "client_msg_id",
        ),
        (
            "empty id",
            (Some(""), None, Some("bob"), None, ok_body()),
            "client_msg_id",
        ),
        (
            "id of 65 chars",
            (Some(&long_id), None, Some("bob"), None, ok_body()),
            "client_msg_id",
        ),
        (
            "no id",
            (None, None, Some("bob"), None, ok_body()),
            "client_msg_id",
        ),
        (
            "unsorted dm",
            (Some("c"), Some("dm:bob:alice"), None, None, ok_body()),
            "conv_id",
        ),
        (
            "self dm",
            (Some("c"), Some("dm:bob:bob"), None, None, ok_body()),
            "conv_id",
        ),
        (
            "unknown conv kind",
            (Some("c"), Some("x:1"), None, None, ok_body()),
            "conv_id",
        ),
        (
            "bad peer",
            (Some("c"), None, Some("-bob"), None, ok_body()),
            "user id",
        ),
        (
            "peer with a colon",
            (Some("c"), None, Some("a:b"), None, ok_body()),
            "user id",
        ),
        (
            "both targets",
            (Some("c"), Some("g:x"), Some("bob"), None, ok_body()),
            "to",
        ),
        (
            "no target",
            (Some("c"), None, None, None, ok_body()),
            "conv_id or to",
        ),
        (
            "unknown kind",
            (Some("c"), None, Some("bob"), Some("image"), ok_body()),
            "kind",
        ),
        (
            "empty body",
            (Some("c"), None, Some("bob"), None, Some(String::new())),
            "body",
        ),
        (
            "no body",
            (Some("c"), None, Some("bob"), None, None),
            "body",
        ),
    ];
    for (case, fields, field) in cases {
        let err = request(fields).expect_err(case);
        assert!(
            err.to_string().contains(field),
            "{case}: `{err}` should name {field}"
        );
        assert_eq!(err.code(), ErrorCode::BadRequest, "{case}");
        let service_err = Error::from(err);
        assert_eq!(service_err.code(), ErrorCode::BadRequest, "{case}");
        assert!(
            service_err.to_string().contains(field),
            "{case}: {service_err}"
        );
    }
}

#[test]
fn a_body_over_16_kib_is_too_large_and_one_of_exactly_16_kib_is_fine() {
    let at_limit = request((
        Some("c"),
        None,
        Some("bob"),
        None,
        Some("x".repeat(MAX_BODY_BYTES)),
    ));
    assert!(at_limit.is_ok(), "{at_limit:?}");
    let over = request((
        Some("c"),
        None,
        Some("bob"),
        None,
        Some("x".repeat(MAX_BODY_BYTES + 1)),
    ));
    let err = over.expect_err("too large");
    assert!(
        matches!(err, ProtoError::TooLarge { what: "body", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("body"), "{err}");
    let service_err = Error::from(err);
    assert_eq!(service_err.code(), ErrorCode::TooLarge);
    assert_eq!(service_err.code().http_status(), 413);
}

#[test]
fn the_body_limit_counts_utf8_bytes_not_characters() {
    let two_byte_chars = "é".repeat(MAX_BODY_BYTES / 2 + 1);
    let err =
        request((Some("c"), None, Some("bob"), None, Some(two_byte_chars))).expect_err("too large");
    assert_eq!(err.code(), ErrorCode::TooLarge);
}

#[test]
fn forbidden_says_not_a_member_without_revealing_more() {
    let err = Error::Forbidden;
    assert_eq!(err.code(), ErrorCode::Forbidden);
    assert_eq!(err.code().as_str(), "forbidden");
    assert_eq!(err.code().http_status(), 403);
    assert_eq!(err.retry_after_ms(), None);
    assert_eq!(err.to_string(), "not a member of this conversation");
}

#[test]
fn a_storage_outage_is_unavailable_with_a_retry_delay_and_keeps_its_cause() {
    let err = Error::from(storage::Error::Unavailable("disk gone".into()));
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(err.retry_after_ms().is_some_and(|ms| ms > 0), "{err:?}");
    let source = err.source().expect("the cause is kept");
    assert!(source.to_string().contains("disk gone"), "{source}");
}

#[test]
fn bad_stored_data_is_internal_with_a_generic_message() {
    let err = Error::from(storage::Error::BadData("garbled row 7".into()));
    assert_eq!(err.code(), ErrorCode::Internal);
    assert_eq!(err.retry_after_ms(), None);
    assert!(
        !err.to_string().contains("garbled"),
        "the message is generic: {err}"
    );
    assert!(
        err.source()
            .is_some_and(|s| s.to_string().contains("garbled")),
        "but the cause is kept"
    );
}
