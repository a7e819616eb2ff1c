//! A lean HTTP/1.1 client for plain `http://` endpoints, the replay's hot
//! path.
//!
//! reqwest (over hyper's pooled client) hands every request to a
//! connection task through channels and every body chunk back the same
//! way; at thousands of requests per second on one core that hand-off,
//! not the network, was most of the client's own CPU. Here a request is
//! one task from its write to the end of its body: it takes an idle
//! connection from its engine's pool (or connects), writes head and body
//! in one `write`, parses the response head with `httparse`, and decodes
//! a `Content-Length`, chunked or close-delimited body as it arrives. A
//! connection whose body ended cleanly goes back to the pool.
//!
//! A connection taken from the pool may have been closed by the server
//! while idle (a keep-alive timeout). When such a connection fails before
//! a single byte of the response arrived, the request is sent once more
//! on a new connection, as browsers and hyper do for the same race; a
//! request that got any answer, or that failed on a new connection, is
//! never sent again.
//!
//! HTTPS and `--http2` stay on reqwest.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most header lines a response head may carry.
const MAX_HEADERS: usize = 96;

/// The longest response head (and chunk-size or trailer line) accepted.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Bytes read from the socket at a time (at least).
const READ_CHUNK: usize = 16 << 10;

/// Why a request got no whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H1Error {
    /// No connection could be made (refused, unreachable, timed out).
    Connect(String),
    /// The connection broke, or the server sent what is not HTTP/1.1.
    Broken(String),
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(s) | Self::Broken(s) => f.write_str(s),
        }
    }
}

/// Connections to one `host:port`, kept open between requests.
#[derive(Debug)]
pub struct Pool {
    /// The host as a socket address takes it (an IPv6 literal without its
    /// brackets).
    host: String,
    port: u16,
    idle: Mutex<Vec<TcpStream>>,
    max_idle: usize,
    connect_timeout: Duration,
}

/// How a request's attempt on one connection failed.
enum Attempt {
    /// A pooled connection was found closed before any answer: send again
    /// on a new one.
    Stale,
    Failed(H1Error),
}

impl Pool {
    /// A pool for `host:port`, keeping at most `max_idle` idle connections.
    pub fn new(host: String, port: u16, max_idle: usize, connect_timeout: Duration) -> Self {
        Self {
            host,
            port,
            idle: Mutex::new(Vec::new()),
            max_idle,
            connect_timeout,
        }
    }

    fn take_idle(&self) -> Option<TcpStream> {
        self.idle.lock().ok()?.pop()
    }

    fn put_idle(&self, conn: TcpStream) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<TcpStream, H1Error> {
        let target = format!("{}:{}", self.host, self.port);
        let conn = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            H1Error::Connect(format!(
                "connecting to {target}: no connection within --connect-timeout {}",
                humantime::format_duration(self.connect_timeout)
            ))
        })?
        .map_err(|e| H1Error::Connect(format!("connecting to {target}: {e}")))?;
        // Requests are written whole: Nagle would only delay them.
        conn.set_nodelay(true)
            .map_err(|e| H1Error::Connect(format!("connecting to {target}: {e}")))?;
        Ok(conn)
    }

    /// Sends `request` (a whole HTTP/1.1 request, head and body) and reads
    /// the response head.
    pub async fn send(&self, request: &[u8]) -> Result<Response<'_>, H1Error> {
        if let Some(conn) = self.take_idle() {
            match self.attempt(conn, request, true).await {
                Ok(r) => return Ok(r),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Stale) => {}
            }
        }
        let conn = self.connect().await?;
        match self.attempt(conn, request, false).await {
            Ok(r) => Ok(r),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::Stale) => Err(H1Error::Broken(
                "the connection closed before the response".into(),
            )),
        }
    }

    async fn attempt(
        &self,
        mut conn: TcpStream,
        request: &[u8],
        reused: bool,
    ) -> Result<Response<'_>, Attempt> {
        // Only a reused connection that broke before the first byte of an
        // answer is worth a second try.
        let broke = |what: &str, e: &std::io::Error, answered: bool| {
            if reused && !answered && is_closed(e) {
                Attempt::Stale
            } else {
                Attempt::Failed(H1Error::Broken(format!("{what}: {e}")))
            }
        };
        if let Err(e) = conn.write_all(request).await {
            return Err(broke("sending the request", &e, false));
        }
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            let n = match conn.read_buf(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Err(broke("reading the response", &e, !buf.is_empty())),
            };
            if n == 0 {
                if reused && buf.is_empty() {
                    return Err(Attempt::Stale);
                }
                return Err(Attempt::Failed(H1Error::Broken(
                    "the connection closed before the response head ended".into(),
                )));
            }
            match parse_head(&buf).map_err(Attempt::Failed)? {
                Head::Partial => {
                    if buf.len() > MAX_HEAD_BYTES {
                        return Err(Attempt::Failed(H1Error::Broken(format!(
                            "a response head longer than {} KiB",
                            MAX_HEAD_BYTES >> 10
                        ))));
                    }
                }
                // An interim answer (100 Continue): the real one follows.
                Head::Interim(len) => buf.advance(len),
                Head::Complete(head) => {
                    buf.advance(head.len);
                    return Ok(Response {
                        status: head.status,
                        conn: Some(conn),
                        buf,
                        out: BytesMut::new(),
                        body: head.body,
                        keep_alive: head.keep_alive,
                        pool: self,
                    });
                }
            }
        }
    }
}

