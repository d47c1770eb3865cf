//! PATCH bodies: this module owns applying the three patch content types kube-apiserver accepts
//! (JSON merge patch, JSON patch and strategic merge patch) to an object held as a
//! `serde_json::Value`, and the errors a patch can fail with.
//!
//! * [`PatchType::Merge`] follows RFC 7386: objects merge key by key, `null` deletes a key, any
//!   other value (arrays included) replaces what was there. The `json-patch` crate's `merge`
//!   does it; this module only parses the body.
//! * [`PatchType::Json`] follows RFC 6902: `add`, `remove`, `replace`, `move`, `copy` and `test`
//!   with RFC 6901 pointers (`~0`, `~1`, `-` to append). The `json-patch` crate parses the
//!   operations and their pointers and applies `add`, `remove`, `replace`, `move` and `copy`.
//!   What stays ours, around each call, is what kube-apiserver does and the crate does not:
//!   - the answers: a body that is not an array of objects is malformed (400), more than 10000
//!     operations is too large (413, counted before anything is applied), an operation that is
//!     not valid or cannot apply is invalid (422), worded by path in our own messages;
//!   - `test`, which compares numbers by value (`1` equals `1.0`, as kube-apiserver's Go
//!     decoding does), where the crate's `==` tells them apart;
//!   - bounds on the bytes `copy` may duplicate and on the nesting depth of the result, checked
//!     before each operation, so no patch can blow up memory or the stack (a result must also
//!     read back within `serde_json`'s nesting limit);
//!   - a `move` onto itself, which only needs its source to exist (the crate would take the
//!     value out and put it back, which fails for the whole document).
//!
//!   Operations go to the crate's `patch_unsafe` one at a time, on a copy of the target that is
//!   dropped on error: its `patch` would undo the applied operations on error, and that undo
//!   panics after a `move` of a value onto its own parent.
//! * [`PatchType::StrategicMerge`] is the part of Kubernetes strategic merge patch that the
//!   built-in types Namespace, Secret, ConfigMap, ClusterRole(Binding) and Role(Binding) need:
//!   merge-patch semantics for maps, lists replaced, except the merge lists of the top-level
//!   `metadata` (`finalizers`, a set of strings, and `ownerReferences`, merged by `uid`), plus
//!   the directives `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//!   `$deleteFromPrimitiveList/<field>`. Directives are obeyed and never stored. Merge lists are
//!   ordered the way kube-apiserver orders them: patch elements in patch order, interleaved with
//!   the elements only the object had, in their old order. It is written here: no crate
//!   implements Kubernetes' strategic merge patch (its rules live in Go struct tags).
//!
//! [`apply`] never panics and never changes the target; the caller stores the result.

use std::collections::{HashMap, HashSet};
use std::io;

use json_patch::jsonptr::{Pointer, Resolve};
use json_patch::{
    AddOperation, CopyOperation, MoveOperation, PatchErrorKind, PatchOperation, RemoveOperation,
    ReplaceOperation, TestOperation,
};
use serde_json::{Map, Number, Value};

/// Most operations one JSON patch may carry (kube-apiserver's limit).
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Most bytes (counted as compact JSON) the `copy` operations of one JSON patch may duplicate.
const MAX_COPIED_BYTES: u64 = 3 * 1024 * 1024;

/// Deepest nesting of arrays and objects a JSON patch may produce: the most `serde_json` reads
/// back, so a patched object can always be decoded again.
const MAX_DEPTH: usize = 127;

/// The patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/merge-patch+json`: RFC 7386 JSON merge patch.
    Merge,
    /// `application/json-patch+json`: RFC 6902 JSON patch.
    Json,
    /// `application/strategic-merge-patch+json`: Kubernetes strategic merge patch (the subset
    /// the supported built-in types need).
    StrategicMerge,
}

impl PatchType {
    /// The patch type a `Content-Type` header value names, or `None` when it names none of the
    /// three. Parameters (`; charset=utf-8`) and letter case are ignored.
    /// `application/apply-patch+yaml` (server-side apply) gives `None`: it is not handled here.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct.split_once(';').map_or(ct, |(essence, _)| essence).trim();
        [
            ("application/merge-patch+json", PatchType::Merge),
            ("application/json-patch+json", PatchType::Json),
            (
                "application/strategic-merge-patch+json",
                PatchType::StrategicMerge,
            ),
        ]
        .into_iter()
        .find(|(name, _)| essence.eq_ignore_ascii_case(name))
        .map(|(_, kind)| kind)
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not JSON, or not the shape the patch type needs (a JSON patch that is not an
    /// array of objects, a strategic merge patch that is not an object, a directive with a value
    /// of the wrong type). kube-apiserver answers 400 BadRequest.
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but cannot be applied to this object: a missing path, a failed
    /// `test`, an array index out of range, a list that is not a list. kube-apiserver answers
    /// 422 Invalid.
    #[error("{0}")]
    Invalid(String),
    /// A JSON patch with more operations than kube-apiserver takes. kube-apiserver answers 413
    /// RequestEntityTooLarge.
    #[error("{0}")]
    TooLarge(String),
}

/// Applies `patch` (the raw request body) of type `kind` to `target` and returns the patched
/// value; `target` itself is left alone. Never panics, whatever the inputs.
pub fn apply(kind: PatchType, target: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    match kind {
        PatchType::Merge => {
            let patch = parse_body(patch)?;
            let mut doc = target.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::Json => json_patch(target, patch),
        PatchType::StrategicMerge => strategic_merge_patch(target, patch),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(body)
        .map_err(|e| PatchError::Malformed(format!("the patch body is not valid JSON: {e}")))
}

// ---------------------------------------------------------------------------------------------
// RFC 6902 JSON patch: the `json-patch` crate applies the operations; this adapter bounds them
// and words their errors.

fn json_patch(target: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let operations = parse_operations(body)?;
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(too_many(operations.len()));
    }
    let mut doc = target.clone();
    let mut copied = 0u64;
    for op in &operations {
        apply_operation(&mut doc, op, &mut copied).map_err(PatchError::Invalid)?;
    }
    Ok(doc)
}

/// The operations of a JSON patch body. A body that is not JSON, or not an array of objects, is
/// malformed; an operation the crate cannot read (no `op`, a member missing, a pointer that is
/// not one) is invalid; more operations than kube-apiserver takes are too large.
fn parse_operations(body: &[u8]) -> Result<Vec<PatchOperation>, PatchError> {
    // Most bodies are right: read them straight into operations. Any error (including a member
    // given twice, which serde refuses and kube-apiserver takes the last of) goes the long way,
    // which finds the answer kube-apiserver gives.
    if let Ok(operations) = serde_json::from_slice::<Vec<PatchOperation>>(body) {
        return Ok(operations);
    }
    let Value::Array(operations) = parse_body(body)? else {
        return Err(PatchError::Malformed(
            "a JSON patch must be a JSON array of operations".into(),
        ));
    };
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(too_many(operations.len()));
    }
    if let Some((i, other)) = operations
        .iter()
        .enumerate()
        .find(|(_, op)| !op.is_object())
    {
        return Err(PatchError::Malformed(format!(
            "JSON patch operation {i} is not a JSON object: {other}"
        )));
    }
    operations
        .into_iter()
        .enumerate()
        .map(|(i, op)| {
            serde_json::from_value::<PatchOperation>(op).map_err(|e| {
                PatchError::Invalid(format!("JSON patch operation {i} is not valid: {e}"))
            })
        })
        .collect()
}

fn too_many(operations: usize) -> PatchError {
    PatchError::TooLarge(format!(
        "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {operations}"
    ))
}

/// Applies one operation: checks the bounds the crate does not know about, runs `test` itself
/// (kube-apiserver compares numbers by value, the crate does not) and hands the rest to the
/// crate.
fn apply_operation(doc: &mut Value, op: &PatchOperation, copied: &mut u64) -> Result<(), String> {
    match op {
        PatchOperation::Add(AddOperation { path, value })
        | PatchOperation::Replace(ReplaceOperation { path, value }) => check_depth(path, value)?,
        PatchOperation::Move(MoveOperation { from, path }) => {
            if from == path {
                // A move onto itself changes nothing; the crate would take it out and put it
                // back, which fails for the whole document.
                return lookup(doc, from).map(drop).ok_or_else(|| missing(from));
            }
            if !path.starts_with(from)
                && let Some(value) = lookup(doc, from)
            {
                check_depth(path, value)?;
            }
        }
        PatchOperation::Copy(CopyOperation { from, path }) => {
            if let Some(source) = lookup(doc, from) {
                *copied = copied.saturating_add(serialized_len(source));
                if *copied > MAX_COPIED_BYTES {
                    return Err(format!(
                        "the copy operations of this patch duplicate more than {MAX_COPIED_BYTES} bytes"
                    ));
                }
                check_depth(path, source)?;
            }
        }
        PatchOperation::Test(TestOperation { path, value }) => {
            let actual = lookup(doc, path).ok_or_else(|| missing(path))?;
            return if json_equal(actual, value) {
                Ok(())
            } else {
                Err(format!("testing value {} failed", path.as_str()))
            };
        }
        PatchOperation::Remove(_) => {}
    }
    // `patch_unsafe` leaves a half-patched document on error instead of undoing, which is all
    // this copy needs (it is dropped on error).
    json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|e| failure(doc, op, &e))
}

