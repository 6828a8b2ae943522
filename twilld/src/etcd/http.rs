//! A small synchronous HTTP/1.1 client connection (plain TCP or rustls) for etcd's JSON
//! gateway: one POST at a time, Content-Length and chunked bodies, keep-alive, and a raw read
//! for the endless chunked body of a watch. Every wait is bounded by a deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::chunked::Chunked;
use super::endpoint::Endpoint;

/// HTTP requests sent by this process (all clients, all endpoints).
static SENT: AtomicU64 = AtomicU64::new(0);

/// A response head or body larger than this is refused (a list of every node's lease is far
/// smaller).
const MAX_BODY: usize = 64 << 20;
const MAX_HEAD: usize = 64 << 10;

/// HTTP requests this process has sent so far (see [`super::requests_sent`]).
pub fn requests_sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// Why an exchange failed, by what the server may have seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// Nothing reached the server (connect failed, TLS set-up failed on our side, the request
    /// could not be written): safe to try elsewhere.
    NotSent(String),
    /// The request was sent and its answer was lost (timeout, connection closed, garbled).
    Lost(String),
    /// The peer refused the TLS session (certificate rejected either way).
    Tls(String),
}

/// The transport under HTTP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// A response's status line and the headers that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The HTTP status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// False when the server closes the connection after this response.
    pub keep_alive: bool,
}

/// One connection to one endpoint, with the bytes read but not yet consumed.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    /// False once the connection cannot carry another request.
    pub reusable: bool,
    read_timeout: Option<Duration>,
}

/// True when the error (possibly wrapping a rustls error) is a read timeout.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The TLS error inside an I/O error, when the peer refused the session.
fn tls_refusal(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match inner {
        rustls::Error::AlertReceived(alert) => format!(
            "the server refused the TLS session ({alert:?} alert): check that cert_file and \
             key_file are set and signed by a CA the server trusts"
        ),
        rustls::Error::InvalidCertificate(why) => format!(
            "the server's certificate is not trusted ({why}): check ca_file and that the \
             certificate names this endpoint's host"
        ),
        other => format!("TLS failed: {other}"),
    })
}

