//! The service over gRPC: the remote client answers what the in-process
//! service answers, errors keep their wire codes, and a service that is down
//! is `unavailable` with a retry delay.

use std::sync::Arc;
use std::time::Duration;

use msg_service::grpc::{ClientConfig, RemoteMessageService};
use msg_service::{MessageApi, MessageService};
use proto::{ErrorCode, MAX_BODY_BYTES, SendRequest, UserId};
use storage::Page;
use storage::resilience::{BreakerConfig, BreakerState};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::{TestService, dm, user};

/// A gRPC server for `service` on a free port, and a client for it.
async fn serve(
    service: Arc<MessageService>,
) -> anyhow::Result<(RemoteMessageService, oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(msg_service::grpc::serve(listener, service, async {
        let _ = stopped.await;
    }));
    Ok((client(url)?, stop))
}

fn client(url: String) -> anyhow::Result<RemoteMessageService> {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::new(url, Duration::from_secs(5))
    };
    Ok(RemoteMessageService::new(&config)?)
}

fn send_request(id: &str, to: &UserId, body: &str) -> SendRequest {
    SendRequest::new(
        Some(id),
        None,
        Some(to.as_str()),
        None,
        Some(body.to_owned()),
    )
    .expect("valid send")
}

#[tokio::test]
async fn the_remote_client_answers_what_the_service_answers() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (remote, _stop) = serve(Arc::clone(&svc.service)).await?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));

    let ack = remote
        .send(&alice, send_request("c-1", &bob, "over grpc"))
        .await?;
    let again = remote
        .send(&alice, send_request("c-1", &bob, "over grpc"))
        .await?;
    assert_eq!(ack, again, "a retry over gRPC gets the first ack");
    assert_eq!(
        remote.sync(&bob, 0, 100).await?,
        svc.sync(&bob, 0, 100).await?
    );
    assert_eq!(remote.inbox_head(&alice).await?, ack.seq);

    let group = remote
        .create_group(&alice, vec![bob.clone()], Some("g".into()))
        .await?;
    assert_eq!(remote.conversation(&bob, &group.conv_id).await?, group);
    let grown = remote
        .add_members(&bob, &group.conv_id, vec![carol.clone()])
        .await?;
    assert!(grown.members.contains(&carol));
    let shrunk = remote.remove_member(&alice, &group.conv_id, &carol).await?;
    assert!(!shrunk.members.contains(&carol));
    assert_eq!(
        remote.conversations(&bob).await?,
        svc.conversations(&bob).await?
    );

    let conv = dm(&alice, &bob);
    let page = remote
        .history(&bob, &conv, Page::Before(u64::MAX), 10)
        .await?;
    assert_eq!(
        page,
        svc.service
            .history(&bob, &conv, Page::Before(u64::MAX), 10)
            .await?
    );
    assert_eq!(page.messages.len(), 1);
    Ok(())
}

#[tokio::test]
async fn errors_keep_their_wire_codes_over_grpc() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (remote, _stop) = serve(Arc::clone(&svc.service)).await?;
    let (alice, bob, mallory) = (user("alice"), user("bob"), user("mallory"));
    remote.send(&alice, send_request("c-1", &bob, "hi")).await?;

    let forbidden = remote
        .history(&mallory, &dm(&alice, &bob), Page::After(0), 10)
        .await
        .unwrap_err();
    assert_eq!(forbidden.code(), ErrorCode::Forbidden, "{forbidden}");

    let to_self = remote
        .send(&alice, send_request("c-2", &alice, "me"))
        .await
        .unwrap_err();
    assert_eq!(to_self.code(), ErrorCode::BadRequest);
    assert!(
        to_self.to_string().contains("to"),
        "the message says what is wrong: {to_self}"
    );

    // Built past the edge's checks, so the service's own validation answers.
    let mut big = send_request("c-3", &bob, "x");
    big.body = "x".repeat(MAX_BODY_BYTES + 1);
    let too_large = remote.send(&alice, big).await.unwrap_err();
    assert_eq!(too_large.code(), ErrorCode::TooLarge, "{too_large}");
    Ok(())
}

#[tokio::test]
async fn a_service_that_is_down_is_unavailable_with_a_retry_delay() -> anyhow::Result<()> {
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let remote = client(format!("http://127.0.0.1:{port}"))?;
    let err = remote
        .send(&user("alice"), send_request("c-1", &user("bob"), "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(err.retry_after_ms().is_some_and(|ms| ms > 0));
    Ok(())
}

/// A client of 127.0.0.1:`port` whose breaker opens after two failures and
/// stays open for a minute unless its dependency is seen to answer.
fn quick_breaker_client(port: u16) -> ClientConfig {
    ClientConfig {
        breaker: BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(60),
            half_open_probes: 1,
        },
        ..ClientConfig::new(format!("http://127.0.0.1:{port}"), Duration::from_secs(5))
    }
}

#[tokio::test]
async fn a_client_of_a_service_that_is_down_opens_its_breaker_then_fails_fast() -> anyhow::Result<()>
{
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let config = quick_breaker_client(port);
    let remote = RemoteMessageService::new(&config)?;
    for id in ["c-1", "c-2"] {
        let err = remote
            .send(&user("alice"), send_request(id, &user("bob"), "hi"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    }
    assert_eq!(remote.breaker().state(), BreakerState::Open);
    let asked = std::time::Instant::now();
    let err = remote.inbox_head(&user("alice")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(asked.elapsed() < Duration::from_millis(100), "failed fast");
    // Not the 60 s pause: a recovery probe watches the service, so callers
    // are told to come back within a second.
    let retry = err.retry_after_ms().unwrap_or_default();
    assert!((1..=1_000).contains(&retry), "retry_after_ms {retry}");
    Ok(())
}

/// Recovery follows the service, not the breaker's pause (here 60 s).
#[tokio::test]
async fn a_service_that_comes_back_is_used_within_a_second_although_the_breaker_was_open()
-> anyhow::Result<()> {
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let config = quick_breaker_client(port);
    let remote = RemoteMessageService::new(&config)?;
    while remote.breaker().state() != BreakerState::Open {
        assert!(remote.inbox_head(&user("alice")).await.is_err());
    }

    let app = TestService::start()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let (_stop, stopped) = oneshot::channel::<()>();
    let service: Arc<MessageService> = Arc::clone(&app.service);
    tokio::spawn(msg_service::grpc::serve(listener, service, async {
        let _ = stopped.await;
    }));
    let listening = std::time::Instant::now();
    while let Err(err) = remote.inbox_head(&user("alice")).await {
        assert!(
            listening.elapsed() < Duration::from_secs(1),
            "still {err} {:?} after the service came back",
            listening.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn errors_the_service_answers_do_not_open_the_client_breaker() -> anyhow::Result<()> {
    let app = TestService::start()?;
    let (remote, _stop) = serve(Arc::clone(&app.service)).await?;
    for _ in 0..10 {
        let err = remote
            .send(&user("alice"), send_request("bad", &user("alice"), "self"))
            .await
            .unwrap_err();
        assert_ne!(err.code(), ErrorCode::Unavailable, "{err}");
    }
    assert_eq!(remote.breaker().state(), BreakerState::Closed);
    Ok(())
}