/// Words an error of the crate like the rest of this module: which path, and why.
fn failure(doc: &Value, op: &PatchOperation, error: &json_patch::PatchError) -> String {
    match (&error.kind, op) {
        (PatchErrorKind::CannotMoveInsideItself, PatchOperation::Move(m)) => format!(
            "cannot move {:?} into its own child {:?}",
            m.from.as_str(),
            m.path.as_str()
        ),
        (
            PatchErrorKind::InvalidFromPointer,
            PatchOperation::Move(MoveOperation { from, .. })
            | PatchOperation::Copy(CopyOperation { from, .. }),
        ) => missing(from),
        (
            PatchErrorKind::InvalidPointer,
            PatchOperation::Add(AddOperation { path, .. })
            | PatchOperation::Move(MoveOperation { path, .. })
            | PatchOperation::Copy(CopyOperation { path, .. }),
        ) => cannot_add(doc, path),
        (PatchErrorKind::InvalidPointer, PatchOperation::Remove(RemoveOperation { path }))
            if path.is_root() =>
        {
            "the whole document cannot be removed".into()
        }
        (PatchErrorKind::InvalidPointer, op) => missing(op.path()),
        (kind, op) => format!("{:?}: {kind}", op.path().as_str()),
    }
}

/// The value `path` points at in `doc`, if any (without the allocations of `Value::pointer`).
fn lookup<'a>(doc: &'a Value, path: &Pointer) -> Option<&'a Value> {
    doc.resolve(path).ok()
}

fn missing(path: &Pointer) -> String {
    format!("path {:?} does not exist", path.as_str())
}

/// Why nothing could be added at `path` in `doc` (an add into an object always succeeds).
fn cannot_add(doc: &Value, path: &Pointer) -> String {
    let reason = match path.split_back() {
        Some((parent, last)) => match lookup(doc, parent) {
            None => "its parent does not exist".to_string(),
            Some(Value::Array(items)) => match last.to_index() {
                Ok(_) => format!(
                    "array index {} is out of bounds (the array has {} elements)",
                    last.encoded(),
                    items.len()
                ),
                Err(_) => format!("{:?} is not a valid array index", last.encoded()),
            },
            Some(_) => "its parent is neither an object nor an array".to_string(),
        },
        None => "the path is invalid".to_string(),
    };
    format!("cannot add {:?}: {reason}", path.as_str())
}

/// Refuses a value that, placed at `path`, would nest deeper than [`MAX_DEPTH`].
fn check_depth(path: &Pointer, value: &Value) -> Result<(), String> {
    let depth = path.count();
    if depth > MAX_DEPTH || nesting_exceeds(value, MAX_DEPTH - depth) {
        Err(format!(
            "the patched object would nest more than {MAX_DEPTH} levels deep"
        ))
    } else {
        Ok(())
    }
}

/// Whether `value` nests more than `budget` arrays/objects deep (looks no deeper than that).
fn nesting_exceeds(value: &Value, budget: usize) -> bool {
    match value {
        Value::Array(items) => budget == 0 || items.iter().any(|v| nesting_exceeds(v, budget - 1)),
        Value::Object(map) => budget == 0 || map.values().any(|v| nesting_exceeds(v, budget - 1)),
        _ => false,
    }
}

/// Length of `value` as compact JSON, counted without building the text.
fn serialized_len(value: &Value) -> u64 {
    struct Counter(u64);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => u64::MAX,
    }
}

/// JSON equality as kube-apiserver's `test` judges it: numbers compare by value (`1` equals
/// `1.0`), where `serde_json`'s `==` (and so the crate's `test`) tells them apart.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn numbers_equal(x: &Number, y: &Number) -> bool {
    if x.is_f64() || y.is_f64() {
        x.as_f64() == y.as_f64()
    } else {
        x.as_i64() == y.as_i64() && x.as_u64() == y.as_u64()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch (subset)

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";

/// Where in the object a map sits: only the top-level `metadata` has merge lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    Metadata,
    Other,
}

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    /// The patch list replaces the list.
    Replace,
    /// A set of scalars: union, duplicates dropped.
    Scalars,
    /// Objects merged by the named key.
    Keyed(&'static str),
}

impl ListKind {
    fn merge_key(self) -> Option<&'static str> {
        match self {
            ListKind::Keyed(key) => Some(key),
            ListKind::Replace | ListKind::Scalars => None,
        }
    }
}

impl Place {
    fn child(self, key: &str) -> Place {
        if self == Place::Root && key == "metadata" {
            Place::Metadata
        } else {
            Place::Other
        }
    }

    fn list(self, key: &str) -> ListKind {
        match (self, key) {
            (Place::Metadata, "finalizers") => ListKind::Scalars,
            (Place::Metadata, "ownerReferences") => ListKind::Keyed("uid"),
            _ => ListKind::Replace,
        }
    }
}

/// A `$`-key of a patch map.
enum Directive<'a> {
    Patch,
    RetainKeys,
    SetElementOrder(&'a str),
    DeleteFromPrimitiveList(&'a str),
}

/// Classifies a patch key: `None` for an ordinary field, an error for an unknown `$`-key.
fn directive(key: &str) -> Result<Option<Directive<'_>>, PatchError> {
    if !key.starts_with('$') {
        return Ok(None);
    }
    if key == PATCH_DIRECTIVE {
        return Ok(Some(Directive::Patch));
    }
    if key == RETAIN_KEYS_DIRECTIVE {
        return Ok(Some(Directive::RetainKeys));
    }
    if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER_PREFIX)
        && !field.is_empty()
    {
        return Ok(Some(Directive::SetElementOrder(field)));
    }
    if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
        && !field.is_empty()
    {
        return Ok(Some(Directive::DeleteFromPrimitiveList(field)));
    }
    Err(PatchError::Malformed(format!(
        "unknown strategic merge patch directive {key:?}"
    )))
}

fn strategic_merge_patch(target: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let Value::Object(patch) = parse_body(body)? else {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    match merge_map(original, &patch, Place::Root)? {
        Some(merged) => Ok(Value::Object(merged)),
        None => Err(PatchError::Invalid(
            "$patch: delete cannot remove the whole object".into(),
        )),
    }
}

/// Merges a patch map into a map, honouring its `$patch` directive; `None` means the map is
/// to be deleted.
fn merge_map(
    original: Map<String, Value>,
    patch: &Map<String, Value>,
    place: Place,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH_DIRECTIVE) {
        None => merge_fields(original, patch, place).map(Some),
        Some(Value::String(how)) if how == "merge" => {
            merge_fields(original, patch, place).map(Some)
        }
        Some(Value::String(how)) if how == "replace" => {
            merge_fields(Map::new(), patch, place).map(Some)
        }
        Some(Value::String(how)) if how == "delete" => Ok(None),
        Some(other) => Err(PatchError::Malformed(format!(
            "unknown patch type {other} in map: expected \"replace\", \"delete\" or \"merge\""
        ))),
    }
}

