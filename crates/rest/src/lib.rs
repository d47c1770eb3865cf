//! Generic Kubernetes REST over a [`Store`]: collection LIST (paginated from a consistent
//! snapshot) and WATCH (kube's selector transitions), request-body helpers and verbs.
//!
//! Both store-backed surfaces use it — the cache server API and the workspaces API — each
//! passing a [`Collection`] that says which resource is read and how a stored record is shown
//! to readers.

#![forbid(unsafe_code)]

pub mod discovery;
pub mod printing;
pub mod table;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use kube_api::Status;
use kube_api::continuation;
use kube_api::json_response;
use kube_api::labels_of;
use kube_api::params::{ListOptions, check_fields, parse_revision};
use kube_api::selector::{FieldSelector, LabelSelector};
use kube_api::watch::{self, EventType};
use serde_json::Value;
use std::sync::Arc;
use store::{EventKind, Key, Scope, Store, StoreError};

/// Largest accepted request body.
pub const MAX_BODY: usize = 16 << 20;

/// How a stored record is shown to readers: `(value, key, revision)` → the object, or `None`
/// for a record that does not decode (skipped and logged).
pub type Presenter = Arc<dyn Fn(&[u8], &Key, u64) -> Option<Value> + Send + Sync>;

/// The same as a [`Presenter`], straight to JSON bytes appended to the buffer (`false`, and
/// nothing appended, for a record that does not decode). Lists and watches without selectors or
/// Table output use it when a collection has one: no `Value` per object and request.
pub type JsonPresenter = Arc<dyn Fn(&[u8], &Key, u64, &mut Vec<u8>) -> bool + Send + Sync>;

/// Watch frames of recent events, made once for every watcher that presents the same event with
/// the same [`JsonPresenter`] and apiVersion: the owner (one per presenter, say one per cache
/// server) hands the same memo to each request's [`Collection`]. Bounded: the last
/// [`FrameMemo::ENTRIES`] events, and frames larger than [`FrameMemo::LARGEST`] are not kept.
#[derive(Default)]
pub struct FrameMemo {
    recent: parking_lot::Mutex<std::collections::VecDeque<MemoEntry>>,
}

struct MemoEntry {
    /// Holds the event's allocation (not its values), so its address names it while here.
    event: std::sync::Weak<store::Event>,
    api_version: String,
    frame: Bytes,
}

impl FrameMemo {
    /// Events kept.
    pub const ENTRIES: usize = 64;
    /// Largest frame kept, in bytes.
    pub const LARGEST: usize = 256 << 10;

    /// The frame of `event` for `api_version`: a kept one, else `make()` (kept when small).
    /// Made under the lock, so the watchers of one event wait for one encoding instead of each
    /// making its own.
    fn frame(
        &self,
        event: &Arc<store::Event>,
        api_version: &str,
        make: impl FnOnce() -> Option<Bytes>,
    ) -> Option<Bytes> {
        let mut recent = self.recent.lock();
        let this = Arc::as_ptr(event);
        if let Some(e) = recent
            .iter()
            .find(|e| std::ptr::eq(e.event.as_ptr(), this) && e.api_version == api_version)
        {
            return Some(e.frame.clone());
        }
        let frame = make()?;
        if frame.len() <= Self::LARGEST {
            if recent.len() >= Self::ENTRIES {
                recent.pop_front();
            }
            recent.push_back(MemoEntry {
                event: Arc::downgrade(event),
                api_version: api_version.to_string(),
                frame: frame.clone(),
            });
        }
        Some(frame)
    }
}

/// One readable collection: the resource and how its records are presented.
#[derive(Clone)]
pub struct Collection {
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Kind (lists are `<kind>List`).
    pub kind: String,
    /// `<group>/<version>` (or `v1`) of the response.
    pub api_version: String,
    /// Namespaced?
    pub namespaced: bool,
    /// Presents records.
    pub present: Presenter,
    /// Presents records as JSON bytes, when the collection can do so without a `Value`.
    pub present_json: Option<JsonPresenter>,
    /// Frames of recent events made with `present_json`, shared by the watchers of this
    /// presenter (none: each watcher makes its own).
    pub frames: Option<Arc<FrameMemo>>,
    /// Printer columns: with them, Table output is offered (`Age` alone when empty).
    pub columns: Option<Arc<Vec<kcp_model::types::PrinterColumn>>>,
}

