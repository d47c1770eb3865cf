//! End-to-end: errors answered before a request body was read keep the HTTP/1.1 connection
//! (issue 12, "Keep-alive"). The release binary serves the Cloud Co example; requests are
//! written by hand on one TLS socket (headers first, then the body in pieces, as a client on a
//! real network sends them) and every response is read completely, so the test sees exactly
//! what a client's connection sees: each refused write gets its Status and the next request
//! goes over the same connection.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::{PROVIDER, Server, TEAM_A};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How many refused writes go over one connection.
const WRITES: usize = 200;
/// The size of every request body: bigger than one TLS record, far below the 256 KiB drained.
const BODY_BYTES: usize = 20 * 1024;
/// Upper bound for one response to arrive; nothing here should take more than a moment.
const WAIT: Duration = Duration::from_secs(15);

/// Who the connection authenticates as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    /// The admin client certificate (`system:masters`).
    Admin,
    /// No client certificate: requests carry a bearer token (or nothing).
    Tokens,
}

/// One response, read completely.
struct Reply {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a failure Status with this code; its message.
    fn status(&self, code: u16, reason: &str) -> Result<String> {
        let v: Value = serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "a {} body is not JSON: {}",
                self.code,
                String::from_utf8_lossy(&self.body)
            )
        })?;
        ensure!(self.code == code, "expected {code}, got {}: {v}", self.code);
        ensure!(
            v["kind"] == "Status" && v["status"] == "Failure" && v["code"] == code,
            "not a failure Status with code {code}: {v}"
        );
        ensure!(v["reason"] == reason, "expected reason {reason}: {v}");
        Ok(v["message"].as_str().unwrap_or_default().to_string())
    }
}

/// One HTTP/1.1 connection over TLS.
struct Conn {
    stream: TlsStream<TcpStream>,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(server: &Server, who: Who) -> Result<Conn> {
        replication_vw::server::tls::install_crypto_provider();
        let dir = server.data_dir.path();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(server.ca())? {
            roots.add(cert?)?;
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut config = match who {
            Who::Admin => {
                let certs = CertificateDer::pem_file_iter(dir.join("admin.crt"))?
                    .collect::<Result<Vec<_>, _>>()?;
                let key = PrivateKeyDer::from_pem_file(dir.join("admin.key"))?;
                builder.with_client_auth_cert(certs, key)?
            }
            Who::Tokens => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = server
            .url
            .strip_prefix("https://")
            .context("an https URL")?
            .to_string();
        let (ip, _) = host.rsplit_once(':').context("a host:port URL")?;
        let name = ServerName::try_from(ip.to_string())?;
        let tcp = TcpStream::connect(&host).await?;
        // Each piece goes out at once, as the server would see a client on a real network.
        tcp.set_nodelay(true)?;
        let stream = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Conn {
            stream,
            host,
            buf: Vec::new(),
        })
    }

    /// Send one request (headers, then the body in two pieces) and read its whole response.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Reply> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: e2e-keepalive\r\n",
            self.host
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.flush().await?;
        let (first, second) = body.split_at(body.len() / 2);
        for piece in [first, second] {
            if !piece.is_empty() {
                self.stream.write_all(piece).await?;
                self.stream.flush().await?;
            }
        }
        tokio::time::timeout(WAIT, self.read_reply())
            .await
            .context("waiting for a response")?
    }

    /// Read more bytes into the buffer; an error when the server closed the connection.
    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Take `n` bytes from the front of the buffer, reading as needed.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Take one CRLF-terminated line.
    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(i + 2).await?;
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            self.fill().await?;
        }
    }

    async fn read_reply(&mut self) -> Result<Reply> {
        let status_line = self.line().await?;
        let mut parts = status_line.splitn(3, ' ');
        ensure!(
            parts.next() == Some("HTTP/1.1"),
            "not an HTTP/1.1 response: {status_line}"
        );
        let code: u16 = parts.next().context("a status code")?.parse()?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').context("a header line")?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut reply = Reply {
            code,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = reply.header("content-length") {
            let len: usize = len.parse()?;
            reply.body = self.take(len).await?;
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size = self.line().await?;
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
                if size == 0 {
                    // Trailers, then the blank line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                let chunk = self.take(size).await?;
                reply.body.extend_from_slice(&chunk);
                self.line().await?;
            }
        }
        Ok(reply)
    }
}