/// Merges the fields of a patch map into `original` (the `$patch` key itself is ignored here).
fn merge_fields(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    place: Place,
) -> Result<Map<String, Value>, PatchError> {
    let mut retain = None;
    let mut orders = Vec::new();
    let mut deletions = Vec::new();
    for (key, value) in patch {
        match directive(key)? {
            None | Some(Directive::Patch) => {}
            Some(Directive::RetainKeys) => retain = Some(value),
            Some(Directive::SetElementOrder(field)) => orders.push((field, value)),
            Some(Directive::DeleteFromPrimitiveList(field)) => deletions.push((field, value)),
        }
    }

    if let Some(names) = retain {
        retain_keys(&mut original, patch, names)?;
    }

    let mut ordered = HashSet::new();
    for (field, order) in orders {
        let Value::Array(order) = order else {
            return Err(PatchError::Malformed(format!(
                "{SET_ELEMENT_ORDER_PREFIX}{field} must be a list"
            )));
        };
        if set_element_order(&mut original, patch, field, order, place.list(field))? {
            ordered.insert(field);
        }
    }

    for (key, value) in patch {
        if key.starts_with('$') || ordered.contains(key.as_str()) {
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let merged = match (original.remove(key), value) {
            (Some(Value::Object(old)), Value::Object(change)) => {
                merge_map(old, change, place.child(key))?.map(Value::Object)
            }
            (Some(Value::Array(old)), Value::Array(change)) => {
                Some(Value::Array(merge_list(old, change, place.list(key), key)?))
            }
            (_, change) => fresh_field(change, place, key)?,
        };
        if let Some(merged) = merged {
            original.insert(key.clone(), merged);
        }
    }

    for (field, values) in deletions {
        let Value::Array(values) = values else {
            return Err(PatchError::Malformed(format!(
                "{DELETE_FROM_PRIMITIVE_LIST_PREFIX}{field} must be a list"
            )));
        };
        match original.get_mut(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                let doomed: HashSet<String> = values.iter().map(fingerprint).collect();
                items.retain(|item| !doomed.contains(&fingerprint(item)));
            }
            Some(_) => {
                return Err(PatchError::Invalid(format!(
                    "{DELETE_FROM_PRIMITIVE_LIST_PREFIX}{field}: {field} is not a list"
                )));
            }
        }
    }
    Ok(original)
}

