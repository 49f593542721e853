//! The web client is served only while dev auth is on: it signs in with dev
//! tokens, which a production gateway does not mint.

use clap::Parser;
use gateway::Config;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn the_web_client_and_its_assets_are_served_while_dev_auth_is_on() {
    let app = spawn_app_with(&["--dev-auth", "true"]).await;
    let assets = [
        ("/", "text/html"),
        ("/app.js", "javascript"),
        ("/app.css", "text/css"),
    ];
    for (path, content_type) in assets {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let served = response.headers()["content-type"]
            .to_str()
            .expect("ascii header")
            .to_owned();
        assert!(
            served.contains(content_type),
            "GET {path} is served as {served}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn without_dev_auth_the_web_client_is_not_served() {
    let app = spawn_app_with(&["--dev-auth", "false"]).await;
    for path in ["/", "/app.js", "/app.css"] {
        assert_eq!(app.get(path, None).await.status(), 404, "GET {path}");
    }
    assert_eq!(
        app.get("/healthz", None).await.status(),
        200,
        "the gateway itself is up"
    );
    app.stop().await;
}

#[test]
fn dev_auth_is_on_by_default_on_a_single_machine_and_off_when_distributed() {
    let single = Config::try_parse_from(["gateway"]).expect("flags parse");
    assert!(single.dev_auth());
    let distributed = [
        "gateway",
        "--msg-service",
        "http://127.0.0.1:9090",
        "--redis",
        "redis://127.0.0.1:6379",
    ];
    assert!(
        !Config::try_parse_from(distributed)
            .expect("flags parse")
            .dev_auth()
    );
}
