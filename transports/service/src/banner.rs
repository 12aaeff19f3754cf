//! The start-up lines every transport prints on stdout once its socket is
//! bound, so an operator (and the tests) read the same text on every runtime.

use std::net::SocketAddr;

/// Path of the web GUI's SCEP page (served by `operator::ui`).
pub const GUI_PATH: &str = "/ui/scep";

/// `scepd listening on <scheme>://ADDR` (the first line, which scripts and
/// the tests wait for), then where the web GUI is and how to stop. Printed in
/// one write, ending in a newline.
pub fn listening(scheme: &str, addr: SocketAddr) -> String {
    format!(
        "scepd listening on {scheme}://{addr}\n\
         scepd web GUI: {scheme}://{addr}{GUI_PATH} (sign in with an admin API key)\n\
         scepd stops on Ctrl-C or SIGTERM (in-flight requests finish); SIGHUP reloads the configuration\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_listening_line_and_the_gui_url_follows() {
        let text = listening("http", "127.0.0.1:8080".parse().unwrap());
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("scepd listening on http://127.0.0.1:8080"));
        assert!(lines.next().unwrap().contains("http://127.0.0.1:8080/ui/scep"));
        assert!(text.ends_with('\n'));
    }
}
