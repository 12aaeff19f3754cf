//! A loopback compliance webhook (the generic form of gate 9,
//! `intune_compliance_check = "<url>"`): answers `POST` JSON
//! `{"deviceId", ...}` with `200 {"allow": true|false, "reason"}` per the
//! device's registered [`Answer`], and records every request body.
//! A device that is not registered is denied.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the webhook answers for one device.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `200 {"allow": true}`.
    Allow,
    /// `200 {"allow": false, "reason": <why>}`.
    Deny(String),
    /// Wait this long, then allow (a timeout on the server's side).
    SlowAllow(Duration),
    /// This status with an allow body (anything but 200 must refuse).
    Status(u16),
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    requests: Vec<serde_json::Value>,
}

/// The running webhook.
pub struct ComplianceWebhook {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ComplianceWebhook {
    /// Starts on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://127.0.0.1:{}/compliance", listener.local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut workers: Vec<JoinHandle<()>> = Vec::new();
            while !stop2.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        workers.retain(|w| !w.is_finished());
                        if workers.len() < 64 {
                            let state = state2.clone();
                            workers.push(std::thread::spawn(move || serve(&state, stream)));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Self { url, state, stop, thread: Some(thread) }
    }

    /// The URL to configure (`http://127.0.0.1:<port>/compliance`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets the answer for device `id`.
    pub fn answer(&self, id: &str, answer: Answer) {
        self.state.lock().unwrap().answers.insert(id.into(), answer);
    }

    /// Every request body received, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for ComplianceWebhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(state: &Mutex<State>, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':')
            && n.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0).min(1 << 16);
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let id = request["deviceId"].as_str().unwrap_or_default().to_string();
    let answer = {
        let mut st = state.lock().unwrap();
        st.requests.push(request.clone());
        st.answers.get(&id).cloned().unwrap_or_else(|| Answer::Deny("unknown device".into()))
    };
    let (status, reply) = match answer {
        Answer::Allow => (200, serde_json::json!({"allow": true, "reason": "compliant"})),
        Answer::Deny(why) => (200, serde_json::json!({"allow": false, "reason": why})),
        Answer::SlowAllow(d) => {
            std::thread::sleep(d);
            (200, serde_json::json!({"allow": true}))
        }
        Answer::Status(s) => (s, serde_json::json!({"allow": true})),
    };
    let text = reply.to_string();
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = out.flush();
}
