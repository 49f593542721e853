//! Where the clients connect and as whom: the target URLs (several gateways
//! or one load balancer), the local source addresses to spread connections
//! over (each loopback address has its own ephemeral port range), and how
//! tokens are minted (HS256 with a given secret, or the dev endpoint).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client's WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How tokens are obtained.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// Signed here with this HS256 secret.
    Secret(String),
    /// Asked from `POST /v1/dev/token` of the first target.
    DevEndpoint,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

#[derive(Deserialize)]
struct DevToken {
    token: String,
}

/// The servers and the local side of the connections.
#[derive(Debug, Clone)]
pub struct Target {
    urls: Vec<Uri>,
    sources: Vec<IpAddr>,
    tokens: TokenSource,
    http: reqwest::Client,
    /// Whether clients take the entries a notify carries (protocol 1.1)
    /// instead of syncing.
    notify_entries: bool,
    /// Whether clients send a typing indicator before each message.
    typing: bool,
    /// Every Nth acked message of a client is edited or recalled.
    change_every: Option<u64>,
}

impl Target {
    /// Checks the URLs (`ws://host:port/path`) and source addresses.
    pub fn new(urls: &[String], sources: Vec<IpAddr>, tokens: TokenSource) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!("at least one target URL is needed");
        }
        let urls = urls
            .iter()
            .map(|u| {
                let uri: Uri = u.parse().with_context(|| format!("bad URL {u}"))?;
                if uri.scheme_str() != Some("ws") || uri.host().is_none() {
                    bail!("{u}: expected ws://host:port/path");
                }
                Ok(uri)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Target {
            urls,
            sources,
            tokens,
            http,
            notify_entries: true,
            typing: false,
            change_every: None,
        })
    }

    /// Clients send a typing indicator before each message (protocol 1.1).
    pub fn typing_before_sending(mut self) -> Self {
        self.typing = true;
        self
    }

    /// Whether clients send a typing indicator before each message.
    pub fn types_before_sending(&self) -> bool {
        self.typing
    }

    /// Every `n`th acked message of each client is then edited or, every
    /// other time, recalled (protocol 1.1); 0 changes none.
    pub fn changing_every(mut self, n: u64) -> Self {
        self.change_every = (n > 0).then_some(n);
        self
    }

    /// How often clients change one of their messages, if at all.
    pub fn change_every(&self) -> Option<u64> {
        self.change_every
    }

    /// Clients sync on every notify, as a version-1 client does, ignoring
    /// the entries it carries.
    pub fn syncing_only(mut self) -> Self {
        self.notify_entries = false;
        self
    }

    /// Whether clients take the entries a notify carries.
    pub fn takes_notify_entries(&self) -> bool {
        self.notify_entries
    }

    /// The HTTP base (`http://host:port`) of target `index`.
    pub fn http_base(&self, index: usize) -> String {
        let uri = &self.urls[index % self.urls.len()];
        let host = uri.host().unwrap_or("127.0.0.1");
        match uri.port_u16() {
            Some(port) => format!("http://{host}:{port}"),
            None => format!("http://{host}"),
        }
    }

    /// The shared HTTP client (REST calls of the scenarios).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A token for `user`.
    pub async fn token(&self, user: &str) -> anyhow::Result<String> {
        match &self.tokens {
            TokenSource::Secret(secret) => {
                let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 24 * 3600;
                let claims = Claims { sub: user, exp };
                Ok(jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &claims,
                    &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
                )?)
            }
            TokenSource::DevEndpoint => {
                let url = format!("{}/v1/dev/token", self.http_base(0));
                let reply: DevToken = self
                    .http
                    .post(&url)
                    .json(&serde_json::json!({ "user": user }))
                    .send()
                    .await?
                    .error_for_status()
                    .with_context(|| format!("POST {url}"))?
                    .json()
                    .await?;
                Ok(reply.token)
            }
        }
    }

    /// Opens connection number `index` (which picks the URL and the source
    /// address, round robin) with `token`.
    pub async fn connect(&self, index: usize, token: &str) -> anyhow::Result<Ws> {
        let uri = &self.urls[index % self.urls.len()];
        let host = uri.host().unwrap_or("127.0.0.1");
        let port = uri.port_u16().unwrap_or(80);
        let server = tokio::net::lookup_host((host, port))
            .await?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("no IPv4 address for {host}"))?;
        let socket = TcpSocket::new_v4()?;
        if !self.sources.is_empty() {
            let source = self.sources[index % self.sources.len()];
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("bind {source}"))?;
        }
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        let mut request = uri.clone().into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            request,
            MaybeTlsStream::Plain(stream),
            Some(socket_config()),
        )
        .await?;
        Ok(ws)
    }
}

/// The load generator's socket settings.
///
/// tungstenite zero-fills its whole read buffer's spare room before every
/// read: 128 KiB by default, which was 14-21% of the load generator's CPU in
/// a pairs run, CPU taken from the server on a shared machine. 16 KiB still
/// reads a sync page of 500 entries in a few reads.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// Parses `127.0.0.1-127.0.0.8` or `127.0.0.1,127.0.0.2` into addresses.
pub fn parse_sources(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
                    (first.parse()?, last.parse()?);
                let (a, b) = (u32::from(first), u32::from(last));
                if b < a || b - a > 255 {
                    bail!("bad address range {part}");
                }
                out.extend((a..=b).map(|n| IpAddr::V4(n.into())));
            }
            None => out.push(
                part.parse()
                    .with_context(|| format!("bad address {part}"))?,
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_range_lists_every_address_in_it() -> anyhow::Result<()> {
        let got = parse_sources("127.0.0.1-127.0.0.3,127.0.0.9")?;
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"]
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn a_reversed_range_or_a_bad_address_is_refused() {
        assert!(parse_sources("127.0.0.5-127.0.0.1").is_err());
        assert!(parse_sources("localhost").is_err());
    }

    #[test]
    fn only_ws_urls_are_accepted() {
        let tokens = TokenSource::Secret("s".into());
        assert!(Target::new(&["http://127.0.0.1:1/v1/ws".into()], vec![], tokens.clone()).is_err());
        assert!(Target::new(&[], vec![], tokens.clone()).is_err());
        let target = Target::new(&["ws://127.0.0.1:8080/v1/ws".into()], vec![], tokens);
        assert_eq!(
            target.map(|t| t.http_base(3)).ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }
}
