//! A streaming check of an object's JSON text against one schema version, for ingest: it walks
//! the text once, builds no value tree, and answers only "certainly valid, and preparing it
//! ([`crate::structural::Structural::prepare`]) would change nothing" or "not sure". An object
//! it is not sure about is prepared the full way, which gives the real verdict and its errors;
//! so this check may refuse anything, but must never vouch for an object the full way would
//! prune, default or reject.
//!
//! What it evaluates: `type`, `nullable`, `properties`, `required`, `items` (one schema),
//! `additionalProperties`, string `enum`s, integer `minimum`/`maximum` (with the Draft 4
//! `exclusive*` flags), `minLength`/`maxLength` (in code points, as jsonschema counts them),
//! `minItems`/`maxItems`, `minProperties`/`maxProperties`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-preserve-unknown-fields`, atomic lists, annotation-only formats and
//! `date-time` (a strict subset of RFC 3339 that jsonschema accepts too). Pruning and defaulting
//! are evaluated as "would they touch this object": an unknown field where the schema prunes
//! it, a missing field with a default, or a `null` where a default would replace it makes the
//! check unsure. A scalar node with other validation keywords (`pattern`, other formats,
//! non-string `enum`s, `multipleOf`, ...) has its values checked by jsonschema itself, compiled
//! from that node exactly as the whole schema is. Any other keyword (CEL rules, combinators,
//! set and map lists, embedded resources, ...) makes every value that reaches its schema node
//! unsure.

use std::fmt;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Keys of a schema node that carry no meaning for validation, pruning or defaulting.
const ANNOTATIONS: [&str; 5] = ["description", "title", "example", "externalDocs", "default"];

/// The fields the root keeps without a schema (see `structural`).
const RESOURCE_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// At most this many properties in one node (the seen-set is a fixed bitset).
const MAX_PROPERTIES: usize = 256;

/// Largest magnitude below which every integer is exactly an `f64`.
const EXACT_F64: i128 = 1 << 53;

/// The compiled check of one schema version.
#[derive(Debug)]
pub struct TextCheck {
    root: Node,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Kind {
    /// No `type`: any JSON value.
    #[default]
    Any,
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
    /// `x-kubernetes-int-or-string`.
    IntOrString,
}

#[derive(Debug, Default)]
enum Additional {
    /// Unknown keys are pruned (or kept unchecked under preserve-unknown-fields).
    #[default]
    Absent,
    Any,
    Schema(Box<Node>),
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    Integer(i128),
    Float(f64),
}

#[derive(Debug, Default)]
struct Node {
    kind: Kind,
    nullable: bool,
    /// A keyword this check does not evaluate: every value reaching this node is unsure.
    opaque: bool,
    preserve_unknown: bool,
    /// Sorted by name.
    properties: Vec<(Box<str>, Node)>,
    /// Properties that must be present.
    required: Bits,
    /// Properties with a default (a missing one would be filled in).
    defaulted: Bits,
    additional: Additional,
    items: Option<Box<Node>>,
    enum_strings: Option<Vec<Box<str>>>,
    minimum: Option<(Bound, bool)>,
    maximum: Option<(Bound, bool)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    date_time: bool,
    /// A scalar node whose values jsonschema checks (see [`delegated`]).
    delegate: Option<Box<jsonschema::Validator>>,
}

/// A set of property indices.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Bits([u64; MAX_PROPERTIES / 64]);

impl Bits {
    fn set(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let was = self.0[word] & bit != 0;
        self.0[word] |= bit;
        was
    }

    /// Whether every index in `self` is in `other`.
    fn within(&self, other: &Bits) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| a & !b == 0)
    }
}

impl TextCheck {
    /// Compiles the check of one version's OpenAPI v3 schema (any value: what this check does
    /// not understand makes it unsure, never wrong).
    pub fn compile(schema: &Value) -> TextCheck {
        let mut root = node(schema);
        // The root's `metadata` schema is relaxed to its name restrictions by the validator;
        // such restrictions are not evaluated here.
        root.opaque |= schema
            .pointer("/properties/metadata/properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key("name") || p.contains_key("generateName"));
        // `apiVersion` and `kind` are only vouched for as plain strings.
        for head in ["apiVersion", "kind"] {
            if let Some(sub) = schema.pointer(&format!("/properties/{head}"))
                && !plain_string(sub)
            {
                root.opaque = true;
            }
        }
        if root.kind != Kind::Object && root.kind != Kind::Any {
            root.opaque = true;
        }
        TextCheck { root }
    }

    /// Whether this check can vouch for any object at all (not when the root itself has a
    /// keyword it does not evaluate, such as a CEL rule).
    pub fn may_vouch(&self) -> bool {
        !self.root.opaque
    }

    /// Starts checking one object's root members.
    pub fn root(&self) -> RootCheck<'_> {
        RootCheck {
            node: &self.root,
            seen: Bits::default(),
            count: 0,
            extra: false,
            unsure: self.root.opaque,
        }
    }
}

