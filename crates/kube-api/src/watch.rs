//! Watch stream framing shared by the cache server and the virtual workspace.
//!
//! A watch response is `200 application/json`, one `{"type":...,"object":...}` JSON document per
//! event, each followed by `\n` (Python splits on newlines, kube-rs uses a line codec). Frames are
//! built from already-encoded object bytes: the object is copied, never re-encoded.
//!
//! [`begin_shutdown`] ends every watch response of the process cleanly (the body ends after the
//! last whole frame), so clients re-watch elsewhere while the server drains.

use super::status::Status;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use std::time::Duration;

/// Watch frames (events, bookmarks, errors) written to watchers, counted per watcher.
pub static FRAMES_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Bookmarks built (each for one watcher).
pub static BOOKMARKS_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Watches ended because the watcher fell further behind than the retained history (410).
pub static CLOSED_BEHIND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Count a watch that ends because its watcher fell behind the retained history.
pub fn closed_behind() {
    CLOSED_BEHIND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The process-wide shutdown signal of watches.
fn shutdown_signal() -> &'static tokio::sync::watch::Sender<bool> {
    static SIGNAL: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> =
        std::sync::OnceLock::new();
    SIGNAL.get_or_init(|| tokio::sync::watch::Sender::new(false))
}

/// End every open and future watch response of this process (graceful shutdown).
pub fn begin_shutdown() {
    shutdown_signal().send_replace(true);
}