impl Collection {
    /// The bytes presenter, when a request may use it: no selectors and no Table output.
    fn json_path(&self, opts: &ListOptions, table: Option<&str>) -> Option<&JsonPresenter> {
        let plain = table.is_none()
            && opts.label_selector.is_everything()
            && opts.field_selector.is_everything();
        self.present_json.as_ref().filter(|_| plain)
    }

    /// The Table apiVersion the `Accept` header asks for, when this collection prints tables.
    pub fn wants_table(&self, accept: Option<&str>) -> Result<Option<&'static str>, Status> {
        use kube_api::negotiate::{Format, Offer, negotiate};
        match negotiate(accept, Offer::Resource)? {
            Format::Table(v) if self.columns.is_some() => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    /// One presented object as the response body: JSON, or a one-row Table when asked.
    pub fn object_response(
        &self,
        code: u16,
        object: &Value,
        accept: Option<&str>,
    ) -> Result<Response, Status> {
        if let (Some(v), Some(cols)) = (self.wants_table(accept)?, &self.columns) {
            let api_version = v.to_string();
            let rv = object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            let t = table::table(
                &api_version,
                std::slice::from_ref(object),
                cols,
                serde_json::json!({"resourceVersion": rv}),
            );
            return Ok(json_response(code, to_vec(&t)?));
        }
        Ok(json_response(code, to_vec(object)?))
    }
}

/// JSON-encode a value for a response.
pub fn to_vec(v: &Value) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(Status::internal)
}

/// Read a request body (bounded by [`MAX_BODY`]).
pub async fn read_body(req: Request) -> Result<Bytes, Status> {
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| Status::bad_request(e.to_string()))
}

/// Read a JSON request body.
pub async fn read_json(req: Request) -> Result<Value, Status> {
    let bytes = read_body(req).await?;
    decode_json(&bytes)
}

/// Decode a JSON (or, for convenience, YAML-free JSON only) request body.
pub fn decode_json(bytes: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(bytes).map_err(|e| {
        Status::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

/// The `DeleteOptions.preconditions` of a DELETE body: (resourceVersion, uid).
pub fn preconditions(body: &[u8]) -> Result<(Option<u64>, Option<String>), Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Status::bad_request(format!("invalid DeleteOptions: {e}")))?;
    let rv = parse_revision(
        v.pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str),
    )?;
    let uid = v
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((rv, uid))
}

/// Whether a presented object passes the label and field selectors.
pub fn selected(v: &Value, ls: &LabelSelector, fs: &FieldSelector) -> bool {
    if !ls.is_everything() && !ls.matches(&labels_of(v)) {
        return false;
    }
    fs.is_everything()
        || fs.matches_with(|f| match f {
            "metadata.name" => v.pointer("/metadata/name").and_then(Value::as_str),
            "metadata.namespace" => v.pointer("/metadata/namespace").and_then(Value::as_str),
            _ => None,
        })
}

fn key_parts(k: &Key) -> [String; 6] {
    [
        k.group.to_string(),
        k.resource.to_string(),
        k.shard.to_string(),
        k.cluster.to_string(),
        k.namespace.to_string(),
        k.name.to_string(),
    ]
}

fn store_status(e: StoreError, c: &Collection) -> Status {
    match e {
        StoreError::NotFound => Status::not_found(&c.group, &c.resource, ""),
        other => backend_status(&other),
    }
}

/// The Status of a store failure that is not about one object: history gone (410), the backend
/// unreachable (503, retry), a value too large for it (413), anything else (500).
pub fn backend_status(e: &StoreError) -> Status {
    match e {
        StoreError::Expired { requested, oldest } => continuation::too_old(*requested, *oldest),
        StoreError::Unavailable(m) => Status::new(
            503,
            "ServiceUnavailable",
            format!("the storage backend is unavailable, retry later: {m}"),
        ),
        StoreError::TooLarge(m) => Status::new(413, "RequestEntityTooLarge", m.clone()),
        other => Status::internal(other),
    }
}

