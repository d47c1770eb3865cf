//! A served object's text as pieces: slices of one buffer, a few constants, the consumer's
//! cluster literal and the `resourceVersion` member, put together when a response or a watch
//! frame is written.
//!
//! The buffer is the stored value the object came from whenever the schema changed nothing in
//! it: then `apiVersion`, `kind`, every member of `metadata` but the four the virtual workspace
//! rewrites (`annotations`' kcp members, `uid`, `resourceVersion`), every other annotation, and
//! every member after `metadata` are served as the stored text itself, and a served object
//! holds only its piece list (about a hundred bytes) instead of a re-encoded head. Otherwise the
//! buffer is the object encoded anew, split around its `kcp.io/cluster` value.

use bytes::{BufMut, Bytes};
use kcp_model::types::{ANN_CLUSTER, ANN_ORIGINAL_RV, ANN_ORIGINAL_UID, ANN_SHARD};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// Where one piece of a served object's text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// `len` bytes of the buffer from `start`.
    Text { start: u32, len: u32 },
    /// A constant.
    Lit(Lit),
    /// The consumer's cluster name as a JSON string literal.
    Cluster,
    /// `,"resourceVersion":"<revision>"}` (the last member of `metadata`).
    Revision,
}

/// A [`Piece`] in eight bytes: a slice's start and length, or, with the start `u32::MAX` (no
/// slice starts there: the builder refuses it), a code for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    start: u32,
    len: u32,
}

const SPECIAL: u32 = u32::MAX;
const CLUSTER: u32 = 0x100;
const REVISION: u32 = 0x101;

impl Packed {
    fn of(piece: Piece) -> Packed {
        let special = |len| Packed {
            start: SPECIAL,
            len,
        };
        match piece {
            Piece::Text { start, len } => Packed { start, len },
            Piece::Lit(l) => special(l as u32),
            Piece::Cluster => special(CLUSTER),
            Piece::Revision => special(REVISION),
        }
    }

    fn get(self) -> Piece {
        if self.start != SPECIAL {
            return Piece::Text {
                start: self.start,
                len: self.len,
            };
        }
        match self.len {
            CLUSTER => Piece::Cluster,
            REVISION => Piece::Revision,
            code => Lit::ALL
                .get(code as usize)
                .map_or(Piece::Cluster, |l| Piece::Lit(*l)),
        }
    }
}

/// The constants a served object's text is put together with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lit {
    Close,
    Annotations,
    CommaAnnotations,
    ClusterKey,
    CommaClusterKey,
    CloseUid,
    EmptyString,
}

impl Lit {
    /// Every constant, at its discriminant.
    const ALL: [Lit; 7] = [
        Lit::Close,
        Lit::Annotations,
        Lit::CommaAnnotations,
        Lit::ClusterKey,
        Lit::CommaClusterKey,
        Lit::CloseUid,
        Lit::EmptyString,
    ];

    fn bytes(self) -> &'static [u8] {
        match self {
            Lit::Close => b"}",
            Lit::Annotations => b"\"annotations\":{",
            Lit::CommaAnnotations => b",\"annotations\":{",
            Lit::ClusterKey => b"\"kcp.io/cluster\":",
            Lit::CommaClusterKey => b",\"kcp.io/cluster\":",
            Lit::CloseUid => b"},\"uid\":",
            Lit::EmptyString => b"\"\"",
        }
    }
}

const REVISION_KEY: &[u8] = b",\"resourceVersion\":\"";

/// A piece as bytes, for comparing two objects' texts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk<'a> {
    Bytes(&'a [u8]),
    Cluster,
    Revision,
}

/// The pieces of a text and the buffer their `Text` pieces slice.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pieces {
    buffer: Bytes,
    list: Box<[Packed]>,
}

impl Pieces {
    /// An encoded object whose cluster literal is at `at..at + len` of `buffer`.
    pub(crate) fn encoded(buffer: Bytes, at: usize, len: usize) -> Option<Pieces> {
        let mut b = Builder::new(&buffer);
        b.text(0..at)?;
        b.push(Piece::Cluster);
        b.text(at + len..buffer.len())?;
        let list = b.list.into_boxed_slice();
        Some(Pieces { buffer, list })
    }

