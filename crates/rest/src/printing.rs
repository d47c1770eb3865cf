//! Server-side printing: `meta.k8s.io` Table and PartialObjectMetadata views of served objects.
//!
//! Columns are the served version's `additionalPrinterColumns` after `Name` (or `Name` and `Age`
//! when the schema has none, as kube-apiserver does for a CRD). Cells are evaluated with the
//! columns' simple JSONPath and typed as Kubernetes types them. Each object's cells and its
//! metadata view are computed once, on the first request that needs them, and kept as bytes
//! split around the consumer cluster like the object itself.

use bytes::Bytes;
use kcp_model::types::PrinterColumn;
use serde_json::{Value, json};

/// Which object each Table row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A PartialObjectMetadata (the default).
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parse the `includeObject` query parameter.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!("unrecognized includeObject value: \"{other}\"")),
        }
    }
}

/// The columns actually shown: the schema's printer columns, or `Age` when there are none.
pub fn effective_columns(columns: &[PrinterColumn]) -> Vec<PrinterColumn> {
    if columns.is_empty() {
        vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            ..Default::default()
        }]
    } else {
        columns.to_vec()
    }
}

/// `columnDefinitions`: `Name` first, then every column.
pub fn column_definitions(columns: &[PrinterColumn]) -> Value {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.",
        "priority": 0,
    })];
    for c in effective_columns(columns) {
        let description = if c.description.is_empty() {
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                c.json_path
            )
        } else {
            c.description.clone()
        };
        defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": description, "priority": c.priority}));
    }
    Value::Array(defs)
}

