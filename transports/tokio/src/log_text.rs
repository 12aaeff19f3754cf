//! The text log format's field formatter: every field value is written with
//! its control characters escaped, so that no value (a client's URL path, an
//! admin API body's `path_id`, a file name from the configuration) can end a
//! log line and forge the next one. The JSON format escapes by construction.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// [`FormatFields`] for the text format: `message`, then `name=value` pairs
/// as the default formatter writes them, with each control character of a
/// value (newline, carriage return, escape, ...) written as a Rust escape
/// (`\n`, `\r`, `\u{1b}`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let mut text = String::new();
        if text.write_fmt(value).is_err() {
            self.result = Err(fmt::Error);
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", Escaped(&text))
        } else {
            write!(self.writer, "{separator}{}={}", name.strip_prefix("r#").unwrap_or(name), Escaped(&text))
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default formatter: strings quoted (Debug), the message as is.
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// Text with every control character written as its Rust escape.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_newline_in_any_field_cannot_forge_a_log_line() {
        let forged = "corp\n2026-01-01T00:00:00.000000Z  INFO scepd::admin: forged key=\"ops\"\r\x1b[2J";
        let path = std::path::PathBuf::from(forged);
        let out = logged(|| {
            tracing::info!(target: "scepd::admin", key = forged, profile = %forged, file = %path.display(),
                detail = ?forged, ok = true, "Intune trust anchor reload");
            tracing::warn!("message with {forged}");
        });
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.contains('\r') && !out.contains('\x1b'), "{out:?}");
        let first = out.lines().next().unwrap();
        assert!(first.contains("Intune trust anchor reload"), "{first}");
        assert!(first.contains(r"profile=corp\n2026-01-01T00:00:00.000000Z  INFO scepd::admin: forged"), "{first}");
        assert!(first.contains(r#"key="corp\n2026"#), "{first}");
        assert!(first.contains(r"ok=true"), "{first}");
        assert!(out.lines().nth(1).unwrap().contains(r"message with corp\n2026"), "{out}");
    }

    #[test]
    fn plain_values_are_written_as_the_default_formatter_writes_them() {
        let out = logged(|| tracing::info!(key = "ops", profile = %"corp", n = 3, "admin API"));
        assert!(out.trim_end().ends_with(r#"admin API key="ops" profile=corp n=3"#), "{out}");
    }
}
