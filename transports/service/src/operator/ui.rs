//! The admin web GUI: SCEP Administration, as the spec's "Operational
//! monitoring" section describes it, under `/ui/`.
//!
//! | path | serves |
//! |---|---|
//! | `/ui`, `/ui/` | `308` to `/ui/scep` |
//! | `/ui/scep` | the page; tab **Profiles** (default), `?tab=intune` **Intune Monitoring**, `?tab=activity` **Recent Activity**, `?tab=certificates` **Certificates** (inventory, revocation, charts) |
//! | `/ui/scep/intune` | the page on the Intune Monitoring tab (the spec's alias) |
//! | `/ui/assets/scepd.js`, `scepd.css`, `favicon.svg` | the page's script, style sheet and icon |
//! | `/ui/assets/uplot.min.js`, `uplot.min.css` | the charting library [uPlot](https://github.com/leeoniya/uPlot) 1.6.32 (MIT, `assets/ui/uplot.LICENSE`), as published on npm (`dist/uPlot.iife.min.js`, `dist/uPlot.min.css`), unmodified: it draws on a canvas and builds its DOM without HTML parsing, so the policy below holds |
//!
//! The spec puts the page at `/scep`; here `/scep` is the SCEP endpoint that
//! devices call (and `/scep/intune` would be a profile named `intune`), so the
//! page lives under `/ui/` with the same tabs and deep links.
//!
//! Everything here is static and public, compiled into the binary: the page
//! holds no data. The script asks the admin API (`crate::operator::admin`) for it with
//! the admin key the operator signs in with, sent as `Authorization: Bearer`
//! and kept in the tab's `sessionStorage`. The API decides: no key or an
//! unknown key is `401` (the page asks for a key), a `reader` key is `403` (the
//! page hides itself and says an admin key is needed). As the browser never
//! attaches the key on its own, a cross-site page cannot make requests with it
//! (no cookie, so no CSRF token is needed).
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts, styles,
//! images and fetches from this origin only; no inline script or style; no
//! framing), `X-Content-Type-Options: nosniff` and `Referrer-Policy:
//! no-referrer`. The script builds the page with DOM calls and `textContent`,
//! never by parsing HTML from data. GET and HEAD only (`405` otherwise).
//!
//! `[server] gui = false` turns the page off (`404` under `/ui/`); the admin
//! API is unaffected.

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;

/// The path prefix of the GUI.
pub const PREFIX: &str = "/ui";
/// Where `/ui` and `/ui/` send the browser.
pub const HOME: &str = "/ui/scep";

/// The policy on every GUI answer: this origin only, nothing inline, no framing.
/// Trusted Types (`trusted-types 'none'`) make the browser itself refuse any
/// HTML sink (`innerHTML`...) in the script; `form-action 'none'`: a form
/// submitted without the script (it would put the key in the address) goes nowhere.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// One file of the GUI, compiled in.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const PAGE: Asset =
    Asset { content_type: "text/html; charset=utf-8", body: include_bytes!("../../assets/ui/index.html") };
const SCRIPT: Asset =
    Asset { content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../assets/ui/scepd.js") };
const STYLE: Asset =
    Asset { content_type: "text/css; charset=utf-8", body: include_bytes!("../../assets/ui/scepd.css") };
const CHARTS_SCRIPT: Asset =
    Asset { content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../assets/ui/uplot.min.js") };
const CHARTS_STYLE: Asset =
    Asset { content_type: "text/css; charset=utf-8", body: include_bytes!("../../assets/ui/uplot.min.css") };
const ICON: Asset = Asset { content_type: "image/svg+xml", body: include_bytes!("../../assets/ui/favicon.svg") };

/// What a path under [`PREFIX`] leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum UiRoute {
    /// A redirect to [`HOME`].
    Home,
    /// A file.
    Asset(&'static Asset),
    /// Nothing (404).
    NotFound,
}

/// Maps a path under [`PREFIX`] (the whole path, e.g. `/ui/scep`) to a [`UiRoute`].
pub fn ui_route(path: &str) -> UiRoute {
    match path {
        "/ui" | "/ui/" => UiRoute::Home,
        "/ui/scep" | "/ui/scep/" | "/ui/scep/intune" | "/ui/scep/intune/" => UiRoute::Asset(&PAGE),
        "/ui/assets/scepd.js" => UiRoute::Asset(&SCRIPT),
        "/ui/assets/scepd.css" => UiRoute::Asset(&STYLE),
        "/ui/assets/favicon.svg" => UiRoute::Asset(&ICON),
        "/ui/assets/uplot.min.js" => UiRoute::Asset(&CHARTS_SCRIPT),
        "/ui/assets/uplot.min.css" => UiRoute::Asset(&CHARTS_STYLE),
        _ => UiRoute::NotFound,
    }
}

/// Answers a request for `path` (under [`PREFIX`]).
pub fn handle(method: &Method, path: &str) -> http::Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: the GUI is read with GET\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match ui_route(path) {
        UiRoute::Home => {
            let mut r = text(StatusCode::PERMANENT_REDIRECT, "moved to /ui/scep\n");
            r.headers_mut().insert(LOCATION, HeaderValue::from_static(HOME));
            r
        }
        UiRoute::Asset(asset) => respond(StatusCode::OK, asset.content_type, Bytes::from_static(asset.body)),
        UiRoute::NotFound => text(StatusCode::NOT_FOUND, "not found: the GUI is at /ui/scep\n"),
    }
}

/// The answer under [`PREFIX`] when `[server] gui = false`.
pub fn turned_off() -> http::Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, "not found: the admin GUI is turned off (server.gui = false)\n")
}

