//! Object validation against the OpenAPI v3 structural schema of one APIResourceSchema version
//! (the value under `spec.versions[].schema`, what a CRD keeps under `openAPIV3Schema`).
//!
//! The schema is rewritten into plain JSON Schema Draft 4 (Kubernetes extensions translated or
//! dropped, Kubernetes string formats mapped to checks) and compiled once with the `jsonschema`
//! crate; validation failures come back as Kubernetes-style field errors
//! (`spec.cores: Invalid value: "string": spec.cores in body must be of type integer: "string"`).
//!
//! Behaviour worth knowing:
//! - `type: integer` accepts `3` and rejects `3.5`. jsonschema 0.60.2 under Draft 4 also rejects
//!   `3.0` (its Draft 4 `type` keyword only counts numbers written without a fraction), while
//!   Kubernetes accepts a whole float for `integer`; to match Kubernetes, whole floats up to 2^53
//!   in the object are read as integers before validation (a copy is made only when one occurs).
//! - `nullable: true` lets `null` through every keyword of that schema; without it `null` is a
//!   type error (pruning and defaulting, which may replace such a `null`, are `structural`'s).
//! - `x-kubernetes-int-or-string: true` means integer or string, nothing else.
//! - Every `x-*` key of a schema node (preserve-unknown-fields, embedded-resource, list/map types,
//!   CEL validations, ...) is dropped: they carry no validation meaning here. Unknown fields are
//!   accepted as long as the schema has no `additionalProperties`, like Kubernetes before pruning.
//! - The root `metadata` is validated by Kubernetes rules elsewhere: here only the root schema's
//!   `metadata.name` / `metadata.generateName` restrictions are kept, and `apiVersion`, `kind` and
//!   `metadata` are always allowed at the root, even under `additionalProperties`.
//! - Formats: `date`, `date-time` (alias `datetime`), `email`, `ipv4`, `ipv6` and `hostname` use
//!   jsonschema's Draft 4 checks; `uri` (Go `ParseRequestURI`-like: absolute URI or absolute path),
//!   `uuid`, `uuid3`, `uuid4`, `uuid5`, `byte` (standard base64), `cidr`, `mac`, `bsonobjectid`,
//!   `isbn`, `isbn10`, `isbn13`, `creditcard`, `ssn`, `hexcolor`, `rgbcolor` and `duration` are
//!   checked here. Any other format (`int32`, `int64`, `float`, `double`, `password`,
//!   `int-or-string`, unknown names) is an annotation and never fails.
//! - `pattern` uses the linear-time `regex` engine (no look-around or back-references, like Go's
//!   RE2); a pattern it cannot compile makes the whole schema invalid.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{Draft, PatternOptions, ValidationError};
use serde_json::{Map, Value, json};

/// At most this many field errors are reported for one object.
const MAX_ERRORS: usize = 20;

/// Rendered values longer than this many characters are cut and end with `...`.
const MAX_RENDERED_VALUE: usize = 256;

/// Why a schema could not be turned into a [`Validator`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The schema is not a valid (translated) Draft 4 schema, e.g. a bad `type` or `pattern`.
    #[error("invalid schema: {0}")]
    Invalid(String),
}

/// One validation failure: a Kubernetes-style field path (`spec.ports[0].name`, empty for the
/// object itself) and the message that follows it (`Required value`, `Invalid value: ...`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted field path, array indices as `[i]`; empty when the object itself is wrong.
    pub path: String,
    /// Kubernetes-like message without the path prefix.
    pub message: String,
}

impl FieldError {
    /// The Kubernetes `StatusCause` type matching this error (`FieldValueInvalid`,
    /// `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueTooLong`, `FieldValueTooMany`,
    /// `FieldValueForbidden`, `FieldValueDuplicate`), derived from the message.
    pub fn reason(&self) -> &'static str {
        const PREFIXES: [(&str, &str); 6] = [
            ("Required value", "FieldValueRequired"),
            ("Unsupported value", "FieldValueNotSupported"),
            ("Too long", "FieldValueTooLong"),
            ("Too many", "FieldValueTooMany"),
            ("Forbidden", "FieldValueForbidden"),
            ("Duplicate value", "FieldValueDuplicate"),
        ];
        PREFIXES
            .iter()
            .find(|(prefix, _)| self.message.starts_with(prefix))
            .map_or("FieldValueInvalid", |(_, reason)| reason)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A compiled structural schema; `Send + Sync`, meant to be shared behind an `Arc`.
#[derive(Debug)]
pub struct Validator {
    inner: jsonschema::Validator,
}

impl Validator {
    /// Compiles one version's OpenAPI v3 schema. Fails with [`SchemaError`] when the schema is
    /// not a JSON object or jsonschema rejects the translated schema.
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        if !schema.is_object() {
            return Err(SchemaError::Invalid(format!(
                "schema must be a JSON object, got {}",
                json_type_name(schema)
            )));
        }
        let translated = translate_root(schema);
        options()
            .build(&translated)
            .map(|inner| Validator { inner })
            .map_err(|err| SchemaError::Invalid(err.to_string()))
    }

    /// `Ok(())` when `object` satisfies the schema, otherwise every error found (at most 20).
    pub fn validate(&self, object: &Value) -> Result<(), Vec<FieldError>> {
        let normalised = contains_whole_float(object).then(|| whole_floats_as_integers(object));
        let object = normalised.as_ref().unwrap_or(object);
        let mut errors = Vec::new();
        for error in self.inner.iter_errors(object) {
            push_field_errors(object, &error, &mut errors);
            if errors.len() >= MAX_ERRORS {
                break;
            }
        }
        errors.truncate(MAX_ERRORS);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The options every schema (and fragment) is compiled with.
fn options() -> jsonschema::ValidationOptions<'static> {
    let mut options = jsonschema::options()
        .with_draft(Draft::Draft4)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(true)
        .with_pattern_options(PatternOptions::regex())
        .offline();
    for (name, check) in CUSTOM_FORMATS {
        options = options.with_format(*name, *check);
    }
    options
}

/// One schema node on its own (no root relaxations), translated and compiled as
/// [`Validator::compile`] does: the same keywords, formats and pattern engine.
pub(crate) fn compile_fragment(schema: &Value) -> Option<jsonschema::Validator> {
    options().build(&translate(schema)).ok()
}

/// Largest magnitude below which every whole `f64` is exactly an integer.
const MAX_EXACT_FLOAT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// The integer a float written with a zero fraction (`3.0`) stands for.
fn whole_float(number: &serde_json::Number) -> Option<i64> {
    if number.is_i64() || number.is_u64() {
        return None;
    }
    let float = number.as_f64()?;
    // The bound keeps the conversion exact.
    (float.fract() == 0.0 && float.abs() <= MAX_EXACT_FLOAT_INTEGER).then_some(float as i64)
}

fn contains_whole_float(value: &Value) -> bool {
    match value {
        Value::Number(number) => whole_float(number).is_some(),
        Value::Array(items) => items.iter().any(contains_whole_float),
        Value::Object(map) => map.values().any(contains_whole_float),
        _ => false,
    }
}

/// A copy of `value` with every whole float replaced by the integer it stands for.
fn whole_floats_as_integers(value: &Value) -> Value {
    match value {
        Value::Number(number) => whole_float(number).map_or_else(|| value.clone(), Value::from),
        Value::Array(items) => Value::Array(items.iter().map(whole_floats_as_integers).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), whole_floats_as_integers(item)))
                .collect(),
        ),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Schema translation (Kubernetes structural schema -> JSON Schema Draft 4)