/// Whether `e` says the peer had closed the connection.
fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// How the body of a response is framed, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Chunked transfer coding, in this state.
    Chunked(Chunk),
    /// Neither: the body ends when the server closes the connection.
    UntilClose,
    /// The body has ended.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Waiting for a chunk-size line.
    Size,
    /// Inside a chunk: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

struct ParsedHead {
    len: usize,
    status: u16,
    body: Body,
    keep_alive: bool,
}

enum Head {
    Partial,
    Interim(usize),
    Complete(ParsedHead),
}

fn parse_head(buf: &[u8]) -> Result<Head, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(e) => {
            return Err(H1Error::Broken(format!(
                "the response is not HTTP/1.1 ({e}): {}",
                String::from_utf8_lossy(&buf[..buf.len().min(80)]).trim()
            )));
        }
    };
    let status = resp.code.unwrap_or(0);
    if (100..200).contains(&status) && status != 101 {
        return Ok(Head::Interim(len));
    }
    let mut keep_alive = resp.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let value = || String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value().trim().parse::<u64>().map_err(|_| {
                H1Error::Broken(format!(
                    "a Content-Length that is not a number: {}",
                    value()
                ))
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Broken("two different Content-Lengths".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value()
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value().split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && resp.version == Some(0) {
                    keep_alive = true;
                }
            }
        }
    }
    let body = if status == 204 || status == 304 {
        Body::Done
    } else if chunked {
        Body::Chunked(Chunk::Size)
    } else if let Some(n) = length {
        if n == 0 { Body::Done } else { Body::Length(n) }
    } else {
        keep_alive = false;
        Body::UntilClose
    };
    Ok(Head::Complete(ParsedHead {
        len,
        status,
        body,
        keep_alive,
    }))
}

/// A response whose head has been read; its body is read with
/// [`Response::chunk`]. Dropped before its body ended, it closes its
/// connection.
#[derive(Debug)]
pub struct Response<'p> {
    /// The HTTP status.
    pub status: u16,
    conn: Option<TcpStream>,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    /// Body bytes decoded from one read, handed out as one chunk.
    out: BytesMut,
    body: Body,
    keep_alive: bool,
    pool: &'p Pool,
}

impl Response<'_> {
    /// The body bytes that arrived with the next read (`None` at the end
    /// of the body, which also returns the connection to its pool).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, H1Error> {
        loop {
            self.decode()?;
            if !self.out.is_empty() {
                return Ok(Some(self.out.split().freeze()));
            }
            if self.body == Body::Done {
                self.release();
                return Ok(None);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            self.buf.reserve(READ_CHUNK);
            let n = conn
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| H1Error::Broken(format!("reading the body: {e}")))?;
            if n == 0 {
                if self.body == Body::UntilClose {
                    self.body = Body::Done;
                    self.conn = None;
                    continue;
                }
                self.conn = None;
                return Err(H1Error::Broken(
                    "the connection closed before the body ended".into(),
                ));
            }
        }
    }

    /// A connection whose body ended cleanly, with nothing after it, goes
    /// back to the pool.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.buf.is_empty()
        {
            self.pool.put_idle(conn);
        }
    }

    /// Moves the body bytes framed in `buf` to `out`.
    fn decode(&mut self) -> Result<(), H1Error> {
        loop {
            match self.body {
                Body::Done => return Ok(()),
                Body::UntilClose => {
                    let all = self.buf.split();
                    self.out.extend_from_slice(&all);
                    return Ok(());
                }
                Body::Length(left) => {
                    let take = take_up_to(&mut self.buf, &mut self.out, left);
                    self.body = if take == left {
                        Body::Done
                    } else {
                        Body::Length(left - take)
                    };
                    return Ok(());
                }
                Body::Chunked(Chunk::Data(left)) => {
                    if self.buf.is_empty() {
                        return Ok(());
                    }
                    let take = take_up_to(&mut self.buf, &mut self.out, left);
                    self.body = Body::Chunked(if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    });
                }
                Body::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Ok(());
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(H1Error::Broken(
                            "a chunk of the body does not end where its size said".into(),
                        ));
                    }
                    self.buf.advance(2);
                    self.body = Body::Chunked(Chunk::Size);
                }
                Body::Chunked(Chunk::Size) => {
                    let Some(line) = self.line()? else {
                        return Ok(());
                    };
                    let size = std::str::from_utf8(&line)
                        .ok()
                        .and_then(|l| l.split(';').next())
                        .map(str::trim)
                        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                        .ok_or_else(|| {
                            H1Error::Broken(format!(
                                "a chunk size that is not hexadecimal: {:?}",
                                String::from_utf8_lossy(&line[..line.len().min(40)])
                            ))
                        })?;
                    self.body = Body::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Body::Chunked(Chunk::Trailers) => {
                    let Some(line) = self.line()? else {
                        return Ok(());
                    };
                    if line.is_empty() {
                        self.body = Body::Done;
                    }
                }
            }
        }
    }

    /// The next CRLF-ended line of `buf`, without its end; `None` until a
    /// whole line arrived.
    fn line(&mut self) -> Result<Option<BytesMut>, H1Error> {
        match memchr::memchr(b'\n', &self.buf) {
            Some(at) => {
                let mut line = self.buf.split_to(at + 1);
                line.truncate(at);
                if line.last() == Some(&b'\r') {
                    line.truncate(at - 1);
                }
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_HEAD_BYTES => Err(H1Error::Broken(format!(
                "a chunk-size or trailer line longer than {} KiB",
                MAX_HEAD_BYTES >> 10
            ))),
            None => Ok(None),
        }
    }
}