    /// The bytes of each piece in order, the cluster literal and revision left as markers.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = Chunk<'_>> {
        self.list.iter().map(|p| match p.get() {
            Piece::Text { start, len } => {
                let start = start as usize;
                Chunk::Bytes(&self.buffer[start..start + len as usize])
            }
            Piece::Lit(l) => Chunk::Bytes(l.bytes()),
            Piece::Cluster => Chunk::Cluster,
            Piece::Revision => Chunk::Revision,
        })
    }

    /// Whether the text holds a `resourceVersion` piece (rendered from the revision given).
    pub(crate) fn has_revision(&self) -> bool {
        self.list.contains(&Packed::of(Piece::Revision))
    }

    /// The buffer the text slices.
    #[cfg(test)]
    pub(crate) fn buffer(&self) -> &Bytes {
        &self.buffer
    }

    /// Length of the text for a cluster literal of `cluster_len` bytes and `revision`.
    pub(crate) fn len(&self, cluster_len: usize, revision: u64) -> usize {
        self.chunks()
            .map(|c| match c {
                Chunk::Bytes(b) => b.len(),
                Chunk::Cluster => cluster_len,
                Chunk::Revision => REVISION_KEY.len() + digits(revision) + 2,
            })
            .sum()
    }

    /// Write the text for `cluster` (a JSON string literal) and `revision` to `out`.
    pub(crate) fn write(&self, cluster: &[u8], revision: u64, out: &mut impl BufMut) {
        for c in self.chunks() {
            match c {
                Chunk::Bytes(b) => out.put_slice(b),
                Chunk::Cluster => out.put_slice(cluster),
                Chunk::Revision => {
                    out.put_slice(REVISION_KEY);
                    let mut d = [0u8; 20];
                    out.put_slice(decimal(revision, &mut d));
                    out.put_slice(b"\"}");
                }
            }
        }
    }
}

/// Number of decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Collects pieces, merging adjacent slices of the buffer.
struct Builder<'a> {
    buffer: &'a [u8],
    list: Vec<Packed>,
}

impl<'a> Builder<'a> {
    fn new(buffer: &'a [u8]) -> Self {
        Builder {
            buffer,
            list: Vec::with_capacity(16),
        }
    }

    /// Add `buffer[range]`; `None` when the range is outside the buffer or beyond `u32`.
    fn text(&mut self, range: Range<usize>) -> Option<()> {
        if range.start > range.end || range.end > self.buffer.len() {
            return None;
        }
        if range.is_empty() {
            return Some(());
        }
        let start = u32::try_from(range.start).ok().filter(|s| *s != SPECIAL)?;
        let len = u32::try_from(range.len()).ok()?;
        if let Some(last) = self.list.last_mut()
            && let Piece::Text { start: s, len: l } = last.get()
            && s as usize + l as usize == range.start
        {
            *last = Packed::of(Piece::Text {
                start: s,
                len: l.checked_add(len)?,
            });
            return Some(());
        }
        self.list.push(Packed::of(Piece::Text { start, len }));
        Some(())
    }

    fn push(&mut self, piece: Piece) {
        self.list.push(Packed::of(piece));
    }

    fn lit(&mut self, l: Lit) {
        self.push(Piece::Lit(l));
    }

    /// Add member `i` of `object`: from its key when it is the first added of its object
    /// (`first`, then cleared), else from the separator after the member before it.
    fn member(&mut self, object: &ObjectText<'_>, i: usize, first: &mut bool) -> Option<()> {
        let start = object.member_start(i);
        let start = if *first {
            skip_separator(self.buffer, start)
        } else {
            start
        };
        *first = false;
        self.text(start..object.members[i].1.end)
    }
}

