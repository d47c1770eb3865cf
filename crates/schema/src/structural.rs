//! Preparation of a custom resource at ingest, the way kube-apiserver stores an object of a CRD:
//! the OpenAPI v3 structural schema of one APIResourceSchema version is compiled once into a
//! [`Structural`], which then prunes unknown fields, applies `default`s and validates an object
//! (structure and formats through [`Validator`], then `x-kubernetes-list-type` uniqueness, then
//! the CEL rules of `x-kubernetes-validations`).
//!
//! Behaviour worth knowing:
//! - Pruning keeps a field only when the node's `properties` name it, or the node has an
//!   `additionalProperties` schema (values pruned by it) or `additionalProperties: true` (values
//!   kept as they are). `x-kubernetes-preserve-unknown-fields: true` keeps unknown fields but
//!   still prunes below the known ones (and, for arrays, below the items' known fields).
//!   `allOf`/`anyOf`/`oneOf`/`not` never add fields. An object node without properties prunes
//!   every field (`status: {type: object}` empties `status`), as Kubernetes does.
//! - The root `apiVersion`, `kind` and `metadata` are never pruned, defaulted or looked into;
//!   nodes with `x-kubernetes-embedded-resource: true` keep their `apiVersion`, `kind` and
//!   `metadata` too (their metadata may receive schema defaults).
//! - Defaults are pruned once, at compile time. A default is applied where the property is
//!   absent, or `null` on a node that is not `nullable`; the same for array items and
//!   `additionalProperties` values that are `null`; defaults inside an applied default apply too.
//!   `default: null` means no default.
//! - `x-kubernetes-list-type: set` rejects repeated items (whole numbers written `1.0` equal `1`);
//!   `map` rejects items whose `x-kubernetes-list-map-keys` values repeat, and items that are not
//!   objects. Errors are `Duplicate value: <value>` at the later item (values rendered as JSON,
//!   where Kubernetes prints Go syntax for key maps).
//! - CEL (`cel` crate): rules are compiled once; `self` is the node's value (never `null`: null
//!   values are not checked), with `integer` fields as `int`, `number` fields as `double`,
//!   `format: byte` strings as `bytes`, `date-time`/`date` as `timestamp`, `duration` as
//!   `duration`; declared property names are escaped as Kubernetes does (`x-y` →
//!   `x__dash__y`, `namespace` → `__namespace__`); at the root and on embedded resources
//!   `metadata` shows only `name` and `generateName`. The standard library plus the `strings`
//!   and `lists` extensions are available; Kubernetes-only libraries (`isSorted()`, `quantity()`,
//!   `url()`, `ip()`, `find()`, ...) are not: a rule that reaches a function missing here is
//!   accepted, not failed. Transition rules (those using `oldSelf`) and rules that do not
//!   compile here are skipped and listed by [`Structural::skipped_rules`]; there is no cost
//!   budget. When structural validation found a type error or an unsupported enum value, rules
//!   are not evaluated and one extra error says so (as Kubernetes does).
//! - A panic inside the `cel` crate, while compiling or evaluating, is caught: the rule is
//!   skipped or accepted.
//!
//! Errors use Kubernetes' shapes: `spec: Invalid value: "object": replicas must not exceed
//! maxReplicas`, `spec.ports[1]: Duplicate value: {"containerPort":80,"protocol":"TCP"}`.
//! At most 20 errors are returned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use base64::Engine as _;
use cel::{Context, Env, ExecutionError, Program, Value as CelValue};
use serde_json::{Map, Value};

use super::fast::TextCheck;
use super::validate::{FieldError, SchemaError, Validator};

/// At most this many field errors are reported for one object.
const MAX_ERRORS: usize = 20;

/// Fields of a resource (the root, or an embedded resource) that pruning never removes.
const RESOURCE_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Words CEL reserves: a property with such a name is reached as `__name__`.
const CEL_RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Standard functions the `cel` crate implements fully: a missing overload of one of them (or
/// of an operator) is a real type error, while one of any other function may be a
/// Kubernetes-only overload missing here.
const CORE_FUNCTIONS: [&str; 13] = [
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "duration",
    "timestamp",
];

/// Message Kubernetes adds when rules were not evaluated because of earlier errors.
const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was \
                                 invalid; correct the existing errors to complete validation";

/// A `x-kubernetes-validations` rule accepted without being evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedRule {
    /// Where the rule sits in the schema, as a field path (`spec.ports[*]`, empty for the root).
    pub path: String,
    /// The rule's CEL source (empty when the entry had none).
    pub rule: String,
    /// Why it is not evaluated (transition rule, does not compile here, malformed entry).
    pub reason: String,
}

/// A compiled schema that prepares objects the way kube-apiserver stores a custom resource:
/// prune unknown fields, apply defaults, then validate (structure, formats, x-kubernetes-*
/// rules, CEL). `Send + Sync`, meant to be shared behind an `Arc`.
pub struct Structural {
    root: Node,
    validator: Validator,
    cel: Option<CelRuntime>,
    skipped: Vec<SkippedRule>,
    text: TextCheck,
}