fn text(status: StatusCode, body: &'static str) -> http::Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> http::Response<Full<Bytes>> {
    let len = body.len();
    let mut r = http::Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    // Revalidated on every load: a new binary serves its own script at once.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &http::Response<Full<Bytes>>, name: http::header::HeaderName) -> &str {
        r.headers().get(&name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn routes() {
        for page in ["/ui/scep", "/ui/scep/", "/ui/scep/intune", "/ui/scep/intune/"] {
            assert_eq!(ui_route(page), UiRoute::Asset(&PAGE), "{page}");
        }
        assert_eq!(ui_route("/ui"), UiRoute::Home);
        assert_eq!(ui_route("/ui/"), UiRoute::Home);
        assert_eq!(ui_route("/ui/assets/scepd.js"), UiRoute::Asset(&SCRIPT));
        assert_eq!(ui_route("/ui/assets/scepd.css"), UiRoute::Asset(&STYLE));
        assert_eq!(ui_route("/ui/assets/favicon.svg"), UiRoute::Asset(&ICON));
        for missing in ["/ui/scep/corp", "/ui/assets/", "/ui/assets/../scepd.js", "/ui/index.html", "/uix"] {
            assert_eq!(ui_route(missing), UiRoute::NotFound, "{missing}");
        }
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        let answers = [
            handle(&Method::GET, "/ui/scep"),
            handle(&Method::HEAD, "/ui/assets/scepd.js"),
            handle(&Method::GET, "/ui/"),
            handle(&Method::GET, "/ui/nope"),
            handle(&Method::POST, "/ui/scep"),
        ];
        let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses, [200, 200, 308, 404, 405]);
        for r in &answers {
            assert_eq!(header(r, CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY_VALUE);
            assert!(header(r, CONTENT_SECURITY_POLICY).contains("script-src 'self';"));
            assert!(!header(r, CONTENT_SECURITY_POLICY).contains("unsafe"));
            assert_eq!(header(r, X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(r, X_FRAME_OPTIONS), "DENY");
            assert_eq!(header(r, REFERRER_POLICY), "no-referrer");
        }
        assert_eq!(header(&answers[2], LOCATION), HOME);
        assert_eq!(header(&answers[4], ALLOW), "GET, HEAD");
        assert_eq!(header(&answers[0], CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&answers[1], CONTENT_TYPE), "text/javascript; charset=utf-8");
        assert_eq!(header(&answers[1], CONTENT_LENGTH), SCRIPT.body.len().to_string());
    }

    /// The page names exactly the assets served here, and nothing inline that
    /// the policy would block (the browser test checks it is obeyed).
    #[test]
    fn the_page_uses_only_served_assets_and_nothing_inline() {
        let page = std::str::from_utf8(PAGE.body).unwrap();
        for link in [
            "/ui/assets/scepd.js",
            "/ui/assets/scepd.css",
            "/ui/assets/favicon.svg",
            "/ui/assets/uplot.min.js",
            "/ui/assets/uplot.min.css",
        ] {
            assert!(page.contains(&format!("\"{link}\"")), "{link}");
            assert!(matches!(ui_route(link), UiRoute::Asset(_)), "{link}");
        }
        for inline in ["<script>", "style=", "<style", "onclick", "onload", "javascript:"] {
            assert!(!page.contains(inline), "inline {inline:?} in the page");
        }
        for asset in [&SCRIPT, &CHARTS_SCRIPT] {
            let script = std::str::from_utf8(asset.body).unwrap();
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!script.contains(sink), "a script uses {sink}");
            }
        }
    }
}
