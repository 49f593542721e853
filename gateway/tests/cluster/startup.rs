//! `cluster.sh up` when a port it was handed is held by another process: it
//! fails and names the part, rather than taking the other process's answers
//! for its own part's.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

use crate::harness::Cluster;

/// Answers every connection with `200 OK`, as a ready part's `/readyz` would.
async fn answer_ok(listener: TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut request = [0_u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        });
    }
}

#[tokio::test]
async fn up_fails_when_another_process_answers_on_the_balancers_port() {
    // Shared with SO_REUSEPORT, which HAProxy sets by default: two HAProxys
    // (of two clusters) could otherwise bind one port and split its traffic.
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("binding a free port");
    let listener = socket.listen(64).expect("listening");
    let port = listener.local_addr().expect("the bound address").port();
    let other = tokio::spawn(answer_ok(listener));

    let failure = match Cluster::try_up(&[("CLUSTER_PORT", &port.to_string())]).await {
        Ok(cluster) => panic!(
            "up said the cluster was ready at {} while another process held the port",
            cluster.lb
        ),
        Err(failure) => failure,
    };
    other.abort();
    assert!(
        failure.contains("cluster: haproxy exited") && failure.contains("cannot bind socket"),
        "up names the part that could not bind: {failure}"
    );
}