/// After whitespace, one comma and whitespace again, from `at`.
fn skip_separator(buffer: &[u8], mut at: usize) -> usize {
    let ws = |b: &u8| b.is_ascii_whitespace();
    while buffer.get(at).is_some_and(ws) {
        at += 1;
    }
    if buffer.get(at) == Some(&b',') {
        at += 1;
    }
    while buffer.get(at).is_some_and(ws) {
        at += 1;
    }
    at
}

/// A JSON object's text in the buffer: where its `{` is, and each member's key and value.
struct ObjectText<'a> {
    open: usize,
    members: Vec<(Cow<'a, str>, Range<usize>)>,
}

impl<'a> ObjectText<'a> {
    /// The object at `range` of `buffer`; `None` when it is not an object or a key repeats.
    fn parse(buffer: &'a [u8], range: Range<usize>) -> Option<ObjectText<'a>> {
        let text = simdutf8::basic::from_utf8(buffer.get(range.clone())?).ok()?;
        let open = range.start + text.find('{')?;
        let mut de = serde_json::Deserializer::from_str(text);
        let raw: Vec<(Cow<'a, str>, &'a RawValue)> =
            serde::de::DeserializeSeed::deserialize(MemberList, &mut de).ok()?;
        let mut members = Vec::with_capacity(raw.len());
        for (key, value) in raw {
            let at = (value.get().as_ptr() as usize).checked_sub(buffer.as_ptr() as usize)?;
            members.push((key, at..at + value.get().len()));
        }
        let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        Some(ObjectText { open, members })
    }

    /// Where member `i`'s text starts with the separator before it.
    fn member_start(&self, i: usize) -> usize {
        match i {
            0 => self.open + 1,
            _ => self.members[i - 1].1.end,
        }
    }

    fn get(&self, key: &str) -> Option<Range<usize>> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.clone())
    }
}

/// Deserializes an object's members as keys and unparsed values.
struct MemberList;

impl<'de> serde::de::DeserializeSeed<'de> for MemberList {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MemberList {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(16);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            out.push((key, map.next_value()?));
        }
        Ok(out)
    }
}

/// A key, borrowed from the text unless it has escapes.
struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// The annotations the virtual workspace removes or sets.
const REWRITTEN_ANNOTATIONS: [&str; 4] =
    [ANN_ORIGINAL_UID, ANN_ORIGINAL_RV, ANN_SHARD, ANN_CLUSTER];

/// What [`from_stored`] needs to know of the object's top-level members.
pub(crate) struct Head<'a> {
    /// The stored value.
    pub stored: &'a Bytes,
    /// Where the object's text is in `stored`.
    pub span: Range<usize>,
    /// The first top-level members, in order: which of `apiVersion`, `kind`, `metadata`
    /// (an index in that list) and where its value is; every member after them follows as
    /// stored, up to the object's closing brace.
    pub heads: Vec<(usize, Range<usize>)>,
    /// The object is the inner object of a CachedObject: its `uid` is the one its
    /// `cache.kcp.io/original-resource-UID` annotation names.
    pub wrapped: bool,
}

/// Index of `metadata` in a [`Head`]'s names.
pub(crate) const METADATA: usize = 2;

/// The served text of an object whose members after the head are served as stored (the caller
/// has checked that, and that the schema changed nothing) as pieces of the stored value, with
/// the head's kept members as stored too; `None` when the stored text cannot be served that
/// way (no `metadata`, a repeated key in it or in its annotations, annotations that are not an
/// object, a line break).
pub(crate) fn from_stored(head: &Head<'_>) -> Option<Pieces> {
    let buffer: &[u8] = head.stored;
    let head_end = head.heads.last()?.1.end;
    let whole = buffer.get(head.span.clone())?;
    if memchr::memchr2(b'\n', b'\r', whole).is_some() {
        return None;
    }
    let open = head.span.start + whole.iter().position(|b| *b == b'{')?;
    let top = ObjectText {
        open,
        members: head
            .heads
            .iter()
            .map(|(i, r)| (Cow::Borrowed(HEAD_NAMES[*i]), r.clone()))
            .collect(),
    };
    let mut b = Builder::new(buffer);
    b.text(open..open + 1)?;
    let mut first = true;
    let mut has_metadata = false;
    for (i, (which, value)) in head.heads.iter().enumerate() {
        if *which != METADATA {
            b.member(&top, i, &mut first)?;
            continue;
        }
        has_metadata = true;
        let md = ObjectText::parse(buffer, value.clone())?;
        // The key and the opening brace, as stored.
        let start = top.member_start(i);
        let start = if first {
            skip_separator(buffer, start)
        } else {
            start
        };
        first = false;
        b.text(start..md.open + 1)?;
        metadata(&mut b, &md, head.wrapped)?;
    }
    if !has_metadata {
        return None;
    }
    // Every member after the head, and the closing brace.
    b.text(head_end..head.span.end)?;
    Some(Pieces {
        buffer: head.stored.clone(),
        list: b.list.into_boxed_slice(),
    })
}