/// Whether a schema node is `{type: string}` with annotations only.
fn plain_string(schema: &Value) -> bool {
    schema.as_object().is_some_and(|m| {
        m.get("type") == Some(&Value::String("string".into()))
            && m.keys()
                .all(|k| k == "type" || ANNOTATIONS.contains(&k.as_str()) && k != "default")
    })
}

/// Compiles one schema node (and every node below it).
fn node(schema: &Value) -> Node {
    let Value::Object(source) = schema else {
        return Node {
            opaque: true,
            ..Node::default()
        };
    };
    let mut node = Node::default();
    let flag = |key: &str| source.get(key) == Some(&Value::Bool(true));
    for (key, value) in source {
        let known = match key.as_str() {
            "type" => {
                node.kind = match value.as_str() {
                    Some("object") => Kind::Object,
                    Some("array") => Kind::Array,
                    Some("string") => Kind::String,
                    Some("integer") => Kind::Integer,
                    Some("number") => Kind::Number,
                    Some("boolean") => Kind::Boolean,
                    _ => return opaque(),
                };
                true
            }
            "nullable" | "x-kubernetes-preserve-unknown-fields" | "x-kubernetes-int-or-string" => {
                value.is_boolean()
            }
            "properties" | "required" | "items" | "additionalProperties" | "enum" => true,
            "minimum" | "maximum" => true,
            "exclusiveMinimum" | "exclusiveMaximum" => value.is_boolean(),
            "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
            | "maxProperties" => value.is_u64(),
            "format" => match value.as_str() {
                Some("date-time" | "datetime") => {
                    node.date_time = true;
                    true
                }
                Some(name) => !crate::validate::is_checked_format(name),
                None => false,
            },
            "x-kubernetes-list-type" => value.as_str() == Some("atomic"),
            "x-kubernetes-validations" | "x-kubernetes-embedded-resource" => false,
            other if other.starts_with("x-") => true,
            other => ANNOTATIONS.contains(&other),
        };
        if !known {
            return delegated(source);
        }
    }
    node.nullable = flag("nullable");
    node.preserve_unknown = flag("x-kubernetes-preserve-unknown-fields");
    if flag("x-kubernetes-int-or-string") {
        node.kind = Kind::IntOrString;
    }
    if let Some(properties) = source.get("properties") {
        let Value::Object(properties) = properties else {
            return opaque();
        };
        if properties.len() > MAX_PROPERTIES {
            return opaque();
        }
        node.properties = properties
            .iter()
            .map(|(name, sub)| (name.as_str().into(), self::node(sub)))
            .collect();
        node.properties.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, sub) in properties {
            if sub.get("default").is_some_and(|d| !d.is_null())
                && let Some(i) = node.index(name)
            {
                node.defaulted.set(i);
            }
        }
    }
    if let Some(required) = source.get("required") {
        let Some(names) = required.as_array() else {
            return opaque();
        };
        for name in names {
            match name.as_str().and_then(|n| node.index(n)) {
                Some(i) => {
                    node.required.set(i);
                }
                // Required but not described: present only as an unknown key.
                None => return opaque(),
            }
        }
    }
    node.additional = match source.get("additionalProperties") {
        Some(Value::Bool(true)) => Additional::Any,
        Some(sub @ Value::Object(_)) => Additional::Schema(Box::new(self::node(sub))),
        None | Some(Value::Bool(false)) => Additional::Absent,
        Some(_) => return opaque(),
    };
    match source.get("items") {
        None => {}
        Some(items @ Value::Object(_)) => node.items = Some(Box::new(self::node(items))),
        Some(_) => return opaque(),
    }
    if let Some(values) = source.get("enum") {
        let strings: Option<Vec<Box<str>>> = values
            .as_array()
            .and_then(|v| v.iter().map(|s| s.as_str().map(Into::into)).collect());
        match strings {
            Some(strings) => node.enum_strings = Some(strings),
            None => return delegated(source),
        }
    }
    let bound = |key: &str, exclusive: &str| -> Result<Option<(Bound, bool)>, ()> {
        let Some(value) = source.get(key) else {
            return Ok(None);
        };
        let bound = if let Some(i) = value.as_i64() {
            Bound::Integer(i128::from(i))
        } else if let Some(u) = value.as_u64() {
            Bound::Integer(i128::from(u))
        } else if let Some(f) = value.as_f64().filter(|f| f.is_finite()) {
            Bound::Float(f)
        } else {
            return Err(());
        };
        Ok(Some((bound, flag(exclusive))))
    };
    match (
        bound("minimum", "exclusiveMinimum"),
        bound("maximum", "exclusiveMaximum"),
    ) {
        (Ok(min), Ok(max)) => (node.minimum, node.maximum) = (min, max),
        _ => return delegated(source),
    }
    let count = |key: &str| source.get(key).and_then(Value::as_u64);
    node.min_length = count("minLength");
    node.max_length = count("maxLength");
    node.min_items = count("minItems");
    node.max_items = count("maxItems");
    node.min_properties = count("minProperties");
    node.max_properties = count("maxProperties");
    node
}

