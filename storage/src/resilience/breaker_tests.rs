//! The breaker's state machine, on tokio's paused clock.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

#[derive(Debug, PartialEq)]
enum Fail {
    Down,
    BadRequest,
    Open(Duration),
}

impl From<BreakerOpen> for Fail {
    fn from(open: BreakerOpen) -> Self {
        Fail::Open(open.retry_after)
    }
}

fn breaker() -> Breaker {
    let config = BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(10),
        half_open_probes: 2,
    };
    Breaker::new("test", config)
}

async fn call(b: &Breaker, outcome: Result<(), Fail>) -> Result<(), Fail> {
    b.run(async { outcome }, |e| *e == Fail::Down).await
}

async fn open(b: &Breaker) {
    for _ in 0..3 {
        call(b, Err(Fail::Down)).await.unwrap_err();
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_up_to_the_threshold_open_the_breaker() {
    let b = breaker();
    call(&b, Err(Fail::Down)).await.unwrap_err();
    call(&b, Err(Fail::Down)).await.unwrap_err();
    assert_eq!(b.state(), BreakerState::Closed);
    call(&b, Err(Fail::Down)).await.unwrap_err();
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_between_failures_resets_the_count() {
    let b = breaker();
    for _ in 0..2 {
        call(&b, Err(Fail::Down)).await.unwrap_err();
    }
    call(&b, Ok(())).await.unwrap();
    for _ in 0..2 {
        call(&b, Err(Fail::Down)).await.unwrap_err();
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_failures_never_open_the_breaker() {
    let b = breaker();
    for _ in 0..10 {
        assert_eq!(call(&b, Err(Fail::BadRequest)).await, Err(Fail::BadRequest));
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_fast_without_making_the_call() {
    let b = breaker();
    open(&b).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    let mut made = false;
    let result = b
        .run(
            async {
                made = true;
                Ok::<_, Fail>(())
            },
            |_| true,
        )
        .await;
    assert!(!made, "the call was made through an open breaker");
    assert_eq!(result, Err(Fail::Open(Duration::from_secs(6))));
}

#[tokio::test(start_paused = true)]
async fn after_the_open_period_the_breaker_is_half_open() {
    let b = breaker();
    open(&b).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn enough_successful_probes_close_the_breaker() {
    let b = breaker();
    open(&b).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    call(&b, Ok(())).await.unwrap();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    call(&b, Ok(())).await.unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_for_another_period() {
    let b = breaker();
    open(&b).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    call(&b, Err(Fail::Down)).await.unwrap_err();
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_the_configured_number_of_probes_through_at_once() {
    let b = breaker();
    open(&b).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    let (release, wait) = tokio::sync::watch::channel(false);
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let mut probes = Vec::new();
    for _ in 0..2 {
        let (b, mut wait, entered_tx) = (b.clone(), wait.clone(), entered_tx.clone());
        probes.push(tokio::spawn(async move {
            b.run(
                async move {
                    // The permit is taken before the call is polled.
                    entered_tx.send(()).ok();
                    wait.wait_for(|go| *go).await.ok();
                    Ok::<_, Fail>(())
                },
                |_| true,
            )
            .await
        }));
    }
    for _ in 0..2 {
        entered.recv().await.unwrap();
    }
    assert!(matches!(call(&b, Ok(())).await, Err(Fail::Open(_))));
    release.send(true).unwrap();
    for probe in probes {
        probe.await.unwrap().unwrap();
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_midway_gives_its_place_back() {
    let b = breaker();
    open(&b).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..2 {
        let never = b.run(std::future::pending::<Result<(), Fail>>(), |_| true);
        let _ = tokio::time::timeout(Duration::from_millis(1), never).await;
    }
    call(&b, Ok(())).await.unwrap();
    call(&b, Ok(())).await.unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
}
