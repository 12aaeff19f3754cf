//! The start-up lines every transport prints on stdout once its socket is
//! bound, so an operator (and the tests) read the same text on every runtime.

use std::net::SocketAddr;

use crate::state::ServiceState;
use crate::state::api_keys::ApiKeys;

/// Path of the web GUI's SCEP page (served by `operator::ui`).
pub const GUI_PATH: &str = "/ui/scep";

/// How to add an admin API key, for the start-up line that says there is none.
const ADD_ADMIN_KEY: &str = "add an [[api_key]] table with role = \"admin\" to the configuration file and reload \
     (SIGHUP), or set CERTCTL_API_KEYS_NAMED=name:key:admin and restart";

/// `scepd listening on <scheme>://ADDR` (the first line, which scripts and
/// the tests wait for), then where the web GUI is and how to sign in to it
/// (or that no admin API key is configured, so nothing can sign in, and how
/// to add one), and how to stop. Printed in one write, ending in a newline.
pub fn listening(scheme: &str, addr: SocketAddr, state: &ServiceState) -> String {
    lines(scheme, addr, state.settings().gui, &state.api_keys())
}

/// [`listening`] for a GUI turned on or off and a key set.
fn lines(scheme: &str, addr: SocketAddr, gui: bool, keys: &ApiKeys) -> String {
    let gui_url = format!("{scheme}://{addr}{GUI_PATH}");
    let missing = if keys.is_empty() {
        Some("no admin API key is configured, so neither the admin API nor the web GUI can be signed in to")
    } else if keys.admins() == 0 {
        Some("no admin API key is configured (only reader keys), so the web GUI cannot be signed in to")
    } else {
        None
    };
    let access = match (gui, missing) {
        (true, None) => format!("scepd web GUI: {gui_url} (sign in with an admin API key)"),
        (true, Some(why)) => format!("scepd web GUI: {gui_url}, but {why}; {ADD_ADMIN_KEY}"),
        (false, None) => "scepd web GUI: off ([server] gui = false)".to_string(),
        (false, Some(why)) => format!("scepd web GUI: off ([server] gui = false); {why}; {ADD_ADMIN_KEY}"),
    };
    format!(
        "scepd listening on {scheme}://{addr}\n\
         {access}\n\
         scepd stops on Ctrl-C or SIGTERM (in-flight requests finish); SIGHUP reloads the configuration\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::api_keys::ApiKeySection;

    fn keys(roles: &[&str]) -> ApiKeys {
        let sections: Vec<ApiKeySection> = roles
            .iter()
            .enumerate()
            .map(|(i, role)| ApiKeySection {
                name: Some(format!("key-{i}")),
                key: Some(format!("key-{i}-0123456789abcdef")),
                role: Some((*role).to_string()),
            })
            .collect();
        ApiKeys::from_sections(&sections).unwrap()
    }

    #[test]
    fn the_first_line_is_the_listening_line_and_the_gui_url_follows() {
        let text = lines("http", "127.0.0.1:8080".parse().unwrap(), true, &keys(&["admin"]));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("scepd listening on http://127.0.0.1:8080"));
        assert_eq!(lines.next(), Some("scepd web GUI: http://127.0.0.1:8080/ui/scep (sign in with an admin API key)"));
        assert!(text.ends_with('\n'));
    }

    /// The probe's report: `serve --config` with no `[[api_key]]` said
    /// "sign in with an admin API key" though none existed.
    #[test]
    fn without_an_admin_key_the_gui_line_says_nothing_can_sign_in_and_how_to_add_one() {
        let addr = "127.0.0.1:8443".parse().unwrap();
        for (roles, why) in [
            (&[][..], "neither the admin API nor the web GUI can be signed in to"),
            (&["reader"][..], "only reader keys), so the web GUI cannot be signed in to"),
        ] {
            let text = lines("https", addr, true, &keys(roles));
            let line = text.lines().nth(1).unwrap();
            assert!(line.starts_with("scepd web GUI: https://127.0.0.1:8443/ui/scep, but no admin API key"), "{line}");
            assert!(line.contains(why) && line.contains("[[api_key]]") && line.contains(":admin"), "{line}");
            assert!(!line.contains("sign in with"), "{line}");
        }
        let text = lines("http", addr, false, &keys(&[]));
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("scepd web GUI: off ([server] gui = false); no admin API key"), "{line}");
        let text = lines("http", addr, false, &keys(&["admin"]));
        assert_eq!(text.lines().nth(1), Some("scepd web GUI: off ([server] gui = false)"));
    }
}