/// Keys a scalar node may have when its validation keywords are left to jsonschema.
const DELEGABLE: [&str; 14] = [
    "type",
    "nullable",
    "x-kubernetes-int-or-string",
    "enum",
    "pattern",
    "format",
    "multipleOf",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "x-kubernetes-list-type",
];

/// A scalar node with keywords this module does not evaluate itself (`pattern`, most
/// formats, non-string `enum`s, `multipleOf`, ...): its values are checked by jsonschema,
/// compiled from the node the way the whole schema is, one value at a time.
fn delegated(source: &serde_json::Map<String, Value>) -> Node {
    let delegable = source.keys().all(|k| {
        DELEGABLE.contains(&k.as_str())
            || ANNOTATIONS.contains(&k.as_str())
            || k.starts_with("x-")
                && !matches!(
                    k.as_str(),
                    "x-kubernetes-validations"
                        | "x-kubernetes-embedded-resource"
                        | "x-kubernetes-preserve-unknown-fields"
                )
    });
    let list_ok = source
        .get("x-kubernetes-list-type")
        .is_none_or(|t| t.as_str() == Some("atomic"));
    let kind = if source.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        Kind::IntOrString
    } else {
        match source.get("type").map(|t| t.as_str()) {
            None => Kind::Any,
            Some(Some("string")) => Kind::String,
            Some(Some("integer")) => Kind::Integer,
            Some(Some("number")) => Kind::Number,
            Some(Some("boolean")) => Kind::Boolean,
            _ => return opaque(),
        }
    };
    if !delegable || !list_ok {
        return opaque();
    }
    let Some(validator) = crate::validate::compile_fragment(&Value::Object(source.clone())) else {
        return opaque();
    };
    Node {
        kind,
        nullable: source.get("nullable") == Some(&Value::Bool(true)),
        delegate: Some(Box::new(validator)),
        ..Node::default()
    }
}

fn opaque() -> Node {
    Node {
        opaque: true,
        ..Node::default()
    }
}

impl Node {
    fn index(&self, name: &str) -> Option<usize> {
        // Few properties: compare lengths first (most differ), then bytes; the profile of the
        // ingest showed the binary search's string compares at 13% of a whole unwrap.
        if self.properties.len() <= 16 {
            return self
                .properties
                .iter()
                .position(|(k, _)| k.len() == name.len() && k.as_bytes() == name.as_bytes());
        }
        self.properties
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
    }

    /// Whether an object's members leave nothing to require, default or count.
    fn object_complete(&self, seen: &Bits, count: u64) -> bool {
        self.required.within(seen)
            && self.defaulted.within(seen)
            && self.min_properties.is_none_or(|m| count >= m)
            && self.max_properties.is_none_or(|m| count <= m)
    }

    fn integer_in_bounds(&self, value: i128) -> bool {
        let within = |bound: Option<(Bound, bool)>, below: bool| match bound {
            None => true,
            Some((Bound::Integer(b), exclusive)) => match (below, exclusive) {
                (true, false) => value <= b,
                (true, true) => value < b,
                (false, false) => value >= b,
                (false, true) => value > b,
            },
            Some((Bound::Float(b), exclusive)) => {
                if value.abs() > EXACT_F64 {
                    return false;
                }
                #[allow(clippy::cast_precision_loss)] // exact below 2^53 (checked above)
                let v = value as f64;
                match (below, exclusive) {
                    (true, false) => v <= b,
                    (true, true) => v < b,
                    (false, false) => v >= b,
                    (false, true) => v > b,
                }
            }
        };
        within(self.minimum, false) && within(self.maximum, true)
    }

