//! Driver errors as storage errors: what a retry can fix (a node down, a
//! timeout, an overloaded coordinator, a broken connection) is
//! `Unavailable`; what the server refuses for good (a bad statement, a
//! schema this code does not match, no permission) is `Rejected`; what this
//! code cannot read back is `BadData`. The driver's error is kept as the
//! source. Its enums are `#[non_exhaustive]`: a kind this code does not know
//! yet counts as `Unavailable`, the cautious answer for a request that may
//! have been fine.

use ::scylla::errors::{
    DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError,
};

use crate::Error;

/// Whether the server's answer can change if the request is sent again.
fn db_error_is_transient(err: &DbError) -> bool {
    match err {
        DbError::Unavailable { .. }
        | DbError::Overloaded
        | DbError::IsBootstrapping
        | DbError::ReadTimeout { .. }
        | DbError::WriteTimeout { .. }
        | DbError::ReadFailure { .. }
        | DbError::WriteFailure { .. }
        | DbError::RateLimitReached { .. }
        | DbError::Unprepared { .. }
        | DbError::ServerError
        | DbError::TruncateError
        | DbError::Other(_) => true,
        DbError::SyntaxError
        | DbError::Invalid
        | DbError::AlreadyExists { .. }
        | DbError::FunctionFailure { .. }
        | DbError::AuthenticationError
        | DbError::Unauthorized
        | DbError::ConfigError
        | DbError::ProtocolError => false,
        _ => true,
    }
}

/// Whether a failed attempt can succeed when tried again.
fn attempt_is_transient(err: &RequestAttemptError) -> Option<bool> {
    match err {
        RequestAttemptError::DbError(db, _) => Some(db_error_is_transient(db)),
        RequestAttemptError::UnableToAllocStreamId
        | RequestAttemptError::BrokenConnectionError(_) => Some(true),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_)
        | RequestAttemptError::RepreparedIdChanged { .. }
        | RequestAttemptError::RepreparedIdMissingInBatch => Some(false),
        // The server answered something this code cannot read.
        RequestAttemptError::BodyExtensionsParseError(_)
        | RequestAttemptError::CqlResultParseError(_)
        | RequestAttemptError::CqlErrorParseError(_)
        | RequestAttemptError::UnexpectedResponse(_)
        | RequestAttemptError::NonfinishedPagingState => None,
        _ => Some(true),
    }
}

fn classify<E>(err: E, transient: Option<bool>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    match transient {
        Some(true) => Error::unavailable(err),
        Some(false) => Error::Rejected(Box::new(err)),
        None => Error::BadData(err.to_string()),
    }
}

/// A statement or batch that failed.
pub(crate) fn execution(err: ExecutionError) -> Error {
    let transient = match &err {
        ExecutionError::LastAttemptError(attempt) => attempt_is_transient(attempt),
        ExecutionError::PrepareError(prepare) => prepare_is_transient(prepare),
        ExecutionError::BadQuery(_) => Some(false),
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_)
        | ExecutionError::UseKeyspaceError(_) => Some(true),
        _ => Some(true),
    };
    classify(err, transient)
}

fn prepare_is_transient(err: &PrepareError) -> Option<bool> {
    match err {
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_is_transient(first_attempt),
        PrepareError::PreparedStatementIdsMismatch => Some(false),
        PrepareError::ConnectionPoolError(_) => Some(true),
        _ => Some(true),
    }
}

/// A statement that could not be prepared.
pub(crate) fn prepare(err: PrepareError) -> Error {
    let transient = prepare_is_transient(&err);
    classify(err, transient)
}

/// A session that could not be opened: no node answered (retryable), or
/// the configuration is unusable (not).
pub(crate) fn new_session(err: NewSessionError) -> Error {
    let transient = match &err {
        NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => false,
        NewSessionError::FailedToResolveAnyHostname(_)
        | NewSessionError::MetadataError(_)
        | NewSessionError::UseKeyspaceError(_) => true,
        _ => true,
    };
    classify(err, Some(transient))
}

/// Rows that do not have the shape this code expects.
pub(crate) fn rows(err: impl std::error::Error) -> Error {
    Error::BadData(format!("a Scylla result does not match the schema: {err}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ::scylla::errors::{BadQuery, WriteType};
    use ::scylla::frame::types::Consistency;

    use super::*;

    fn db(err: DbError) -> Error {
        execution(ExecutionError::LastAttemptError(
            RequestAttemptError::DbError(err, "from the server".into()),
        ))
    }

    #[test]
    fn timeouts_and_unavailable_replicas_are_retryable() {
        let write_timeout = DbError::WriteTimeout {
            consistency: Consistency::LocalQuorum,
            received: 1,
            required: 2,
            write_type: WriteType::Cas,
        };
        let unavailable = DbError::Unavailable {
            consistency: Consistency::LocalQuorum,
            required: 2,
            alive: 1,
        };
        for err in [
            write_timeout,
            unavailable,
            DbError::Overloaded,
            DbError::IsBootstrapping,
        ] {
            assert!(db(err.clone()).is_retryable(), "{err:?}");
        }
        assert!(execution(ExecutionError::RequestTimeout(Duration::from_secs(2))).is_retryable());
        assert!(execution(ExecutionError::EmptyPlan).is_retryable());
    }

    #[test]
    fn statements_the_server_refuses_are_rejected_for_good() {
        for err in [
            DbError::SyntaxError,
            DbError::Invalid,
            DbError::Unauthorized,
            DbError::ConfigError,
        ] {
            let mapped = db(err.clone());
            assert!(matches!(mapped, Error::Rejected(_)), "{err:?}: {mapped:?}");
            assert!(!mapped.is_retryable());
        }
        let too_big = execution(ExecutionError::BadQuery(
            BadQuery::TooManyQueriesInBatchStatement(70_000),
        ));
        assert!(matches!(too_big, Error::Rejected(_)));
    }

    #[test]
    fn an_answer_this_code_cannot_read_is_bad_data() {
        let err = execution(ExecutionError::LastAttemptError(
            RequestAttemptError::NonfinishedPagingState,
        ));
        assert!(matches!(err, Error::BadData(_)), "{err:?}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_lost_connection_is_retryable_and_a_bad_node_list_is_not() {
        assert!(
            execution(ExecutionError::LastAttemptError(
                RequestAttemptError::UnableToAllocStreamId
            ))
            .is_retryable()
        );
        assert!(!new_session(NewSessionError::EmptyKnownNodesList).is_retryable());
        assert!(
            new_session(NewSessionError::FailedToResolveAnyHostname(vec![
                "nowhere:9042".into()
            ]))
            .is_retryable()
        );
    }

    #[test]
    fn the_driver_error_is_kept_as_the_source() {
        let err = db(DbError::Overloaded);
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.to_string().contains("overloaded"), "{source}");
    }
}
