//! LIST bodies built from served bytes and streamed in bounded chunks.
//!
//! A list is the `{"apiVersion","kind","metadata"` head, then every selected object once per
//! synthetic cluster (object-major, cluster-minor), then `]}`. Items are copied from each
//! object's shared prefix/suffix bytes with the consumer's cluster in between — no JSON tree,
//! no re-encoding — and nothing sized by objects × consumers is ever held in memory: the body is
//! produced lazily, [`CHUNK`] bytes at a time.

use super::index::ServedObject;
use bytes::{BufMut, Bytes, BytesMut};
use kcp_model::types::PrinterColumn;
use rest::printing::IncludeObject;
use std::sync::Arc;

/// How each item of a list is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemView {
    /// The object itself (`items`).
    Object,
    /// Its PartialObjectMetadata (`items` of a PartialObjectMetadataList).
    Metadata,
    /// A Table row (`rows`) carrying the object as asked.
    Row(IncludeObject),
}

impl ItemView {
    /// The JSON key of the list's items.
    pub fn items_key(self) -> &'static str {
        match self {
            ItemView::Row(_) => "rows",
            _ => "items",
        }
    }
}

/// Write one item of `view` for `o` and consumer literal `c`.
pub fn write_item(
    buf: &mut BytesMut,
    view: ItemView,
    columns: &[PrinterColumn],
    o: &ServedObject,
    c: &[u8],
) {
    match view {
        ItemView::Object => o.write(c, buf),
        ItemView::Metadata => o
            .metadata_parts(columns, c)
            .iter()
            .for_each(|p| buf.put_slice(p)),
        ItemView::Row(include) => {
            buf.put_slice(b"{\"cells\":");
            rest::printing::write_cells(
                buf,
                &o.table_parts(columns).cells,
                rest::printing::now_unix(),
            );
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    buf.put_slice(b",\"object\":");
                    o.metadata_parts(columns, c)
                        .iter()
                        .for_each(|p| buf.put_slice(p));
                }
                IncludeObject::Object => {
                    buf.put_slice(b",\"object\":");
                    o.write(c, buf);
                }
            }
            buf.put_u8(b'}');
        }
    }
}

/// Target size of one body chunk (a few TLS records).
pub const CHUNK: usize = 128 * 1024;

/// A lazily produced LIST body.
pub struct ListBody {
    head: Option<Bytes>,
    objects: Vec<Arc<ServedObject>>,
    clusters: Vec<Vec<u8>>,
    view: ItemView,
    columns: Arc<[PrinterColumn]>,
    /// Explicit (object, cluster) pairs (a page); `None` = every object × every cluster.
    pairs: Option<Vec<(usize, usize)>>,
    pair: usize,
    object: usize,
    cluster: usize,
    first: bool,
    done: bool,
}

impl ListBody {
    /// A body for `objects` copied once per cluster literal in `clusters` (JSON strings);
    /// `head` is the list object without items and without its closing brace.
    pub fn new(head: Bytes, objects: Vec<Arc<ServedObject>>, clusters: Vec<Vec<u8>>) -> Self {
        Self::with_view(
            head,
            objects,
            clusters,
            ItemView::Object,
            Arc::from(Vec::new()),
        )
    }

    /// A body whose items are shown as `view` (Table rows use `columns`).
    pub fn with_view(
        head: Bytes,
        objects: Vec<Arc<ServedObject>>,
        clusters: Vec<Vec<u8>>,
        view: ItemView,
        columns: Arc<[PrinterColumn]>,
    ) -> Self {
        ListBody {
            head: Some(head),
            objects,
            clusters,
            view,
            columns,
            pairs: None,
            pair: 0,
            object: 0,
            cluster: 0,
            first: true,
            done: false,
        }
    }

    /// Serve only these (object index, cluster index) pairs, in order (one page of a list).
    pub fn with_pairs(mut self, pairs: Vec<(usize, usize)>) -> Self {
        self.pairs = Some(pairs);
        self
    }

    /// The next chunk, or `None` once the body is complete.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut buf = BytesMut::with_capacity(CHUNK + 4096);
        if let Some(head) = self.head.take() {
            buf.put_slice(&head);
            buf.put_slice(b",\"");
            buf.put_slice(self.view.items_key().as_bytes());
            buf.put_slice(b"\":[");
        }
        if let Some(pairs) = &self.pairs {
            while buf.len() < CHUNK && self.pair < pairs.len() {
                let (oi, ci) = pairs[self.pair];
                if !self.first {
                    buf.put_u8(b',');
                }
                self.first = false;
                write_item(
                    &mut buf,
                    self.view,
                    &self.columns,
                    &self.objects[oi],
                    &self.clusters[ci],
                );
                self.pair += 1;
            }
            if self.pair >= pairs.len() {
                buf.put_slice(b"]}");
                self.done = true;
            }
            return Some(buf.freeze());
        }
        while buf.len() < CHUNK && self.object < self.objects.len() && !self.clusters.is_empty() {
            let o = &self.objects[self.object];
            let c = &self.clusters[self.cluster];
            if !self.first {
                buf.put_u8(b',');
            }
            self.first = false;
            write_item(&mut buf, self.view, &self.columns, o, c);
            self.cluster += 1;
            if self.cluster == self.clusters.len() {
                self.cluster = 0;
                self.object += 1;
            }
        }
        if self.object >= self.objects.len() || self.clusters.is_empty() {
            buf.put_slice(b"]}");
            self.done = true;
        }
        Some(buf.freeze())
    }

    /// The whole body in one buffer (tests and benches).
    pub fn collect(mut self) -> Bytes {
        let mut out = BytesMut::new();
        while let Some(c) = self.next_chunk() {
            out.put_slice(&c);
        }
        out.freeze()
    }

    /// The HTTP body: a single buffer when it fits one chunk, else a stream of chunks.
    pub fn into_body(mut self) -> axum::body::Body {
        let first = self.next_chunk().unwrap_or_default();
        if self.done {
            return axum::body::Body::from(first);
        }
        let rest = futures_util::stream::unfold(self, |mut b| async move {
            b.next_chunk().map(|c| (Ok::<_, std::io::Error>(c), b))
        });
        let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) });
        axum::body::Body::from_stream(futures_util::StreamExt::chain(first, rest))
    }
}
