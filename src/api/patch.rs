//! Temporary stub (replaced by the patch helper's module).
/// Patch types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// merge
    Merge,
    /// json
    Json,
    /// smp
    StrategicMerge,
}
impl PatchType {
    /// From a content type.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            _ => None,
        }
    }
}
/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// m
    #[error("{0}")]
    Malformed(String),
    /// i
    #[error("{0}")]
    Invalid(String),
}
fn merge(t: &mut serde_json::Value, p: &serde_json::Value) {
    if let serde_json::Value::Object(pm) = p {
        if !t.is_object() {
            *t = serde_json::json!({});
        }
        if let serde_json::Value::Object(tm) = t {
            for (k, v) in pm {
                if v.is_null() {
                    tm.remove(k);
                } else {
                    merge(tm.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
    } else {
        *t = p.clone();
    }
}
/// Apply.
pub fn apply(
    _kind: PatchType,
    target: &serde_json::Value,
    patch: &[u8],
) -> Result<serde_json::Value, PatchError> {
    let p: serde_json::Value =
        serde_json::from_slice(patch).map_err(|e| PatchError::Malformed(e.to_string()))?;
    let mut t = target.clone();
    merge(&mut t, &p);
    Ok(t)
}