/// LIST `scope` with the request's options: selectors, `limit`/`continue` from the first
/// page's snapshot, and `resourceVersion`/`resourceVersionMatch` (Exact reads history).
pub async fn list(
    store: &dyn Store,
    c: &Collection,
    scope: &Scope,
    opts: &ListOptions,
    accept: Option<&str>,
) -> Result<Response, Status> {
    let table_version = c.wants_table(accept)?;
    use kube_api::params::RvMatch;
    check_fields(&opts.field_selector, c.namespaced)?;
    let requested = opts.revision()?;
    let resume = match &opts.continue_token {
        Some(t) => Some(continuation::decode(t, 6)?),
        None => None,
    };
    let exact = match (opts.resource_version_match, requested, opts.limit) {
        (Some(RvMatch::Exact), Some(n), _) | (None, Some(n), Some(_)) => Some(n),
        _ => None,
    };
    let listing = match (resume.as_ref().map(|t| t.0), exact) {
        (Some(rv), _) => store.list_at(scope, rv).await.map_err(|e| match e {
            StoreError::Expired { .. } => continuation::expired_continue(),
            other => Status::internal(other),
        })?,
        (None, Some(rv)) => store.list_at(scope, rv).await.map_err(|e| match e {
            StoreError::Expired { .. } => continuation::expired_list(),
            other => Status::internal(other),
        })?,
        (None, None) => store.list(scope).await.map_err(|e| store_status(e, c))?,
    };
    let limit = opts.limit.map_or(usize::MAX, |l| l as usize);
    if let Some(present_json) = c.json_path(opts, table_version) {
        return list_json(c, present_json, &listing, resume.as_ref(), limit);
    }
    let mut items: Vec<Value> = Vec::new();
    let mut last_key = None;
    let mut more = 0u64;
    for record in &listing.records {
        if let Some(t) = &resume
            && key_parts(&record.key).as_slice() <= t.1.as_slice()
        {
            continue;
        }
        let Some(v) = (c.present)(&record.value, &record.key, record.revision) else {
            tracing::warn!(key = %record.key, "Skipping a stored object that does not decode.");
            continue;
        };
        if !selected(&v, &opts.label_selector, &opts.field_selector) {
            continue;
        }
        if items.len() >= limit {
            more += 1;
            continue;
        }
        items.push(v);
        last_key = Some(key_parts(&record.key));
    }
    let mut metadata = serde_json::json!({"resourceVersion": listing.revision.to_string()});
    if more > 0
        && let Some(start) = last_key
    {
        let start: Vec<&str> = start.iter().map(String::as_str).collect();
        metadata["continue"] = Value::String(continuation::encode(listing.revision, &start));
        if opts.label_selector.is_everything() && opts.field_selector.is_everything() {
            metadata["remainingItemCount"] = Value::from(more);
        }
    }
    if let (Some(v), Some(cols)) = (table_version, &c.columns) {
        let t = table::table(v, &items, cols, metadata);
        return Ok(json_response(200, to_vec(&t)?));
    }
    let items: Vec<Vec<u8>> = items.iter().map(to_vec).collect::<Result<_, _>>()?;
    let size: usize = items.iter().map(|i| i.len() + 1).sum();
    list_response(c, &metadata, size, |body| {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
    })
}

/// A `<Kind>List` response: apiVersion, kind, `metadata`, and the items `write_items` appends
/// (JSON objects separated by commas; `size` bytes of them, for the allocation).
fn list_response(
    c: &Collection,
    metadata: &Value,
    size: usize,
    write_items: impl FnOnce(&mut Vec<u8>),
) -> Result<Response, Status> {
    let head = list_head(c, metadata)?;
    let mut body = Vec::with_capacity(head.len() + size + 2);
    body.extend_from_slice(&head);
    write_items(&mut body);
    body.extend_from_slice(b"]}");
    Ok(json_response(200, body))
}

/// A `<Kind>List`'s bytes before its first item: apiVersion, kind, `metadata`, `"items":[`.
fn list_head(c: &Collection, metadata: &Value) -> Result<Vec<u8>, Status> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"{\"apiVersion\":");
    head.extend_from_slice(&to_vec(&Value::String(c.api_version.clone()))?);
    head.extend_from_slice(b",\"kind\":");
    head.extend_from_slice(&to_vec(&Value::String(format!("{}List", c.kind)))?);
    head.extend_from_slice(b",\"metadata\":");
    head.extend_from_slice(&to_vec(metadata)?);
    head.extend_from_slice(b",\"items\":[");
    Ok(head)
}