/// A 20 KiB CPUFlavor body.
fn flavor_body() -> Vec<u8> {
    let head = r#"{"apiVersion":"cloud.example.com/v1","kind":"CPUFlavor","metadata":{"name":"cpu-small"},"spec":{"cores":64,"description":""#;
    let tail = r#""}}"#;
    let mut body = head.as_bytes().to_vec();
    body.resize(BODY_BYTES - tail.len(), b'a');
    body.extend_from_slice(tail.as_bytes());
    body
}

fn flavors() -> String {
    format!(
        "/services/replication/{PROVIDER}/cpuflavors-v1/clusters/{TEAM_A}/apis/cloud.example.com/v1/cpuflavors"
    )
}

/// A client that keeps its connection open does not expect to be told to close it.
fn assert_kept(reply: &Reply, what: &str) -> Result<()> {
    ensure!(
        !reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "{what}: the server closed the connection after answering {}",
        reply.code
    );
    Ok(())
}

/// The connection still serves: a GET of the flavors as this connection's caller.
async fn assert_still_usable(conn: &mut Conn, token: Option<&str>) -> Result<()> {
    let reply = conn
        .send("GET", &flavors(), token, "", &[])
        .await
        .context("a read after the refused writes")?;
    ensure!(
        reply.code == 200,
        "the final read got {}: {}",
        reply.code,
        String::from_utf8_lossy(&reply.body)
    );
    let list: Value = serde_json::from_slice(&reply.body)?;
    ensure!(
        list["kind"] == "CPUFlavorList",
        "not a CPUFlavorList: {list}"
    );
    Ok(())
}

#[tokio::test]
async fn two_hundred_refused_writes_by_alice_all_get_their_status_on_one_connection() -> Result<()>
{
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Tokens).await?;
    let body = flavor_body();
    let small = format!("{}/cpu-small", flavors());
    let alice = Some("alice-token");
    for i in 0..WRITES {
        let (method, path, verb, ct) = match i % 4 {
            0 => ("POST", flavors(), "create", "application/json"),
            1 => ("PUT", small.clone(), "update", "application/json"),
            2 => (
                "PATCH",
                small.clone(),
                "patch",
                "application/merge-patch+json",
            ),
            _ => ("DELETE", small.clone(), "delete", "application/json"),
        };
        let reply = conn
            .send(method, &path, alice, ct, &body)
            .await
            .with_context(|| format!("refused write {i} ({method})"))?;
        let message = reply.status(403, "Forbidden")?;
        ensure!(
            message.contains(&format!(
                "User \"alice\" cannot {verb} resource \"cpuflavors\""
            )),
            "write {i}: {message}"
        );
        assert_kept(&reply, &format!("write {i} ({method})"))?;
    }
    assert_still_usable(&mut conn, alice).await
}

#[tokio::test]
async fn two_hundred_refused_writes_by_an_admin_and_not_found_posts_keep_one_connection()
-> Result<()> {
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Admin).await?;
    let body = flavor_body();
    let small = format!("{}/cpu-small", flavors());
    for i in 0..WRITES {
        let (method, path, code, reason) = match i % 4 {
            0 => ("PUT", small.clone(), 405, "MethodNotAllowed"),
            1 => ("DELETE", small.clone(), 405, "MethodNotAllowed"),
            2 => ("POST", flavors(), 405, "MethodNotAllowed"),
            _ => ("POST", "/no/such/path".to_string(), 404, "NotFound"),
        };
        let reply = conn
            .send(method, &path, None, "application/json", &body)
            .await
            .with_context(|| format!("request {i} ({method} {path})"))?;
        reply.status(code, reason)?;
        assert_kept(&reply, &format!("request {i} ({method} {path})"))?;
    }
    assert_still_usable(&mut conn, None).await
}

#[tokio::test]
async fn a_not_found_post_with_a_20_kib_body_gets_its_status_and_keeps_the_connection() -> Result<()>
{
    let server = Server::cloud_co();
    let mut conn = Conn::open(&server, Who::Tokens).await?;
    let body = flavor_body();
    // A known user gets the 404; an unknown token is refused (401) before any routing.
    for (token, code, reason) in [
        ("alice-token", 404, "NotFound"),
        ("no-such-token", 401, "Unauthorized"),
    ] {
        let reply = conn
            .send(
                "POST",
                "/no/such/path",
                Some(token),
                "application/json",
                &body,
            )
            .await?;
        let message = reply.status(code, reason)?;
        ensure!(!message.is_empty(), "a Status without a message");
        assert_kept(&reply, "POST /no/such/path")?;
    }
    assert_still_usable(&mut conn, Some("alice-token")).await
}
