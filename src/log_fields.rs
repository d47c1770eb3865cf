//! The text log's field formatter: what tracing-subscriber's default field formatter writes
//! without colours (`name=value`, the message bare, fields separated by one space), written
//! straight into the line instead of through colour wrappers and a three-argument `write!`
//! per field. Every request opens a span whose fields (method, path, request id) are formatted
//! when it is created, so that whatever its handler logs names the request: callgrind put that
//! formatting at about 4% of a virtual-workspace GET's instructions with the default formatter.
//! Used only when the log is not a terminal (a terminal gets the default's colours).

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Formats fields as the default formatter does with ANSI colours off.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Plain {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Plain<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Plain<'_> {
    fn write(&mut self, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
        let name = field.name();
        // Fields the log bridge added describe the record itself; the line shows them already.
        if name.starts_with("log.") {
            return Ok(());
        }
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if name != "message" {
            self.writer
                .write_str(name.strip_prefix("r#").unwrap_or(name))?;
            self.writer.write_char('=')?;
        }
        write!(self.writer, "{value:?}")
    }
}

/// An error's chain of sources, as `[first, second]`.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(e) = next {
            list.entry(&format_args!("{e}"));
            next = e.source();
        }
        list.finish()
    }
}

impl Visit for Plain<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = if field.name() == "message" {
                self.write(field, &format_args!("{value}"))
            } else {
                self.write(field, &value)
            };
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.result = match value.source() {
                Some(source) => self.write(
                    field,
                    &format_args!("{value} {field}.sources={}", Sources(source)),
                ),
                None => self.write(field, &format_args!("{value}")),
            };
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.write(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Logs the same spans and events as `log` does through a subscriber with `fields`.
    fn lines<N>(fields: N) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Lines::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let path = "/services/replication/c/r/clusters/x/api";
            let span = tracing::error_span!("request", method = %"GET", path = %path, request_id = %"abc-1");
            let _entered = span.enter();
            tracing::warn!(status = 503, latency_ms = 1.5, "Request failed.");
            tracing::info!(user = "alice", cluster = path, quoted = ?"a \"b\"", "Request.");
            let error = Outer(std::io::Error::other("disk full"));
            tracing::error!(
                error = &error as &(dyn std::error::Error + 'static),
                r#type = "x",
                "Write failed."
            );
            tracing::info!(message = "only a message");
            tracing::debug!("not shown");
        });
        let bytes = out.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn the_text_log_reads_as_tracings_default_fields_without_colour() {
        let plain = lines(PlainFields);
        let default = lines(tracing_subscriber::fmt::format::DefaultFields::new());
        assert!(plain.contains("request_id=abc-1"), "{plain}");
        assert!(plain.contains("Write failed."), "{plain}");
        assert_eq!(plain, default);
    }
}