/// `$retainKeys`: drops the keys of `original` the list does not name.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    names: &Value,
) -> Result<(), PatchError> {
    let malformed = || {
        PatchError::Malformed(format!(
            "{RETAIN_KEYS_DIRECTIVE} must be a list of field names"
        ))
    };
    let Value::Array(names) = names else {
        return Err(malformed());
    };
    let keep = names
        .iter()
        .map(|name| name.as_str().ok_or_else(malformed))
        .collect::<Result<HashSet<&str>, _>>()?;
    if let Some((key, _)) = patch.iter().find(|(key, value)| {
        !key.starts_with('$') && !value.is_null() && !keep.contains(key.as_str())
    }) {
        return Err(PatchError::Invalid(format!(
            "the patch sets {key:?}, which its {RETAIN_KEYS_DIRECTIVE} list does not name"
        )));
    }
    original.retain(|key, _| keep.contains(key.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the patch list `field` (if any) and puts the result in
/// the given order. Returns whether `field` is done with.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    field: &str,
    order: &[Value],
    kind: ListKind,
) -> Result<bool, PatchError> {
    let key = kind.merge_key();
    let change = match patch.get(field) {
        None => None,
        Some(Value::Array(change)) => Some(change),
        Some(_) => {
            return Err(PatchError::Malformed(format!(
                "{SET_ELEMENT_ORDER_PREFIX}{field} needs {field} to be a list in the patch"
            )));
        }
    };
    let wanted = order
        .iter()
        .map(|item| {
            identity(item, key).ok_or_else(|| {
                PatchError::Malformed(format!(
                    "an element of {SET_ELEMENT_ORDER_PREFIX}{field} lacks the merge key {:?}",
                    key.unwrap_or_default()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(change) = change {
        check_order(change, &wanted, key, field)?;
    }
    let current = match original.get_mut(field) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(std::mem::take(items)),
        Some(_) => {
            return Err(PatchError::Invalid(format!(
                "{field} is not a list, so {SET_ELEMENT_ORDER_PREFIX}{field} cannot order it"
            )));
        }
    };
    let server = current
        .as_deref()
        .map(|items| positions(items, key))
        .unwrap_or_default();
    let merged = match (current, change) {
        (Some(current), Some(change)) => merge_list(current, change, kind, field)?,
        (Some(current), None) => current,
        (None, Some(change)) => merge_list(Vec::new(), change, kind, field)?,
        (None, None) => return Ok(false),
    };
    let sorted = order_items(merged, &wanted, &server, key);
    original.insert(field.to_string(), Value::Array(sorted));
    Ok(true)
}

/// The patch list must list its elements in the order `$setElementOrder` gives.
fn check_order(
    change: &[Value],
    wanted: &[String],
    key: Option<&str>,
    field: &str,
) -> Result<(), PatchError> {
    let mut next = 0;
    for item in change {
        if is_directive_element(item) {
            continue;
        }
        let id = identity(item, key).ok_or_else(|| no_merge_key(field, key))?;
        match wanted
            .get(next..)
            .unwrap_or_default()
            .iter()
            .position(|w| *w == id)
        {
            Some(offset) => next += offset + 1,
            None => {
                return Err(PatchError::Invalid(format!(
                    "the order of {field} in the patch does not match {SET_ELEMENT_ORDER_PREFIX}{field}"
                )));
            }
        }
    }
    Ok(())
}

fn no_merge_key(field: &str, key: Option<&str>) -> PatchError {
    PatchError::Malformed(format!(
        "an element of {field} in the patch lacks the merge key {:?}",
        key.unwrap_or_default()
    ))
}

fn is_directive_element(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|map| map.contains_key(PATCH_DIRECTIVE))
}

/// A patch value for a key the object does not have (or has with another type): directives are
/// applied to an empty map or list so none is stored.
fn fresh_field(value: &Value, place: Place, key: &str) -> Result<Option<Value>, PatchError> {
    Ok(match value {
        Value::Object(change) => {
            merge_map(Map::new(), change, place.child(key))?.map(Value::Object)
        }
        Value::Array(change) => Some(Value::Array(merge_list(
            Vec::new(),
            change,
            place.list(key),
            key,
        )?)),
        other => Some(other.clone()),
    })
}

/// A list element taken from the patch as it is, cleaned of directives and nulls.
fn fresh_element(value: &Value, field: &str) -> Result<Option<Value>, PatchError> {
    Ok(match value {
        Value::Object(change) => merge_map(Map::new(), change, Place::Other)?.map(Value::Object),
        Value::Array(change) => Some(Value::Array(merge_list(
            Vec::new(),
            change,
            ListKind::Replace,
            field,
        )?)),
        other => Some(other.clone()),
    })
}

/// Merges a patch list into a list of the given kind. `field` names the list in messages.
fn merge_list(
    current: Vec<Value>,
    change: &[Value],
    kind: ListKind,
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    let mut replace = false;
    let mut doomed = HashSet::new();
    let mut items = Vec::with_capacity(change.len());
    for element in change {
        let Some(how) = element.as_object().and_then(|map| map.get(PATCH_DIRECTIVE)) else {
            items.push(element);
            continue;
        };
        match how.as_str() {
            Some("replace") => replace = true,
            Some("delete") => {
                let Some(key) = kind.merge_key() else {
                    return Err(PatchError::Malformed(format!(
                        "{field}: $patch: delete needs a list merged by key"
                    )));
                };
                doomed.insert(
                    identity(element, Some(key)).ok_or_else(|| no_merge_key(field, Some(key)))?,
                );
            }
            Some("merge") => {
                return Err(PatchError::Malformed(format!(
                    "{field}: $patch: merge cannot be given for a list"
                )));
            }
            _ => {
                return Err(PatchError::Malformed(format!(
                    "{field}: unknown patch type {how} in list: expected \"replace\" or \"delete\""
                )));
            }
        }
    }
    match kind {
        ListKind::Scalars if !replace => merge_scalars(current, &items, field),
        ListKind::Keyed(key) if !replace => merge_keyed(current, &items, key, &doomed, field),
        _ => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(value) = fresh_element(item, field)? {
                    out.push(value);
                }
            }
            Ok(out)
        }
    }
}

/// A set of scalars: the union, each value once, ordered as kube-apiserver orders it.
fn merge_scalars(
    current: Vec<Value>,
    items: &[&Value],
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    if current.is_empty() && items.is_empty() {
        return Ok(current);
    }
    if let Some(bad) = current.iter().find(|v| v.is_object() || v.is_array()) {
        return Err(PatchError::Invalid(format!(
            "{field} should be a list of scalars but holds {bad}"
        )));
    }
    if let Some(bad) = items.iter().find(|v| v.is_object() || v.is_array()) {
        return Err(PatchError::Malformed(format!(
            "{field} in the patch should be a list of scalars but holds {bad}"
        )));
    }
    let server = positions(&current, None);
    let mut seen = HashSet::new();
    let mut merged = Vec::with_capacity(current.len() + items.len());
    for value in current
        .into_iter()
        .chain(items.iter().map(|v| (*v).clone()))
    {
        if seen.insert(fingerprint(&value)) {
            merged.push(value);
        }
    }
    let wanted: Vec<String> = items.iter().map(|v| fingerprint(v)).collect();
    Ok(order_items(merged, &wanted, &server, None))
}

/// Objects merged by `key`: matching elements merge, new ones are added, `doomed` keys go.
fn merge_keyed(
    current: Vec<Value>,
    items: &[&Value],
    key: &str,
    doomed: &HashSet<String>,
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    let mut merged = Vec::with_capacity(current.len() + items.len());
    for value in current {
        if !value.is_object() {
            return Err(PatchError::Invalid(format!(
                "{field} should be a list of objects but holds {value}"
            )));
        }
        if identity(&value, Some(key)).is_some_and(|id| doomed.contains(&id)) {
            continue;
        }
        merged.push(value);
    }
    if merged.is_empty() && items.is_empty() {
        return Ok(merged);
    }
    let server = positions(&merged, Some(key));
    let mut at = server.clone();
    let mut wanted = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(change) = item else {
            return Err(PatchError::Malformed(format!(
                "{field} in the patch should be a list of objects but holds {item}"
            )));
        };
        let id = change
            .get(key)
            .map(fingerprint)
            .ok_or_else(|| no_merge_key(field, Some(key)))?;
        match at.get(&id).and_then(|&i| merged.get_mut(i)) {
            Some(Value::Object(slot)) => {
                let old = std::mem::take(slot);
                *slot = merge_fields(old, change, Place::Other)?;
            }
            _ => {
                merged.push(Value::Object(merge_fields(
                    Map::new(),
                    change,
                    Place::Other,
                )?));
                at.insert(id.clone(), merged.len() - 1);
            }
        }
        wanted.push(id);
    }
    Ok(order_items(merged, &wanted, &server, Some(key)))
}

/// What identifies a list element: its merge key's value, or the whole value.
fn identity(value: &Value, key: Option<&str>) -> Option<String> {
    match key {
        None => Some(fingerprint(value)),
        Some(key) => value.as_object()?.get(key).map(fingerprint),
    }
}

/// A value as compact JSON, used to compare and hash list elements.
fn fingerprint(value: &Value) -> String {
    value.to_string()
}

/// First position of each identity in a list.
fn positions(items: &[Value], key: Option<&str>) -> HashMap<String, usize> {
    let mut at = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(id) = identity(item, key) {
            at.entry(id).or_insert(i);
        }
    }
    at
}

/// Orders a merged list as kube-apiserver does: the elements named in `wanted` follow that
/// order, the others keep their order in the old list (`server`), and the two runs are
/// interleaved, an old-only element going first only when it preceded the patch element in
/// the old list.
fn order_items(
    merged: Vec<Value>,
    wanted: &[String],
    server: &HashMap<String, usize>,
    key: Option<&str>,
) -> Vec<Value> {
    let mut rank: HashMap<&str, usize> = HashMap::new();
    for (i, id) in wanted.iter().enumerate() {
        rank.entry(id.as_str()).or_insert(i);
    }
    let total = merged.len();
    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let old = identity(&item, key);
        let position = old.as_ref().and_then(|id| server.get(id)).copied();
        match old.as_deref().and_then(|id| rank.get(id)) {
            Some(&r) => from_patch.push((r, position, item)),
            None => server_only.push((position, item)),
        }
    }
    from_patch.sort_by_key(|(r, _, _)| *r);
    server_only.sort_by_key(|(position, _)| position.unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(total);
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some((l, _)), Some((_, r, _))) => matches!((l, r), (Some(l), Some(r)) if l < r),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_left {
            if let Some((_, item)) = left.next() {
                out.push(item);
            }
        } else if let Some((_, _, item)) = right.next() {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(target: Value, patch: Value) -> Value {
        apply(PatchType::Merge, &target, patch.to_string().as_bytes()).expect("merge patch applies")
    }

    fn json_ok(target: Value, patch: Value) -> Value {
        apply(PatchType::Json, &target, patch.to_string().as_bytes()).expect("json patch applies")
    }

    fn json_err(target: Value, patch: Value) -> PatchError {
        match apply(PatchType::Json, &target, patch.to_string().as_bytes()) {
            Ok(v) => panic!("json patch should fail, gave {v}"),
            Err(e) => e,
        }
    }

    fn smp(target: Value, patch: Value) -> Value {
        apply(
            PatchType::StrategicMerge,
            &target,
            patch.to_string().as_bytes(),
        )
        .expect("strategic merge patch applies")
    }

    fn smp_err(target: Value, patch: Value) -> PatchError {
        match apply(
            PatchType::StrategicMerge,
            &target,
            patch.to_string().as_bytes(),
        ) {
            Ok(v) => panic!("strategic merge patch should fail, gave {v}"),
            Err(e) => e,
        }
    }

    fn is_invalid(e: &PatchError) -> bool {
        matches!(e, PatchError::Invalid(_))
    }

    fn is_malformed(e: &PatchError) -> bool {
        matches!(e, PatchError::Malformed(_))
    }

    fn meta(extra: Value) -> Value {
        let mut m = json!({"name": "x", "uid": "u-1", "resourceVersion": "5"});
        if let (Value::Object(m), Value::Object(extra)) = (&mut m, extra) {
            m.extend(extra);
        }
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": m})
    }

    // --- content types ---

    #[test]
    fn content_types_name_the_three_patch_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
    }

    #[test]
    fn content_type_parameters_and_case_are_ignored() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type(" Application/JSON-Patch+JSON ;charset=UTF-8"),
            Some(PatchType::Json)
        );
    }

    #[test]
    fn apply_patch_yaml_and_plain_json_are_not_patch_types() {
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type(""), None);
    }

    // --- merge patch ---

    #[test]
    fn merge_patch_null_removes_a_label() {
        let target = meta(json!({"labels": {"a": "1", "b": "2"}}));
        let out = merge(target, json!({"metadata": {"labels": {"a": null}}}));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["metadata"]["name"], "x");
    }

    #[test]
    fn merge_patch_adds_a_label_to_an_object_without_labels() {
        let out = merge(
            meta(json!({})),
            json!({"metadata": {"labels": {"env": "prod"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"env": "prod"}));
    }

    #[test]
    fn rfc7386_appendix_a_examples_all_hold() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                merge(target.clone(), patch.clone()),
                expected,
                "{target} + {patch}"
            );
        }
    }

    #[test]
    fn merge_patch_replaces_arrays_wholesale() {
        let target = json!({"rules": [{"verbs": ["get"]}, {"verbs": ["list"]}]});
        let out = merge(target, json!({"rules": [{"verbs": ["watch"]}]}));
        assert_eq!(out, json!({"rules": [{"verbs": ["watch"]}]}));
    }

    #[test]
    fn merge_patch_body_in_yaml_is_rejected_as_malformed() {
        let err = apply(
            PatchType::Merge,
            &json!({}),
            b"metadata:\n  labels:\n    a: b\n",
        )
        .expect_err("yaml is not json");
        assert!(is_malformed(&err), "{err:?}");
    }

    #[test]
    fn empty_or_truncated_bodies_are_malformed_for_every_type() {
        for kind in [PatchType::Merge, PatchType::Json, PatchType::StrategicMerge] {
            for body in [&b""[..], b"{", b"[", b"{} {}", b"\xff"] {
                let err = apply(kind, &json!({}), body).expect_err("bad body");
                assert!(is_malformed(&err), "{kind:?} {body:?}: {err:?}");
            }
        }
    }

    #[test]
    fn patching_leaves_the_target_untouched() {
        let target = json!({"data": {"a": "1"}});
        let _ = merge(target.clone(), json!({"data": {"a": null}}));
        let _ = json_ok(target.clone(), json!([{"op": "remove", "path": "/data/a"}]));
        assert_eq!(target, json!({"data": {"a": "1"}}));
    }

    // --- JSON patch: RFC 6902 appendix A ---

    #[test]
    fn json_patch_adds_an_object_member() {
        let out = json_ok(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux"}]),
        );
        assert_eq!(out, json!({"baz": "qux", "foo": "bar"}));
    }

    #[test]
    fn json_patch_inserts_an_array_element() {
        let out = json_ok(
            json!({"foo": ["bar", "baz"]}),
            json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
        );
        assert_eq!(out, json!({"foo": ["bar", "qux", "baz"]}));
    }

    #[test]
    fn json_patch_removes_an_object_member() {
        let out = json_ok(
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "remove", "path": "/baz"}]),
        );
        assert_eq!(out, json!({"foo": "bar"}));
    }

    #[test]
    fn json_patch_removes_an_array_element() {
        let out = json_ok(
            json!({"foo": ["bar", "qux", "baz"]}),
            json!([{"op": "remove", "path": "/foo/1"}]),
        );
        assert_eq!(out, json!({"foo": ["bar", "baz"]}));
    }

    #[test]
    fn json_patch_replaces_a_value() {
        let out = json_ok(
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
        );
        assert_eq!(out, json!({"baz": "boo", "foo": "bar"}));
    }

    #[test]
    fn json_patch_moves_a_value() {
        let out = json_ok(
            json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
            json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
        );
        assert_eq!(
            out,
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
        );
    }

    #[test]
    fn json_patch_moves_an_array_element() {
        let out = json_ok(
            json!({"foo": ["all", "grass", "cows", "eat"]}),
            json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
        );
        assert_eq!(out, json!({"foo": ["all", "cows", "eat", "grass"]}));
    }

    #[test]
    fn json_patch_test_success_leaves_the_document_unchanged() {
        let target = json!({"baz": "qux", "foo": ["a", 2, "c"]});
        let out = json_ok(
            target.clone(),
            json!([
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2}
            ]),
        );
        assert_eq!(out, target);
    }

    #[test]
    fn json_patch_test_failure_is_an_error() {
        let err = json_err(
            json!({"baz": "qux"}),
            json!([{"op": "test", "path": "/baz", "value": "bar"}]),
        );
        assert!(is_invalid(&err), "{err:?}");
        assert_eq!(err.to_string(), "testing value /baz failed");
    }

    #[test]
    fn json_patch_adds_a_nested_member_object() {
        let out = json_ok(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
        );
        assert_eq!(out, json!({"foo": "bar", "child": {"grandchild": {}}}));
    }

    #[test]
    fn json_patch_ignores_unrecognized_members() {
        let out = json_ok(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]),
        );
        assert_eq!(out, json!({"foo": "bar", "baz": "qux"}));
    }

    #[test]
    fn json_patch_add_to_a_nonexistent_target_is_an_error() {
        let err = json_err(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
        );
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_with_a_repeated_op_member_uses_the_last_one() {
        // RFC 6902 A.13: the later "op" wins (as in kube-apiserver's decoder).
        let body = br#"[{"op": "add", "path": "/baz", "value": "qux", "op": "remove"}]"#;
        let out = apply(PatchType::Json, &json!({"baz": 1, "foo": 2}), body).expect("applies");
        assert_eq!(out, json!({"foo": 2}));
    }

    #[test]
    fn json_patch_with_a_repeated_path_member_uses_the_last_one() {
        let body = br#"[{"op": "remove", "path": "/a", "path": "/b"}]"#;
        let out = apply(PatchType::Json, &json!({"a": 1, "b": 2}), body).expect("applies");
        assert_eq!(out, json!({"a": 1}));
    }

    #[test]
    fn json_patch_pointer_escapes_are_decoded_in_order() {
        let target = json!({"/": 9, "~1": 10});
        let out = json_ok(
            target.clone(),
            json!([{"op": "test", "path": "/~01", "value": 10}]),
        );
        assert_eq!(out, target);
        let out = json_ok(
            target,
            json!([{"op": "replace", "path": "/~1", "value": 8}]),
        );
        assert_eq!(out, json!({"/": 8, "~1": 10}));
    }

    #[test]
    fn json_patch_test_compares_strings_and_numbers_strictly() {
        let err = json_err(
            json!({"/": 9, "~1": 10}),
            json!([{"op": "test", "path": "/~01", "value": "10"}]),
        );
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_appends_an_array_value_with_dash() {
        let out = json_ok(
            json!({"foo": ["bar"]}),
            json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
        );
        assert_eq!(out, json!({"foo": ["bar", ["abc", "def"]]}));
    }

    // --- JSON patch: more ---

    #[test]
    fn json_patch_body_must_be_an_array_of_objects() {
        for body in [json!({"op": "add"}), json!("x"), json!([1]), json!([[]])] {
            let err = json_err(json!({}), body.clone());
            assert!(is_malformed(&err), "{body}: {err:?}");
        }
    }

    #[test]
    fn json_patch_empty_array_changes_nothing() {
        assert_eq!(json_ok(json!({"a": 1}), json!([])), json!({"a": 1}));
    }

    #[test]
    fn json_patch_operations_with_missing_or_wrong_members_are_invalid() {
        for op in [
            json!({"path": "/a", "value": 1}),
            json!({"op": 3, "path": "/a"}),
            json!({"op": "frobnicate", "path": "/a"}),
            json!({"op": "add", "value": 1}),
            json!({"op": "add", "path": "/a"}),
            json!({"op": "add", "path": 7, "value": 1}),
            json!({"op": "move", "path": "/a"}),
            json!({"op": "add", "path": "a", "value": 1}),
            json!({"op": "add", "path": "/a~2", "value": 1}),
            json!({"op": "add", "path": "/a~", "value": 1}),
        ] {
            let err = json_err(json!({"a": 0}), json!([op.clone()]));
            assert!(is_invalid(&err), "{op}: {err:?}");
        }
    }

    #[test]
    fn json_patch_array_index_out_of_bounds_is_an_error() {
        let target = json!({"a": [1, 2]});
        for op in [
            json!({"op": "add", "path": "/a/3", "value": 0}),
            json!({"op": "remove", "path": "/a/2"}),
            json!({"op": "replace", "path": "/a/2", "value": 0}),
            json!({"op": "remove", "path": "/a/-"}),
            json!({"op": "add", "path": "/a/-1", "value": 0}),
            json!({"op": "add", "path": "/a/01", "value": 0}),
            json!({"op": "add", "path": "/a/18446744073709551616", "value": 0}),
            json!({"op": "remove", "path": "/a/99999999999999999999999999999"}),
            json!({"op": "test", "path": "/a/-", "value": 0}),
        ] {
            let err = json_err(target.clone(), json!([op.clone()]));
            assert!(is_invalid(&err), "{op}: {err:?}");
        }
    }

    #[test]
    fn json_patch_adds_at_the_end_index_of_an_array() {
        let out = json_ok(
            json!({"a": [1, 2]}),
            json!([{"op": "add", "path": "/a/2", "value": 3}]),
        );
        assert_eq!(out, json!({"a": [1, 2, 3]}));
    }

    #[test]
    fn json_patch_remove_of_a_missing_path_is_an_error() {
        let err = json_err(
            json!({"metadata": {"labels": {}}}),
            json!([{"op": "remove", "path": "/metadata/labels/a"}]),
        );
        assert!(is_invalid(&err), "{err:?}");
        assert!(err.to_string().contains("/metadata/labels/a"), "{err}");
    }

    #[test]
    fn json_patch_replace_of_a_missing_path_is_an_error() {
        let err = json_err(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "/b", "value": 2}]),
        );
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_can_replace_the_whole_document() {
        let out = json_ok(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "", "value": {"b": 2}}]),
        );
        assert_eq!(out, json!({"b": 2}));
        let out = json_ok(
            json!({"a": 1}),
            json!([{"op": "add", "path": "", "value": [1]}]),
        );
        assert_eq!(out, json!([1]));
    }

    #[test]
    fn json_patch_cannot_remove_the_whole_document() {
        let err = json_err(json!({"a": 1}), json!([{"op": "remove", "path": ""}]));
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_cannot_move_a_value_into_its_own_child() {
        let err = json_err(
            json!({"a": {"b": {}}}),
            json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]),
        );
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_move_onto_itself_is_a_no_op_but_needs_the_source() {
        let target = json!({"a": 1});
        assert_eq!(
            json_ok(
                target.clone(),
                json!([{"op": "move", "from": "/a", "path": "/a"}])
            ),
            target
        );
        let err = json_err(target, json!([{"op": "move", "from": "/b", "path": "/b"}]));
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_copy_duplicates_a_value() {
        let out = json_ok(
            json!({"a": {"x": [1]}, "b": []}),
            json!([
                {"op": "copy", "from": "/a", "path": "/c"},
                {"op": "copy", "from": "/a/x/0", "path": "/b/-"}
            ]),
        );
        assert_eq!(out, json!({"a": {"x": [1]}, "b": [1], "c": {"x": [1]}}));
    }

    #[test]
    fn json_patch_test_treats_equal_numbers_as_equal() {
        let target = json!({"n": 1, "m": {"k": [2.0]}});
        json_ok(
            target,
            json!([
                {"op": "test", "path": "/n", "value": 1.0},
                {"op": "test", "path": "/m", "value": {"k": [2]}}
            ]),
        );
    }

    #[test]
    fn json_patch_test_of_a_missing_path_is_an_error() {
        let err = json_err(
            json!({}),
            json!([{"op": "test", "path": "/a", "value": null}]),
        );
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_add_of_an_explicit_null_stores_null() {
        let out = json_ok(
            json!({}),
            json!([{"op": "add", "path": "/a", "value": null}]),
        );
        assert_eq!(out, json!({"a": null}));
    }

    #[test]
    fn json_patch_with_too_many_operations_is_too_large() {
        let ops: Vec<Value> = (0..10_001)
            .map(|_| json!({"op": "test", "path": "", "value": {}}))
            .collect();
        let err = json_err(json!({}), Value::Array(ops));
        assert!(matches!(err, PatchError::TooLarge(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    #[test]
    fn json_patch_copy_doubling_is_stopped_by_the_copy_limit() {
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": "x".repeat(1000)})];
        for i in 0..60 {
            ops.push(json!({"op": "copy", "from": "", "path": format!("/k{i}")}));
        }
        let err = json_err(json!({}), Value::Array(ops));
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_cannot_nest_the_document_without_bound() {
        let ops: Vec<Value> = (0..500)
            .map(|_| json!({"op": "copy", "from": "", "path": "/a"}))
            .collect();
        let err = json_err(json!({}), Value::Array(ops));
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn json_patch_failing_after_moving_a_value_onto_its_parent_is_invalid_not_a_panic() {
        // The crate's undoing `patch` panics here; the adapter must not use it.
        let err = json_err(
            json!({"a": {"b": 1}}),
            json!([
                {"op": "move", "from": "/a/b", "path": "/a"},
                {"op": "remove", "path": "/missing"}
            ]),
        );
        assert!(is_invalid(&err), "{err:?}");
        assert_eq!(err.to_string(), "path \"/missing\" does not exist");
    }

    #[test]
    fn json_patch_move_of_the_whole_document_onto_itself_changes_nothing() {
        let target = json!({"a": 1});
        let out = json_ok(
            target.clone(),
            json!([{"op": "move", "from": "", "path": ""}]),
        );
        assert_eq!(out, target);
    }

    #[test]
    fn json_patch_moving_values_back_and_forth_is_fine() {
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": 1})];
        for i in 0..500 {
            ops.push(if i % 2 == 0 {
                json!({"op": "move", "from": "/a", "path": "/b"})
            } else {
                json!({"op": "move", "from": "/b", "path": "/a"})
            });
        }
        assert_eq!(json_ok(json!({}), Value::Array(ops)), json!({"a": 1}));
    }

    #[test]
    fn deepest_readable_patches_apply_within_half_a_tokio_worker_stack() {
        // Tokio workers get 2 MiB; debug builds need about 512 KiB here, as serde_json does.
        let worker = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| {
                let deep = |leaf: &str| "{\"a\":".repeat(124) + leaf + &"}".repeat(124);
                let target: Value = serde_json::from_str(&deep("{\"x\":1}")).expect("parses");
                let patch = deep("{\"$patch\":\"replace\",\"y\":[{\"z\":null}]}");
                let smp = apply(PatchType::StrategicMerge, &target, patch.as_bytes());
                let merge = apply(PatchType::Merge, &target, patch.as_bytes());
                let ops = format!(
                    r#"[{{"op":"test","path":"","value":{}}}]"#,
                    deep("{\"x\":1}")
                );
                let json = apply(PatchType::Json, &target, ops.as_bytes());
                (smp.is_ok(), merge.is_ok(), json.is_ok())
            })
            .expect("thread starts");
        assert_eq!(worker.join().expect("no overflow"), (true, true, true));
    }

    #[test]
    fn json_patch_results_always_parse_back() {
        let mut ops = Vec::new();
        for _ in 0..200 {
            ops.push(json!({"op": "add", "path": "", "value": {}}));
            ops.push(json!({"op": "copy", "from": "", "path": "/x"}));
        }
        // Whatever happens, a success must re-parse.
        if let Ok(v) = apply(
            PatchType::Json,
            &json!({}),
            Value::Array(ops).to_string().as_bytes(),
        ) {
            let text = v.to_string();
            assert!(serde_json::from_str::<Value>(&text).is_ok());
        }
    }

    #[test]
    fn json_patch_labels_an_object_like_kubectl_patch_does() {
        let target = meta(json!({}));
        let out = json_ok(
            target,
            json!([
                {"op": "add", "path": "/metadata/labels", "value": {}},
                {"op": "add", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "web"}
            ]),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app.kubernetes.io/name": "web"})
        );
    }

    // --- strategic merge patch ---

    #[test]
    fn strategic_patch_body_must_be_an_object() {
        for body in [json!([]), json!("x"), json!(null), json!(1)] {
            let err = smp_err(json!({}), body.clone());
            assert!(is_malformed(&err), "{body}: {err:?}");
        }
    }

    #[test]
    fn strategic_patch_merges_maps_and_null_deletes() {
        let target = meta(json!({"labels": {"a": "1", "b": "2"}}));
        let mut target = target;
        target["data"] = json!({"k1": "v1", "k2": "v2"});
        let out = smp(
            target,
            json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": {"k2": null, "k3": "v3"}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["data"], json!({"k1": "v1", "k3": "v3"}));
        assert_eq!(out["metadata"]["uid"], "u-1");
    }

    #[test]
    fn strategic_patch_replaces_plain_lists() {
        let target = json!({
            "kind": "ClusterRole",
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
        });
        let out = smp(
            target,
            json!({"rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}]}),
        );
        assert_eq!(
            out["rules"],
            json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}])
        );
    }

    #[test]
    fn strategic_patch_unions_finalizers() {
        let target = meta(json!({"finalizers": ["a", "b"]}));
        let out = smp(target, json!({"metadata": {"finalizers": ["b", "c"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
    }

    #[test]
    fn strategic_patch_puts_new_finalizers_first_as_kube_apiserver_does() {
        let target = meta(json!({"finalizers": ["a", "b"]}));
        let out = smp(target, json!({"metadata": {"finalizers": ["c"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    #[test]
    fn strategic_patch_keeps_the_patch_order_of_existing_finalizers() {
        let target = meta(json!({"finalizers": ["1", "2", "3"]}));
        let out = smp(
            target.clone(),
            json!({"metadata": {"finalizers": ["3", "1"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["2", "3", "1"]));
        let out = smp(target, json!({"metadata": {"finalizers": ["3", "1", "2"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["3", "1", "2"]));
    }

    #[test]
    fn strategic_patch_adds_finalizers_to_an_object_without_any() {
        let out = smp(
            meta(json!({})),
            json!({"metadata": {"finalizers": ["a", "a", "b"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn delete_from_primitive_list_removes_finalizers_and_is_not_stored() {
        let target = meta(json!({"finalizers": ["a", "b", "c"]}));
        let out = smp(
            target,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zzz"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
        assert!(
            out["metadata"]
                .get("$deleteFromPrimitiveList/finalizers")
                .is_none()
        );
    }

    #[test]
    fn delete_from_primitive_list_of_an_absent_list_changes_nothing() {
        let target = meta(json!({}));
        let out = smp(
            target.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        );
        assert_eq!(out, target);
    }

    #[test]
    fn strategic_patch_merges_owner_references_by_uid() {
        let target = meta(json!({"ownerReferences": [
            {"apiVersion": "v1", "kind": "Namespace", "name": "n1", "uid": "1"},
            {"apiVersion": "v1", "kind": "Namespace", "name": "n2", "uid": "2"}
        ]}));
        let out = smp(
            target,
            json!({"metadata": {"ownerReferences": [
                {"uid": "2", "controller": true},
                {"apiVersion": "v1", "kind": "Secret", "name": "s3", "uid": "3"}
            ]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([
                {"apiVersion": "v1", "kind": "Namespace", "name": "n1", "uid": "1"},
                {"apiVersion": "v1", "kind": "Namespace", "name": "n2", "uid": "2", "controller": true},
                {"apiVersion": "v1", "kind": "Secret", "name": "s3", "uid": "3"}
            ])
        );
    }

    #[test]
    fn owner_reference_with_delete_directive_is_removed() {
        let target = meta(json!({"ownerReferences": [
            {"name": "n1", "uid": "1"},
            {"name": "n2", "uid": "2"}
        ]}));
        let out = smp(
            target,
            json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "1"}]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"name": "n2", "uid": "2"}])
        );
    }

    #[test]
    fn owner_reference_without_uid_in_the_patch_is_malformed() {
        let target = meta(json!({"ownerReferences": [{"name": "n1", "uid": "1"}]}));
        let err = smp_err(
            target,
            json!({"metadata": {"ownerReferences": [{"name": "n2"}]}}),
        );
        assert!(is_malformed(&err), "{err:?}");
    }

    #[test]
    fn replace_directive_element_replaces_the_whole_list() {
        let target = meta(json!({
            "ownerReferences": [{"name": "n1", "uid": "1"}, {"name": "n2", "uid": "2"}],
            "finalizers": ["a", "b"]
        }));
        let out = smp(
            target,
            json!({"metadata": {
                "ownerReferences": [{"$patch": "replace"}, {"name": "n3", "uid": "3"}],
                "finalizers": [{"$patch": "replace"}, "z"]
            }}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"name": "n3", "uid": "3"}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["z"]));
    }

    #[test]
    fn replace_directive_alone_empties_a_merge_list() {
        let target = meta(json!({"ownerReferences": [{"name": "n1", "uid": "1"}]}));
        let out = smp(
            target,
            json!({"metadata": {"ownerReferences": [{"$patch": "replace"}]}}),
        );
        assert_eq!(out["metadata"]["ownerReferences"], json!([]));
    }

    #[test]
    fn map_replace_directive_replaces_the_map() {
        let mut target = meta(json!({}));
        target["data"] = json!({"a": "1", "b": "2"});
        let out = smp(target, json!({"data": {"$patch": "replace", "c": "3"}}));
        assert_eq!(out["data"], json!({"c": "3"}));
    }

    #[test]
    fn map_delete_directive_deletes_the_key() {
        let target = meta(json!({"labels": {"a": "1"}, "annotations": {"x": "y"}}));
        let out = smp(
            target,
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
        );
        assert!(out["metadata"].get("labels").is_none(), "{out}");
        assert_eq!(out["metadata"]["annotations"], json!({"x": "y"}));
    }

    #[test]
    fn merge_directive_merges_normally_and_is_not_stored() {
        let target = meta(json!({"labels": {"a": "1"}}));
        let out = smp(
            target,
            json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn unknown_patch_directive_value_is_an_error() {
        let err = smp_err(
            meta(json!({})),
            json!({"metadata": {"labels": {"$patch": "explode"}}}),
        );
        assert!(is_malformed(&err), "{err:?}");
    }

    #[test]
    fn top_level_replace_directive_replaces_the_object() {
        let out = smp(
            meta(json!({"labels": {"a": "1"}})),
            json!({"$patch": "replace", "kind": "ConfigMap", "data": {"k": "v"}}),
        );
        assert_eq!(out, json!({"kind": "ConfigMap", "data": {"k": "v"}}));
    }

    #[test]
    fn top_level_delete_directive_is_refused() {
        let err = smp_err(meta(json!({})), json!({"$patch": "delete"}));
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn directives_in_new_fields_are_applied_not_stored() {
        let out = smp(
            json!({"kind": "Secret"}),
            json!({
                "data": {"$patch": "replace", "a": "YQ==", "gone": null},
                "stringData": {"$patch": "delete"},
                "metadata": {"labels": {"$retainKeys": ["x"], "x": "1"}}
            }),
        );
        assert_eq!(
            out,
            json!({"kind": "Secret", "data": {"a": "YQ=="}, "metadata": {"labels": {"x": "1"}}})
        );
    }

    #[test]
    fn retain_keys_drops_unlisted_keys() {
        let mut target = meta(json!({}));
        target["data"] = json!({"a": "1", "b": "2", "c": "3"});
        let out = smp(
            target,
            json!({"data": {"$retainKeys": ["a", "c"], "c": "33"}}),
        );
        assert_eq!(out["data"], json!({"a": "1", "c": "33"}));
    }

    #[test]
    fn retain_keys_rejects_patch_keys_outside_the_list() {
        let mut target = meta(json!({}));
        target["data"] = json!({"a": "1"});
        let err = smp_err(target, json!({"data": {"$retainKeys": ["a"], "b": "2"}}));
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn retain_keys_must_be_a_list_of_names() {
        let err = smp_err(json!({}), json!({"data": {"$retainKeys": "a"}}));
        assert!(is_malformed(&err), "{err:?}");
        let err = smp_err(json!({}), json!({"data": {"$retainKeys": [1]}}));
        assert!(is_malformed(&err), "{err:?}");
    }

    #[test]
    fn set_element_order_directive_is_not_stored() {
        let target = meta(json!({"finalizers": ["a", "b"]}));
        let out = smp(
            target,
            json!({"metadata": {
                "$setElementOrder/finalizers": ["a", "b", "c"],
                "finalizers": ["c"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let text = out.to_string();
        assert!(!text.contains('$'), "{text}");
    }

    #[test]
    fn set_element_order_reorders_an_unchanged_list() {
        let target = meta(json!({"finalizers": ["a", "b", "c"]}));
        let out = smp(
            target,
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "a", "b"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    #[test]
    fn set_element_order_ignores_items_the_list_does_not_have() {
        let target = meta(json!({"finalizers": ["1", "3"]}));
        let out = smp(
            target,
            json!({"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["3", "1"]));
    }

    #[test]
    fn set_element_order_orders_owner_references_by_uid() {
        let target = meta(
            json!({"ownerReferences": [{"name": "n1", "uid": "1"}, {"name": "n3", "uid": "3"}]}),
        );
        let out = smp(
            target,
            json!({"metadata": {
                "$setElementOrder/ownerReferences": [{"uid": "3"}, {"uid": "2"}, {"uid": "1"}],
                "ownerReferences": [{"uid": "3", "name": "three"}, {"uid": "1", "name": "one"}]
            }}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"name": "three", "uid": "3"}, {"name": "one", "uid": "1"}])
        );
    }

    #[test]
    fn set_element_order_mismatching_the_patch_list_is_invalid() {
        let target = meta(json!({"finalizers": ["1", "3", "2"]}));
        let err = smp_err(
            target,
            json!({"metadata": {
                "$setElementOrder/finalizers": ["1", "2", "3"],
                "finalizers": ["3", "1"]
            }}),
        );
        assert!(is_invalid(&err), "{err:?}");
    }

    #[test]
    fn set_element_order_also_orders_plain_lists() {
        let target = json!({"subjects": [{"kind": "User", "name": "a"}]});
        let out = smp(
            target,
            json!({
                "$setElementOrder/subjects": [{"kind": "User", "name": "b"}, {"kind": "User", "name": "a"}],
                "subjects": [{"kind": "User", "name": "b"}, {"kind": "User", "name": "a"}]
            }),
        );
        assert_eq!(
            out["subjects"],
            json!([{"kind": "User", "name": "b"}, {"kind": "User", "name": "a"}])
        );
    }

    #[test]
    fn unknown_directive_is_an_error() {
        for patch in [
            json!({"$frob": 1}),
            json!({"metadata": {"$setElementOrder": []}}),
            json!({"metadata": {"$setElementOrder/": []}}),
            json!({"data": {"$deleteFromPrimitiveList": []}}),
        ] {
            let err = smp_err(meta(json!({})), patch.clone());
            assert!(is_malformed(&err), "{patch}: {err:?}");
        }
    }

    #[test]
    fn directive_values_of_the_wrong_type_are_malformed() {
        for patch in [
            json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": {"a": 1}}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["a"], "finalizers": "a"}}),
            json!({"metadata": {"$patch": 1}}),
            json!({"metadata": {"ownerReferences": [{"$patch": "merge", "uid": "1"}]}}),
            json!({"metadata": {"finalizers": [{"$patch": "delete"}]}}),
        ] {
            let err = smp_err(meta(json!({})), patch.clone());
            assert!(is_malformed(&err), "{patch}: {err:?}");
        }
    }

    #[test]
    fn merge_strategies_apply_only_to_the_top_level_metadata() {
        let target =
            json!({"spec": {"metadata": {"finalizers": ["a"]}}, "metadata": {"finalizers": ["a"]}});
        let out = smp(
            target,
            json!({"spec": {"metadata": {"finalizers": ["b"]}}, "metadata": {"finalizers": ["b"]}}),
        );
        assert_eq!(out["spec"]["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
    }

    #[test]
    fn namespace_spec_finalizers_are_replaced() {
        let target = json!({"kind": "Namespace", "spec": {"finalizers": ["kubernetes"]}});
        let out = smp(target, json!({"spec": {"finalizers": []}}));
        assert_eq!(out["spec"]["finalizers"], json!([]));
    }

    #[test]
    fn strategic_patch_on_a_non_object_target_starts_from_an_empty_object() {
        let out = smp(json!([1, 2]), json!({"a": {"b": null, "c": 1}}));
        assert_eq!(out, json!({"a": {"c": 1}}));
    }

    #[test]
    fn mismatched_types_are_replaced_by_the_patch_value() {
        let out = smp(
            json!({"data": ["x"], "rules": {"a": 1}, "metadata": {"finalizers": "oops"}}),
            json!({"data": {"k": "v"}, "rules": [], "metadata": {"finalizers": ["f"]}}),
        );
        assert_eq!(
            out,
            json!({"data": {"k": "v"}, "rules": [], "metadata": {"finalizers": ["f"]}})
        );
    }

    #[test]
    fn kubectl_apply_style_patch_with_last_applied_annotation_updates_data() {
        let last = r#"{"apiVersion":"v1","data":{"b":"2","c":"3"},"kind":"ConfigMap","metadata":{"annotations":{},"name":"x","namespace":"default"}}"#;
        let mut target = meta(json!({
            "namespace": "default",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"}
        }));
        target["data"] = json!({"a": "1", "b": "old"});
        let patch = json!({
            "data": {"a": null, "b": "2", "c": "3"},
            "metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": format!("{last}\n")
            }}
        });
        let out = smp(target, patch);
        assert_eq!(out["data"], json!({"b": "2", "c": "3"}));
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            format!("{last}\n")
        );
        assert_eq!(out["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn kubectl_apply_removing_a_finalizer_uses_the_parallel_lists() {
        let target = meta(json!({"finalizers": ["a", "b", "c"]}));
        let out = smp(
            target,
            json!({"metadata": {
                "$setElementOrder/finalizers": ["a", "c"],
                "$deleteFromPrimitiveList/finalizers": ["b"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
    }

    #[test]
    fn kubectl_edit_style_patch_replaces_role_binding_subjects() {
        let target = json!({
            "kind": "RoleBinding",
            "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}]
        });
        let out = smp(
            target,
            json!({"subjects": [{"kind": "User", "name": "bob"}, {"kind": "Group", "name": "devs"}]}),
        );
        assert_eq!(
            out["subjects"],
            json!([{"kind": "User", "name": "bob"}, {"kind": "Group", "name": "devs"}])
        );
        assert_eq!(out["roleRef"]["name"], "r");
    }

    // --- never panics ---

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const KEYS: &[&str] = &[
        "a",
        "b",
        "metadata",
        "finalizers",
        "ownerReferences",
        "uid",
        "labels",
        "data",
        "0",
        "1",
        "-",
        "$patch",
        "$retainKeys",
        "$setElementOrder/finalizers",
        "$setElementOrder/ownerReferences",
        "$deleteFromPrimitiveList/finalizers",
        "$setElementOrder/a",
        "$x",
        "~",
        "",
    ];

    const WORDS: &[&str] = &["replace", "delete", "merge", "a", "b", "uid", "1", "x"];

    fn random_value(rng: &mut Rng, depth: usize) -> Value {
        let choice = if depth == 0 {
            rng.below(5)
        } else {
            rng.below(8)
        };
        match choice {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => json!(rng.below(4)),
            3 => json!(1.5),
            4 => Value::String(rng.pick(WORDS).to_string()),
            5 | 6 => {
                let mut map = Map::new();
                for _ in 0..rng.below(4) {
                    map.insert(rng.pick(KEYS).to_string(), random_value(rng, depth - 1));
                }
                Value::Object(map)
            }
            _ => Value::Array(
                (0..rng.below(4))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
        }
    }

    fn random_pointer(rng: &mut Rng) -> String {
        const TOKENS: &[&str] = &[
            "a",
            "b",
            "metadata",
            "0",
            "1",
            "2",
            "-",
            "01",
            "-1",
            "~0",
            "~1",
            "~2",
            "",
            "18446744073709551616",
            "99999999999999999999999999999999",
        ];
        let mut text = String::new();
        for _ in 0..rng.below(4) {
            text.push('/');
            text.push_str(rng.pick(TOKENS));
        }
        if rng.below(20) == 0 {
            text = "broken".into();
        }
        text
    }

    fn random_json_patch(rng: &mut Rng) -> Value {
        const OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test", "bogus"];
        let ops = (0..rng.below(6))
            .map(|_| {
                let mut op = Map::new();
                op.insert("op".into(), Value::String(rng.pick(OPS).into()));
                op.insert("path".into(), Value::String(random_pointer(rng)));
                if rng.below(4) > 0 {
                    op.insert("from".into(), Value::String(random_pointer(rng)));
                }
                if rng.below(4) > 0 {
                    op.insert("value".into(), random_value(rng, 3));
                }
                Value::Object(op)
            })
            .collect();
        Value::Array(ops)
    }

    #[test]
    fn apply_never_panics_on_random_inputs() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..4000 {
            let target = random_value(&mut rng, 4);
            let merge_patch = random_value(&mut rng, 4);
            let _ = apply(
                PatchType::Merge,
                &target,
                merge_patch.to_string().as_bytes(),
            );
            let _ = apply(
                PatchType::StrategicMerge,
                &target,
                merge_patch.to_string().as_bytes(),
            );
            let json_patch = random_json_patch(&mut rng);
            let _ = apply(PatchType::Json, &target, json_patch.to_string().as_bytes());
            let mut bytes = merge_patch.to_string().into_bytes();
            if !bytes.is_empty() {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            for kind in [PatchType::Merge, PatchType::Json, PatchType::StrategicMerge] {
                let _ = apply(kind, &target, &bytes);
            }
        }
    }

    #[test]
    fn deeply_nested_bodies_are_refused_without_overflowing_the_stack() {
        let deep = "[".repeat(100_000);
        for kind in [PatchType::Merge, PatchType::Json, PatchType::StrategicMerge] {
            let err = apply(kind, &json!({}), deep.as_bytes()).expect_err("too deep");
            assert!(is_malformed(&err), "{err:?}");
        }
    }

    #[test]
    fn strategic_patch_on_a_target_with_odd_merge_lists_reports_errors() {
        let target = json!({"metadata": {"finalizers": [{"a": 1}], "ownerReferences": ["x"]}});
        let err = smp_err(target.clone(), json!({"metadata": {"finalizers": ["b"]}}));
        assert!(is_invalid(&err), "{err:?}");
        let err = smp_err(
            target,
            json!({"metadata": {"ownerReferences": [{"uid": "1"}]}}),
        );
        assert!(is_invalid(&err), "{err:?}");
    }
}