/// Resolves once [`begin_shutdown`] was called.
pub async fn shutdown() {
    let mut rx = shutdown_signal().subscribe();
    let _ = rx.wait_for(|down| *down).await;
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// ADDED.
    Added,
    /// MODIFIED.
    Modified,
    /// DELETED.
    Deleted,
    /// BOOKMARK.
    Bookmark,
    /// ERROR.
    Error,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// Frames built since start (a measure of per-event encoding work; see `benches/`).
pub static FRAMES_BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One event frame from object bytes given in pieces (concatenated in order).
pub fn frame(kind: EventType, object_parts: &[&[u8]]) -> Bytes {
    let len: usize = object_parts.iter().map(|p| p.len()).sum();
    frame_with(kind, len, |buf| {
        for p in object_parts {
            buf.put_slice(p);
        }
    })
}

/// A watch event line whose object `write_object` writes (`len`: about how many bytes).
pub fn frame_with(kind: EventType, len: usize, write_object: impl FnOnce(&mut BytesMut)) -> Bytes {
    FRAMES_BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = BytesMut::with_capacity(len + 32);
    buf.put_slice(b"{\"type\":\"");
    buf.put_slice(kind.as_str().as_bytes());
    buf.put_slice(b"\",\"object\":");
    write_object(&mut buf);
    buf.put_slice(b"}\n");
    buf.freeze()
}

/// An ERROR event carrying a Status.
pub fn error_frame(status: &Status) -> Bytes {
    frame(EventType::Error, &[&status.to_json()])
}

/// A bookmark object: `{"apiVersion","kind","metadata":{"resourceVersion"[,"annotations"]}}`.
pub fn bookmark_frame(
    api_version: &str,
    kind: &str,
    revision: u64,
    initial_events_end: bool,
) -> Bytes {
    BOOKMARKS_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let annotations = if initial_events_end {
        serde_json::json!({"k8s.io/initial-events-end": "true"})
    } else {
        serde_json::Value::Null
    };
    let mut metadata = serde_json::json!({"resourceVersion": revision.to_string()});
    if !annotations.is_null() {
        metadata["annotations"] = annotations;
    }
    let obj = serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": metadata});
    // invariant: a json! value always serializes.
    let bytes = serde_json::to_vec(&obj).expect("invariant: bookmark serializes");
    frame(EventType::Bookmark, &[&bytes])
}

/// The streaming 200 response of a watch.
pub fn response<S>(frames: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    use futures_util::StreamExt;
    let counted = frames.inspect(|f| {
        if f.is_ok() {
            FRAMES_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut resp = Response::new(Body::from_stream(counted.take_until(shutdown())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

/// How long a watch lasts: `timeoutSeconds`, else a random duration in [30 min, 60 min) as
/// kube-apiserver picks with its default minimum request timeout.
pub fn timeout(timeout_seconds: Option<u64>) -> Duration {
    match timeout_seconds {
        Some(s) => Duration::from_secs(s),
        None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    }
}

/// How often a watch that allows bookmarks receives one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// What a watch stream's [`Timers`] say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// The watch's deadline passed: end the stream.
    Deadline,
    /// [`BOOKMARK_INTERVAL`] passed without activity: send a bookmark.
    Bookmark,
}

/// The two timers of one watch stream, its deadline and its bookmark, registered once for the
/// stream's life. A watch loop that made a new `sleep` for each event registered and removed two
/// timer entries per watcher per event (with 10,000 watchers, 20,000 timer-wheel operations for
/// each change); here an event only notes the time ([`Timers::activity`]) and the bookmark timer,
/// when it fires early, moves itself to [`BOOKMARK_INTERVAL`] after the latest activity.
pub struct Timers {
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    bookmark: std::pin::Pin<Box<tokio::time::Sleep>>,
    active_at: tokio::time::Instant,
}

impl Timers {
    /// Timers of a stream that ends at `deadline`, starting quiet now.
    pub fn new(deadline: tokio::time::Instant) -> Self {
        let now = tokio::time::Instant::now();
        Timers {
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            bookmark: Box::pin(tokio::time::sleep_until(now + BOOKMARK_INTERVAL)),
            active_at: now,
        }
    }

    /// Something happened on the stream (an event arrived or a frame was sent): the next
    /// bookmark is due [`BOOKMARK_INTERVAL`] from now.
    pub fn activity(&mut self) {
        self.active_at = tokio::time::Instant::now();
    }

    /// Resolves at the deadline, or (when `bookmarks`) once [`BOOKMARK_INTERVAL`] passed since
    /// the latest activity; a bookmark counts as activity.
    pub async fn next(&mut self, bookmarks: bool) -> Tick {
        loop {
            tokio::select! {
                biased;
                _ = self.deadline.as_mut() => return Tick::Deadline,
                _ = self.bookmark.as_mut(), if bookmarks => {
                    let due = self.active_at + BOOKMARK_INTERVAL;
                    let now = tokio::time::Instant::now();
                    if now >= due {
                        self.active_at = now;
                        self.bookmark.as_mut().reset(now + BOOKMARK_INTERVAL);
                        return Tick::Bookmark;
                    }
                    self.bookmark.as_mut().reset(due);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_watch_gets_a_bookmark_each_interval_and_activity_postpones_it() {
        let start = tokio::time::Instant::now();
        let mut timers = Timers::new(start + Duration::from_secs(1000));
        assert_eq!(timers.next(true).await, Tick::Bookmark);
        assert_eq!(start.elapsed(), BOOKMARK_INTERVAL);
        // An event half way through the next interval moves the bookmark to an interval after it.
        tokio::time::sleep(BOOKMARK_INTERVAL / 2).await;
        timers.activity();
        assert_eq!(timers.next(true).await, Tick::Bookmark);
        assert_eq!(
            start.elapsed(),
            BOOKMARK_INTERVAL * 2 + BOOKMARK_INTERVAL / 2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_without_bookmarks_only_ends_at_its_deadline() {
        let start = tokio::time::Instant::now();
        let mut timers = Timers::new(start + BOOKMARK_INTERVAL * 3);
        assert_eq!(timers.next(false).await, Tick::Deadline);
        assert_eq!(start.elapsed(), BOOKMARK_INTERVAL * 3);
        // The deadline wins over a bookmark due at the same moment.
        let mut timers = Timers::new(tokio::time::Instant::now() + BOOKMARK_INTERVAL);
        assert_eq!(timers.next(true).await, Tick::Deadline);
    }

    #[test]
    fn frames_are_one_json_document_per_line() {
        let f = frame(EventType::Added, &[b"{\"a\":", b"1}"]);
        assert_eq!(&f[..], b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n");
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["object"]["a"], 1);
    }

    #[test]
    fn initial_events_end_bookmark_carries_the_annotation() {
        let f = bookmark_frame("g/v1", "Thing", 7, true);
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "7");
        assert_eq!(
            v["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }
}