// ---------------------------------------------------------------------------------------------

/// Formats jsonschema checks itself under Draft 4 in a way close enough to Kubernetes.
const BUILTIN_FORMATS: [&str; 6] = ["date", "date-time", "email", "hostname", "ipv4", "ipv6"];

/// A string check registered with jsonschema for one format name.
type FormatCheck = fn(&str) -> bool;

/// Kubernetes formats checked by this module.
const CUSTOM_FORMATS: &[(&str, FormatCheck)] = &[
    ("uri", is_request_uri),
    ("uuid", is_uuid),
    ("uuid3", is_uuid3),
    ("uuid4", is_uuid4),
    ("uuid5", is_uuid5),
    ("byte", is_base64),
    ("cidr", is_cidr),
    ("mac", is_mac),
    ("bsonobjectid", is_bson_object_id),
    ("isbn", is_isbn),
    ("isbn10", is_isbn10),
    ("isbn13", is_isbn13),
    ("creditcard", is_credit_card),
    ("ssn", is_ssn),
    ("hexcolor", is_hex_color),
    ("rgbcolor", is_rgb_color),
    ("duration", is_duration),
];

/// Keys whose value is one schema.
const SINGLE_SCHEMA_KEYS: [&str; 3] = ["additionalProperties", "additionalItems", "not"];
/// Keys whose value is a list of schemas.
const SCHEMA_LIST_KEYS: [&str; 3] = ["allOf", "anyOf", "oneOf"];
/// Keys whose value maps names to schemas.
const SCHEMA_MAP_KEYS: [&str; 4] = [
    "properties",
    "patternProperties",
    "definitions",
    "dependencies",
];

/// Translates the root schema, then relaxes what Kubernetes validates itself (type and object
/// metadata).
fn translate_root(schema: &Value) -> Value {
    let mut root = translate(schema);
    if let Value::Object(node) = &mut root {
        relax_root_metadata(node);
    }
    root
}

/// Keeps only `name`/`generateName` restrictions of a root `metadata` schema and makes sure
/// `apiVersion`, `kind` and `metadata` are never rejected by a root `additionalProperties`.
fn relax_root_metadata(node: &mut Map<String, Value>) {
    let restricts_extra = node
        .get("additionalProperties")
        .is_some_and(|extra| extra != &Value::Bool(true));
    let properties = match node.get_mut("properties") {
        Some(Value::Object(properties)) => properties,
        Some(_) => return, // jsonschema reports the malformed `properties` itself
        None if restricts_extra => {
            node.insert("properties".to_owned(), Value::Object(Map::new()));
            match node.get_mut("properties") {
                Some(Value::Object(properties)) => properties,
                _ => return,
            }
        }
        None => return,
    };
    if let Some(metadata) = properties.get_mut("metadata") {
        let mut relaxed = Map::new();
        relaxed.insert("type".to_owned(), json!("object"));
        let kept: Map<String, Value> = metadata
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter(|(name, _)| *name == "name" || *name == "generateName")
                    .map(|(name, schema)| (name.clone(), schema.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if !kept.is_empty() {
            relaxed.insert("properties".to_owned(), Value::Object(kept));
        }
        *metadata = Value::Object(relaxed);
    }
    if restricts_extra {
        for (name, schema) in [
            ("apiVersion", json!({"type": "string"})),
            ("kind", json!({"type": "string"})),
            ("metadata", json!({"type": "object"})),
        ] {
            properties.entry(name).or_insert(schema);
        }
    }
}

/// Rewrites one schema node and, recursively, every schema below it.
fn translate(schema: &Value) -> Value {
    let Value::Object(source) = schema else {
        return schema.clone();
    };
    let flag = |key: &str| source.get(key) == Some(&Value::Bool(true));
    let int_or_string = flag("x-kubernetes-int-or-string");
    let nullable = flag("nullable");

    let mut out = Map::new();
    for (key, value) in source {
        let key_str = key.as_str();
        // `id` and `$schema` would change how jsonschema resolves the schema; Kubernetes
        // forbids them in CRD schemas anyway.
        if key_str.starts_with("x-") || matches!(key_str, "nullable" | "id" | "$schema") {
            continue;
        }
        let translated = if SINGLE_SCHEMA_KEYS.contains(&key_str) {
            translate(value)
        } else if SCHEMA_LIST_KEYS.contains(&key_str) {
            translate_each(value)
        } else if SCHEMA_MAP_KEYS.contains(&key_str) {
            match value {
                Value::Object(map) => Value::Object(
                    map.iter()
                        .map(|(name, sub)| (name.clone(), translate(sub)))
                        .collect(),
                ),
                other => other.clone(),
            }
        } else if key_str == "items" {
            match value {
                Value::Array(_) => translate_each(value),
                other => translate(other),
            }
        } else if key_str == "format" {
            match value.as_str() {
                Some(name) => match checked_format(name) {
                    Some(checked) => Value::String(checked.to_owned()),
                    None => continue,
                },
                None => value.clone(),
            }
        } else {
            value.clone()
        };
        out.insert(key.clone(), translated);
    }
    if int_or_string {
        out.insert("type".to_owned(), json!(["integer", "string"]));
    }
    if nullable {
        allow_null(&mut out);
    }
    Value::Object(out)
}

fn translate_each(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(translate).collect()),
        other => other.clone(),
    }
}

/// Whether a `format` is checked (not an annotation only).
pub(crate) fn is_checked_format(name: &str) -> bool {
    checked_format(name).is_some()
}

/// The format name to keep in the compiled schema, or `None` for an annotation-only format.
fn checked_format(name: &str) -> Option<&'static str> {
    if name == "datetime" {
        return Some("date-time");
    }
    BUILTIN_FORMATS
        .iter()
        .copied()
        .chain(CUSTOM_FORMATS.iter().map(|(custom, _)| *custom))
        .find(|known| *known == name)
}