impl Conn {
    /// Connects to `ep` (TLS when `tls` is given, the server named by the endpoint host)
    /// before `deadline`.
    pub fn connect(
        ep: &Endpoint,
        tls: Option<&Arc<ClientConfig>>,
        deadline: Instant,
    ) -> Result<Conn, Fail> {
        let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| Fail::NotSent(format!("cannot resolve {}: {e}", ep.host)))?
            .collect();
        let mut last = Fail::NotSent(format!("{} resolves to no address", ep.host));
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Fail::NotSent(format!("connect to {addr}: timed out")));
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => return Conn::over(tcp, ep, tls, deadline),
                Err(e) => last = Fail::NotSent(format!("connect to {addr}: {e}")),
            }
        }
        Err(last)
    }

    fn over(
        tcp: TcpStream,
        ep: &Endpoint,
        tls: Option<&Arc<ClientConfig>>,
        deadline: Instant,
    ) -> Result<Conn, Fail> {
        // Writes are bounded by the time left now; reads by each read's own deadline.
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let setup = |e: io::Error| Fail::NotSent(format!("socket set-up: {e}"));
        tcp.set_nodelay(true).map_err(setup)?;
        tcp.set_read_timeout(Some(timeout)).map_err(setup)?;
        tcp.set_write_timeout(Some(timeout)).map_err(setup)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from(ep.host.clone()).map_err(|e| {
                    Fail::NotSent(format!("{:?} cannot name a TLS server: {e}", ep.host))
                })?;
                let conn = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| Fail::NotSent(format!("TLS set-up: {e}")))?;
                let mut s = StreamOwned::new(conn, tcp);
                while s.conn.is_handshaking() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Fail::NotSent("TLS handshake: timed out".into()));
                    }
                    s.sock.set_read_timeout(Some(left)).map_err(setup)?;
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| match tls_refusal(&e) {
                            Some(m) => Fail::Tls(m),
                            None => Fail::NotSent(format!("TLS handshake: {e}")),
                        })?;
                }
                Stream::Tls(Box::new(s))
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 << 10),
            pos: 0,
            reusable: true,
            read_timeout: None,
        })
    }

    /// True when an idle kept-alive connection can carry a request: the server has neither
    /// closed it nor sent anything unasked.
    pub fn idle_ok(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if !self.reusable || self.pos < self.buf.len() {
            return false;
        }
        let fd = self.stream.tcp().as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// Sends `POST path` with the JSON `body` (and etcd's require-leader metadata when
    /// `require_leader`) in one write.
    pub fn post(
        &mut self,
        ep: &Endpoint,
        path: &str,
        body: &[u8],
        require_leader: bool,
    ) -> Result<(), Fail> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n",
            ep.authority(),
            body.len()
        )
        .into_bytes();
        if require_leader {
            // grpc-gateway turns Grpc-Metadata-* headers into gRPC metadata; etcd's
            // require-leader key is "hasleader".
            req.extend_from_slice(b"Grpc-Metadata-Hasleader: true\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        SENT.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .stream
            .write_all(&req)
            .and_then(|()| self.stream.flush());
        sent.map_err(|e| {
            self.reusable = false;
            match tls_refusal(&e) {
                Some(m) => Fail::Tls(m),
                None => Fail::NotSent(format!("send {path}: {e}")),
            }
        })
    }

    /// Reads more bytes into the buffer before `deadline`: Ok(0) at end of stream.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        if self.read_timeout != Some(left) {
            self.stream.tcp().set_read_timeout(Some(left))?;
            self.read_timeout = Some(left);
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + (16 << 10), 0);
        let got = loop {
            match self.stream.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A TLS peer closing without close_notify is an end of stream here too.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(0),
                r => break r,
            }
        };
        self.buf.truncate(old + *got.as_ref().unwrap_or(&0));
        got
    }

    /// `fill` for a request already sent: every failure means the answer was lost.
    fn fill_sent(&mut self, deadline: Instant, what: &str) -> Result<usize, Fail> {
        self.fill(deadline).map_err(|e| {
            self.reusable = false;
            if let Some(m) = tls_refusal(&e) {
                Fail::Tls(m)
            } else if timed_out(&e) {
                Fail::Lost(format!("no {what} within the timeout"))
            } else {
                Fail::Lost(format!("reading the {what}: {e}"))
            }
        })
    }

    /// Reads the status line and headers of the response.
    pub fn head(&mut self, deadline: Instant) -> Result<Head, Fail> {
        let end = loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + i;
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                self.reusable = false;
                return Err(Fail::Lost("the response head is too large".into()));
            }
            if self.fill_sent(deadline, "response")? == 0 {
                self.reusable = false;
                return Err(Fail::Lost("the server closed the connection".into()));
            }
        };
        let text = String::from_utf8_lossy(&self.buf[self.pos..end]).into_owned();
        self.pos = end + 4;
        let head = parse_head(&text).map_err(|e| {
            self.reusable = false;
            Fail::Lost(e)
        })?;
        self.reusable &= head.keep_alive;
        Ok(head)
    }

    /// Reads the whole body that `head` announces.
    pub fn body(&mut self, head: &Head, deadline: Instant) -> Result<Vec<u8>, Fail> {
        let mut out = Vec::new();
        match head.framing {
            Framing::Length(n) => {
                if n > MAX_BODY {
                    self.reusable = false;
                    return Err(Fail::Lost(format!(
                        "a response body of {n} bytes is too large"
                    )));
                }
                while self.buf.len() - self.pos < n {
                    if self.fill_sent(deadline, "response body")? == 0 {
                        self.reusable = false;
                        return Err(Fail::Lost("the server closed the connection".into()));
                    }
                }
                out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
            }
            Framing::Chunked => {
                let mut dec = Chunked::default();
                loop {
                    let used = dec.feed(&self.buf[self.pos..], &mut out).map_err(|e| {
                        self.reusable = false;
                        Fail::Lost(format!("response body: {e}"))
                    })?;
                    self.pos += used;
                    if dec.done() {
                        break;
                    }
                    if out.len() > MAX_BODY {
                        self.reusable = false;
                        return Err(Fail::Lost("the response body is too large".into()));
                    }
                    if self.fill_sent(deadline, "response body")? == 0 {
                        self.reusable = false;
                        return Err(Fail::Lost("the server closed the connection".into()));
                    }
                }
            }
            Framing::UntilClose => {
                self.reusable = false;
                while self.fill_sent(deadline, "response body")? > 0 {
                    if self.buf.len() - self.pos > MAX_BODY {
                        return Err(Fail::Lost("the response body is too large".into()));
                    }
                }
                out.extend_from_slice(&self.buf[self.pos..]);
                self.pos = self.buf.len();
            }
        }
        Ok(out)
    }

    /// The next bytes of a streamed body: buffered ones first, else one read before
    /// `deadline`. Ok(None) when the deadline passed with nothing (the stream is intact);
    /// an empty slice at end of stream.
    pub fn stream_read(&mut self, deadline: Instant) -> io::Result<Option<&[u8]>> {
        if self.pos == self.buf.len() {
            match self.fill(deadline) {
                Err(e) if timed_out(&e) => return Ok(None),
                Err(e) => {
                    return Err(match tls_refusal(&e) {
                        Some(m) => io::Error::other(m),
                        None => e,
                    });
                }
                Ok(_) => {}
            }
        }
        let data = &self.buf[self.pos..];
        self.pos = self.buf.len();
        Ok(Some(data))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response head (status line and headers, without the blank line).
pub fn parse_head(text: &str) -> Result<Head, String> {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP/1.x response: {status_line:?}"))?;
    let mut keep_alive = version == "HTTP/1.1";
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed response header {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.to_ascii_lowercase().ends_with("chunked") {
                return Err(format!("unsupported Transfer-Encoding {value:?}"));
            }
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            keep_alive = if v.contains("close") {
                false
            } else {
                keep_alive || v.contains("keep-alive")
            };
        }
    }
    if matches!(status, 100..=199 | 204 | 304) {
        framing = Framing::Length(0);
    }
    Ok(Head {
        status,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_give_status_framing_and_reuse() {
        let h =
            parse_head("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 113")
                .unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                framing: Framing::Length(113),
                keep_alive: true
            }
        );
        let h = parse_head(
            "HTTP/1.1 503 Service Unavailable\r\nTrailer: Grpc-Trailer-Content-Type\r\n\
             Transfer-Encoding: chunked",
        )
        .unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (503, Framing::Chunked, true)
        );
        let h = parse_head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2").unwrap();
        assert!(!h.keep_alive);
        let h = parse_head("HTTP/1.0 200 OK").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
    }

    #[test]
    fn malformed_heads_are_errors_naming_the_line() {
        assert!(
            parse_head("SSH-2.0-OpenSSH")
                .unwrap_err()
                .contains("not an HTTP/1.x")
        );
        assert!(
            parse_head("HTTP/1.1 200 OK\r\nbroken")
                .unwrap_err()
                .contains("\"broken\"")
        );
        assert!(
            parse_head("HTTP/1.1 200 OK\r\nContent-Length: x")
                .unwrap_err()
                .contains("\"x\"")
        );
    }
}