/// The LIST body built from each record's presented bytes ([`Collection::present_json`]).
fn list_json(
    c: &Collection,
    present_json: &JsonPresenter,
    listing: &store::Listing,
    resume: Option<&(u64, Vec<String>)>,
    limit: usize,
) -> Result<Response, Status> {
    let size: usize = listing.records.iter().map(|r| r.value.len() + 64).sum();
    // The items are written after room for the head, which goes in front of them once the
    // metadata is known: one buffer, no second copy of a body of many MB.
    let mut items = Vec::with_capacity(LIST_HEAD_ROOM + size + 2);
    items.resize(LIST_HEAD_ROOM, b' ');
    let (mut count, mut more, mut last_key) = (0usize, 0u64, None);
    for record in &listing.records {
        if let Some(t) = resume
            && key_parts(&record.key).as_slice() <= t.1.as_slice()
        {
            continue;
        }
        if count >= limit {
            more += 1;
            continue;
        }
        let mark = items.len();
        if count > 0 {
            items.push(b',');
        }
        if !present_json(&record.value, &record.key, record.revision, &mut items) {
            items.truncate(mark);
            tracing::warn!(key = %record.key, "Skipping a stored object that does not decode.");
            continue;
        }
        count += 1;
        last_key = Some(&record.key);
    }
    let mut metadata = serde_json::json!({"resourceVersion": listing.revision.to_string()});
    if more > 0
        && let Some(key) = last_key
    {
        let start = key_parts(key);
        let start: Vec<&str> = start.iter().map(String::as_str).collect();
        metadata["continue"] = Value::String(continuation::encode(listing.revision, &start));
        metadata["remainingItemCount"] = Value::from(more);
    }
    let head = list_head(c, &metadata)?;
    Ok(json_response(200, finish_list(&head, items)))
}

/// Room left in front of a LIST's items for its head (`apiVersion`, `kind`, `metadata` with
/// the resource version and any continue token).
const LIST_HEAD_ROOM: usize = 1024;