/// Makes `null` valid for a translated node: added to `type` and `enum`, and combinators moved
/// under `anyOf: [{type: null}, {...}]` so they do not judge `null`.
fn allow_null(node: &mut Map<String, Value>) {
    let null_type = Value::String("null".to_owned());
    match node.get_mut("type") {
        Some(Value::String(single)) => {
            let single = Value::String(std::mem::take(single));
            node.insert("type".to_owned(), Value::Array(vec![single, null_type]));
        }
        Some(Value::Array(types)) if !types.contains(&null_type) => types.push(null_type),
        _ => {}
    }
    if let Some(Value::Array(values)) = node.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    let mut combinators = Map::new();
    for key in ["allOf", "anyOf", "oneOf", "not"] {
        if let Some(value) = node.remove(key) {
            combinators.insert(key.to_owned(), value);
        }
    }
    if !combinators.is_empty() {
        node.insert(
            "anyOf".to_owned(),
            json!([{"type": "null"}, Value::Object(combinators)]),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Error rendering
// ---------------------------------------------------------------------------------------------

/// Converts one jsonschema error into field errors (one, or one per unexpected property).
fn push_field_errors(object: &Value, error: &ValidationError<'_>, out: &mut Vec<FieldError>) {
    let path = field_path(object, error.instance_path());
    let instance: &Value = error.instance();
    let value = render_value(instance);
    let in_body = if path.is_empty() {
        "body".to_owned()
    } else {
        format!("{path} in body")
    };
    let invalid = |detail: String| format!("Invalid value: {value}: {in_body} {detail}");
    let message = match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            out.push(FieldError {
                path: child_path(&path, &name),
                message: "Required value".to_owned(),
            });
            return;
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                let child = child_path(&path, name);
                out.push(FieldError {
                    message: format!("Forbidden: {child} in body is a forbidden property"),
                    path: child,
                });
            }
            return;
        }
        ValidationErrorKind::Type { kind } => {
            let actual = json_type_name(instance);
            format!(
                "Invalid value: \"{actual}\": {in_body} must be of type {}: \"{actual}\"",
                expected_types(kind)
            )
        }
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<String> = options
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .filter(|option| !option.is_null())
                        .map(render_value)
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            )
        }
        ValidationErrorKind::Constant { expected_value } => invalid(format!(
            "should be equal to {}",
            render_value(expected_value)
        )),
        ValidationErrorKind::Pattern { pattern } => invalid(format!("should match '{pattern}'")),
        ValidationErrorKind::Format { format } => {
            invalid(format!("must be of type {format}: {value}"))
        }
        ValidationErrorKind::Maximum { limit } => {
            invalid(format!("should be less than or equal to {limit}"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            invalid(format!("should be less than {limit}"))
        }
        ValidationErrorKind::Minimum { limit } => {
            invalid(format!("should be greater than or equal to {limit}"))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            invalid(format!("should be greater than {limit}"))
        }
        ValidationErrorKind::MultipleOf { multiple_of } => {
            invalid(format!("should be a multiple of {multiple_of}"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("Too long: may not be more than {limit} bytes")
        }
        ValidationErrorKind::MinLength { limit } => {
            invalid(format!("should be at least {limit} chars long"))
        }
        ValidationErrorKind::MaxItems { limit } | ValidationErrorKind::MaxProperties { limit } => {
            format!(
                "Too many: {}: must have at most {limit} items",
                collection_len(instance)
            )
        }
        ValidationErrorKind::MinItems { limit } => format!(
            "Invalid value: {}: {in_body} should have at least {limit} items",
            collection_len(instance)
        ),
        ValidationErrorKind::MinProperties { limit } => format!(
            "Invalid value: {}: {in_body} should have at least {limit} properties",
            collection_len(instance)
        ),
        ValidationErrorKind::UniqueItems => invalid("shouldn't contain duplicates".to_owned()),
        ValidationErrorKind::AnyOf { .. } => {
            invalid("must validate at least one schema (anyOf)".to_owned())
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. } => {
            invalid("must validate one and only one schema (oneOf)".to_owned())
        }
        ValidationErrorKind::Not { .. } => invalid("must not validate the schema (not)".to_owned()),
        ValidationErrorKind::FalseSchema => format!("Forbidden: {in_body} is a forbidden property"),
        _ => invalid(format!("is invalid: {error}")),
    };
    out.push(FieldError { path, message });
}

/// Renders a JSON pointer location as a Kubernetes field path, walking `object` alongside so
/// that array positions become `[i]` while numeric map keys stay `.0`.
fn field_path(object: &Value, location: &Location) -> String {
    let mut path = String::new();
    let mut cursor = Some(object);
    for segment in location.segments() {
        let key: Cow<'_, str> = match segment {
            LocationSegment::Property(name) => name,
            LocationSegment::Index(index) => Cow::Owned(index.to_string()),
        };
        if let Some(Value::Array(items)) = cursor
            && let Ok(index) = key.parse::<usize>()
        {
            path.push_str(&format!("[{index}]"));
            cursor = items.get(index);
            continue;
        }
        path = child_path(&path, &key);
        cursor = cursor
            .and_then(Value::as_object)
            .and_then(|map| map.get(key.as_ref()));
    }
    path
}

fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// Expected type names of a type error, without the `null` that `nullable` adds.
fn expected_types(kind: &TypeKind) -> String {
    let names: Vec<&str> = match kind {
        TypeKind::Single(single) => vec![single.as_str()],
        TypeKind::Multiple(set) => set.iter().map(|ty| ty.as_str()).collect(),
    };
    let without_null: Vec<&str> = names.iter().copied().filter(|n| *n != "null").collect();
    if without_null.is_empty() {
        names.join(",")
    } else {
        without_null.join(",")
    }
}

/// The JSON type of a value as Kubernetes names it in messages (`integer` for whole numbers
/// written without a fraction, `number` otherwise).
fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Compact JSON rendering (strings quoted), cut after [`MAX_RENDERED_VALUE`] characters.
fn render_value(value: &Value) -> String {
    let rendered = value.to_string();
    match rendered.char_indices().nth(MAX_RENDERED_VALUE) {
        Some((cut, _)) => format!("{}...", &rendered[..cut]),
        None => rendered,
    }
}

fn collection_len(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes string formats jsonschema does not check under Draft 4
// ---------------------------------------------------------------------------------------------

/// Go `url.ParseRequestURI`-like: an absolute path, or a scheme followed by `:`; no control
/// characters, well-formed `%` escapes, no spaces in the authority.
fn is_request_uri(text: &str) -> bool {
    if text.is_empty() || text.bytes().any(|b| b < b' ' || b == 0x7f) || !valid_escapes(text) {
        return false;
    }
    if text.starts_with('/') {
        return true;
    }
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority_ok = rest.strip_prefix("//").is_none_or(|after| {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        !after[..end].contains(' ')
    });
    scheme_ok && authority_ok
}

fn valid_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn is_uuid(text: &str) -> bool {
    uuid_digits(text).is_some()
}

fn is_uuid3(text: &str) -> bool {
    uuid_digits(text).is_some_and(|hex| hex[12] == b'3')
}

fn is_uuid4(text: &str) -> bool {
    uuid_digits(text)
        .is_some_and(|hex| hex[12] == b'4' && matches!(hex[16], b'8'..=b'9' | b'a'..=b'b'))
}

fn is_uuid5(text: &str) -> bool {
    uuid_digits(text)
        .is_some_and(|hex| hex[12] == b'5' && matches!(hex[16], b'8'..=b'9' | b'a'..=b'b'))
}

/// The 32 lower-cased hex digits of `8-4-4-4-12` groups, each hyphen optional, any case.
fn uuid_digits(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    let mut hex = [0u8; 32];
    let (mut read, mut written) = (0, 0);
    for (group, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if group > 0 && bytes.get(read) == Some(&b'-') {
            read += 1;
        }
        for _ in 0..len {
            let digit = bytes.get(read).filter(|b| b.is_ascii_hexdigit())?;
            hex[written] = digit.to_ascii_lowercase();
            read += 1;
            written += 1;
        }
    }
    (read == bytes.len()).then_some(hex)
}

/// Standard alphabet with padding, lenient about unused trailing bits (like Go's StdEncoding).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn is_base64(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    BASE64.decode(compact.as_bytes()).is_ok()
}

fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let max = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    !prefix.is_empty()
        && prefix.len() <= 3
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && prefix.parse::<u32>().is_ok_and(|bits| bits <= max)
}

