//! A lean HTTP/1.1 client for the load generator: one keep-alive connection per closed loop,
//! requests written from a reused buffer, answers parsed with `httparse`. A general client
//! (connection pool, header maps, body streams) costs the generator several times the CPU of
//! the request itself, and on a machine shared with the server that CPU is taken from the
//! server: the generator would measure itself.
//!
//! Only what offpeak answers is supported: `Content-Length` bodies (no chunked encoding), no
//! redirects, no TLS. A connection that fails is dropped and reopened by the next request.

use anyhow::{bail, Context};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers an answer may have (offpeak sends about ten).
const HEADERS_MAX: usize = 32;

/// An answer: its status and body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// A keep-alive connection to one server (reopened when it fails).
pub struct Connection {
    /// `host:port`.
    address: String,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    buffer: Vec<u8>,
    timeout: Duration,
}

impl Connection {
    /// A connection to `base` (`http://host:port`), opened on the first request.
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Connection> {
        let Some(address) = base.strip_prefix("http://") else {
            bail!("{base:?}: only http:// URLs are supported");
        };
        Ok(Connection {
            address: address.trim_end_matches('/').to_owned(),
            stream: None,
            request: Vec::with_capacity(1024),
            buffer: Vec::with_capacity(8 * 1024),
            timeout,
        })
    }

    /// Sends one request and reads its answer, within the timeout.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        json_body: Option<&[u8]>,
    ) -> anyhow::Result<Answer> {
        let timeout = self.timeout;
        match tokio::time::timeout(
            timeout,
            self.exchange(method, path, authorization, json_body),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                bail!("no answer within {} ms", timeout.as_millis())
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        json_body: Option<&[u8]>,
    ) -> anyhow::Result<Answer> {
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.address
        )?;
        if let Some(authorization) = authorization {
            write!(self.request, "Authorization: {authorization}\r\n")?;
        }
        match json_body {
            Some(body) => {
                write!(
                    self.request,
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                self.request.extend_from_slice(body);
            }
            None => self.request.extend_from_slice(b"\r\n"),
        }
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address)
                .await
                .with_context(|| format!("connecting to {}", self.address))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&self.request).await?;
        self.buffer.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.buffer)? {
                let status = response.code.unwrap_or(0);
                let mut length = 0usize;
                let mut close = false;
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(header.value)?.trim().parse()?;
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        bail!("chunked answers are not supported");
                    } else if header.name.eq_ignore_ascii_case("connection")
                        && header.value.eq_ignore_ascii_case(b"close")
                    {
                        close = true;
                    }
                }
                while self.buffer.len() < head + length {
                    if read_more(stream, &mut self.buffer).await? == 0 {
                        bail!("the server closed the connection mid-answer");
                    }
                }
                let body = self.buffer[head..head + length].to_vec();
                if close || self.buffer.len() > head + length {
                    // Closed by the server, or bytes nobody asked for: start afresh.
                    self.stream = None;
                }
                return Ok(Answer { status, body });
            }
            if read_more(stream, &mut self.buffer).await? == 0 {
                bail!("the server closed the connection");
            }
        }
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<usize> {
    let start = buffer.len();
    buffer.resize(start + 4096, 0);
    let read = stream.read(&mut buffer[start..]).await?;
    buffer.truncate(start + read);
    Ok(read)
}
