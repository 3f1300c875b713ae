//! A minimal HTTP/2 cleartext (prior knowledge) client for one request with request trailers:
//! what an attacker sends to end a body with trailers (issue 11, attack 1). No HTTP client in
//! our dependencies (ureq, tiny_http) speaks HTTP/2, and curl's command line cannot send
//! request trailers; this is about 150 lines instead of an async stack.
//!
//! It writes the preface, SETTINGS, HEADERS, DATA and trailing HEADERS (END_STREAM), acks the
//! server's SETTINGS, and reads until the response's HEADERS on stream 1, a RST_STREAM or a
//! GOAWAY. HPACK: requests use literals without indexing (no Huffman, no dynamic table); of the
//! response only `:status` is decoded (the first field Envoy sends), from the static table or a
//! literal, plain or Huffman-coded digits.

use anyhow::{bail, Context as _, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
/// The default SETTINGS_MAX_FRAME_SIZE.
const MAX_FRAME: usize = 16_384;

/// How the server ended the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Outcome {
    /// Response headers with this `:status`.
    Status(u16),
    /// RST_STREAM on the request's stream (error code).
    Reset(u32),
    /// GOAWAY before any response (error code).
    GoAway(u32),
}

/// A connection to `127.0.0.1:port`, the preface and our SETTINGS written, and the bytes read
/// of the server's frames.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Result<Conn> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut out = PREFACE.to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        s.write_all(&out).context("write preface")?;
        Ok(Conn { s, buf: Vec::new() })
    }

    /// The server's next frame (kind, flags, stream, payload), its SETTINGS acked, read until
    /// `deadline`; `what` says what the caller waits for.
    fn next(&mut self, deadline: Instant, what: &str) -> Result<(u8, u8, u32, Vec<u8>)> {
        let mut tmp = [0u8; 16_384];
        loop {
            if let Some((kind, flags, stream, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                if (kind, stream) == (SETTINGS, 0) && flags & ACK == 0 {
                    let mut ack = Vec::new();
                    frame(&mut ack, SETTINGS, ACK, 0, &[]);
                    self.s.write_all(&ack)?;
                }
                return Ok((kind, flags, stream, payload));
            }
            if Instant::now() > deadline {
                bail!("no {what} in time");
            }
            match self.s.read(&mut tmp) {
                Ok(0) => bail!("connection closed before {what}"),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e).context("read"),
            }
        }
    }
}

/// A request's header block: pseudo-headers from `method` and `path`, then `headers`.
fn request_block(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    let pseudo = [
        (":method", method),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
    ];
    for (k, v) in pseudo.into_iter().chain(headers.iter().copied()) {
        literal(&mut block, k, v);
    }
    block
}

/// Sends one request on a new connection to `127.0.0.1:port` and waits (up to `timeout`) for
/// how it ended. `headers` are regular headers (lowercase names); pseudo-headers are built
/// from `method` and `path`.
pub fn request_with_trailers(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    trailers: &[(&str, &str)],
    timeout: Duration,
) -> Result<H2Outcome> {
    let mut c = Conn::open(port)?;
    let mut out = Vec::new();
    let end = if body.is_empty() && trailers.is_empty() {
        END_STREAM
    } else {
        0
    };
    let block = request_block(method, path, headers);
    frame(&mut out, HEADERS, END_HEADERS | end, 1, &block);
    let chunks: Vec<&[u8]> = body.chunks(MAX_FRAME).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len() && trailers.is_empty();
        frame(&mut out, DATA, if last { END_STREAM } else { 0 }, 1, chunk);
    }
    if !trailers.is_empty() {
        let mut block = Vec::new();
        for (k, v) in trailers {
            literal(&mut block, k, v);
        }
        frame(&mut out, HEADERS, END_HEADERS | END_STREAM, 1, &block);
    }
    c.s.write_all(&out).context("write")?;
    let deadline = Instant::now() + timeout;
    loop {
        match c.next(deadline, "response")? {
            (HEADERS, flags, 1, payload) => return status(&payload, flags).map(H2Outcome::Status),
            (RST_STREAM, _, 1, payload) => return Ok(H2Outcome::Reset(be32(&payload, 0))),
            (GOAWAY, _, 0, payload) => return Ok(H2Outcome::GoAway(be32(&payload, 4))),
            _ => {}
        }
    }
}