    /// Whether jsonschema accepts the value, when it checks this node's values.
    fn delegate_accepts(&self, value: impl FnOnce() -> Value) -> bool {
        self.delegate.as_ref().is_none_or(|v| v.is_valid(&value()))
    }

    fn string_ok(&self, s: &str) -> bool {
        if let Some(values) = &self.enum_strings
            && !values.iter().any(|v| &**v == s)
        {
            return false;
        }
        if self.min_length.is_some() || self.max_length.is_some() {
            let chars = s.chars().count() as u64;
            if self.min_length.is_some_and(|m| chars < m)
                || self.max_length.is_some_and(|m| chars > m)
            {
                return false;
            }
        }
        !self.date_time || is_plain_date_time(s)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` with a real date, hours to 23, minutes and
/// seconds to 59 (no leap second): every such string passes jsonschema's `date-time` check.
fn is_plain_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        part.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days || hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        b"Z" => true,
        [sign, h1, h2, b':', m1, m2] if *sign == b'+' || *sign == b'-' => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            };
            matches!((two(*h1, *h2), two(*m1, *m2)), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

/// The error that ends a check the moment it is unsure (never shown to anyone).
fn unsure<E: de::Error>() -> E {
    E::custom("not vouched for")
}

/// Checks the root members of one object, in any order; [`RootCheck::finish`] gives the verdict.
#[derive(Debug)]
pub struct RootCheck<'a> {
    node: &'a Node,
    seen: Bits,
    count: u64,
    /// A member the schema does not describe was seen (counted, not de-duplicated).
    extra: bool,
    unsure: bool,
}

impl<'a> RootCheck<'a> {
    /// Notes `apiVersion`, `kind` or `metadata`, given the text of its value (as the parser
    /// delimits it, no leading blanks): the first two must be strings, `metadata` an object.
    /// Returns false when the key is none of them.
    pub fn head(&mut self, key: &str, text: &str) -> bool {
        let fits = match key {
            "apiVersion" | "kind" => text.starts_with('"'),
            "metadata" => text.starts_with('{'),
            _ => return false,
        };
        self.unsure |= !fits;
        self.note(key);
        true
    }

    fn note(&mut self, key: &str) {
        self.count += 1;
        match self.node.index(key) {
            Some(i) => self.unsure |= self.seen.set(i),
            None => self.extra = true,
        }
    }

    /// The seed that checks the value of root member `key` (not a head member); `None` when
    /// the check is already unsure (or becomes so with this key): stop and prepare the object
    /// the full way.
    pub fn member(&mut self, key: &str) -> Option<MemberSeed<'a>> {
        if self.unsure || RESOURCE_FIELDS.contains(&key) {
            self.unsure = true;
            return None;
        }
        self.note(key);
        let seed = match self.node.index(key) {
            Some(i) => Member::Check(&self.node.properties[i].1),
            None => match &self.node.additional {
                Additional::Schema(extra) => Member::Check(extra),
                Additional::Any => Member::Skip,
                Additional::Absent if self.node.preserve_unknown => Member::Skip,
                Additional::Absent => {
                    self.unsure = true;
                    return None;
                }
            },
        };
        if self.unsure {
            return None;
        }
        Some(MemberSeed(seed))
    }

    /// Whether the whole object is certainly valid and left unchanged by preparing it.
    pub fn finish(self) -> bool {
        let mut defaulted = self.node.defaulted;
        // The resource fields are never defaulted.
        for field in RESOURCE_FIELDS {
            if let Some(i) = self.node.index(field) {
                defaulted.0[i / 64] &= !(1u64 << (i % 64));
            }
        }
        let counts = self.node.min_properties.is_some() || self.node.max_properties.is_some();
        // Extra members are counted without telling repeats apart: no count is trusted then.
        let countable = !counts || !self.extra;
        let sure = !self.unsure;
        sure && countable
            && self.node.required.within(&self.seen)
            && defaulted.within(&self.seen)
            && self.node.min_properties.is_none_or(|m| self.count >= m)
            && self.node.max_properties.is_none_or(|m| self.count <= m)
    }
}

/// Checks one root member's value (see [`RootCheck::member`]).
#[derive(Debug, Clone, Copy)]
pub struct MemberSeed<'a>(Member<'a>);

#[derive(Debug, Clone, Copy)]
enum Member<'a> {
    /// Against this node.
    Check(&'a Node),
    /// Kept as it is and not validated (preserved unknown field).
    Skip,
}

impl<'de> DeserializeSeed<'de> for MemberSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0 {
            Member::Check(node) => Seed(node).deserialize(d),
            Member::Skip => IgnoredAny::deserialize(d).map(|_| ()),
        }
    }
}

/// Checks one value against a node.
#[derive(Clone, Copy)]
struct Seed<'a>(&'a Node);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.opaque {
            return Err(unsure());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.0.nullable {
            Ok(())
        } else {
            Err(unsure())
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        let node = self.0;
        if matches!(node.kind, Kind::Any | Kind::Boolean)
            && node.enum_strings.is_none()
            && node.delegate_accepts(|| Value::Bool(v))
        {
            Ok(())
        } else {
            Err(unsure())
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.integer(i128::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.integer(i128::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // Only an unbounded `number` takes a fraction as it is (an `integer` might take a whole
        // one after normalising it, and so might jsonschema's keywords).
        let node = self.0;
        if matches!(node.kind, Kind::Any | Kind::Number)
            && node.enum_strings.is_none()
            && node.minimum.is_none()
            && node.maximum.is_none()
            && (node.delegate.is_none() || v.fract() != 0.0)
            && node.delegate_accepts(|| Value::from(v))
        {
            Ok(())
        } else {
            Err(unsure())
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let node = self.0;
        if matches!(node.kind, Kind::Any | Kind::String | Kind::IntOrString)
            && node.string_ok(v)
            && node.delegate_accepts(|| Value::String(v.to_owned()))
        {
            Ok(())
        } else {
            Err(unsure())
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let node = self.0;
        if !matches!(node.kind, Kind::Any | Kind::Array)
            || node.enum_strings.is_some()
            || node.delegate.is_some()
        {
            return Err(unsure());
        }
        let mut count = 0u64;
        match &node.items {
            Some(items) => {
                while seq.next_element_seed(Seed(items))?.is_some() {
                    count += 1;
                }
            }
            // Without an item schema, pruning would empty every object inside.
            None => {
                while seq.next_element_seed(Scalar)?.is_some() {
                    count += 1;
                }
            }
        }
        if node.min_items.is_some_and(|m| count < m) || node.max_items.is_some_and(|m| count > m) {
            return Err(unsure());
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let node = self.0;
        if !matches!(node.kind, Kind::Any | Kind::Object)
            || node.enum_strings.is_some()
            || node.delegate.is_some()
        {
            return Err(unsure());
        }
        let counts = node.min_properties.is_some() || node.max_properties.is_some();
        let mut seen = Bits::default();
        let mut count = 0u64;
        while let Some(key) = map.next_key_seed(Lookup(node))? {
            count += 1;
            match key {
                Some(i) => {
                    if seen.set(i) {
                        // A repeated key: the parsed object keeps only the last.
                        return Err(unsure());
                    }
                    map.next_value_seed(Seed(&node.properties[i].1))?;
                }
                None => match &node.additional {
                    _ if counts => return Err(unsure()),
                    Additional::Schema(extra) => map.next_value_seed(Seed(extra))?,
                    Additional::Any => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    Additional::Absent if node.preserve_unknown => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    Additional::Absent => return Err(unsure()),
                },
            }
        }
        if node.object_complete(&seen, count) {
            Ok(())
        } else {
            Err(unsure())
        }
    }
}

impl Seed<'_> {
    fn integer<E: de::Error>(self, v: i128) -> Result<(), E> {
        let node = self.0;
        if matches!(
            node.kind,
            Kind::Any | Kind::Integer | Kind::Number | Kind::IntOrString
        ) && node.enum_strings.is_none()
            && node.integer_in_bounds(v)
            && node.delegate_accepts(|| {
                i64::try_from(v).map_or_else(
                    |_| u64::try_from(v).map_or(Value::Null, Value::from),
                    Value::from,
                )
            })
        {
            Ok(())
        } else {
            Err(unsure())
        }
    }
}

/// A map key looked up among a node's properties, without allocating it.
struct Lookup<'a>(&'a Node);

impl<'de> DeserializeSeed<'de> for Lookup<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Lookup<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.index(v))
    }
}

/// A value that pruning without a schema leaves alone: anything but an object or array.
struct Scalar;

impl<'de> DeserializeSeed<'de> for Scalar {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

impl TextCheck {
    /// Whether the object `text` (a JSON object) is certainly valid and left unchanged by
    /// preparing it: [`RootCheck`] over every root member.
    pub fn vouches_for(&self, text: &str) -> bool {
        struct Root<'c>(RootCheck<'c>);
        impl<'de> Visitor<'de> for Root<'_> {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<bool, A::Error> {
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if RESOURCE_FIELDS.contains(&&*key) {
                        let value: &serde_json::value::RawValue = map.next_value()?;
                        self.0.head(&key, value.get());
                    } else {
                        let Some(seed) = self.0.member(&key) else {
                            return Err(unsure());
                        };
                        map.next_value_seed(seed)?;
                    }
                }
                Ok(self.0.finish())
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(Root(self.root()))
            .and_then(|ok| de.end().map(|()| ok))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structural::Structural;
    use serde_json::json;

    /// Whether the full way accepts `object` and leaves it as it was.
    fn prepared_unchanged(schema: &Value, object: &Value) -> bool {
        let Ok(structural) = Structural::compile(schema) else {
            return false;
        };
        let mut copy = object.clone();
        let (result, changed) = structural.prepare_noting_changes(&mut copy);
        result.is_ok() && !changed && &copy == object
    }

    fn vouches(schema: &Value, object: &Value) -> bool {
        TextCheck::compile(schema).vouches_for(&object.to_string())
    }

    fn flavor_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cores"],
                    "properties": {
                        "cores": {"type": "integer", "minimum": 1},
                        "architecture": {"type": "string", "enum": ["amd64", "arm64"], "default": "amd64"},
                        "description": {"type": "string", "maxLength": 20},
                        "features": {"type": "array", "items": {"type": "string"}},
                    }
                },
                "status": {"type": "object", "properties": {
                    "since": {"type": "string", "format": "date-time"},
                }}
            }
        })
    }

    fn flavor(spec: Value) -> Value {
        json!({
            "apiVersion": "cloud.example.com/v1",
            "kind": "CPUFlavor",
            "metadata": {"name": "small", "labels": {"tier": "small"}},
            "spec": spec,
            "status": {"since": "2026-01-01T00:00:00Z"},
        })
    }

    #[test]
    fn a_valid_object_that_preparing_leaves_alone_is_vouched_for() {
        let object = flavor(json!({"cores": 4, "architecture": "arm64", "features": ["aes"]}));
        assert!(prepared_unchanged(&flavor_schema(), &object));
        assert!(vouches(&flavor_schema(), &object));
    }

    #[test]
    fn objects_that_preparing_would_reject_prune_or_default_are_not_vouched_for() {
        let schema = flavor_schema();
        for spec in [
            json!({"cores": 0, "architecture": "arm64"}),
            json!({"cores": "4", "architecture": "arm64"}),
            json!({"architecture": "arm64"}),
            json!({"cores": 4, "architecture": "riscv"}),
            json!({"cores": 4}),
            json!({"cores": 4, "architecture": null}),
            json!({"cores": 4, "architecture": "arm64", "color": "red"}),
            json!({"cores": 4, "architecture": "arm64", "description": "x".repeat(21)}),
            json!({"cores": 4, "architecture": "arm64", "features": [{"a": 1}]}),
        ] {
            let object = flavor(spec.clone());
            assert!(!prepared_unchanged(&schema, &object), "{spec}");
            assert!(!vouches(&schema, &object), "{spec}");
        }
        // A whole float for an integer is accepted the full way, after reading it as an integer;
        // the check leaves that to the full way.
        let whole = flavor(json!({"cores": 4.0, "architecture": "arm64"}));
        assert!(prepared_unchanged(&schema, &whole));
        assert!(!vouches(&schema, &whole));
        let mut late = flavor(json!({"cores": 4, "architecture": "arm64"}));
        late["status"]["since"] = json!("2026-02-30T00:00:00Z");
        assert!(!vouches(&schema, &late));
        late["extra"] = json!(1);
        assert!(!vouches(&schema, &late));
    }

    #[test]
    fn patterns_and_formats_are_checked_by_jsonschema_itself() {
        let mut schema = flavor_schema();
        let description = &mut schema["properties"]["spec"]["properties"]["description"];
        description["pattern"] = json!("^x\\S+$");
        description["format"] = json!("email");
        let good = flavor(json!({"cores": 4, "architecture": "arm64", "description": "x@a.io"}));
        assert!(prepared_unchanged(&schema, &good));
        assert!(vouches(&schema, &good));
        for bad in ["y@a.io", "x@", "x @a.io"] {
            let object = flavor(json!({"cores": 4, "architecture": "arm64", "description": bad}));
            assert!(!prepared_unchanged(&schema, &object), "{bad}");
            assert!(!vouches(&schema, &object), "{bad}");
        }
    }

    #[test]
    fn keywords_the_check_does_not_evaluate_make_it_unsure() {
        let mut schema = flavor_schema();
        schema["properties"]["spec"]["properties"]["description"]["x-kubernetes-validations"] =
            json!([{"rule": "self.startsWith('x')"}]);
        let object = flavor(json!({"cores": 4, "architecture": "arm64", "description": "xy"}));
        assert!(prepared_unchanged(&schema, &object));
        assert!(!vouches(&schema, &object));
        // The same object without that member is still vouched for.
        let object = flavor(json!({"cores": 4, "architecture": "arm64"}));
        assert!(vouches(&schema, &object));
    }

    #[test]
    fn text_that_is_not_one_json_object_is_not_vouched_for() {
        let check = TextCheck::compile(&flavor_schema());
        for text in ["", "[]", "{", "{} {}", "{\"spec\": {\"cores\": 1}", "null"] {
            assert!(!check.vouches_for(text), "{text}");
        }
    }

    #[test]
    fn date_times_vouched_for_are_ones_jsonschema_accepts() {
        for ok in [
            "2026-01-01T00:00:00Z",
            "2024-02-29T23:59:59.123456789+05:30",
            "2000-12-31T10:00:00-00:00",
        ] {
            assert!(is_plain_date_time(ok), "{ok}");
        }
        for bad in [
            "2026-01-01 00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:59:60Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01t00:00:00z",
            "2026-1-01T00:00:00Z",
        ] {
            assert!(!is_plain_date_time(bad), "{bad}");
        }
    }

    /// A small deterministic generator (xorshift), so that failures replay.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    const STRINGS: [&str; 8] = [
        "",
        "amd64",
        "arm64",
        "2026-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "héllo wörld",
        "12",
        "a-much-longer-string-than-the-others",
    ];

    fn random_schema(rng: &mut Rng, depth: u32) -> Value {
        let mut node = serde_json::Map::new();
        let kind = if depth == 0 {
            rng.below(5)
        } else {
            rng.below(8)
        };
        match kind {
            0 => {
                node.insert("type".into(), json!("string"));
                if rng.chance(30) {
                    node.insert("enum".into(), json!(["amd64", "arm64", ""]));
                }
                if rng.chance(30) {
                    node.insert("maxLength".into(), json!(rng.below(12)));
                }
                if rng.chance(20) {
                    node.insert("minLength".into(), json!(rng.below(3)));
                }
                if rng.chance(20) {
                    let format = *rng.pick(&["date-time", "int32", "email", "byte", "uuid"]);
                    node.insert("format".into(), json!(format));
                }
                if rng.chance(15) {
                    let pattern = *rng.pick(&["^a", "\\d", "^\\S*$", "^(amd64|arm64)$", "w"]);
                    node.insert("pattern".into(), json!(pattern));
                }
            }
            1 => {
                node.insert("type".into(), json!("integer"));
                if rng.chance(40) {
                    node.insert("minimum".into(), json!(rng.below(4) as i64 - 1));
                }
                if rng.chance(30) {
                    node.insert("maximum".into(), json!(rng.below(100)));
                }
                if rng.chance(20) {
                    node.insert("exclusiveMinimum".into(), json!(rng.chance(50)));
                }
                if rng.chance(10) {
                    node.insert("maximum".into(), json!(10.5));
                }
                if rng.chance(10) {
                    node.insert("enum".into(), json!([1, 2, 56, -3]));
                }
                if rng.chance(10) {
                    node.insert("multipleOf".into(), json!(*rng.pick(&[2, 3, 7])));
                }
            }
            2 => {
                node.insert("type".into(), json!("number"));
                if rng.chance(30) {
                    node.insert("minimum".into(), json!(0));
                }
                if rng.chance(20) {
                    node.insert("multipleOf".into(), json!(0.5));
                }
            }
            3 => {
                node.insert("type".into(), json!("boolean"));
            }
            4 => {
                node.insert("x-kubernetes-int-or-string".into(), json!(true));
                if rng.chance(20) {
                    node.insert("maxLength".into(), json!(3));
                }
            }
            5 | 6 => {
                node.insert("type".into(), json!("object"));
                let mut properties = serde_json::Map::new();
                for name in NAMES.iter().take(rng.below(4) as usize) {
                    properties.insert((*name).into(), random_schema(rng, depth - 1));
                }
                let names: Vec<String> = properties.keys().cloned().collect();
                if !properties.is_empty() || rng.chance(50) {
                    node.insert("properties".into(), Value::Object(properties));
                }
                if !names.is_empty() && rng.chance(40) {
                    node.insert("required".into(), json!([names[0]]));
                }
                match rng.below(8) {
                    0 => {
                        node.insert("additionalProperties".into(), json!(true));
                    }
                    1 => {
                        node.insert("additionalProperties".into(), json!(false));
                    }
                    2 => {
                        node.insert("additionalProperties".into(), random_schema(rng, depth - 1));
                    }
                    3 => {
                        node.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
                    }
                    _ => {}
                }
                if rng.chance(15) {
                    node.insert("maxProperties".into(), json!(rng.below(4)));
                }
                if rng.chance(5) {
                    node.insert("x-kubernetes-validations".into(), json!([{"rule": "true"}]));
                }
            }
            _ => {
                node.insert("type".into(), json!("array"));
                if rng.chance(85) {
                    node.insert("items".into(), random_schema(rng, depth - 1));
                }
                if rng.chance(20) {
                    node.insert("maxItems".into(), json!(rng.below(3)));
                }
                if rng.chance(10) {
                    node.insert("x-kubernetes-list-type".into(), json!("set"));
                }
            }
        }
        if rng.chance(15) {
            node.insert("nullable".into(), json!(true));
        }
        if rng.chance(10) {
            node.insert("default".into(), random_value(rng, 1));
        }
        Value::Object(node)
    }

    fn random_value(rng: &mut Rng, depth: u32) -> Value {
        match rng.below(if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(rng.chance(50)),
            2 => json!(rng.below(200) as i64 - 50),
            3 => json!(*rng.pick(&[1.0, 2.5, -0.5, 1e3])),
            4 | 5 => json!(*rng.pick(&STRINGS)),
            6 => Value::Array(
                (0..rng.below(3))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
            _ => {
                let mut map = serde_json::Map::new();
                for name in NAMES {
                    if rng.chance(50) {
                        map.insert(name.into(), random_value(rng, depth - 1));
                    }
                }
                Value::Object(map)
            }
        }
    }

    /// A value shaped after `schema`, sometimes off it.
    fn value_for(rng: &mut Rng, schema: &Value, depth: u32) -> Value {
        if rng.chance(8) || depth == 0 {
            return random_value(rng, 1);
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            return rng.pick(values).clone();
        }
        let kind = if schema.get("x-kubernetes-int-or-string").is_some() {
            if rng.chance(50) { "integer" } else { "string" }
        } else {
            schema.get("type").and_then(Value::as_str).unwrap_or("")
        };
        match kind {
            "string" => json!(*rng.pick(&STRINGS)),
            "integer" => json!(rng.below(120) as i64 - 10),
            "number" => json!(*rng.pick(&[0.5, 3.0, 7.25])),
            "boolean" => json!(rng.chance(50)),
            "array" => {
                let items = schema.get("items").cloned().unwrap_or(json!({}));
                Value::Array(
                    (0..rng.below(3))
                        .map(|_| value_for(rng, &items, depth - 1))
                        .collect(),
                )
            }
            "object" => {
                let mut map = serde_json::Map::new();
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (name, sub) in properties {
                        if rng.chance(80) {
                            map.insert(name.clone(), value_for(rng, sub, depth - 1));
                        }
                    }
                }
                if rng.chance(15) {
                    map.insert("d".into(), random_value(rng, 1));
                }
                Value::Object(map)
            }
            _ => random_value(rng, 1),
        }
    }

    #[test]
    fn the_check_never_vouches_for_an_object_the_full_way_would_reject_or_change() {
        let seed = std::env::var("FAST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
        let mut rng = Rng(seed);
        let (mut vouched, mut cases) = (0, 0);
        for _ in 0..std::env::var("FAST_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4000)
        {
            let spec = random_schema(&mut rng, 3);
            let schema = json!({"type": "object", "properties": {"spec": spec.clone()}});
            // A schema that does not compile serves nothing.
            if Structural::compile(&schema).is_err() {
                continue;
            }
            for _ in 0..5 {
                let object = json!({
                    "apiVersion": "v1",
                    "kind": "Thing",
                    "metadata": {"name": "x"},
                    "spec": value_for(&mut rng, &spec, 4),
                });
                cases += 1;
                if vouches(&schema, &object) {
                    vouched += 1;
                    assert!(
                        prepared_unchanged(&schema, &object),
                        "vouched for {object} against {schema}"
                    );
                }
            }
        }
        // The check is useful: it vouches for a good share of the generated objects.
        eprintln!("vouched for {vouched} of {cases}");
        assert!(vouched * 5 > cases, "vouched for {vouched} of {cases}");
    }
}
