//! A hand-written HTTP/1.1 client on one TLS socket, for end-to-end tests that need to see
//! exactly what a connection sees: requests no HTTP library would send (bodies in pieces, a
//! 1 MiB request line, thousands of headers) and every byte of each response, including whether
//! the server closed the connection.

use super::Server;
use anyhow::{Context, Result, bail, ensure};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Upper bound for one response to arrive; nothing here should take more than a moment.
pub const WAIT: Duration = Duration::from_secs(15);

/// Who the connection authenticates as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The admin client certificate (`system:masters`).
    Admin,
    /// No client certificate: requests carry a bearer token (or nothing).
    Tokens,
}

/// One response, read completely.
pub struct Reply {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a failure Status with this code; its message.
    pub fn status(&self, code: u16, reason: &str) -> Result<String> {
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
pub struct Conn {
    stream: TlsStream<TcpStream>,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(server: &Server, who: Who) -> Result<Conn> {
        Self::open_with(server, who, None).await
    }

    /// [`Conn::open`] on a socket whose receive buffer is `recv_buffer` bytes (so a client that
    /// stops reading stalls the server's writes after little data).
    pub async fn open_with(server: &Server, who: Who, recv_buffer: Option<u32>) -> Result<Conn> {
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
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        let tcp = socket.connect(host.parse()?).await?;
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
    pub async fn send(
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

    /// The `host:port` the connection goes to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Write `bytes` as they are (a request no HTTP library would send).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Read the next whole response.
    pub async fn reply(&mut self) -> Result<Reply> {
        tokio::time::timeout(WAIT, self.read_reply())
            .await
            .context("waiting for a response")?
    }

    /// Read until the server ends the connection (a clean close or a reset); the bytes read.
    /// An error if it is still open after [`WAIT`].
    pub async fn read_until_closed(&mut self) -> Result<usize> {
        let mut total = std::mem::take(&mut self.buf).len();
        let mut chunk = vec![0u8; 64 * 1024];
        tokio::time::timeout(WAIT, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => total += n,
                }
            }
        })
        .await
        .context("the server kept the connection open")?;
        Ok(total)
    }

    /// Read more bytes into the buffer; an error when the server closed the connection.
    pub async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Take `n` bytes from the front of the buffer, reading as needed.
    pub async fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Take one CRLF-terminated line.
    pub async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(i + 2).await?;
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            self.fill().await?;
        }
    }

    pub async fn read_reply(&mut self) -> Result<Reply> {
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