/// Slow clients on one connection to `127.0.0.1:port`: `streams` `POST`s to `path` with
/// `headers`, each sending `bytes` of body and never its end (issue 20, finding 5). Waits until
/// Envoy opened its flow-control windows, writes everything (within `timeout`), and returns the
/// connection: the streams stay open until it is dropped, which resets them all.
pub fn slow_streams(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    streams: u32,
    bytes: usize,
    timeout: Duration,
) -> Result<TcpStream> {
    let mut c = Conn::open(port)?;
    c.s.set_write_timeout(Some(timeout))?;
    // Envoy's SETTINGS (stream windows) and its connection WINDOW_UPDATE come first; without
    // them only 65,535 bytes may be sent.
    let deadline = Instant::now() + timeout;
    while !matches!(
        c.next(deadline, "connection window")?,
        (WINDOW_UPDATE, _, 0, _)
    ) {}
    let body = vec![b' '; bytes];
    let block = request_block("POST", path, headers);
    for id in (0..streams).map(|i| 1 + 2 * i) {
        let mut out = Vec::new();
        frame(&mut out, HEADERS, END_HEADERS, id, &block);
        for chunk in body.chunks(MAX_FRAME) {
            frame(&mut out, DATA, 0, id, chunk);
        }
        c.s.write_all(&out).context("write a stream")?;
    }
    Ok(c.s)
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// (type, flags, stream, payload, bytes used) of the first complete frame in `buf`.
fn parse_frame(buf: &[u8]) -> Option<(u8, u8, u32, Vec<u8>, usize)> {
    let head = buf.get(..9)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let payload = buf.get(9..9 + len)?.to_vec();
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload, 9 + len))
}

fn be32(p: &[u8], at: usize) -> u32 {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// HPACK integer with an `n`-bit prefix; `first` holds the bits above the prefix.
fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Literal header field without indexing, new name, no Huffman.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// Reads an HPACK integer with an `n`-bit prefix at `p[*i]`.
fn read_int(p: &[u8], i: &mut usize, n: u32) -> Option<usize> {
    let max = (1usize << n) - 1;
    let mut v = (*p.get(*i)? as usize) & max;
    *i += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let b = *p.get(*i)?;
        *i += 1;
        v += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// `:status` from the first field of a response header block.
fn status(payload: &[u8], flags: u8) -> Result<u16> {
    let mut i = 0;
    if flags & 0x8 != 0 {
        i += 1; // PADDED: pad length
    }
    if flags & 0x20 != 0 {
        i += 5; // PRIORITY
    }
    // A dynamic table size update may come first.
    while payload.get(i).is_some_and(|b| b & 0xe0 == 0x20) {
        read_int(payload, &mut i, 5).context("table size update")?;
    }
    let b = *payload.get(i).context("empty header block")?;
    let static_status = |idx: usize| match idx {
        8 => Some(200),
        9 => Some(204),
        10 => Some(206),
        11 => Some(304),
        12 => Some(400),
        13 => Some(404),
        14 => Some(500),
        _ => None,
    };
    if b & 0x80 != 0 {
        let idx = read_int(payload, &mut i, 7).context("index")?;
        return static_status(idx).with_context(|| format!("indexed field {idx} is not :status"));
    }
    // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
    let idx = if b & 0x40 != 0 {
        read_int(payload, &mut i, 6)
    } else {
        read_int(payload, &mut i, 4)
    }
    .context("name index")?;
    if !(8..=14).contains(&idx) {
        bail!("first response field is not :status (name index {idx})");
    }
    let huffman = payload.get(i).is_some_and(|b| b & 0x80 != 0);
    let len = read_int(payload, &mut i, 7).context("value length")?;
    let raw = payload.get(i..i + len).context("value")?;
    let text = if huffman {
        huffman_digits(raw).context("Huffman-coded status")?
    } else {
        String::from_utf8_lossy(raw).into_owned()
    };
    text.parse().with_context(|| format!(":status {text:?}"))
}

/// Decodes a Huffman-coded string of ASCII digits (RFC 7541 Appendix B: `0`-`2` are 5-bit
/// codes 0-2, `3`-`9` are 6-bit codes 0x19-0x1f); padding is up to 7 one bits.
fn huffman_digits(raw: &[u8]) -> Option<String> {
    let bits: Vec<u8> = raw
        .iter()
        .flat_map(|b| (0..8).rev().map(move |k| (b >> k) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    let take = |i: usize, n: usize| -> Option<u32> {
        let s = bits.get(i..i + n)?;
        Some(s.iter().fold(0, |a, b| a << 1 | u32::from(*b)))
    };
    while i < bits.len() {
        if bits.len() - i < 8 && bits[i..].iter().all(|b| *b == 1) {
            break;
        }
        let five = take(i, 5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five as u8));
            i += 5;
            continue;
        }
        let six = take(i, 6)?;
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'0' + 3 + (six - 0x19) as u8));
            i += 6;
            continue;
        }
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_pieces() {
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut v = Vec::new();
        int(&mut v, 0, 5, 1337);
        assert_eq!(v, [31, 154, 10]);
        let mut i = 0;
        assert_eq!(read_int(&v, &mut i, 5), Some(1337));
        // RFC 7541 C.6.1: "302" Huffman-coded is 64 02; "401" is 68 01 (4 = 011010).
        assert_eq!(huffman_digits(&[0x64, 0x02]).as_deref(), Some("302"));
        assert_eq!(huffman_digits(&[0x68, 0x01]).as_deref(), Some("401"));
        assert_eq!(status(&[0x88], 0).unwrap(), 200);
        assert_eq!(status(&[0x48, 0x82, 0x68, 0x01], 0).unwrap(), 401);
        assert_eq!(status(&[0x08, 0x03, b'4', b'0', b'1'], 0).unwrap(), 401);
    }
}