/// Moves up to `left` bytes from the front of `buf` to `out`; how many.
fn take_up_to(buf: &mut BytesMut, out: &mut BytesMut, left: u64) -> u64 {
    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
    out.extend_from_slice(&buf[..take]);
    buf.advance(take);
    take as u64
}

/// Whether `value` may go out as a header value as it is: no control
/// character but tab.
pub fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server that answers each connection's requests with `replies` in
    /// turn (one reply per request read), written in pieces of `piece`
    /// bytes, then closes the connection.
    async fn server(replies: Vec<Vec<u8>>, piece: usize) -> (u16, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut requests = 0;
            for reply in replies {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read one request: head then Content-Length bytes.
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return requests;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                requests += 1;
                for p in reply.chunks(piece) {
                    s.write_all(p).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            requests
        });
        (port, task)
    }

    async fn body_of(r: &mut Response<'_>) -> Result<Vec<u8>, H1Error> {
        let mut all = Vec::new();
        while let Some(b) = r.chunk().await? {
            all.extend_from_slice(&b);
        }
        Ok(all)
    }

    fn pool(port: u16) -> Pool {
        Pool::new("127.0.0.1".into(), port, 4, Duration::from_secs(2))
    }

    const REQ: &[u8] = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn chunked_bodies_decode_in_any_pieces_and_the_connection_is_reused() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n".to_vec();
        for piece in [1, 3, 7, 1000] {
            let (port, server) = server(vec![chunked.clone(), chunked.clone()], piece).await;
            let pool = pool(port);
            for _ in 0..2 {
                let mut r = pool.send(REQ).await.unwrap();
                assert_eq!(r.status, 200);
                assert_eq!(body_of(&mut r).await.unwrap(), b"hello world");
            }
            // Both requests went over the one connection the server accepted.
            assert_eq!(server.await.unwrap(), 2, "piece {piece}");
        }
    }

    #[tokio::test]
    async fn length_and_close_delimited_bodies() {
        let (port, _s) = server(
            vec![b"HTTP/1.1 500 Oops\r\ncontent-length: 4\r\n\r\nnope".to_vec()],
            2,
        )
        .await;
        let p = pool(port);
        let mut r = p.send(REQ).await.unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(body_of(&mut r).await.unwrap(), b"nope");

        let (port, _s) = server(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()], 4).await;
        let p = pool(port);
        let mut r = p.send(REQ).await.unwrap();
        assert_eq!(body_of(&mut r).await.unwrap(), b"until close");
        assert!(
            p.take_idle().is_none(),
            "a close-delimited body ends its connection"
        );
    }

    #[tokio::test]
    async fn a_cut_body_and_garbage_are_errors() {
        let (port, _s) = server(
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel".to_vec()],
            100,
        )
        .await;
        let p = pool(port);
        let mut r = p.send(REQ).await.unwrap();
        let e = body_of(&mut r).await.unwrap_err();
        assert!(
            e.to_string().contains("closed before the body ended"),
            "{e}"
        );

        let (port, _s) = server(vec![b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()], 100).await;
        let e = pool(port).send(REQ).await.unwrap_err();
        assert!(matches!(e, H1Error::Broken(_)), "{e}");
        assert!(e.to_string().contains("not HTTP/1.1"), "{e}");

        let (port, _s) = server(
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec()],
            100,
        )
        .await;
        let p = pool(port);
        let mut r = p.send(REQ).await.unwrap();
        let e = body_of(&mut r).await.unwrap_err();
        assert!(e.to_string().contains("not hexadecimal"), "{e}");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced_once() {
        // The server answers one request per connection, then closes it
        // without saying so: the second request finds its pooled
        // connection closed and goes out again on a new one.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                accepted += 1;
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                s.shutdown().await.unwrap();
            }
            accepted
        });
        let p = pool(port);
        for _ in 0..2 {
            let mut r = p.send(REQ).await.unwrap();
            assert_eq!(body_of(&mut r).await.unwrap(), b"ok");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = pool(port).send(REQ).await.unwrap_err();
        assert!(matches!(e, H1Error::Connect(_)), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    #[test]
    fn header_values_without_control_characters_pass() {
        assert!(valid_header_value("req-1\tä"));
        assert!(!valid_header_value("a\r\nx-evil: 1"));
    }
}