impl fmt::Debug for Structural {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Structural")
            .field("validator", &self.validator)
            .field("evaluates_rules", &self.cel.is_some())
            .field("skipped_rules", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Structural {
    /// Compiles one version's OpenAPI v3 schema (what a CRD keeps under `openAPIV3Schema`).
    /// Fails with [`SchemaError`] when [`Validator::compile`] does; CEL rules that cannot be
    /// evaluated here never fail the schema (see [`Structural::skipped_rules`]).
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let validator = Validator::compile(schema)?;
        let mut compiler = Compiler::default();
        let root = compiler.node(schema, "");
        let cel = compiler
            .env
            .filter(|_| root.rules_below)
            .and_then(CelRuntime::new);
        Ok(Structural {
            root,
            validator,
            cel,
            skipped: compiler.skipped,
            text: TextCheck::compile(schema),
        })
    }

    /// Prune then default in place, then validate. Err = every error found (≤ 20), in
    /// Kubernetes' order: structural errors, list-type errors, then CEL rule errors. The object
    /// stays pruned and defaulted even when it is rejected.
    pub fn prepare(&self, object: &mut Value) -> Result<(), Vec<FieldError>> {
        self.prepare_noting_changes(object).0
    }

    /// [`Structural::prepare`], also telling whether pruning or defaulting changed anything
    /// besides the root's `apiVersion`, `kind` and `metadata` (which neither touches): when
    /// they did not, the object's members other than those three are exactly as they came.
    pub fn prepare_noting_changes(
        &self,
        object: &mut Value,
    ) -> (Result<(), Vec<FieldError>>, bool) {
        let mut changed = false;
        prune(object, Some(&self.root), true, &mut changed);
        if self.root.defaults_below {
            apply_defaults(object, &self.root, true, &mut changed);
        }
        (self.validate_prepared(object), changed)
    }

    /// The validation half of [`Structural::prepare`].
    fn validate_prepared(&self, object: &Value) -> Result<(), Vec<FieldError>> {
        let mut errors = self.validator.validate(object).err().unwrap_or_default();
        if self.root.lists_below && errors.len() < MAX_ERRORS {
            check_lists(object, &self.root, "", true, &mut errors);
        }
        if let Some(cel) = &self.cel
            && errors.len() < MAX_ERRORS
        {
            if errors.iter().any(blocks_rules) {
                errors.push(FieldError {
                    path: String::new(),
                    message: format!("Invalid value: \"null\": {RULES_NOT_CHECKED}"),
                });
            } else {
                cel.check(object, &self.root, "", true, &mut errors);
            }
        }
        errors.truncate(MAX_ERRORS);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The streaming check that vouches for objects [`Structural::prepare`] would leave
    /// unchanged and accept, without building their value tree.
    pub fn text_check(&self) -> &TextCheck {
        &self.text
    }

    /// Rules of `x-kubernetes-validations` that [`Structural::prepare`] accepts without
    /// evaluating them: transition rules (`oldSelf`), rules the `cel` crate cannot parse, and
    /// malformed entries.
    pub fn skipped_rules(&self) -> &[SkippedRule] {
        &self.skipped
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled schema tree
// ---------------------------------------------------------------------------------------------

/// One schema node, reduced to what pruning, defaulting and the extra checks need.
#[derive(Debug, Default)]
struct Node {
    /// `type`, empty when absent (int-or-string and untyped nodes).
    type_name: String,
    nullable: bool,
    preserve_unknown: bool,
    embedded: bool,
    format: Format,
    properties: BTreeMap<String, Node>,
    additional: Additional,
    items: Option<Box<Node>>,
    default: Option<Value>,
    list: ListType,
    rules: Vec<Rule>,
    /// This node or one below has a default.
    defaults_below: bool,
    /// This node or one below is a `set` or `map` list.
    lists_below: bool,
    /// This node or one below has an evaluable rule.
    rules_below: bool,
}

#[derive(Debug, Default)]
enum Additional {
    /// No `additionalProperties` (or `false`): unknown keys are pruned.
    #[default]
    Absent,
    /// `additionalProperties: true`: every key kept, values untouched.
    Any,
    /// Every key kept, values handled by this schema.
    Schema(Box<Node>),
}

/// String formats that change the CEL type of a value.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Format {
    #[default]
    Plain,
    Bytes,
    DateTime,
    Date,
    Duration,
}

#[derive(Debug, Default)]
enum ListType {
    #[default]
    Atomic,
    Set,
    Map(Vec<String>),
}

/// One compiled `x-kubernetes-validations` entry.
#[derive(Debug)]
struct Rule {
    source: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
    reason: RuleReason,
    field_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RuleReason {
    Invalid,
    Forbidden,
    Required,
    Duplicate,
}

impl Rule {
    /// Kubernetes' short name of the rule in messages: its message, else its source.
    fn error_string(&self) -> &str {
        self.message.as_deref().unwrap_or(self.source.trim())
    }

    /// The message of a failed rule when no message expression gives one.
    fn message_or_default(&self) -> String {
        match &self.message {
            Some(message) => message.clone(),
            None => format!("failed rule: {}", self.source.trim()),
        }
    }
}

/// Builds [`Node`]s, compiling CEL rules with one shared environment.
#[derive(Default)]
struct Compiler {
    env: Option<Arc<Env>>,
    env_failed: bool,
    skipped: Vec<SkippedRule>,
}

impl Compiler {
    fn node(&mut self, schema: &Value, path: &str) -> Node {
        let Value::Object(source) = schema else {
            return Node::default();
        };
        let flag = |key: &str| source.get(key) == Some(&Value::Bool(true));
        let mut node = Node {
            type_name: source
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            nullable: flag("nullable"),
            preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
            embedded: flag("x-kubernetes-embedded-resource"),
            format: match source.get("format").and_then(Value::as_str) {
                Some("byte") => Format::Bytes,
                Some("date-time" | "datetime") => Format::DateTime,
                Some("date") => Format::Date,
                Some("duration") => Format::Duration,
                _ => Format::Plain,
            },
            list: list_type(source),
            ..Node::default()
        };
        if let Some(Value::Object(properties)) = source.get("properties") {
            for (name, sub) in properties {
                let child = self.node(sub, &child_path(path, name));
                node.properties.insert(name.clone(), child);
            }
        }
        node.additional = match source.get("additionalProperties") {
            Some(Value::Bool(true)) => Additional::Any,
            Some(sub @ Value::Object(_)) => {
                Additional::Schema(Box::new(self.node(sub, &format!("{path}[*]"))))
            }
            _ => Additional::Absent,
        };
        if let Some(items @ Value::Object(_)) = source.get("items") {
            node.items = Some(Box::new(self.node(items, &format!("{path}[*]"))));
        }
        if let Some(rules) = source.get("x-kubernetes-validations") {
            self.rules(rules, path, &mut node);
        }
        if let Some(default) = source.get("default").filter(|d| !d.is_null()) {
            let mut default = default.clone();
            prune(&mut default, Some(&node), false, &mut false);
            node.default = Some(default);
        }
        node.summarise();
        node
    }

    fn rules(&mut self, rules: &Value, path: &str, node: &mut Node) {
        let Value::Array(entries) = rules else {
            self.skip(path, "", "x-kubernetes-validations is not a list");
            return;
        };
        for entry in entries {
            let text = |key: &str| entry.get(key).and_then(Value::as_str);
            let Some(source) = text("rule") else {
                self.skip(path, "", "entry has no rule");
                continue;
            };
            let Some(env) = self.env() else {
                self.skip(path, source, "the CEL environment could not be built");
                continue;
            };
            let program = match compile_cel(&env, source) {
                Ok(program) => program,
                Err(reason) => {
                    self.skip(path, source, &format!("does not compile here: {reason}"));
                    continue;
                }
            };
            if program.references().has_variable("oldSelf") {
                self.skip(path, source, "transition rule (uses oldSelf)");
                continue;
            }
            let message_expression = text("messageExpression")
                .filter(|expression| !expression.trim().is_empty())
                .and_then(|expression| compile_cel(&env, expression).ok());
            node.rules.push(Rule {
                source: source.to_owned(),
                program,
                message: text("message")
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned),
                message_expression,
                reason: match text("reason") {
                    Some("FieldValueForbidden") => RuleReason::Forbidden,
                    Some("FieldValueRequired") => RuleReason::Required,
                    Some("FieldValueDuplicate") => RuleReason::Duplicate,
                    _ => RuleReason::Invalid,
                },
                field_path: text("fieldPath")
                    .map(|p| p.trim().trim_start_matches('.').to_owned())
                    .filter(|p| !p.is_empty()),
            });
        }
    }

    /// The shared environment: the standard library plus the `strings` and `lists` extensions.
    fn env(&mut self) -> Option<Arc<Env>> {
        if self.env.is_none() && !self.env_failed {
            let built = catch_unwind(|| {
                let mut env = Env::stdlib();
                // An extension that cannot be added only leaves its functions out.
                let _ = env.add_extension(cel::extensions::strings);
                let _ = env.add_extension(cel::extensions::lists);
                Arc::new(env)
            });
            match built {
                Ok(env) => self.env = Some(env),
                Err(_) => self.env_failed = true,
            }
        }
        self.env.clone()
    }

    fn skip(&mut self, path: &str, rule: &str, reason: &str) {
        self.skipped.push(SkippedRule {
            path: path.to_owned(),
            rule: rule.to_owned(),
            reason: reason.to_owned(),
        });
    }
}

impl Node {
    /// Sets the `*_below` flags from this node and its children.
    fn summarise(&mut self) {
        let mut children: Vec<&Node> = self.properties.values().collect();
        if let Additional::Schema(extra) = &self.additional {
            children.push(extra);
        }
        if let Some(items) = &self.items {
            children.push(items);
        }
        let defaults_below = children
            .iter()
            .any(|c| c.defaults_below || c.default.is_some());
        let lists_below = children.iter().any(|c| c.lists_below);
        let rules_below = children.iter().any(|c| c.rules_below);
        self.defaults_below = defaults_below;
        self.lists_below = lists_below || !matches!(self.list, ListType::Atomic);
        self.rules_below = rules_below || !self.rules.is_empty();
    }
}

fn list_type(source: &Map<String, Value>) -> ListType {
    match source.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            source
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListType::Atomic,
    }
}

/// The deepest nesting of parentheses, brackets and braces a CEL rule may have. The parser
/// recurses once per level; far deeper input (the fuzzer found 80 levels) overflows a thread's
/// stack, which no `catch_unwind` survives. Real rules stay within a handful of levels.
pub const MAX_CEL_NESTING: usize = 32;

/// How deeply `source` nests `(`, `[` and `{` outside string literals.
fn cel_nesting(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Compiles CEL source, turning a parse error or a panic of the parser into a reason.
fn compile_cel(env: &Env, source: &str) -> Result<Program, String> {
    let nesting = cel_nesting(source);
    if nesting > MAX_CEL_NESTING {
        return Err(format!(
            "the rule nests {nesting} levels deep; at most {MAX_CEL_NESTING} are allowed"
        ));
    }
    match catch_unwind(AssertUnwindSafe(|| env.compile(source))) {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(errors)) => Err(errors.to_string().lines().next().unwrap_or("").to_owned()),
        Err(_) => Err("the CEL parser failed".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Pruning and defaulting
// ---------------------------------------------------------------------------------------------

/// Removes what `node` does not specify. `None` stands for "no schema": objects lose every
/// field. `resource` is true for the root object.
fn prune(value: &mut Value, node: Option<&Node>, resource: bool, changed: &mut bool) {
    let Some(node) = node else {
        prune_everything(value, changed);
        return;
    };
    if node.preserve_unknown {
        prune_below_known(value, node, resource, changed);
        return;
    }
    match value {
        Value::Object(map) => {
            let keeps_resource_fields = resource || node.embedded;
            map.retain(|key, child| {
                if keeps_resource_fields && RESOURCE_FIELDS.contains(&key.as_str()) {
                    return true;
                }
                if let Some(property) = node.properties.get(key) {
                    prune(child, Some(property), false, changed);
                    return true;
                }
                match &node.additional {
                    Additional::Schema(extra) => {
                        prune(child, Some(extra), false, changed);
                        true
                    }
                    Additional::Any => true,
                    Additional::Absent => {
                        *changed = true;
                        false
                    }
                }
            });
        }
        Value::Array(items) => {
            for item in items {
                prune(item, node.items.as_deref(), false, changed);
            }
        }
        _ => {}
    }
}

fn prune_everything(value: &mut Value, changed: &mut bool) {
    match value {
        Value::Object(map) => {
            *changed |= !map.is_empty();
            map.clear();
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| prune_everything(item, changed)),
        _ => {}
    }
}

/// Pruning under `x-kubernetes-preserve-unknown-fields`: unknown fields stay, known ones are
/// pruned by their schema.
fn prune_below_known(value: &mut Value, node: &Node, resource: bool, changed: &mut bool) {
    match value {
        Value::Object(map) => {
            let keeps_resource_fields = resource || node.embedded;
            for (key, child) in map.iter_mut() {
                if keeps_resource_fields && RESOURCE_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                if let Some(property) = node.properties.get(key) {
                    prune(child, Some(property), false, changed);
                } else if let Additional::Schema(extra) = &node.additional {
                    prune(child, Some(extra), false, changed);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = &node.items {
                for item in items {
                    prune_below_known(item, item_node, false, changed);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default`s below `value` (the root's `apiVersion`, `kind` and `metadata` excluded).
fn apply_defaults(value: &mut Value, node: &Node, resource: bool, changed: &mut bool) {
    let skip = |key: &str| resource && RESOURCE_FIELDS.contains(&key);
    match value {
        Value::Object(map) => {
            for (key, property) in &node.properties {
                let Some(default) = &property.default else {
                    continue;
                };
                if skip(key) {
                    continue;
                }
                let replace = match map.get(key) {
                    None => true,
                    Some(Value::Null) => !property.nullable,
                    Some(_) => false,
                };
                if replace {
                    map.insert(key.clone(), default.clone());
                    *changed = true;
                }
            }
            for (key, child) in map.iter_mut() {
                if skip(key) {
                    continue;
                }
                if let Some(property) = node.properties.get(key) {
                    if property.defaults_below {
                        apply_defaults(child, property, false, changed);
                    }
                } else if let Additional::Schema(extra) = &node.additional {
                    default_element(child, extra, changed);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = &node.items {
                for item in items {
                    default_element(item, item_node, changed);
                }
            }
        }
        _ => {}
    }
}

/// Defaulting of one array item or map value: a non-nullable `null` takes the default.
fn default_element(value: &mut Value, node: &Node, changed: &mut bool) {
    if value.is_null()
        && !node.nullable
        && let Some(default) = &node.default
    {
        *value = default.clone();
        *changed = true;
    }
    if node.defaults_below {
        apply_defaults(value, node, false, changed);
    }
}

// ---------------------------------------------------------------------------------------------
// List types
// ---------------------------------------------------------------------------------------------

fn check_lists(value: &Value, node: &Node, path: &str, resource: bool, out: &mut Vec<FieldError>) {
    if !node.lists_below || out.len() >= MAX_ERRORS {
        return;
    }
    match value {
        Value::Array(items) => {
            match &node.list {
                ListType::Atomic => {}
                ListType::Set => check_set(items, path, out),
                ListType::Map(keys) => check_map_list(items, keys, path, out),
            }
            if let Some(item_node) = &node.items {
                for (index, item) in items.iter().enumerate() {
                    check_lists(item, item_node, &index_path(path, index), false, out);
                }
            }
        }
        Value::Object(map) => {
            for (key, child) in map {
                if resource && RESOURCE_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                if let Some(property) = node.properties.get(key) {
                    check_lists(child, property, &child_path(path, key), false, out);
                } else if let Additional::Schema(extra) = &node.additional {
                    check_lists(child, extra, &key_path(path, key), false, out);
                }
            }
        }
        _ => {}
    }
}

fn check_set(items: &[Value], path: &str, out: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        if !seen.insert(canonical(item)) {
            out.push(duplicate(index_path(path, index), item));
        }
    }
}

fn check_map_list(items: &[Value], keys: &[String], path: &str, out: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        let entry = match item {
            Value::Null => continue,
            Value::Object(entry) => entry,
            other => {
                out.push(FieldError {
                    path: index_path(path, index),
                    message: format!(
                        "Invalid value: {}: must be an object for an array of list-type map",
                        render(other)
                    ),
                });
                continue;
            }
        };
        if keys.is_empty() {
            continue;
        }
        // A missing key counts as one more value ("unspecified"), equal to itself.
        let tuple: Vec<Option<String>> = keys
            .iter()
            .map(|key| entry.get(key).map(canonical))
            .collect();
        if !seen.insert(tuple) {
            let key_values: Map<String, Value> = keys
                .iter()
                .filter_map(|key| entry.get(key).map(|v| (key.clone(), v.clone())))
                .collect();
            out.push(duplicate(
                index_path(path, index),
                &Value::Object(key_values),
            ));
        }
    }
}

fn duplicate(path: String, value: &Value) -> FieldError {
    FieldError {
        path,
        message: format!("Duplicate value: {}", render(value)),
    }
}

/// A text equal for equal JSON values: object keys sorted, whole floats written as integers.
fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Number(number) => match number.as_f64() {
            Some(float)
                if !number.is_i64()
                    && !number.is_u64()
                    && float.fract() == 0.0
                    && float.abs() < 9.0e15 =>
            {
                out.push_str(&format!("{}", float as i64));
            }
            _ => out.push_str(&number.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// CEL rules
// ---------------------------------------------------------------------------------------------

/// The CEL environment and the helper programs that turn formatted strings into CEL values.
struct CelRuntime {
    env: Arc<Env>,
    timestamp: Program,
    date: Program,
    duration: Program,
}

/// What evaluating one rule came to.
enum Outcome {
    Passed,
    Failed,
    /// An error Kubernetes would report, with its detail.
    Error(String),
    /// The rule needs something missing here: accepted.
    Unsupported,
}

impl CelRuntime {
    fn new(env: Arc<Env>) -> Option<Self> {
        let helper = |source: &str| compile_cel(&env, source).ok();
        Some(CelRuntime {
            timestamp: helper("timestamp(v)")?,
            date: helper("timestamp(v + 'T00:00:00Z')")?,
            duration: helper("duration(v)")?,
            env,
        })
    }

    /// Evaluates every rule at and below `node`, parents before children.
    fn check(
        &self,
        value: &Value,
        node: &Node,
        path: &str,
        resource: bool,
        out: &mut Vec<FieldError>,
    ) {
        if !node.rules_below || value.is_null() || out.len() >= MAX_ERRORS {
            return;
        }
        if !node.rules.is_empty() {
            let this = self.to_cel(value, Some(node), resource);
            let mut context = Context::with_env(Arc::clone(&self.env));
            context.add_variable_from_value("self", this);
            for rule in &node.rules {
                if let Some(error) = self.evaluate(rule, &context, node, path) {
                    out.push(error);
                }
            }
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if (resource || node.embedded) && RESOURCE_FIELDS.contains(&key.as_str()) {
                        continue;
                    }
                    if let Some(property) = node.properties.get(key) {
                        self.check(child, property, &child_path(path, key), false, out);
                    } else if let Additional::Schema(extra) = &node.additional {
                        self.check(child, extra, &key_path(path, key), false, out);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_node) = &node.items {
                    for (index, item) in items.iter().enumerate() {
                        self.check(item, item_node, &index_path(path, index), false, out);
                    }
                }
            }
            _ => {}
        }
    }

    fn evaluate(
        &self,
        rule: &Rule,
        context: &Context<'_, '_>,
        node: &Node,
        path: &str,
    ) -> Option<FieldError> {
        let invalid = |detail: String| FieldError {
            path: path.to_owned(),
            message: format!("Invalid value: \"{}\": {detail}", node.type_name),
        };
        match run(rule, context) {
            Outcome::Passed | Outcome::Unsupported => None,
            Outcome::Error(detail) => Some(invalid(detail)),
            Outcome::Failed => {
                let detail = rule
                    .message_expression
                    .as_ref()
                    .and_then(|expression| message_from(expression, context))
                    .unwrap_or_else(|| rule.message_or_default());
                let path = match &rule.field_path {
                    Some(field) => child_path(path, field),
                    None => path.to_owned(),
                };
                let message = match rule.reason {
                    RuleReason::Invalid => {
                        format!("Invalid value: \"{}\": {detail}", node.type_name)
                    }
                    RuleReason::Forbidden => format!("Forbidden: {detail}"),
                    RuleReason::Required => format!("Required value: {detail}"),
                    RuleReason::Duplicate => format!("Duplicate value: \"{}\"", node.type_name),
                };
                Some(FieldError { path, message })
            }
        }
    }

    /// The CEL value of `value` under `node` (`None`: no schema, types taken from the JSON).
    fn to_cel(&self, value: &Value, node: Option<&Node>, resource: bool) -> CelValue {
        match value {
            Value::Null => CelValue::Null,
            Value::Bool(flag) => CelValue::Bool(*flag),
            Value::Number(number) => cel_number(number, node.map_or("", |n| &n.type_name)),
            Value::String(text) => self.cel_string(text, node.map_or(Format::Plain, |n| n.format)),
            Value::Array(items) => {
                let item_node = node.and_then(|n| n.items.as_deref());
                CelValue::List(Arc::new(
                    items
                        .iter()
                        .map(|item| self.to_cel(item, item_node, false))
                        .collect(),
                ))
            }
            Value::Object(map) => {
                let is_resource = resource || node.is_some_and(|n| n.embedded);
                let mut fields: HashMap<String, CelValue> = HashMap::new();
                let mut unknown = Vec::new();
                for (key, child) in map {
                    if is_resource && key == "metadata" {
                        fields.insert(key.clone(), cel_metadata(child));
                    } else if let Some(property) = node.and_then(|n| n.properties.get(key)) {
                        if let Some(name) = escape_property(key) {
                            fields.insert(name, self.to_cel(child, Some(property), false));
                        }
                    } else if let Some(Additional::Schema(extra)) = node.map(|n| &n.additional) {
                        fields.insert(key.clone(), self.to_cel(child, Some(extra), false));
                    } else {
                        unknown.push((key, child));
                    }
                }
                for (key, child) in unknown {
                    if !fields.contains_key(key.as_str()) {
                        fields.insert(key.clone(), self.to_cel(child, None, false));
                    }
                }
                CelValue::from(fields)
            }
        }
    }

    fn cel_string(&self, text: &str, format: Format) -> CelValue {
        let converted = match format {
            Format::Plain => None,
            Format::Bytes => BASE64
                .decode(text.as_bytes())
                .ok()
                .map(|bytes| CelValue::Bytes(Arc::new(bytes))),
            Format::DateTime => self.convert(&self.timestamp, text),
            Format::Date => self.convert(&self.date, text),
            Format::Duration => self.convert(&self.duration, text),
        };
        converted.unwrap_or_else(|| CelValue::String(Arc::new(text.to_owned())))
    }

    /// Runs a one-argument helper program on `text`; `None` when it fails.
    fn convert(&self, helper: &Program, text: &str) -> Option<CelValue> {
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.add_variable_from_value("v", text.to_owned());
        catch_unwind(AssertUnwindSafe(|| helper.execute(&context)))
            .ok()?
            .ok()
    }
}

/// Evaluates a rule; only `true` passes.
fn run(rule: &Rule, context: &Context<'_, '_>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| rule.program.execute(context))) {
        Err(_) => Outcome::Unsupported,
        Ok(Ok(CelValue::Bool(true))) => Outcome::Passed,
        Ok(Ok(_)) => Outcome::Failed,
        Ok(Err(error)) => classify(&error, rule),
    }
}

/// Maps a CEL runtime error to the detail Kubernetes would report, or to "unsupported here".
fn classify(error: &ExecutionError, rule: &Rule) -> Outcome {
    let detail = match error {
        ExecutionError::UndeclaredReference(_) => return Outcome::Unsupported,
        ExecutionError::NoSuchOverload(overload) => {
            let name = overload.function();
            let operator = !name.starts_with(|c: char| c.is_ascii_alphabetic());
            if !operator && !CORE_FUNCTIONS.contains(&name) {
                return Outcome::Unsupported;
            }
            return Outcome::Error(no_overload(rule));
        }
        ExecutionError::UnsupportedBinaryOperator(..)
        | ExecutionError::ValuesNotComparable(..)
        | ExecutionError::UnexpectedType { .. } => return Outcome::Error(no_overload(rule)),
        ExecutionError::NoSuchKey(key) => format!("no such key: {key}"),
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".to_owned(),
        ExecutionError::Overflow(..) => "integer overflow".to_owned(),
        ExecutionError::IndexOutOfBounds(_) => "index out of range".to_owned(),
        other => other.to_string(),
    };
    Outcome::Error(format!("{detail} evaluating rule: {}", rule.error_string()))
}

/// Kubernetes' detail for an operator or function applied to values of the wrong types.
fn no_overload(rule: &Rule) -> String {
    format!(
        "'no such overload': call arguments did not match a supported operator, function or \
         macro signature for rule: {}",
        rule.error_string()
    )
}

/// A message expression's result when it is a usable message (a non-blank single line).
fn message_from(expression: &Program, context: &Context<'_, '_>) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(|| expression.execute(context))) {
        Ok(Ok(CelValue::String(text))) => {
            let text = text.trim();
            (!text.is_empty() && !text.contains('\n')).then(|| text.to_owned())
        }
        _ => None,
    }
}

fn cel_number(number: &serde_json::Number, type_name: &str) -> CelValue {
    let float = number.as_f64().unwrap_or(f64::NAN);
    match type_name {
        "number" => CelValue::Float(float),
        "integer" => match number.as_i64() {
            Some(int) => CelValue::Int(int),
            None if float.fract() == 0.0 && float.abs() < 9.0e18 => CelValue::Int(float as i64),
            None => number
                .as_u64()
                .map_or(CelValue::Float(float), CelValue::UInt),
        },
        _ => match (number.as_i64(), number.as_u64()) {
            (Some(int), _) => CelValue::Int(int),
            (None, Some(unsigned)) => CelValue::UInt(unsigned),
            _ => CelValue::Float(float),
        },
    }
}

/// `metadata` as CEL rules see it on a resource: only `name` and `generateName`.
fn cel_metadata(metadata: &Value) -> CelValue {
    let mut fields: HashMap<String, CelValue> = HashMap::new();
    for key in ["name", "generateName"] {
        if let Some(Value::String(text)) = metadata.get(key) {
            fields.insert(key.to_owned(), CelValue::String(Arc::new(text.clone())));
        }
    }
    CelValue::from(fields)
}

/// Kubernetes' escaping of a property name for CEL; `None` when the property is unreachable.
fn escape_property(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if CEL_RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut escaped = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("__") {
            escaped.push_str("__underscores__");
            rest = &rest[2..];
            continue;
        }
        match c {
            '.' => escaped.push_str("__dot__"),
            '-' => escaped.push_str("__dash__"),
            '/' => escaped.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => escaped.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(escaped)
}

/// Standard base64 with padding, as Kubernetes decodes `format: byte`.
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------------
// Errors and paths
// ---------------------------------------------------------------------------------------------

/// A structural error after which Kubernetes does not evaluate CEL rules: a wrong type or a
/// value outside an enum.
fn blocks_rules(error: &FieldError) -> bool {
    error.message.starts_with("Unsupported value")
        || (error.message.starts_with("Invalid value: \"")
            && error.message.contains(" must be of type "))
}

/// Compact JSON rendering, cut after 256 characters like [`Validator`]'s messages.
fn render(value: &Value) -> String {
    let rendered = value.to_string();
    match rendered.char_indices().nth(256) {
        Some((cut, _)) => format!("{}...", &rendered[..cut]),
        None => rendered,
    }
}

fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn key_path(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(schema: Value) -> Structural {
        match Structural::compile(&schema) {
            Ok(structural) => structural,
            Err(err) => panic!("schema should compile: {err}"),
        }
    }

    /// Prepares `object` and returns it with the rendered errors.
    fn prepare(structural: &Structural, mut object: Value) -> (Value, Vec<String>) {
        let errors = match structural.prepare(&mut object) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        (object, errors)
    }

    /// The CronTab schema of the Kubernetes CRD documentation, with defaults and rules added.
    fn crontab_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self.minReplicas <= self.replicas",
                         "message": "replicas should be greater than or equal to minReplicas"},
                        {"rule": "self.replicas <= self.maxReplicas"}
                    ],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string"},
                        "replicas": {"type": "integer", "default": 1},
                        "minReplicas": {"type": "integer", "default": 0},
                        "maxReplicas": {"type": "integer", "default": 10}
                    }
                },
                "status": {"type": "object"}
            }
        })
    }

    fn crontab(spec: Value) -> Value {
        json!({
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "my-new-cron-object", "uid": "u-1", "labels": {"a": "b"}},
            "spec": spec
        })
    }

    /// Schema `{"properties": {"value": field}}`; the object `{"value": value}`.
    fn check_field(field: Value, value: Value) -> (Value, Vec<String>) {
        let structural = compile(json!({"type": "object", "properties": {"value": field}}));
        let (object, errors) = prepare(&structural, json!({ "value": value }));
        (object["value"].clone(), errors)
    }

    // ----- pruning ------------------------------------------------------------------------------

    #[test]
    fn unknown_fields_are_pruned_at_every_level() {
        let structural = compile(crontab_schema());
        let (object, errors) = prepare(
            &structural,
            json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                   "metadata": {"name": "c"},
                   "spec": {"image": "my-awesome-cron-image", "someRandomField": 42},
                   "extra": true}),
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            object,
            json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                   "metadata": {"name": "c"},
                   "spec": {"image": "my-awesome-cron-image",
                            "replicas": 1, "minReplicas": 0, "maxReplicas": 10}})
        );
    }

    #[test]
    fn root_type_fields_and_metadata_are_never_pruned_nor_changed() {
        let structural = compile(json!({
            "type": "object",
            "properties": {
                "metadata": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "labels": {"type": "object", "default": {"x": "y"}}
                }},
                "spec": {"type": "object"}
            }
        }));
        let metadata = json!({"name": "c", "uid": "u-1", "annotations": {"k": "v"},
                              "managedFields": [{"manager": "kubectl"}]});
        let (object, errors) = prepare(
            &structural,
            json!({"apiVersion": "v1", "kind": "Thing", "metadata": metadata.clone()}),
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(object["metadata"], metadata);
        assert_eq!(object["apiVersion"], "v1");
        assert_eq!(object["kind"], "Thing");
    }

    #[test]
    fn an_object_schema_without_properties_prunes_everything_below() {
        let structural = compile(crontab_schema());
        let mut object = crontab(json!({"image": "i"}));
        object["status"] = json!({"phase": "Running", "conditions": []});
        let (object, _) = prepare(&structural, object);
        assert_eq!(object["status"], json!({}));
    }

    #[test]
    fn preserve_unknown_fields_keeps_unknown_fields_but_prunes_below_known_ones() {
        let structural = compile(json!({
            "type": "object",
            "properties": {"spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}
            }}
        }));
        let (object, _) = prepare(
            &structural,
            json!({"spec": {"free": {"deep": [1, {"x": 2}]}, "known": {"a": "kept", "b": "pruned"}}}),
        );
        assert_eq!(
            object,
            json!({"spec": {"free": {"deep": [1, {"x": 2}]}, "known": {"a": "kept"}}})
        );
    }

    #[test]
    fn additional_properties_keep_every_key_and_prune_their_values() {
        let structural = compile(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"selectors": {
                "type": "object",
                "additionalProperties": {"type": "object", "properties": {"match": {"type": "string"}}}
            }}}}
        }));
        let (object, _) = prepare(
            &structural,
            json!({"spec": {"selectors": {"web": {"match": "a", "junk": 1}, "db": {}}}}),
        );
        assert_eq!(
            object,
            json!({"spec": {"selectors": {"web": {"match": "a"}, "db": {}}}})
        );
    }

    #[test]
    fn additional_properties_true_keeps_values_untouched() {
        let (value, _) = check_field(
            json!({"type": "object", "additionalProperties": true}),
            json!({"a": {"b": [1, {"c": 2}]}}),
        );
        assert_eq!(value, json!({"a": {"b": [1, {"c": 2}]}}));
    }

    #[test]
    fn array_items_are_pruned_with_the_items_schema() {
        let (value, errors) = check_field(
            json!({"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}),
            json!([{"name": "a", "x": 1}, {"y": 2}]),
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(value, json!([{"name": "a"}, {}]));
    }

    #[test]
    fn embedded_resources_keep_their_type_fields_and_metadata() {
        let structural = compile(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"template": {
                "type": "object",
                "x-kubernetes-embedded-resource": true,
                "properties": {"spec": {"type": "object", "properties": {"image": {"type": "string"}}}}
            }}}}
        }));
        let template = json!({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": "p", "labels": {"a": "b"}},
                              "spec": {"image": "nginx", "junk": true}, "junk": 1});
        let (object, _) = prepare(&structural, json!({"spec": {"template": template}}));
        assert_eq!(
            object["spec"]["template"],
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
                   "spec": {"image": "nginx"}})
        );
    }

    #[test]
    fn combinators_do_not_protect_fields_from_pruning() {
        let (value, _) = check_field(
            json!({"type": "object", "properties": {"a": {"type": "string"}},
                   "allOf": [{"properties": {"b": {"type": "string"}}}],
                   "anyOf": [{"properties": {"c": {"type": "string"}}}]}),
            json!({"a": "x", "b": "y", "c": "z"}),
        );
        assert_eq!(value, json!({"a": "x"}));
    }

    // ----- defaulting ---------------------------------------------------------------------------

    #[test]
    fn absent_fields_get_their_defaults() {
        let structural = compile(crontab_schema());
        let (object, errors) = prepare(&structural, crontab(json!({"replicas": 3})));
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            object["spec"],
            json!({"replicas": 3, "minReplicas": 0, "maxReplicas": 10})
        );
    }

    #[test]
    fn preparing_says_whether_pruning_or_defaulting_changed_the_object() {
        let structural = compile(crontab_schema());
        let changed = |object: Value| {
            let mut object = object;
            let (result, changed) = structural.prepare_noting_changes(&mut object);
            assert!(result.is_ok(), "{result:?}");
            changed
        };
        let complete = json!({"replicas": 3, "minReplicas": 1, "maxReplicas": 5});
        assert!(!changed(crontab(complete.clone())));
        let mut with_metadata = crontab(complete.clone());
        with_metadata["metadata"]["unknownToTheSchema"] = json!("kept as it is");
        assert!(!changed(with_metadata));
        assert!(changed(crontab(json!({"replicas": 3}))), "defaults applied");
        let mut unknown = complete.clone();
        unknown["unknown"] = json!(1);
        assert!(changed(crontab(unknown)), "a field pruned");
        let mut unknown_root = crontab(complete);
        unknown_root["extra"] = json!({"a": 1});
        assert!(changed(unknown_root), "a root field pruned");
    }

    #[test]
    fn defaults_apply_inside_array_items_and_map_values() {
        let item = json!({"type": "object", "properties": {
            "protocol": {"type": "string", "default": "TCP"},
            "port": {"type": "integer"}
        }});
        let structural = compile(json!({"type": "object", "properties": {
            "ports": {"type": "array", "items": item.clone()},
            "named": {"type": "object", "additionalProperties": item}
        }}));
        let (object, errors) = prepare(
            &structural,
            json!({"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
                   "named": {"http": {"port": 80}}}),
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            object,
            json!({"ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                   "named": {"http": {"port": 80, "protocol": "TCP"}}})
        );
    }

    #[test]
    fn null_takes_the_default_only_where_the_field_is_not_nullable() {
        let structural = compile(json!({"type": "object", "properties": {
            "strict": {"type": "string", "default": "s"},
            "loose": {"type": "string", "nullable": true, "default": "l"},
            "list": {"type": "array", "items": {"type": "string", "default": "i"}},
            "map": {"type": "object", "additionalProperties": {"type": "integer", "default": 7}}
        }}));
        let (object, errors) = prepare(
            &structural,
            json!({"strict": null, "loose": null, "list": ["a", null], "map": {"k": null}}),
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            object,
            json!({"strict": "s", "loose": null, "list": ["a", "i"], "map": {"k": 7}})
        );
    }

    #[test]
    fn defaults_inside_a_defaulted_object_apply_too() {
        let structural = compile(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "default": {},
            "properties": {"config": {
                "type": "object",
                "default": {"mode": "fast"},
                "properties": {"mode": {"type": "string"}, "level": {"type": "integer", "default": 3}}
            }}
        }}}));
        let (object, _) = prepare(&structural, json!({"apiVersion": "v1"}));
        assert_eq!(
            object["spec"],
            json!({"config": {"mode": "fast", "level": 3}})
        );
    }

    #[test]
    fn unknown_fields_in_defaults_are_pruned_once_at_compile_time() {
        let (value, errors) = check_field(
            json!({"type": "object", "default": {"a": 1, "unknown": 2},
                   "properties": {"a": {"type": "integer"}}}),
            Value::Null,
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(value, json!({"a": 1}));
    }

    #[test]
    fn null_default_means_no_default() {
        let structural = compile(json!({"type": "object", "properties": {
            "a": {"type": "string", "nullable": true, "default": null}
        }}));
        let (object, _) = prepare(&structural, json!({}));
        assert_eq!(object, json!({}));
    }

    // ----- structural validation and list types -------------------------------------------------

    #[test]
    fn structural_errors_are_those_of_the_validator_after_pruning_and_defaulting() {
        let structural = compile(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "required": ["size"],
            "properties": {"size": {"type": "integer", "default": 1, "maximum": 5},
                           "name": {"type": "string", "maxLength": 3}}
        }}}));
        assert_eq!(
            prepare(&structural, json!({"spec": {}})).1,
            Vec::<String>::new()
        );
        assert_eq!(
            prepare(&structural, json!({"spec": {"size": 9, "name": "toolong"}})).1,
            vec![
                "spec.name: Too long: may not be more than 3 bytes".to_owned(),
                "spec.size: Invalid value: 9: spec.size in body should be less than or equal to 5"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn set_lists_reject_repeated_items() {
        let (_, errors) = check_field(
            json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}),
            json!(["a", "b", "a", "a"]),
        );
        assert_eq!(
            errors,
            vec![
                r#"value[2]: Duplicate value: "a""#.to_owned(),
                r#"value[3]: Duplicate value: "a""#.to_owned()
            ]
        );
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        let (_, errors) = check_field(
            json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "integer"}}),
            parse("[1, 2, 1.0]"),
        );
        assert_eq!(errors, vec!["value[2]: Duplicate value: 1.0".to_owned()]);
    }

    #[test]
    fn map_lists_reject_items_with_the_same_keys() {
        let ports = json!({
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
            "items": {"type": "object", "required": ["containerPort"], "properties": {
                "containerPort": {"type": "integer"},
                "protocol": {"type": "string", "default": "TCP"},
                "name": {"type": "string"}
            }}
        });
        let (_, errors) = check_field(
            ports.clone(),
            json!([{"containerPort": 80, "name": "http"},
                   {"containerPort": 80, "protocol": "UDP"},
                   {"containerPort": 80, "protocol": "TCP", "name": "again"}]),
        );
        assert_eq!(
            errors,
            vec![r#"value[2]: Duplicate value: {"containerPort":80,"protocol":"TCP"}"#.to_owned()]
        );
        let (_, errors) = check_field(ports, json!([{"containerPort": 80}, 5]));
        assert!(
            errors.contains(
                &"value[1]: Invalid value: 5: must be an object for an array of list-type map"
                    .to_owned()
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn atomic_lists_may_repeat_items() {
        let (_, errors) = check_field(
            json!({"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}}),
            json!(["a", "a"]),
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn duplicate_errors_have_the_duplicate_cause_type() {
        let structural = compile(json!({"type": "object", "properties": {"tags": {
            "type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}
        }}}));
        let mut object = json!({"tags": ["x", "x"]});
        let errors = structural.prepare(&mut object).err().unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].reason(), "FieldValueDuplicate");
        assert_eq!(errors[0].path, "tags[1]");
    }

    // ----- CEL rules ----------------------------------------------------------------------------

    #[test]
    fn a_failing_rule_reports_its_message_at_its_node() {
        let structural = compile(crontab_schema());
        let (_, errors) = prepare(
            &structural,
            crontab(json!({"replicas": 3, "minReplicas": 5})),
        );
        assert_eq!(
            errors,
            vec![
                r#"spec: Invalid value: "object": replicas should be greater than or equal to minReplicas"#
                    .to_owned()
            ]
        );
        assert_eq!(
            prepare(&structural, crontab(json!({"replicas": 3}))).1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_rule_without_a_message_reports_the_failed_rule() {
        let structural = compile(crontab_schema());
        let mut object = crontab(json!({"replicas": 11}));
        let errors = structural.prepare(&mut object).err().unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "spec");
        assert_eq!(
            errors[0].message,
            r#"Invalid value: "object": failed rule: self.replicas <= self.maxReplicas"#
        );
        assert_eq!(errors[0].reason(), "FieldValueInvalid");
    }

    #[test]
    fn a_message_expression_builds_the_message_and_falls_back_to_the_message() {
        let structural = compile(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "x-kubernetes-validations": [
                {"rule": "self.x <= self.y",
                 "messageExpression": "'x exceeded y by ' + string(self.x - self.y)"},
                {"rule": "self.x != 7", "message": "x must not be 7",
                 "messageExpression": "self.missing"},
                {"rule": "self.x != 8", "messageExpression": "''"}
            ]
        }}}));
        assert_eq!(
            prepare(&structural, json!({"spec": {"x": 5, "y": 2}})).1,
            vec![r#"spec: Invalid value: "object": x exceeded y by 3"#.to_owned()]
        );
        assert_eq!(
            prepare(&structural, json!({"spec": {"x": 7, "y": 9}})).1,
            vec![r#"spec: Invalid value: "object": x must not be 7"#.to_owned()]
        );
        assert_eq!(
            prepare(&structural, json!({"spec": {"x": 8, "y": 9}})).1,
            vec![r#"spec: Invalid value: "object": failed rule: self.x != 8"#.to_owned()]
        );
    }

    #[test]
    fn reason_and_field_path_shape_the_error() {
        let structural = compile(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {"minReplicas": {"type": "integer"}, "replicas": {"type": "integer"}},
            "x-kubernetes-validations": [
                {"rule": "self.minReplicas <= self.replicas", "message": "must be at least minReplicas",
                 "fieldPath": ".replicas", "reason": "FieldValueForbidden"},
                {"rule": "has(self.replicas)", "message": "replicas is needed",
                 "reason": "FieldValueRequired"},
                {"rule": "self.minReplicas != 4", "reason": "FieldValueDuplicate"}
            ]
        }}}));
        let mut object = json!({"spec": {"minReplicas": 5, "replicas": 3}});
        let errors = structural.prepare(&mut object).err().unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec.replicas: Forbidden: must be at least minReplicas"
        );
        assert_eq!(errors[0].reason(), "FieldValueForbidden");

        let mut object = json!({"spec": {"minReplicas": 4}});
        let errors = structural.prepare(&mut object).err().unwrap_or_default();
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            vec![
                r#"spec: Invalid value: "object": no such key: replicas evaluating rule: must be at least minReplicas"#,
                "spec: Required value: replicas is needed",
                r#"spec: Duplicate value: "object""#
            ]
        );
        assert_eq!(errors[1].reason(), "FieldValueRequired");
    }

    #[test]
    fn rules_apply_to_each_array_item_and_map_value() {
        let structural = compile(json!({"type": "object", "properties": {
            "ports": {"type": "array", "items": {
                "type": "integer",
                "x-kubernetes-validations": [{"rule": "self > 0 && self < 65536", "message": "out of range"}]
            }},
            "limits": {"type": "object", "additionalProperties": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self.endsWith('Mi')"}]
            }}
        }}));
        let (_, errors) = prepare(
            &structural,
            json!({"ports": [80, 0, 70000], "limits": {"memory": "64Mi", "cpu": "2"}}),
        );
        assert_eq!(
            errors,
            vec![
                r#"limits[cpu]: Invalid value: "string": failed rule: self.endsWith('Mi')"#,
                r#"ports[1]: Invalid value: "integer": out of range"#,
                r#"ports[2]: Invalid value: "integer": out of range"#
            ]
        );
    }

    #[test]
    fn transition_rules_using_old_self_are_skipped() {
        let structural = compile(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec is immutable"}
            ]
        }}}));
        assert_eq!(
            prepare(&structural, json!({"spec": {}})).1,
            Vec::<String>::new()
        );
        assert_eq!(
            structural.skipped_rules(),
            &[SkippedRule {
                path: "spec".into(),
                rule: "self == oldSelf".into(),
                reason: "transition rule (uses oldSelf)".into()
            }]
        );
    }

    #[test]
    fn rules_that_do_not_compile_or_are_malformed_are_skipped_and_listed() {
        let structural = compile(json!({"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.a +"},
                {"message": "no rule"},
                {"rule": 5}
            ],
            "properties": {"b": {"type": "object", "x-kubernetes-validations": "oops"}}
        }));
        assert_eq!(
            prepare(&structural, json!({"b": {}})).1,
            Vec::<String>::new()
        );
        let skipped = structural.skipped_rules();
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.rule == "self.a +"
            && s.path.is_empty()
            && s.reason.starts_with("does not compile here: ")));
        assert!(skipped.iter().any(|s| s.path == "b"));
    }

    #[test]
    fn a_rule_nested_too_deeply_is_skipped_instead_of_overflowing_the_stack() {
        // Found by the structural_schema fuzz target: 80 nested parentheses overflowed the
        // stack of an unoptimized build in the CEL parser.
        let deep = format!("{}self.a{} > 0", "(".repeat(80), ")".repeat(80));
        let fine = format!("{}self.a{} > 0", "(".repeat(8), ")".repeat(8));
        let structural = compile(json!({"type": "object",
            "properties": {"a": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": deep}, {"rule": fine}, {"rule": "'((((' != ')'"}]
        }));
        let skipped = structural.skipped_rules();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(
            skipped[0].reason.contains("nests 80 levels deep"),
            "{skipped:?}"
        );
        assert_eq!(cel_nesting("'((((' + \"[[\" + (a)"), 1);
    }

    #[test]
    fn rules_reaching_functions_missing_here_are_accepted() {
        let (_, errors) = check_field(
            json!({"type": "array", "items": {"type": "integer"},
            "x-kubernetes-validations": [
                {"rule": "self.isSorted()"},
                {"rule": "self.indexOf(3) == 0"},
                {"rule": "quantity('1Gi').isGreaterThan(quantity('1Mi'))"}
            ]}),
            json!([3, 1]),
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn wrong_operand_types_are_reported_like_kubernetes() {
        let (_, errors) = check_field(
            json!({"x-kubernetes-int-or-string": true,
                   "x-kubernetes-validations": [{"rule": "self + 1 > 2"}]}),
            json!("five"),
        );
        assert_eq!(
            errors,
            vec![
                r#"value: Invalid value: "": 'no such overload': call arguments did not match a supported operator, function or macro signature for rule: self + 1 > 2"#
            ]
        );
    }

    #[test]
    fn rules_are_not_evaluated_when_the_object_has_type_errors() {
        let structural = compile(crontab_schema());
        let (_, errors) = prepare(&structural, crontab(json!({"replicas": "three"})));
        assert_eq!(
            errors,
            vec![
                r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
                r#"Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#
            ]
        );
    }

    #[test]
    fn rules_are_not_evaluated_on_null_values() {
        let (_, errors) = check_field(
            json!({"type": "object", "nullable": true,
                   "x-kubernetes-validations": [{"rule": "has(self.a)"}]}),
            Value::Null,
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn property_names_are_escaped_like_kubernetes() {
        let (_, errors) = check_field(
            json!({"type": "object",
            "properties": {"max-size": {"type": "integer"}, "namespace": {"type": "string"},
                           "a.b": {"type": "string"}, "x__y": {"type": "string"}},
            "x-kubernetes-validations": [
                {"rule": "self.max__dash__size == 3"},
                {"rule": "self.__namespace__ == 'default'"},
                {"rule": "self.a__dot__b == 'c'"},
                {"rule": "self.x__underscores__y == 'z'"}
            ]}),
            json!({"max-size": 3, "namespace": "default", "a.b": "c", "x__y": "z"}),
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn integer_fields_are_ints_and_number_fields_are_doubles() {
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        let (_, errors) = check_field(
            json!({"type": "object",
            "properties": {"count": {"type": "integer"}, "ratio": {"type": "number"}},
            "x-kubernetes-validations": [
                {"rule": "type(self.count) == int"},
                {"rule": "type(self.ratio) == double"},
                {"rule": "self.count == 2 && self.ratio == 2.0"}
            ]}),
            parse(r#"{"count": 2.0, "ratio": 2}"#),
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn formatted_strings_are_timestamps_durations_and_bytes() {
        let (_, errors) = check_field(
            json!({"type": "object",
            "properties": {
                "start": {"type": "string", "format": "date-time"},
                "end": {"type": "string", "format": "date-time"},
                "day": {"type": "string", "format": "date"},
                "timeout": {"type": "string", "format": "duration"},
                "data": {"type": "string", "format": "byte"}
            },
            "x-kubernetes-validations": [
                {"rule": "self.start < self.end"},
                {"rule": "self.day < self.start"},
                {"rule": "self.timeout < duration('1h')"},
                {"rule": "self.data == b'hi'"}
            ]}),
            json!({"start": "2026-03-02T09:00:00+01:00", "end": "2026-03-02T08:30:00Z",
                   "day": "2026-03-01", "timeout": "90s", "data": "aGk="}),
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn root_rules_see_type_fields_and_only_name_and_generate_name_of_metadata() {
        let structural = compile(json!({"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.metadata.name.startsWith('cpu-')"},
                {"rule": "!has(self.metadata.labels)"},
                {"rule": "self.kind == 'CPUFlavor'"}
            ],
            "properties": {"spec": {"type": "object"}}
        }));
        let object = json!({"apiVersion": "v1", "kind": "CPUFlavor",
                            "metadata": {"name": "cpu-small", "labels": {"a": "b"}}});
        assert_eq!(prepare(&structural, object).1, Vec::<String>::new());
        let object = json!({"kind": "CPUFlavor", "metadata": {"name": "gpu"}});
        assert_eq!(
            prepare(&structural, object).1,
            vec![r#"Invalid value: "object": failed rule: self.metadata.name.startsWith('cpu-')"#]
        );
    }

    #[test]
    fn rule_results_other_than_true_fail() {
        let (_, errors) = check_field(
            json!({"type": "string", "x-kubernetes-validations": [{"rule": "self.size()"}]}),
            json!("abc"),
        );
        assert_eq!(
            errors,
            vec![r#"value: Invalid value: "string": failed rule: self.size()"#]
        );
    }

    // ----- robustness ---------------------------------------------------------------------------

    #[test]
    fn errors_are_capped_at_twenty() {
        let structural = compile(json!({"type": "object", "properties": {"items": {
            "type": "array",
            "x-kubernetes-list-type": "set",
            "items": {"type": "integer", "x-kubernetes-validations": [{"rule": "self < 0"}]}
        }}}));
        let items: Vec<Value> = (0..30).map(|i| json!(i % 2)).collect();
        let mut object = json!({ "items": items });
        let errors = structural.prepare(&mut object).err().unwrap_or_default();
        assert_eq!(errors.len(), 20);
    }

    #[test]
    fn malformed_schemas_are_rejected_like_the_validator_rejects_them() {
        for schema in [
            json!("object"),
            json!({"type": "objet"}),
            json!({"properties": {"a": {"pattern": "("}}}),
        ] {
            assert!(
                matches!(Structural::compile(&schema), Err(SchemaError::Invalid(_))),
                "{schema}"
            );
        }
    }

    #[test]
    fn odd_schemas_and_objects_never_panic() {
        let schemas = [
            json!({}),
            json!({"type": "object", "properties": "oops", "items": 5, "additionalProperties": "x"}),
            json!({"type": "array", "x-kubernetes-list-type": "map"}),
            json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": "k"}),
            json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "object"}}),
            json!({"x-kubernetes-preserve-unknown-fields": true, "default": {"a": [null]}}),
            json!({"properties": {"a": {"default": {"b": 1}, "x-kubernetes-embedded-resource": true}}}),
            json!({"x-kubernetes-validations": [{"rule": ""}, {"rule": "self.a.b.c[0] / 0 == 1"},
                                                 {"rule": "'\u{1F600}'.matches('(')"},
                                                 {"rule": "[1][-1] == 1"},
                                                 {"rule": "self.size() > 9223372036854775807 + 1"}]}),
            json!({"properties": {"d": {"type": "string", "format": "date-time",
                                        "x-kubernetes-validations": [{"rule": "self > timestamp('2020-01-01T00:00:00Z')"}]}}}),
            json!({"properties": {"a": {"type": "integer", "x-kubernetes-validations": [{"rule": "self / 0 == 1"}]}}}),
        ];
        let objects = [
            json!(null),
            json!([1, {"a": null}]),
            json!({"a": null, "d": "not a time", "metadata": 5, "apiVersion": {"x": 1}}),
            json!({"a": [null, {"k": 1}, {"k": 1}, 3], "d": "2026-01-01T00:00:00Z"}),
            json!({"a": 1.5e300, "b": -0.0, "c": u64::MAX}),
        ];
        for schema in &schemas {
            let Ok(structural) = Structural::compile(schema) else {
                continue;
            };
            for object in &objects {
                let mut copy = object.clone();
                let _ = structural.prepare(&mut copy);
            }
        }
        let structural = compile(json!({"properties": {"a": {"type": "integer",
            "x-kubernetes-validations": [{"rule": "self / 0 == 1"}]}}}));
        assert_eq!(
            prepare(&structural, json!({"a": 4})).1,
            vec![r#"a: Invalid value: "integer": division by zero evaluating rule: self / 0 == 1"#]
        );
    }

    #[test]
    fn structural_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Structural>();
        let structural = Arc::new(compile(crontab_schema()));
        let worker = Arc::clone(&structural);
        let handle = std::thread::spawn(move || {
            let mut object = crontab(json!({"replicas": 2}));
            worker.prepare(&mut object).is_ok()
        });
        assert!(handle.join().unwrap_or(false));
    }
}
