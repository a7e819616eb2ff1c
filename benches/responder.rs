//! A minimal streaming responder for the open-loop bench: an independent
//! server that costs little enough per request to take 10,000 requests per
//! second on one core, so the bench measures the client and not the
//! embedded simulator (whose batching engine costs ~120 µs per request).
//!
//! It answers every `POST` with the same streamed completion: 16 content
//! events, a finish event, a usage event and `[DONE]`, one HTTP chunk per
//! event, all in one write, on a keep-alive connection. It logs each request's arrival (the
//! instant its head was read, microseconds since the Unix epoch) with its
//! `X-Request-Id`, and when its standard input closes writes that log in
//! the CSV form `llm-replay sim --log-arrivals` writes, and exits.
//!
//! The bench runs it as its own binary re-executed
//! (`LLM_REPLAY_BENCH_RESPOND=PORT,LOG`), pinned to the other core.

use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Tokens in every response.
const TOKENS: usize = 16;

/// The answer to any GET: the model list preflight asks for.
const MODELS: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 67\r\n\r\n{\"object\":\"list\",\"data\":[{\"id\":\"llm-replay-sim\",\"object\":\"model\"}]}";

/// Arrivals: (µs since the epoch, request id).
type Log = Arc<Mutex<Vec<(i64, String)>>>;

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

/// One connection: requests in, the canned response out, arrivals logged.
async fn serve(mut conn: tokio::net::TcpStream, reply: Arc<Vec<u8>>, log: Log) {
    let _ = conn.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(16 << 10);
    loop {
        // Parse every whole request in the buffer; read when none is.
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(head)) => {
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
                    Some((head + length, id, req.method == Some("GET")))
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return,
            }
        };
        match parsed {
            Some((len, id, get)) if buf.len() >= len => {
                buf.advance(len);
                // A GET is the client's preflight (`/v1/models`), not a
                // request of the run.
                let answer = if get {
                    MODELS
                } else {
                    if let Ok(mut l) = log.lock() {
                        l.push((unix_us(), id));
                    }
                    &reply[..]
                };
                if conn.write_all(answer).await.is_err() {
                    return;
                }
            }
            _ => {
                buf.reserve(16 << 10);
                match conn.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
    }
}

/// Serves on `127.0.0.1:port` until standard input closes, then writes the
/// arrival log to `log_path`.
pub fn run(port: u16, log_path: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log: Log = Arc::default();
    rt.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let reply = Arc::new(canned_response());
        let accept_log = log.clone();
        let accept = async move {
            loop {
                if let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(serve(conn, reply.clone(), accept_log.clone()));
                }
            }
        };
        let mut stdin = tokio::io::stdin();
        let mut sink = Vec::new();
        tokio::select! {
            () = accept => {}
            _ = stdin.read_to_end(&mut sink) => {}
        }
    });
    let mut w = csv::Writer::from_path(log_path).unwrap();
    w.write_record(["arrival_us", "request_id"]).unwrap();
    for (at, id) in log.lock().unwrap().iter() {
        w.write_record([at.to_string().as_str(), id.as_str()])
            .unwrap();
    }
    w.flush().unwrap();
}