/// Go `net.ParseMAC`: 6, 8 or 20 octets separated by `:` or `-`, or 3, 4 or 10 dotted groups
/// of four hex digits.
fn is_mac(text: &str) -> bool {
    let (separator, group_len, counts): (char, usize, [usize; 3]) = if text.contains(':') {
        (':', 2, [6, 8, 20])
    } else if text.contains('-') {
        ('-', 2, [6, 8, 20])
    } else if text.contains('.') {
        ('.', 4, [3, 4, 10])
    } else {
        return false;
    };
    let groups: Vec<&str> = text.split(separator).collect();
    counts.contains(&groups.len())
        && groups
            .iter()
            .all(|g| g.len() == group_len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_bson_object_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_isbn(text: &str) -> bool {
    is_isbn10(text) || is_isbn13(text)
}

/// Ten characters once spaces and hyphens are removed, the last may be `X`; weighted sum
/// divisible by 11.
fn is_isbn10(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| !matches!(b, b' ' | b'-')).collect();
    if compact.len() != 10 || !compact[..9].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let last = match compact[9] {
        b'X' => 10,
        digit if digit.is_ascii_digit() => u32::from(digit - b'0'),
        _ => return false,
    };
    let sum: u32 = compact[..9]
        .iter()
        .zip(1u32..)
        .map(|(digit, weight)| weight * u32::from(digit - b'0'))
        .sum::<u32>()
        + 10 * last;
    sum.is_multiple_of(11)
}

/// Thirteen digits once spaces and hyphens are removed; alternating 1/3 weights sum to a
/// multiple of 10.
fn is_isbn13(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| !matches!(b, b' ' | b'-')).collect();
    if compact.len() != 13 || !compact.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = compact
        .iter()
        .enumerate()
        .map(|(i, digit)| u32::from(digit - b'0') * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    sum.is_multiple_of(10)
}

/// Digits only (anything else is ignored), a known issuer prefix and length, Luhn checksum.
fn is_credit_card(text: &str) -> bool {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let starts = |prefix: &[u8]| digits.starts_with(prefix);
    let len = digits.len();
    let issuer_ok = match digits.first() {
        Some(4) => len == 13 || len == 16,
        Some(5) => len == 16 && matches!(digits.get(1), Some(1..=5)),
        Some(6) => len == 16 && (starts(&[6, 0, 1, 1]) || starts(&[6, 5])),
        Some(3) => match digits.get(1) {
            Some(4 | 7) => len == 15,
            Some(0) => len == 14 && matches!(digits.get(2), Some(0..=5)),
            Some(6 | 8) => len == 14,
            Some(5) => len == 16,
            _ => false,
        },
        Some(2) => len == 15 && starts(&[2, 1, 3, 1]),
        Some(1) => len == 15 && starts(&[1, 8, 0, 0]),
        _ => false,
    };
    let luhn: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, digit)| {
            let digit = u32::from(*digit);
            match (i % 2 == 1, digit * 2) {
                (true, doubled) if doubled > 9 => doubled - 9,
                (true, doubled) => doubled,
                (false, _) => digit,
            }
        })
        .sum();
    issuer_ok && luhn.is_multiple_of(10)
}

/// `ddd-dd-dddd`, each separator optional and either `-` or a space.
fn is_ssn(text: &str) -> bool {
    let mut rest = text.as_bytes();
    for (index, len) in [3usize, 2, 4].into_iter().enumerate() {
        if index > 0
            && let Some((b'-' | b' ', tail)) = rest.split_first()
        {
            rest = tail;
        }
        if rest.len() < len || !rest[..len].iter().all(u8::is_ascii_digit) {
            return false;
        }
        rest = &rest[len..];
    }
    rest.is_empty()
}