/// The list body from its `head` and `items`, whose first [`LIST_HEAD_ROOM`] bytes are room:
/// the head goes in that room when it fits (no copy of the items), else in a new buffer.
fn finish_list(head: &[u8], mut items: Vec<u8>) -> Bytes {
    if let Some(start) = LIST_HEAD_ROOM.checked_sub(head.len()) {
        items[start..LIST_HEAD_ROOM].copy_from_slice(head);
        items.extend_from_slice(b"]}");
        return Bytes::from(items).slice(start..);
    }
    let mut body = Vec::with_capacity(head.len() + items.len() + 2 - LIST_HEAD_ROOM);
    body.extend_from_slice(head);
    body.extend_from_slice(&items[LIST_HEAD_ROOM..]);
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

/// WATCH `scope`: initial ADDED events (or resume after a revision), then live changes with
/// kube's selector transitions, bookmarks when asked, the request's timeout.
pub async fn watch(
    store: Arc<dyn Store>,
    c: Collection,
    scope: Scope,
    opts: ListOptions,
    accept: Option<&str>,
) -> Result<Response, Status> {
    check_fields(&opts.field_selector, c.namespaced)?;
    let table = c.wants_table(accept)?;
    // With Table output each event carries a one-row Table; only the first has the columns.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let encode = {
        let c = c.clone();
        let first = first.clone();
        move |v: &Value| -> Vec<u8> {
            match (table, &c.columns) {
                (Some(ver), Some(cols)) => {
                    let rv = v
                        .pointer("/metadata/resourceVersion")
                        .cloned()
                        .unwrap_or(Value::Null);
                    let mut t = table::table(
                        ver,
                        std::slice::from_ref(v),
                        cols,
                        serde_json::json!({"resourceVersion": rv}),
                    );
                    if !first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        t["columnDefinitions"] = Value::Null;
                    }
                    serde_json::to_vec(&t).unwrap_or_default()
                }
                _ => serde_json::to_vec(v).unwrap_or_default(),
            }
        }
    };
    let requested = opts.revision()?;
    let initial = opts.send_initial_events.unwrap_or(requested.is_none());
    let mut frames: Vec<Bytes> = Vec::new();
    let after = if initial {
        let listing = store.list(&scope).await.map_err(|e| store_status(e, &c))?;
        let json_path = c.json_path(&opts, table);
        let mut object = Vec::new();
        for record in &listing.records {
            if let Some(present_json) = json_path {
                object.clear();
                if present_json(&record.value, &record.key, record.revision, &mut object) {
                    frames.push(watch::frame(EventType::Added, &[&object]));
                }
            } else if let Some(v) = (c.present)(&record.value, &record.key, record.revision)
                && selected(&v, &opts.label_selector, &opts.field_selector)
            {
                frames.push(watch::frame(EventType::Added, &[&encode(&v)]));
            }
        }
        if opts.send_initial_events == Some(true) && opts.allow_watch_bookmarks {
            frames.push(watch::bookmark_frame(
                &c.api_version,
                &c.kind,
                listing.revision,
                true,
            ));
        }
        listing.revision
    } else {
        match requested {
            Some(rv) => rv,
            None => store.revision().await.map_err(Status::internal)?,
        }
    };
    let stream = match store.watch(scope, after).await {
        Ok(s) => s,
        Err(StoreError::Expired { requested, oldest }) => {
            let st = continuation::too_old(requested, oldest);
            let one = futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(watch::error_frame(&st))
            });
            return Ok(watch::response(one));
        }
        Err(e) => return Err(backend_status(&e)),
    };
    let json_path = c.json_path(&opts, table).cloned();
    let ls = opts.label_selector.clone();
    let fs = opts.field_selector.clone();
    let bookmarks = opts.allow_watch_bookmarks;
    let deadline = tokio::time::Instant::now() + watch::timeout(opts.timeout_seconds);
    let encode = Arc::new(encode);
    let timers = watch::Timers::new(deadline);
    let live = futures_util::stream::unfold(
        (stream, timers, 0u64, false),
        move |(mut stream, mut timers, mut last, done)| {
            let ls = ls.clone();
            let fs = fs.clone();
            let c = c.clone();
            let encode = encode.clone();
            let json_path = json_path.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    tokio::select! {
                        tick = timers.next(bookmarks && last > 0) => match tick {
                            watch::Tick::Deadline => return None,
                            watch::Tick::Bookmark => {
                                let frame = watch::bookmark_frame(&c.api_version, &c.kind, last, false);
                                return Some((Ok(frame), (stream, timers, last, false)));
                            }
                        },
                        next = stream.next() => {
                            timers.activity();
                            let event = match next {
                                None => return None,
                                Some(Err(StoreError::Expired { requested, oldest })) => {
                                    watch::closed_behind();
                                    let st = continuation::too_old(requested, oldest);
                                    return Some((Ok(watch::error_frame(&st)), (stream, timers, last, true)));
                                }
                                Some(Err(e)) => {
                                    return Some((Ok(watch::error_frame(&Status::internal(e))), (stream, timers, last, true)));
                                }
                                Some(Ok(e)) => e,
                            };
                            last = event.revision;
                            let frame = match &json_path {
                                Some(present_json) => match &c.frames {
                                    Some(memo) => memo.frame(&event, &c.api_version, || {
                                        json_event_frame(&event, present_json)
                                    }),
                                    None => json_event_frame(&event, present_json),
                                },
                                None => event_frame(&event, &ls, &fs, &c, encode.as_ref()),
                            };
                            if let Some(frame) = frame {
                                return Some((Ok(frame), (stream, timers, last, false)));
                            }
                        }
                    }
                }
            }
        },
    );
    let initial = futures_util::stream::iter(frames.into_iter().map(Ok));
    Ok(watch::response(initial.chain(live)))
}

/// The frame for one store event as a watcher without selectors sees it, from the presented
/// bytes (no `Value`, and the previous value is not needed).
fn json_event_frame(event: &store::Event, present_json: &JsonPresenter) -> Option<Bytes> {
    let mut object = Vec::with_capacity(event.value.len() + 128);
    if !present_json(&event.value, &event.key, event.revision, &mut object) {
        return None;
    }
    let kind = match event.kind {
        EventKind::Created => EventType::Added,
        EventKind::Updated => EventType::Modified,
        EventKind::Deleted => EventType::Deleted,
    };
    Some(watch::frame(kind, &[&object]))
}