/// One step of a printer-column JSONPath.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut steps = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && b[end] != b'.' && b[end] != b'[' {
                    end += 1;
                }
                if end > start {
                    steps.push(Step::Field(p[start..end].to_string()));
                }
                i = end;
            }
            b'[' => {
                let close = p[i..].find(']')? + i;
                let inner = p[i + 1..close].trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(q) = inner.strip_prefix('\'').and_then(|x| x.strip_suffix('\''))
                {
                    steps.push(Step::Field(q.to_string()));
                } else {
                    steps.push(Step::Index(inner.parse().ok()?));
                }
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// Evaluate a simple JSONPath (`.a.b`, `.a[0]`, `.a[*].b`, `['dotted.key']`); missing keys
/// give no results.
pub fn evaluate<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut current = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match (step, v) {
                (Step::Field(f), Value::Object(m)) => next.extend(m.get(f)),
                (Step::Index(n), Value::Array(a)) => next.extend(a.get(*n)),
                (Step::All, Value::Array(a)) => next.extend(a.iter()),
                (Step::All, Value::Object(m)) => next.extend(m.values()),
                _ => {}
            }
        }
        current = next;
    }
    current
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The typed cell of one column for one object.
pub fn cell(column: &PrinterColumn, obj: &Value) -> Value {
    let results = evaluate(obj, &column.json_path);
    let Some(first) = results.first() else {
        return Value::Null;
    };
    match column.type_.as_str() {
        "integer" => match first {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "number" => match first {
            Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "boolean" => match first {
            Value::Bool(b) => Value::Bool(*b),
            _ => Value::Null,
        },
        "date" => match first {
            Value::String(s) => Value::String(s.clone()),
            _ => Value::Null,
        },
        _ => Value::String(
            results
                .iter()
                .map(|v| text(v))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// One precomputed cell: JSON bytes, or a timestamp shown as an age at request time.
#[derive(Debug, Clone)]
pub enum Cell {
    /// A ready JSON value.
    Json(Bytes),
    /// A `date` column: seconds since the epoch, `None` when the value does not parse.
    Date(Option<i64>),
}

/// Kubernetes' short human duration (`95s`, `5m3s`, `42m`, `3h5m`, `20h`, `3d4h`, `40d`,
/// `2y30d`, `9y`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        return if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    let d = h / 24;
    if h < 24 * 8 {
        return if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{d}d");
    }
    let y = d / 365;
    if h < 24 * 365 * 8 {
        return if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        };
    }
    format!("{y}y")
}

/// Write a row's `cells` array, rendering date cells as ages at `now` (Unix seconds).
pub fn write_cells(buf: &mut bytes::BytesMut, cells: &[Cell], now: i64) {
    use bytes::BufMut;
    buf.put_u8(b'[');
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        match c {
            Cell::Json(b) => buf.put_slice(b),
            Cell::Date(None) => buf.put_slice(b"\"<invalid>\""),
            Cell::Date(Some(t)) => {
                buf.put_u8(b'"');
                buf.put_slice(human_duration(now - t).as_bytes());
                buf.put_u8(b'"');
            }
        }
    }
    buf.put_u8(b']');
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// An object's printing views: cells, and its PartialObjectMetadata split around the cluster.
#[derive(Debug, Clone)]
pub struct TableParts {
    /// The row's cells.
    pub cells: Vec<Cell>,
    /// PartialObjectMetadata bytes before the cluster literal.
    pub meta_prefix: Bytes,
    /// PartialObjectMetadata bytes after the cluster literal.
    pub meta_suffix: Bytes,
}

/// Compute the printing views of one object, given with `placeholder` as its cluster.
pub fn parts_for(obj: &Value, columns: &[PrinterColumn], placeholder: &str) -> TableParts {
    let json = |v: &Value| Cell::Json(Bytes::from(v.to_string()));
    let name = obj
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let mut cells = vec![json(&name)];
    for c in effective_columns(columns) {
        let v = cell(&c, obj);
        cells.push(match (c.type_.as_str(), &v) {
            ("date", Value::String(t)) => Cell::Date(
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(|d| d.unix_timestamp()),
            ),
            _ => json(&v),
        });
    }
    let meta = json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    });
    // invariant: values built from a parsed document serialize.
    let meta = serde_json::to_vec(&meta).expect("invariant: metadata serializes");
    let needle = format!("\"{placeholder}\"");
    let (meta_prefix, meta_suffix) = match meta
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
    {
        Some(at) => (
            Bytes::copy_from_slice(&meta[..at]),
            Bytes::copy_from_slice(&meta[at + needle.len()..]),
        ),
        None => (Bytes::from(meta), Bytes::new()),
    };
    TableParts {
        cells,
        meta_prefix,
        meta_suffix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_: &str, path: &str) -> PrinterColumn {
        PrinterColumn {
            name: name.into(),
            type_: type_.into(),
            json_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cells_are_typed_as_kubernetes_types_them() {
        let obj = json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"cores": 2.7, "ratio": 1.5, "on": true, "arch": "arm64", "n": 5}});
        assert_eq!(
            cell(&col("Cores", "integer", ".spec.cores"), &obj),
            json!(2)
        );
        assert_eq!(
            cell(&col("Ratio", "number", ".spec.ratio"), &obj),
            json!(1.5)
        );
        assert_eq!(cell(&col("On", "boolean", ".spec.on"), &obj), json!(true));
        assert_eq!(
            cell(&col("Arch", "string", ".spec.arch"), &obj),
            json!("arm64")
        );
        assert_eq!(cell(&col("N", "string", ".spec.n"), &obj), json!("5"));
        assert_eq!(
            cell(&col("Age", "date", ".metadata.creationTimestamp"), &obj),
            json!("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            cell(&col("Missing", "string", ".spec.nothing"), &obj),
            Value::Null
        );
        assert_eq!(
            cell(&col("Wrong", "integer", ".spec.arch"), &obj),
            Value::Null
        );
    }

    #[test]
    fn jsonpaths_walk_indexes_wildcards_and_quoted_keys() {
        let obj = json!({"status": {"conditions": [{"type": "Ready"}, {"type": "Synced"}]},
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}}});
        assert_eq!(
            evaluate(&obj, ".status.conditions[0].type"),
            vec![&json!("Ready")]
        );
        assert_eq!(evaluate(&obj, ".status.conditions[*].type").len(), 2);
        assert_eq!(
            evaluate(&obj, ".metadata.labels['app.kubernetes.io/name']"),
            vec![&json!("x")]
        );
        assert_eq!(
            cell(&col("T", "string", ".status.conditions[*].type"), &obj),
            json!("Ready,Synced")
        );
    }

    #[test]
    fn a_schema_without_printer_columns_shows_name_and_age() {
        let defs = column_definitions(&[]);
        let names: Vec<&str> = defs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Age"]);
    }

    #[test]
    fn ages_read_like_kubectl_prints_them() {
        let cases = [
            (95, "95s"),
            (303, "5m3s"),
            (600, "10m"),
            (42 * 60, "42m"),
            (3 * 3600 + 300, "3h5m"),
            (20 * 3600, "20h"),
            (76 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (760 * 86400, "2y30d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn date_cells_become_ages_when_written() {
        let obj = json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let p = parts_for(&obj, &[], "PH");
        let mut buf = bytes::BytesMut::new();
        let created = time::macros::datetime!(2026-01-01 00:00:00 UTC).unix_timestamp();
        write_cells(&mut buf, &p.cells, created + 95);
        assert_eq!(&buf[..], b"[\"a\",\"95s\"]");
    }

    #[test]
    fn include_object_accepts_kube_values_only() {
        assert_eq!(IncludeObject::parse(None).unwrap(), IncludeObject::Metadata);
        assert_eq!(
            IncludeObject::parse(Some("None")).unwrap(),
            IncludeObject::None
        );
        assert_eq!(
            IncludeObject::parse(Some("bad")).unwrap_err(),
            "unrecognized includeObject value: \"bad\""
        );
    }

    #[test]
    fn metadata_views_split_around_the_cluster_placeholder() {
        let obj = json!({"metadata": {"name": "a", "annotations": {"kcp.io/cluster": "PH"}}});
        let p = parts_for(&obj, &[], "PH");
        let mut whole = p.meta_prefix.to_vec();
        whole.extend_from_slice(b"\"c1\"");
        whole.extend_from_slice(&p.meta_suffix);
        let v: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(v["kind"], "PartialObjectMetadata");
        assert_eq!(v["metadata"]["annotations"]["kcp.io/cluster"], "c1");
    }
}
