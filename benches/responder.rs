//! A minimal streaming responder for the open-loop bench: an independent
//! server that costs little enough per request to take 10,000 requests per
//! second on one core, so the bench measures the client and not the
//! embedded simulator (whose batching engine costs ~120 µs per request).
//!
//! It answers every `POST` with the same streamed completion: 16 content
//! events, a finish event, a usage event and `[DONE]`, one HTTP chunk per
//! event, all in one write, on a keep-alive connection. It logs each
//! request's arrival (the instant of the read that completed it,
//! microseconds since the Unix epoch) with its `X-Request-Id`, and when
//! its standard input closes writes that log in the CSV form `llm-replay
//! sim --log-arrivals` writes, and exits.
//!
//! Pinned to a core of its own it busy-polls (epoll with a zero timeout):
//! a server that sleeps between requests logs an arrival only after its
//! wake-up, tens of microseconds late and in clumps, which at 100 µs mean
//! gaps reads as burstiness the client never sent.
//!
//! The bench runs it as its own binary re-executed
//! (`LLM_REPLAY_BENCH_RESPOND=PORT,LOG[,spin]`), pinned to the other core.

use std::io::{ErrorKind, Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// Tokens in every response.
const TOKENS: usize = 16;

/// The answer to any GET: the model list preflight asks for.
const MODELS: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 67\r\n\r\n{\"object\":\"list\",\"data\":[{\"id\":\"llm-replay-sim\",\"object\":\"model\"}]}";

/// The whole chunked response, head and body.
fn canned_response() -> Vec<u8> {
    let mut events = Vec::new();
    for i in 0..TOKENS {
        events.push(format!(
            r#"{{"id":"r","object":"text_completion","model":"llm-replay-sim","choices":[{{"index":0,"text":" t{i}","finish_reason":null}}]}}"#
        ));
    }
    events.push(
        r#"{"id":"r","object":"text_completion","model":"llm-replay-sim","choices":[{"index":0,"text":"","finish_reason":"length"}]}"#.to_owned(),
    );
    events.push(format!(
        r#"{{"id":"r","object":"text_completion","model":"llm-replay-sim","choices":[],"usage":{{"completion_tokens":{TOKENS}}}}}"#
    ));
    events.push("[DONE]".to_owned());
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    // One HTTP chunk per event, as streaming servers frame them.
    for data in events {
        let event = format!("data: {data}\n\n");
        out.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One client connection: bytes read and not yet parsed, bytes of replies
/// not yet written.
struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
}

/// What a read of a connection found.
enum Read {
    Open,
    Closed,
}

impl Conn {
    /// Reads all that arrived, logs each whole request with the instant
    /// of the read that completed it, queues its reply, and writes what
    /// the socket takes.
    fn serve(&mut self, reply: &[u8], log: &mut Vec<(i64, String)>) -> Read {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Read::Closed,
                Ok(n) => {
                    let at = unix_us();
                    self.input.extend_from_slice(&chunk[..n]);
                    while let Some((len, id, get)) = parse(&self.input) {
                        self.input.drain(..len);
                        // A GET is the client's preflight (`/v1/models`),
                        // not a request of the run.
                        if get {
                            self.output.extend_from_slice(MODELS);
                        } else {
                            log.push((at, id));
                            self.output.extend_from_slice(reply);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Read::Closed,
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> Read {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Read::Closed,
            }
        }
        Read::Open
    }
}

/// The first whole request in `buf`: its length, `X-Request-Id` and
/// whether it is a GET.
fn parse(buf: &[u8]) -> Option<(usize, String, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        _ => return None,
    };
    let mut length = 0usize;
    let mut id = String::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        } else if h.name.eq_ignore_ascii_case("x-request-id") {
            id = String::from_utf8_lossy(h.value).into_owned();
        }
    }
    (buf.len() >= head + length).then(|| (head + length, id, req.method == Some("GET")))
}

const LISTENER: Token = Token(usize::MAX);

/// Serves on `127.0.0.1:port` until standard input closes, then writes the
/// arrival log to `log_path`. With `spin`, it polls without sleeping (on
/// a core of its own), so each arrival is logged within microseconds of
/// reaching its socket rather than after a wake-up.
pub fn run(port: u16, log_path: &str, spin: bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let stdin_stop = stop.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        stdin_stop.store(true, Ordering::Release);
    });
    let reply = canned_response();
    let mut poll = Poll::new().unwrap();
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into()).unwrap();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut log = Vec::with_capacity(1 << 20);
    let mut events = Events::with_capacity(1024);
    let timeout = if spin {
        Duration::ZERO
    } else {
        Duration::from_millis(20)
    };
    while !stop.load(Ordering::Acquire) {
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    poll.registry()
                        .register(
                            &mut stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .unwrap();
                    // Data may have come with the connection.
                    let mut conn = Conn {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                    };
                    let open = matches!(conn.serve(&reply, &mut log), Read::Open);
                    conns[slot] = open.then_some(conn);
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if let Read::Closed = conn.serve(&reply, &mut log) {
                if let Some(mut c) = conns[slot].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }
    let mut w = csv::Writer::from_path(log_path).unwrap();
    w.write_record(["arrival_us", "request_id"]).unwrap();
    for (at, id) in &log {
        w.write_record([at.to_string().as_str(), id.as_str()])
            .unwrap();
    }
    w.flush().unwrap();
}
