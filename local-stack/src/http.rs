//! Just enough HTTP/1.1 for two loopback peers: the AWS SDK calling the ECS model (keep-alive,
//! `Content-Length` bodies, no chunking: the SDK sends JSON with a length) and this crate
//! calling cargo-lambda's invoke API (one request per connection).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP I/O with {peer}: {source}")]
    Io {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed HTTP from {peer}: {what}")]
    Malformed { peer: String, what: String },
    #[error("no answer from {peer} within {seconds} s")]
    Timeout { peer: String, seconds: u64 },
}

/// One request or response: the start line, headers (names lower-cased), and the body.
#[derive(Debug, Default)]
pub struct Message {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Bodies above this are refused (ECS requests are small; so are our invokes' answers).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Reads one message; `None` when the peer closed the connection between messages.
pub async fn read_message<R>(
    reader: &mut BufReader<R>,
    peer: &str,
) -> Result<Option<Message>, HttpError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let io = |source| HttpError::Io {
        peer: peer.to_string(),
        source,
    };
    let malformed = |what: &str| HttpError::Malformed {
        peer: peer.to_string(),
        what: what.to_string(),
    };
    let mut message = Message::default();
    let mut line = String::new();
    if reader.read_line(&mut line).await.map_err(io)? == 0 {
        return Ok(None);
    }
    message.start_line = line.trim_end().to_string();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.map_err(io)? == 0 {
            return Err(malformed("connection closed inside the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| malformed("a header without ':'"))?;
        message
            .headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    if message
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.map_err(io)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| malformed("a chunk size"))?;
            if size == 0 {
                // Trailers, then the closing empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.map_err(io)? == 0 || line.trim().is_empty()
                    {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(malformed("a body over 16 MiB"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await.map_err(io)?;
            line.clear();
            reader.read_line(&mut line).await.map_err(io)?;
        }
        message.body = body;
    } else {
        let length: usize = match message.header("content-length") {
            Some(text) => text.parse().map_err(|_| malformed("Content-Length"))?,
            None => 0,
        };
        if length > MAX_BODY {
            return Err(malformed("a body over 16 MiB"));
        }
        message.body = vec![0; length];
        reader.read_exact(&mut message.body).await.map_err(io)?;
    }
    Ok(Some(message))
}

pub fn encode(start_line: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{start_line}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// POSTs `body` to `http://{address}{path}` and answers the status code and the response.
pub async fn post(
    address: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Message), HttpError> {
    request("POST", address, path, body, timeout).await
}

/// One request on its own connection.
pub async fn request(
    method: &str,
    address: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Message), HttpError> {
    let peer = address.to_string();
    let exchange = async {
        let io = |source| HttpError::Io {
            peer: peer.clone(),
            source,
        };
        let mut stream = TcpStream::connect(address).await.map_err(io)?;
        let request = encode(
            &format!("{method} {path} HTTP/1.1"),
            &[
                ("host", address),
                ("content-type", "application/json"),
                ("connection", "close"),
            ],
            body,
        );
        stream.write_all(&request).await.map_err(io)?;
        let mut reader = BufReader::new(stream);
        let response =
            read_message(&mut reader, &peer)
                .await?
                .ok_or_else(|| HttpError::Malformed {
                    peer: peer.clone(),
                    what: "connection closed before the response".into(),
                })?;
        let status = response
            .start_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| HttpError::Malformed {
                peer: peer.clone(),
                what: format!("status line {:?}", response.start_line),
            })?;
        Ok((status, response))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            peer: address.to_string(),
            seconds: timeout.as_secs(),
        })?
}