/// The frame for one store event as a selector-filtered watcher sees it (kube's transitions).
fn event_frame(
    event: &store::Event,
    ls: &LabelSelector,
    fs: &FieldSelector,
    c: &Collection,
    encode: &dyn Fn(&Value) -> Vec<u8>,
) -> Option<Bytes> {
    let present = |b: &[u8]| (c.present)(b, &event.key, event.revision);
    let new = present(&event.value)?;
    let new_match = selected(&new, ls, fs);
    let old_match = event
        .prev
        .as_ref()
        .and_then(|p| present(p))
        .is_some_and(|old| selected(&old, ls, fs));
    let kind = match event.kind {
        EventKind::Created if new_match => EventType::Added,
        EventKind::Updated if new_match && old_match => EventType::Modified,
        EventKind::Updated if new_match => EventType::Added,
        EventKind::Updated if old_match => EventType::Deleted,
        EventKind::Deleted if new_match => EventType::Deleted,
        _ => return None,
    };
    Some(watch::frame(kind, &[&encode(&new)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(revision: u64, size: usize) -> Arc<store::Event> {
        Arc::new(store::Event {
            revision,
            kind: EventKind::Updated,
            key: Arc::new(Key {
                group: "cache.kcp.io".into(),
                resource: "cachedobjects".into(),
                shard: "root".into(),
                cluster: "c1".into(),
                namespace: Default::default(),
                name: "x".into(),
            }),
            value: Bytes::from(vec![b' '; size]),
            prev: None,
            prev_revision: 0,
        })
    }

    #[test]
    fn the_watchers_of_one_event_share_one_frame_per_api_version() {
        let memo = FrameMemo::default();
        let made = AtomicUsize::new(0);
        let make = |e: &Arc<store::Event>| {
            made.fetch_add(1, Ordering::SeqCst);
            Some(Bytes::from(format!("frame of {}", e.revision)))
        };
        let (a, b) = (event(1, 10), event(2, 10));
        for _ in 0..100 {
            assert_eq!(
                memo.frame(&a, "cache.kcp.io/v1alpha1", || make(&a))
                    .as_deref(),
                Some(&b"frame of 1"[..])
            );
        }
        assert_eq!(made.load(Ordering::SeqCst), 1);
        memo.frame(&a, "other/v1", || make(&a));
        memo.frame(&b, "cache.kcp.io/v1alpha1", || make(&b));
        assert_eq!(
            made.load(Ordering::SeqCst),
            3,
            "another apiVersion, another event"
        );
        // A record that does not present makes no frame and is asked again next time.
        assert_eq!(memo.frame(&event(3, 1), "v1", || None), None);
    }

    #[test]
    fn a_list_body_is_its_head_items_and_end_whether_or_not_the_head_fits_its_room() {
        for head_len in [
            0,
            10,
            LIST_HEAD_ROOM,
            LIST_HEAD_ROOM + 1,
            3 * LIST_HEAD_ROOM,
        ] {
            let head: Vec<u8> = (0..head_len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut items = vec![b' '; LIST_HEAD_ROOM];
            items.extend_from_slice(b"{\"a\":1},{\"b\":2}");
            let want = [&head[..], b"{\"a\":1},{\"b\":2}", b"]}"].concat();
            assert_eq!(finish_list(&head, items), want, "head of {head_len} bytes");
        }
    }

    #[test]
    fn the_frame_memo_keeps_only_recent_small_frames() {
        let memo = FrameMemo::default();
        let made = AtomicUsize::new(0);
        let big = event(1, 0);
        let large = Bytes::from(vec![0u8; FrameMemo::LARGEST + 1]);
        for _ in 0..2 {
            memo.frame(&big, "v1", || {
                made.fetch_add(1, Ordering::SeqCst);
                Some(large.clone())
            });
        }
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "a large frame is made again"
        );
        let events: Vec<_> = (10..10 + FrameMemo::ENTRIES as u64 + 1)
            .map(|r| event(r, 1))
            .collect();
        for e in &events {
            memo.frame(e, "v1", || Some(Bytes::from_static(b"f")));
        }
        assert_eq!(memo.recent.lock().len(), FrameMemo::ENTRIES);
        let mut again = false;
        memo.frame(&events[0], "v1", || {
            again = true;
            Some(Bytes::from_static(b"f"))
        });
        assert!(again, "the oldest event was let go");
    }
}
