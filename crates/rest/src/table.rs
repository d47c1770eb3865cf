//! `meta.k8s.io` Table views of store-backed objects, so `kubectl get` prints a kind's printer
//! columns (a CRD's `additionalPrinterColumns`, or a built-in's own) the way kube-apiserver
//! renders them: `Name`, the columns (or `Age` alone), ages computed at request time, and each
//! row's object as PartialObjectMetadata.

use super::printing::{cell, column_definitions, effective_columns, human_duration};
use kcp_model::types::PrinterColumn;
use serde_json::{Value, json};

/// One row of `obj`.
pub fn row(obj: &Value, columns: &[PrinterColumn], now: i64) -> Value {
    let mut cells = vec![
        obj.pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
    for c in effective_columns(columns) {
        let v = cell(&c, obj);
        cells.push(match (c.type_.as_str(), &v) {
            ("date", Value::String(t)) => {
                match time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                {
                    Ok(d) => Value::String(human_duration(now - d.unix_timestamp())),
                    Err(_) => Value::String("<invalid>".into()),
                }
            }
            _ => v,
        });
    }
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        },
    })
}

/// A Table of `objects` with list metadata `metadata`.
pub fn table(
    api_version: &str,
    objects: &[Value],
    columns: &[PrinterColumn],
    metadata: Value,
) -> Value {
    let now = super::printing::now_unix();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": column_definitions(columns),
        "rows": objects.iter().map(|o| row(o, columns, now)).collect::<Vec<_>>(),
    })
}

/// Printer columns from a CRD version's `additionalPrinterColumns`.
pub fn columns_from(values: &[Value]) -> Vec<PrinterColumn> {
    values
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_start_with_the_name_and_render_dates_as_ages() {
        let cols = columns_from(&[
            json!({"name": "Resource", "type": "string", "jsonPath": ".spec.resource"}),
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        ]);
        let obj = json!({"metadata": {"name": "cr", "creationTimestamp": "1970-01-01T00:00:00Z"}, "spec": {"resource": "things"}});
        let r = row(&obj, &cols, 120);
        assert_eq!(r["cells"], json!(["cr", "things", "2m"]));
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
    }
}