/// The names of a [`Head`]'s members.
pub(crate) const HEAD_NAMES: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// `metadata`'s members after its opening brace: the stored ones but `annotations`,
/// `resourceVersion` and (when wrapped) `uid`, then the annotations without the rewritten
/// ones and with the cluster's, the original uid, and the revision.
fn metadata(b: &mut Builder<'_>, md: &ObjectText<'_>, wrapped: bool) -> Option<()> {
    let buffer = b.buffer;
    let mut first = true;
    for (i, (key, _)) in md.members.iter().enumerate() {
        let rewritten =
            key == "annotations" || key == "resourceVersion" || (wrapped && key == "uid");
        if !rewritten {
            b.member(md, i, &mut first)?;
        }
    }
    b.lit(if first {
        Lit::Annotations
    } else {
        Lit::CommaAnnotations
    });
    let mut uid = None;
    let mut first = true;
    if let Some(range) = md.get("annotations")
        && buffer.get(range.clone())? != b"null"
    {
        let ann = ObjectText::parse(buffer, range)?;
        for (i, (key, value)) in ann.members.iter().enumerate() {
            if key == ANN_ORIGINAL_UID && buffer.get(value.start) == Some(&b'"') {
                uid = Some(value.clone());
            }
            if !REWRITTEN_ANNOTATIONS.contains(&key.as_ref()) {
                b.member(&ann, i, &mut first)?;
            }
        }
    }
    b.lit(if first {
        Lit::ClusterKey
    } else {
        Lit::CommaClusterKey
    });
    b.push(Piece::Cluster);
    if wrapped {
        b.lit(Lit::CloseUid);
        match uid {
            Some(range) => b.text(range)?,
            None => b.lit(Lit::EmptyString),
        }
    } else {
        b.lit(Lit::Close);
    }
    b.push(Piece::Revision);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(p: &Pieces, cluster: &str, revision: u64) -> String {
        let mut out = Vec::new();
        p.write(&serde_json::to_vec(cluster).unwrap(), revision, &mut out);
        assert_eq!(out.len(), p.len(cluster.len() + 2, revision));
        String::from_utf8(out).unwrap()
    }

    fn stored(text: &str) -> (Bytes, Vec<(usize, Range<usize>)>) {
        let stored = Bytes::copy_from_slice(text.as_bytes());
        let members: Vec<(Cow<'_, str>, &RawValue)> = serde::de::DeserializeSeed::deserialize(
            MemberList,
            &mut serde_json::Deserializer::from_str(text),
        )
        .unwrap();
        let heads = members
            .iter()
            .map_while(|(k, r)| {
                let i = HEAD_NAMES.iter().position(|n| n == k)?;
                let at = r.get().as_ptr() as usize - text.as_ptr() as usize;
                Some((i, at..at + r.get().len()))
            })
            .collect();
        (stored, heads)
    }

    fn served(text: &str, wrapped: bool) -> Option<Pieces> {
        let (stored, heads) = stored(text);
        from_stored(&Head {
            stored: &stored,
            span: 0..text.len(),
            heads,
            wrapped,
        })
    }

    #[test]
    fn a_wrapped_object_is_served_from_its_stored_text_with_the_rewritten_members() {
        let text = r#"{"apiVersion":"a/v1","kind":"K","metadata":{"name":"n","uid":"cache-uid","resourceVersion":"7","annotations":{"x":"1","cache.kcp.io/original-resource-UID":"orig","kcp.io/shard":"s","kcp.io/cluster":"p","y":"2"},"labels":{"l":"v"}},"spec":{"a":1}}"#;
        let p = served(text, true).unwrap();
        let got: serde_json::Value = serde_json::from_str(&render(&p, "c1", 42)).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"apiVersion":"a/v1","kind":"K","metadata":{"name":"n","uid":"orig",
                "resourceVersion":"42","annotations":{"x":"1","y":"2","kcp.io/cluster":"c1"},
                "labels":{"l":"v"}},"spec":{"a":1}})
        );
        assert!(p.has_revision());
        assert!(p.list.len() <= 12, "{:?}", p.list);
    }

    #[test]
    fn an_object_stored_as_itself_keeps_its_uid_and_gets_annotations() {
        let text = r#"{ "kind" : "K" , "metadata" : { "uid" : "u" , "name":"n" } , "spec" : [ ] }"#;
        let p = served(text, false).unwrap();
        let got: serde_json::Value = serde_json::from_str(&render(&p, "c", 0)).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"kind":"K","metadata":{"uid":"u","name":"n","resourceVersion":"0",
                "annotations":{"kcp.io/cluster":"c"}},"spec":[]})
        );
    }

    #[test]
    fn null_or_missing_annotations_and_a_missing_original_uid_serve_empty_ones() {
        for text in [
            r#"{"metadata":{"annotations":null,"name":"n"},"spec":1}"#,
            r#"{"metadata":{},"spec":1}"#,
        ] {
            let p = served(text, true).unwrap();
            let got: serde_json::Value = serde_json::from_str(&render(&p, "c", 1)).unwrap();
            assert_eq!(got["metadata"]["uid"], "", "{text}");
            assert_eq!(
                got["metadata"]["annotations"]["kcp.io/cluster"], "c",
                "{text}"
            );
        }
    }

    #[test]
    fn stored_texts_that_cannot_be_served_as_pieces_are_refused() {
        for text in [
            r#"{"kind":"K","spec":1}"#,
            r#"{"metadata":{"name":"a","name":"b"},"spec":1}"#,
            r#"{"metadata":{"annotations":{"a":"1","a":"2"}},"spec":1}"#,
            r#"{"metadata":{"annotations":[]},"spec":1}"#,
            "{\"metadata\":{\"name\":\n\"a\"},\"spec\":1}",
        ] {
            assert!(served(text, true).is_none(), "{text}");
        }
    }

    #[test]
    fn the_cluster_key_constant_is_the_annotation_s() {
        assert_eq!(
            Lit::ClusterKey.bytes(),
            format!("\"{ANN_CLUSTER}\":").as_bytes()
        );
        assert_eq!(
            Lit::CommaClusterKey.bytes(),
            format!(",\"{ANN_CLUSTER}\":").as_bytes()
        );
    }

    #[test]
    fn every_piece_survives_packing() {
        let mut all: Vec<Piece> = Lit::ALL.iter().map(|l| Piece::Lit(*l)).collect();
        all.extend([
            Piece::Cluster,
            Piece::Revision,
            Piece::Text { start: 0, len: 0 },
            Piece::Text {
                start: SPECIAL - 1,
                len: u32::MAX,
            },
        ]);
        for (i, l) in Lit::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
        }
        for p in all {
            assert_eq!(Packed::of(p).get(), p);
        }
        assert_eq!(std::mem::size_of::<Packed>(), 8);
    }

    #[test]
    fn revisions_render_with_all_their_digits() {
        let p = served(r#"{"metadata":{},"spec":1}"#, false).unwrap();
        for rev in [0, 9, 10, 12345, u64::MAX] {
            let got: serde_json::Value = serde_json::from_str(&render(&p, "c", rev)).unwrap();
            assert_eq!(got["metadata"]["resourceVersion"], rev.to_string());
        }
    }
}
