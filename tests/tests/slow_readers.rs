//! A slow reader that still takes bytes is not cut off (`write_timeout_secs`
//! in docs/configuration.md), on both transports: the request deadline
//! (`header_read_timeout`, for connections with no request) counts a request
//! until its response has left, not only until the service has answered.
//!
//! The HTTP/2 client is written frame by frame here (RFC 9113 §4.1 frames,
//! RFC 7541 literals): it opens its stream's flow-control window a little at
//! a time, as a reader on a slow link does.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use scep_tests::server::{Scepd, ScepdOptions, Transport};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// RFC 9113 §6: frame types and flags used here.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113 §6.5.2).
const INITIAL_WINDOW_SIZE: u16 = 0x4;
/// The stream window the client starts with, and opens by every [`STEP`].
const WINDOW: u32 = 100;
const STEP: Duration = Duration::from_millis(250);
/// `header_read_timeout_secs` of the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    [&len[1..], &[kind, flags], &stream.to_be_bytes(), payload].concat()
}

/// A GET of `path` (RFC 7541: `:method GET` and `:scheme http` indexed,
/// `:path` and `:authority` literal without indexing).
fn get(stream: u32, path: &str) -> Vec<u8> {
    let literal = |index: u8, value: &str| [&[index, u8::try_from(value.len()).unwrap()], value.as_bytes()].concat();
    let block = [&[0x82, 0x86][..], &literal(0x04, path), &literal(0x01, "localhost")].concat();
    frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
}

/// One frame read: (type, flags, stream, payload).
type Frame = (u8, u8, u32, Vec<u8>);

/// Reads one frame; `None` at EOF, an error (`WouldBlock`/`TimedOut`) when
/// nothing arrived within the read timeout.
fn read_frame(s: &mut TcpStream) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    if s.read(&mut head[..1])? == 0 {
        return Ok(None);
    }
    // The rest of a frame that has started is waited for (the poll timeout
    // must not cut a frame in two).
    let poll = s.read_timeout()?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.read_exact(&mut head[1..])?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload)?;
    s.set_read_timeout(poll)?;
    Ok(Some((head[3], head[4], stream, payload)))
}

scep_tests::on_each_transport!(a_slow_http2_reader_gets_the_whole_response);

/// An h2c client whose stream window opens by [`WINDOW`] bytes every
/// [`STEP`] reads a GetCACert that takes several request timeouts to leave:
/// it gets all of it and END_STREAM, without a reset or the connection closing.
fn a_slow_http2_reader_gets_the_whole_response(transport: Transport) {
    let server = Scepd::start(
        ScepdOptions::with_config(
            "[server]\ndata_dir = \"data\"\nheader_read_timeout_secs = 1\nh2_keep_alive_interval_secs = 600\n\n\
             [[profile]]\nname = \"corp\"\nchallenge_password = \"slow-reader-secret\"\n",
        )
        .on(transport),
    )
    .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
    let mut s = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    let window = [&INITIAL_WINDOW_SIZE.to_be_bytes()[..], &WINDOW.to_be_bytes()].concat();
    let hello = [PREFACE, &frame(SETTINGS, 0, 0, &window), &get(1, "/scep?operation=GetCACert")].concat();
    s.write_all(&hello).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();

    let started = Instant::now();
    let mut next_update = started + STEP;
    let mut body = Vec::new();
    let mut ended = false;
    while !ended {
        assert!(started.elapsed() < Duration::from_secs(60), "{transport:?}: no end after {} bytes", body.len());
        if Instant::now() >= next_update {
            s.write_all(&frame(WINDOW_UPDATE, 0, 1, &WINDOW.to_be_bytes())).unwrap();
            next_update += STEP;
        }
        let (kind, flags, stream, payload) = match read_frame(&mut s) {
            Ok(Some(f)) => f,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            other => panic!(
                "{transport:?}: the connection ended after {} bytes and {:?}: {other:?}\n{}",
                body.len(),
                started.elapsed(),
                server.log_tail(20)
            ),
        };
        match kind {
            SETTINGS if flags & ACK == 0 => s.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap(),
            PING if flags & ACK == 0 => s.write_all(&frame(PING, ACK, 0, &payload)).unwrap(),
            DATA if stream == 1 => {
                body.extend_from_slice(&payload);
                ended = flags & END_STREAM != 0;
            }
            HEADERS if stream == 1 => ended = flags & END_STREAM != 0,
            // A graceful GOAWAY lets stream 1 finish (RFC 9113 §6.8); a reset does not.
            RST_STREAM => panic!("{transport:?}: RST_STREAM after {} bytes and {:?}", body.len(), started.elapsed()),
            _ => {}
        }
    }
    let took = started.elapsed();
    // The scenario is only a test when the answer took longer than the
    // request deadline and the graceful close after it (one second).
    assert!(took > 2 * REQUEST_TIMEOUT + STEP, "{transport:?}: {} bytes in {took:?}: make WINDOW smaller", body.len());
    // A degenerate PKCS#7 SignedData (RFC 8894 §4.2.1.2): a DER SEQUENCE.
    assert_eq!(body.first(), Some(&0x30), "{transport:?}");
}