fn is_hex_color(text: &str) -> bool {
    let hex = text.strip_prefix('#').unwrap_or(text);
    matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `rgb(r, g, b)` with components 0–255 written without leading zeros, blanks allowed around
/// components.
fn is_rgb_color(text: &str) -> bool {
    let Some(inner) = text
        .strip_prefix("rgb(")
        .and_then(|rest| rest.strip_suffix(')'))
    else {
        return false;
    };
    let blank = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let components: Vec<&str> = inner
        .split(',')
        .map(|part| part.trim_matches(blank))
        .collect();
    components.len() == 3
        && components.iter().all(|component| {
            !component.is_empty()
                && component.len() <= 3
                && component.bytes().all(|b| b.is_ascii_digit())
                && (component.len() == 1 || !component.starts_with('0'))
                && component.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// A Go duration (`1h30m`, `-1.5s`, `300ms`, `0`) or a worded one (`22 ns`, `3 days`, `2w`).
fn is_duration(text: &str) -> bool {
    is_go_duration(text) || is_worded_duration(text)
}

fn is_go_duration(text: &str) -> bool {
    let unsigned = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    if unsigned == "0" {
        return true;
    }
    let mut rest = unsigned;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let whole = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut used = whole;
        let mut fraction = 0;
        if rest[used..].starts_with('.') {
            used += 1;
            fraction = rest[used..].bytes().take_while(u8::is_ascii_digit).count();
            used += fraction;
        }
        if whole + fraction == 0 {
            return false;
        }
        rest = &rest[used..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(
            &rest[..unit_len],
            "ns" | "us" | "\u{b5}s" | "\u{3bc}s" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit_len..];
    }
    true
}

/// One or more `<digits>[blanks]<unit word>` terms separated by blanks.
fn is_worded_duration(text: &str) -> bool {
    const UNITS: [&str; 39] = [
        "ns",
        "nano",
        "nanos",
        "nanosecond",
        "nanoseconds",
        "us",
        "\u{b5}s",
        "micro",
        "micros",
        "microsecond",
        "microseconds",
        "ms",
        "milli",
        "millis",
        "millisecond",
        "milliseconds",
        "s",
        "sec",
        "secs",
        "second",
        "seconds",
        "m",
        "min",
        "mins",
        "minute",
        "minutes",
        "h",
        "hr",
        "hrs",
        "hour",
        "hours",
        "d",
        "day",
        "days",
        "w",
        "wk",
        "wks",
        "week",
        "weeks",
    ];
    let mut rest = text.trim();
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        if !UNITS.contains(&rest[..unit_len].to_lowercase().as_str()) {
            return false;
        }
        rest = rest[unit_len..].trim_start();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_flavor_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cores"],
                    "properties": {
                        "cores": {"type": "integer", "minimum": 1, "maximum": 64},
                        "tier": {"type": "string", "enum": ["small", "medium", "large"]}
                    }
                },
                "status": {"type": "object"}
            }
        })
    }

    fn cpu_flavor(spec: Value) -> Value {
        json!({
            "apiVersion": "cloud.example.com/v1",
            "kind": "CPUFlavor",
            "metadata": {"name": "cpu-small", "labels": {"cloud.example.com/visibility": "Public"}},
            "spec": spec
        })
    }

    fn compile(schema: Value) -> Validator {
        match Validator::compile(&schema) {
            Ok(validator) => validator,
            Err(err) => panic!("schema should compile: {err}"),
        }
    }

    /// Validates `{"value": value}` against `{"properties": {"value": field}}`.
    fn check_field(field: Value, value: Value) -> Result<(), Vec<FieldError>> {
        compile(json!({"type": "object", "properties": {"value": field}}))
            .validate(&json!({ "value": value }))
    }

    fn messages(result: Result<(), Vec<FieldError>>) -> Vec<String> {
        match result {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn cpu_flavor_schema_accepts_a_valid_object() {
        let validator = compile(cpu_flavor_schema());
        assert_eq!(
            validator.validate(&cpu_flavor(json!({"cores": 2, "tier": "small"}))),
            Ok(())
        );
    }

    #[test]
    fn a_string_for_cores_is_rejected_with_a_kube_like_type_message() {
        let validator = compile(cpu_flavor_schema());
        let errors = messages(validator.validate(&cpu_flavor(json!({"cores": "two"}))));
        assert_eq!(
            errors,
            vec![
                r#"spec.cores: Invalid value: "string": spec.cores in body must be of type integer: "string""#
            ]
        );
    }

    #[test]
    fn a_missing_required_field_is_reported_at_the_field_itself() {
        let validator = compile(cpu_flavor_schema());
        let Err(errors) = validator.validate(&cpu_flavor(json!({"tier": "small"}))) else {
            panic!("missing cores must be rejected");
        };
        assert_eq!(
            errors,
            vec![FieldError {
                path: "spec.cores".into(),
                message: "Required value".into()
            }]
        );
        assert_eq!(errors[0].reason(), "FieldValueRequired");
    }

    #[test]
    fn a_value_outside_the_enum_lists_the_supported_values() {
        let validator = compile(cpu_flavor_schema());
        let Err(errors) = validator.validate(&cpu_flavor(json!({"cores": 2, "tier": "huge"})))
        else {
            panic!("huge is not a tier");
        };
        assert_eq!(
            errors[0].to_string(),
            r#"spec.tier: Unsupported value: "huge": supported values: "small", "medium", "large""#
        );
        assert_eq!(errors[0].reason(), "FieldValueNotSupported");
    }

    #[test]
    fn a_float_with_a_fraction_is_not_an_integer() {
        let validator = compile(cpu_flavor_schema());
        let errors = messages(validator.validate(&cpu_flavor(json!({"cores": 3.5}))));
        assert_eq!(
            errors,
            vec![
                r#"spec.cores: Invalid value: "number": spec.cores in body must be of type integer: "number""#
            ]
        );
    }

    #[test]
    fn whole_numbers_written_as_floats_count_as_integers_like_in_kubernetes() {
        // jsonschema 0.60.2 alone rejects 3.0 under Draft 4; Kubernetes accepts it, and so does
        // this validator, also inside arrays and maps. 3.5 stays a type error.
        let validator = compile(cpu_flavor_schema());
        assert_eq!(validator.validate(&cpu_flavor(json!({"cores": 3}))), Ok(()));
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        assert_eq!(
            validator.validate(&parse(r#"{"spec": {"cores": 3.0}}"#)),
            Ok(())
        );
        assert_eq!(
            validator.validate(&parse(r#"{"spec": {"cores": 64.0}}"#)),
            Ok(())
        );
        assert!(
            validator
                .validate(&parse(r#"{"spec": {"cores": 65.0}}"#))
                .is_err()
        );
        let list = json!({"type": "array", "items": {"type": "integer"}});
        assert_eq!(check_field(list.clone(), parse("[1.0, 2, -0.0]")), Ok(()));
        assert!(check_field(list, parse("[1.0, 2.5]")).is_err());
        let bare = jsonschema::options()
            .with_draft(Draft::Draft4)
            .build(&json!({"type": "integer"}))
            .map(|v| v.is_valid(&parse("3.0")));
        assert_eq!(
            bare.ok(),
            Some(false),
            "jsonschema's own Draft 4 behaviour changed"
        );
    }

    #[test]
    fn several_errors_are_all_reported_in_one_pass() {
        let validator = compile(cpu_flavor_schema());
        let errors = messages(validator.validate(&cpu_flavor(json!({"cores": 100, "tier": 5}))));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.contains(
            &"spec.cores: Invalid value: 100: spec.cores in body should be less than or equal to 64"
                .to_owned()
        ));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.tier: Invalid value: \"integer\""))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.tier: Unsupported value: 5"))
        );
    }

    #[test]
    fn nullable_fields_accept_null_and_others_do_not() {
        assert_eq!(
            check_field(json!({"type": "string", "nullable": true}), Value::Null),
            Ok(())
        );
        assert_eq!(
            check_field(json!({"type": "string", "nullable": true}), json!("x")),
            Ok(())
        );
        assert_eq!(
            messages(check_field(
                json!({"type": "string", "nullable": true}),
                json!(1)
            )),
            vec![
                r#"value: Invalid value: "integer": value in body must be of type string: "integer""#
            ]
        );
        assert_eq!(
            messages(check_field(json!({"type": "string"}), Value::Null)),
            vec![r#"value: Invalid value: "null": value in body must be of type string: "null""#]
        );
    }

    #[test]
    fn nullable_null_passes_enum_and_combinators_while_other_values_are_still_checked() {
        let field = json!({
            "type": "string",
            "nullable": true,
            "enum": ["a", "b"],
            "anyOf": [{"maxLength": 1}],
            "not": {"enum": ["b"]}
        });
        assert_eq!(check_field(field.clone(), Value::Null), Ok(()));
        assert_eq!(check_field(field.clone(), json!("a")), Ok(()));
        assert!(check_field(field.clone(), json!("b")).is_err());
        assert_eq!(
            messages(check_field(field, json!("c")))[0],
            r#"value: Unsupported value: "c": supported values: "a", "b""#
        );
    }

    #[test]
    fn int_or_string_accepts_integers_and_strings_only() {
        let field = json!({"x-kubernetes-int-or-string": true});
        assert_eq!(check_field(field.clone(), json!(3)), Ok(()));
        assert_eq!(check_field(field.clone(), json!("3")), Ok(()));
        assert_eq!(check_field(field.clone(), json!("50%")), Ok(()));
        assert!(check_field(field.clone(), json!(3.5)).is_err());
        assert!(check_field(field.clone(), Value::Null).is_err());
        assert_eq!(
            messages(check_field(field, json!(true))),
            vec![
                r#"value: Invalid value: "boolean": value in body must be of type integer,string: "boolean""#
            ]
        );
    }

    #[test]
    fn int_or_string_in_the_anyof_form_kubernetes_generates_still_rejects_booleans() {
        let field = json!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "format": "int-or-string"
        });
        assert_eq!(check_field(field.clone(), json!(8080)), Ok(()));
        assert_eq!(check_field(field.clone(), json!("http")), Ok(()));
        assert!(check_field(field, json!(false)).is_err());
    }

    #[test]
    fn nullable_int_or_string_also_accepts_null() {
        let field = json!({"x-kubernetes-int-or-string": true, "nullable": true});
        assert_eq!(check_field(field.clone(), Value::Null), Ok(()));
        assert!(check_field(field, json!([])).is_err());
    }

    #[test]
    fn preserve_unknown_fields_subtrees_accept_anything() {
        let validator = compile(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "anything": {"x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        }));
        let object = json!({"spec": {
            "config": {"a": [1, {"b": null}], "c": "d", "nested": {"deep": {"x": true}}},
            "anything": 42,
            "unlisted": {"whatever": []}
        }});
        assert_eq!(validator.validate(&object), Ok(()));
        assert!(
            validator
                .validate(&json!({"spec": {"config": "not an object"}}))
                .is_err()
        );
    }

    #[test]
    fn kubernetes_extensions_are_dropped_but_properties_named_like_them_are_kept() {
        let validator = compile(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.a > 1"}],
            "properties": {
                "x-note": {"type": "integer"},
                "items": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "x-kubernetes-map-type": "atomic",
                              "properties": {"name": {"type": "string"}}}
                },
                "embedded": {"type": "object", "x-kubernetes-embedded-resource": true,
                             "x-kubernetes-preserve-unknown-fields": true}
            }
        }));
        assert_eq!(
            validator.validate(&json!({"x-note": 1, "items": [{"name": "a"}], "embedded": {}})),
            Ok(())
        );
        assert_eq!(
            messages(validator.validate(&json!({"x-note": "one"}))),
            vec![
                r#"x-note: Invalid value: "string": x-note in body must be of type integer: "string""#
            ]
        );
    }

    #[test]
    fn array_positions_are_rendered_as_indices_and_numeric_keys_as_names() {
        let validator = compile(json!({
            "type": "object",
            "properties": {
                "ports": {"type": "array", "items": {"type": "object", "required": ["port"],
                          "properties": {"port": {"type": "integer"}}}},
                "byName": {"type": "object", "additionalProperties": {"type": "integer"}}
            }
        }));
        let errors = validator
            .validate(&json!({"ports": [{"port": 1}, {"port": "x"}, {}], "byName": {"0": "x"}}))
            .err()
            .unwrap_or_default();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"ports[1].port"), "{paths:?}");
        assert!(paths.contains(&"ports[2].port"), "{paths:?}");
        assert!(paths.contains(&"byName.0"), "{paths:?}");
    }

    #[test]
    fn pattern_is_enforced() {
        let field = json!({"type": "string", "pattern": "^[a-z][a-z0-9-]*$"});
        assert_eq!(check_field(field.clone(), json!("web-1")), Ok(()));
        assert_eq!(
            messages(check_field(field, json!("Web_1"))),
            vec![
                r#"value: Invalid value: "Web_1": value in body should match '^[a-z][a-z0-9-]*$'"#
            ]
        );
    }

    #[test]
    fn patterns_needing_backtracking_are_refused_like_re2_would() {
        let schema =
            json!({"properties": {"value": {"type": "string", "pattern": "^(?!admin).*$"}}});
        assert!(matches!(
            Validator::compile(&schema),
            Err(SchemaError::Invalid(_))
        ));
    }

    #[test]
    fn uuid_format_is_enforced() {
        let field = json!({"type": "string", "format": "uuid"});
        for good in [
            "5b0f6f0c-2d4e-4c31-9f0e-7a3c1e2b9d10",
            "5B0F6F0C-2D4E-4C31-9F0E-7A3C1E2B9D10",
            "5b0f6f0c2d4e4c319f0e7a3c1e2b9d10",
        ] {
            assert_eq!(check_field(field.clone(), json!(good)), Ok(()), "{good}");
        }
        for bad in [
            "",
            "not-a-uuid",
            "5b0f6f0c-2d4e-4c31-9f0e-7a3c1e2b9d1",
            "5b0f6f0c-2d4e-4c31-9f0e-7a3c1e2b9d10x",
        ] {
            assert!(check_field(field.clone(), json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            messages(check_field(field, json!("nope"))),
            vec![r#"value: Invalid value: "nope": value in body must be of type uuid: "nope""#]
        );
    }

    #[test]
    fn versioned_uuid_formats_check_the_version_and_variant() {
        let v4 = "5b0f6f0c-2d4e-4c31-9f0e-7a3c1e2b9d10";
        assert!(is_uuid4(v4));
        assert!(!is_uuid3(v4));
        assert!(!is_uuid5(v4));
        assert!(is_uuid3("5b0f6f0c-2d4e-3c31-0f0e-7a3c1e2b9d10"));
        assert!(!is_uuid4("5b0f6f0c-2d4e-4c31-0f0e-7a3c1e2b9d10"));
        assert!(is_uuid5("5b0f6f0c2d4e5c31af0e7a3c1e2b9d10"));
    }

    #[test]
    fn byte_format_requires_standard_base64() {
        let field = json!({"type": "string", "format": "byte"});
        for good in ["", "Y3B1Zmxhdm9ycy12MS1pZGVudGl0eS1rZXk=", "aGk=", "aGk=\n"] {
            assert_eq!(check_field(field.clone(), json!(good)), Ok(()), "{good}");
        }
        for bad in ["aGk", "not base64!", "aG=k"] {
            assert!(check_field(field.clone(), json!(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn draft4_builtin_formats_are_enforced() {
        let cases = [
            ("date-time", "2026-03-02T10:00:02Z", "2026-03-02 10:00"),
            ("datetime", "2026-03-02T10:00:02.123+01:00", "yesterday"),
            ("date", "2026-03-02", "2026-02-30"),
            ("email", "ops@example.com", "ops-at-example"),
            ("ipv4", "10.0.0.1", "10.0.0.256"),
            ("ipv6", "fd00::1", "fd00:::1"),
            ("hostname", "api.example.com", "-bad-.example.com"),
        ];
        for (format, good, bad) in cases {
            let field = json!({"type": "string", "format": format});
            assert_eq!(
                check_field(field.clone(), json!(good)),
                Ok(()),
                "{format} {good}"
            );
            assert!(check_field(field, json!(bad)).is_err(), "{format} {bad}");
        }
    }

    #[test]
    fn other_kubernetes_formats_are_enforced() {
        let cases = [
            ("uri", "https://example.com/a?b=c", "relative/path"),
            ("uri", "/absolute/path", "http://exa mple.com/"),
            ("uri", "mailto:ops@example.com", "%zz"),
            ("cidr", "10.0.0.0/8", "10.0.0.0/33"),
            ("cidr", "fd00::/64", "fd00::"),
            ("mac", "00:00:5e:00:53:01", "00:00:5e:00:53"),
            ("mac", "0000.5e00.5301", "00:00-5e:00:53:01"),
            (
                "bsonobjectid",
                "507f1f77bcf86cd799439011",
                "507f1f77bcf86cd79943901g",
            ),
            ("isbn", "0-321-75104-3", "0321751044"),
            ("isbn10", "080442957X", "0804429579"),
            ("isbn13", "978-0321751041", "978-0321751042"),
            ("creditcard", "4111 1111 1111 1111", "4111 1111 1111 1112"),
            ("ssn", "123-45-6789", "123-456-789"),
            ("hexcolor", "#FFaa00", "#FFFF"),
            ("rgbcolor", "rgb(255, 0, 10)", "rgb(256,0,0)"),
            ("duration", "1h30m", "1x"),
            ("duration", "22 ns", "ns"),
            ("duration", "3 days", "3 fortnights"),
        ];
        for (format, good, bad) in cases {
            let field = json!({"type": "string", "format": format});
            assert_eq!(
                check_field(field.clone(), json!(good)),
                Ok(()),
                "{format} {good}"
            );
            assert!(check_field(field, json!(bad)).is_err(), "{format} {bad}");
        }
    }

    #[test]
    fn numeric_and_unknown_formats_never_fail() {
        for format in [
            "int32", "int64", "float", "double", "password", "made-up", "regex", "time",
        ] {
            let field = json!({"type": "string", "format": format});
            assert_eq!(
                check_field(field, json!("((( not anything")),
                Ok(()),
                "{format}"
            );
        }
        let big = json!({"type": "integer", "format": "int32"});
        assert_eq!(check_field(big, json!(1_099_511_627_776_i64)), Ok(()));
    }

    #[test]
    fn numeric_bounds_are_enforced_including_exclusive_ones() {
        let field = json!({"type": "number", "minimum": 1, "maximum": 10});
        assert_eq!(check_field(field.clone(), json!(1)), Ok(()));
        assert_eq!(check_field(field.clone(), json!(10)), Ok(()));
        assert_eq!(
            messages(check_field(field.clone(), json!(0))),
            vec!["value: Invalid value: 0: value in body should be greater than or equal to 1"]
        );
        assert!(check_field(field, json!(10.5)).is_err());

        let exclusive = json!({"type": "integer", "minimum": 1, "exclusiveMinimum": true,
                               "maximum": 10, "exclusiveMaximum": true});
        assert_eq!(check_field(exclusive.clone(), json!(5)), Ok(()));
        assert_eq!(
            messages(check_field(exclusive.clone(), json!(1))),
            vec!["value: Invalid value: 1: value in body should be greater than 1"]
        );
        assert_eq!(
            messages(check_field(exclusive, json!(10))),
            vec!["value: Invalid value: 10: value in body should be less than 10"]
        );
    }

    #[test]
    fn length_item_and_property_counts_are_enforced() {
        let string = json!({"type": "string", "minLength": 2, "maxLength": 4});
        assert_eq!(check_field(string.clone(), json!("abc")), Ok(()));
        assert_eq!(
            messages(check_field(string.clone(), json!("abcde"))),
            vec!["value: Too long: may not be more than 4 bytes"]
        );
        assert_eq!(
            messages(check_field(string, json!("a"))),
            vec![r#"value: Invalid value: "a": value in body should be at least 2 chars long"#]
        );
        let list = json!({"type": "array", "minItems": 1, "maxItems": 2});
        assert_eq!(
            messages(check_field(list.clone(), json!([1, 2, 3]))),
            vec!["value: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            messages(check_field(list, json!([]))),
            vec!["value: Invalid value: 0: value in body should have at least 1 items"]
        );
        let map = json!({"type": "object", "maxProperties": 1});
        assert!(check_field(map, json!({"a": 1, "b": 2})).is_err());
    }

    #[test]
    fn additional_properties_false_forbids_each_unknown_field() {
        let field =
            json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false});
        let Err(errors) = check_field(field, json!({"a": 1, "b": 2})) else {
            panic!("b is not allowed");
        };
        assert_eq!(
            errors,
            vec![FieldError {
                path: "value.b".into(),
                message: "Forbidden: value.b in body is a forbidden property".into()
            }]
        );
        assert_eq!(errors[0].reason(), "FieldValueForbidden");
    }

    #[test]
    fn unknown_fields_are_accepted_when_the_schema_does_not_close_the_object() {
        let validator = compile(cpu_flavor_schema());
        let object = cpu_flavor(json!({"cores": 2, "gpu": {"model": "x"}}));
        assert_eq!(validator.validate(&object), Ok(()));
    }

    #[test]
    fn type_and_object_metadata_are_never_rejected_by_the_root_schema() {
        let validator = compile(json!({
            "type": "object",
            "required": ["spec"],
            "additionalProperties": false,
            "properties": {"spec": {"type": "object"}}
        }));
        assert_eq!(validator.validate(&cpu_flavor(json!({"cores": 1}))), Ok(()));
        assert!(
            validator
                .validate(&json!({"metadata": {}, "spec": {}, "extra": 1}))
                .is_err()
        );
    }

    #[test]
    fn root_metadata_schema_keeps_only_name_restrictions() {
        let validator = compile(json!({
            "type": "object",
            "properties": {
                "metadata": {
                    "type": "object",
                    "required": ["annotations"],
                    "additionalProperties": false,
                    "properties": {"name": {"type": "string", "maxLength": 10}}
                }
            }
        }));
        assert_eq!(
            validator.validate(&json!({"metadata": {"name": "short", "uid": "u"}})),
            Ok(())
        );
        assert_eq!(
            messages(validator.validate(&json!({"metadata": {"name": "much-too-long-name"}}))),
            vec!["metadata.name: Too long: may not be more than 10 bytes"]
        );
    }

    #[test]
    fn a_non_object_at_the_root_is_reported_without_a_path() {
        let validator = compile(cpu_flavor_schema());
        let Err(errors) = validator.validate(&json!([1])) else {
            panic!("an array is not an object");
        };
        assert_eq!(errors[0].path, "");
        assert_eq!(
            errors[0].to_string(),
            r#"Invalid value: "array": body must be of type object: "array""#
        );
    }

    #[test]
    fn errors_are_capped_at_twenty() {
        let properties: Map<String, Value> = (0..30)
            .map(|i| (format!("f{i:02}"), json!({"type": "integer"})))
            .collect();
        let object: Map<String, Value> =
            (0..30).map(|i| (format!("f{i:02}"), json!("x"))).collect();
        let validator = compile(json!({"type": "object", "properties": properties}));
        let errors = validator
            .validate(&Value::Object(object))
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 20);
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "a".repeat(1000);
        let errors = messages(check_field(
            json!({"type": "string", "maxLength": 3, "pattern": "^b"}),
            json!(long),
        ));
        assert!(errors.iter().all(|e| e.len() < 400), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("...")), "{errors:?}");
    }

    #[test]
    fn malformed_schemas_give_schema_errors() {
        let malformed = [
            json!("object"),
            json!(true),
            json!({"type": "objet"}),
            json!({"type": 5}),
            json!({"properties": {"a": {"pattern": "("}}}),
            json!({"properties": {"a": {"minimum": "one"}}}),
            json!({"required": "cores"}),
            json!({"properties": {"a": {"maxLength": -1}}}),
            json!({"items": [1]}),
            json!({"properties": {"a": {"$ref": "https://example.com/schema.json"}}}),
        ];
        for schema in malformed {
            let result = Validator::compile(&schema);
            assert!(matches!(result, Err(SchemaError::Invalid(_))), "{schema}");
        }
        let error = Validator::compile(&json!({"type": 5}))
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.starts_with("invalid schema: ")));
    }

    #[test]
    fn odd_but_legal_schemas_compile_and_validate_without_panicking() {
        let odd = [
            json!({}),
            json!({"nullable": true}),
            json!({"nullable": "yes", "x-kubernetes-int-or-string": "no"}),
            json!({"properties": {}}),
            json!({"properties": {"a": {"nullable": true, "enum": []}}}),
            json!({"properties": {"a": {"format": 7}}}),
            json!({"additionalProperties": false}),
            json!({"properties": "oops", "additionalProperties": false}),
            json!({"items": {"nullable": true}, "type": "array"}),
            json!({"properties": {"a": {"type": ["string", "null"], "nullable": true}}}),
            json!({"allOf": [{"nullable": true, "anyOf": [{"type": "string"}]}]}),
            json!({"id": "not a uri", "$schema": "whatever", "type": "object"}),
            json!({"properties": {"a": {"multipleOf": 0}}}),
            json!({"properties": {"a": {"maxLength": 1e300, "minimum": -1e308}}}),
            json!({"properties": {"a": {"pattern": "a{1000}{1000}{1000}"}}}),
            json!({"properties": {"a": {"$ref": "#/definitions/missing"}}}),
            json!({"items": true, "additionalItems": {"nullable": true}}),
            json!({"dependencies": {"a": ["b"], "c": {"nullable": true}}}),
        ];
        for schema in odd {
            if let Ok(validator) = Validator::compile(&schema) {
                let _ = validator.validate(&json!({"a": null, "b": [1, "x"], "metadata": {}}));
                let _ = validator.validate(&json!(null));
            }
        }
    }

    #[test]
    fn validator_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Validator>();
        let validator = std::sync::Arc::new(compile(cpu_flavor_schema()));
        let worker = std::sync::Arc::clone(&validator);
        let handle =
            std::thread::spawn(move || worker.validate(&cpu_flavor(json!({"cores": 1}))).is_ok());
        assert!(handle.join().unwrap_or(false));
    }

    #[test]
    fn field_errors_map_to_kubernetes_cause_types() {
        let error = |message: &str| FieldError {
            path: "a".into(),
            message: message.into(),
        };
        assert_eq!(
            error("Invalid value: 1: a in body should be less than 1").reason(),
            "FieldValueInvalid"
        );
        assert_eq!(
            error("Too long: may not be more than 4 bytes").reason(),
            "FieldValueTooLong"
        );
        assert_eq!(
            error("Too many: 3: must have at most 2 items").reason(),
            "FieldValueTooMany"
        );
        assert_eq!(
            error(r#"Duplicate value: "a""#).reason(),
            "FieldValueDuplicate"
        );
    }
}
