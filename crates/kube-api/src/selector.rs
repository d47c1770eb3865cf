//! Kubernetes label and field selectors: parsing the `labelSelector` / `fieldSelector` query
//! strings, validating them with the messages Kubernetes clients expect in a 400 Status,
//! matching them against objects, and rendering them back in canonical string form.

use std::collections::BTreeMap;
use std::fmt;

/// A selector string that could not be parsed or validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The message is meant to be returned verbatim in a 400 BadRequest Status.
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// An object's labels, kept compactly for matching: every key and value in one string, sorted
/// by key, with the end of each in a second allocation. A served object holds its labels for
/// its whole life, so at a million objects the per-label maps and strings of a
/// `BTreeMap<String, String>` (about 550 bytes for three labels) were a fifth of the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    text: Box<str>,
    /// For label `i`: the end of its key at `2 i`, the end of its value at `2 i + 1`.
    ends: Box<[u32]>,
}

impl Labels {
    /// The string labels of `metadata.labels` of a JSON object (non-string values are
    /// skipped; none when absent or malformed).
    pub fn of(obj: &serde_json::Value) -> Labels {
        let Some(map) = obj.pointer("/metadata/labels").and_then(|l| l.as_object()) else {
            return Labels::default();
        };
        let mut pairs: Vec<(&str, &str)> = map
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels::from_sorted(&pairs)
    }

    /// The labels of an object's `metadata.labels` members in order, each value when it is a
    /// string: as [`Labels::of`] reads the parsed object (the last of a repeated key wins, a
    /// key whose last value is not a string is no label).
    pub fn from_members<'a>(
        members: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Labels {
        let mut all: Vec<(&str, Option<&str>)> = members.into_iter().collect();
        // Last first, then a stable sort: the first of each key's run is its last value.
        all.reverse();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.dedup_by(|later, first| later.0 == first.0);
        let pairs: Vec<(&str, &str)> = all
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Labels::from_sorted(&pairs)
    }

    fn from_sorted(pairs: &[(&str, &str)]) -> Labels {
        let len: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        // Labels longer than 4 GiB in all cannot come from a request body (3 MiB at most).
        if u32::try_from(len).is_err() {
            return Labels::default();
        }
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(pairs.len() * 2);
        for (k, v) in pairs {
            text.push_str(k);
            ends.push(text.len() as u32);
            text.push_str(v);
            ends.push(text.len() as u32);
        }
        Labels {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Key and value of label `i` (in key order).
    fn pair(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 {
            0
        } else {
            self.ends[2 * i - 1] as usize
        };
        let key_end = self.ends[2 * i] as usize;
        let value_end = self.ends[2 * i + 1] as usize;
        (&self.text[start..key_end], &self.text[key_end..value_end])
    }

    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (k, v) = self.pair(mid);
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.len()).map(|i| self.pair(i))
    }
}

/// Comparison applied by one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One clause of a label selector, e.g. `tier in (a,b)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    /// Sorted and free of duplicates; one entry for the exact-match and numeric operators,
    /// none for (does-not-)exist.
    values: Vec<String>,
}

impl Requirement {
    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        let found = get(&self.key);
        match self.op {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                found.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                found.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => found.is_some(),
            Operator::DoesNotExist => found.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = found.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.op {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
        };
        f.write_str(op)?;
        if parens {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A Kubernetes label selector: a list of requirements that must all hold.
///
/// The requirements are kept sorted by key, so the rendered form is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses a label selector string with the grammar and error messages of Kubernetes.
    /// The empty (or all-whitespace) string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let items = lex(s);
        let mut parser = Parser { items, pos: 0 };
        let mut requirements = parser.parse().map_err(SelectorError::Invalid)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// True when the selector has no requirements and therefore matches everything.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// One equality requirement per entry, like a LabelSelector's `matchLabels`.
    /// Entries are not validated (Kubernetes does not validate them here either).
    pub fn from_match_labels(m: &BTreeMap<String, String>) -> Self {
        LabelSelector {
            requirements: m
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Operator::Equals,
                    values: vec![v.clone()],
                })
                .collect(),
        }
    }

    /// True when every requirement holds for the given labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Like matches but with a lookup closure so callers need not build a map.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches_with(&get))
    }

    /// Whether compactly kept [`Labels`] match.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches_with(|k| labels.get(k))
    }

    /// Combine (AND) two selectors.
    pub fn and(mut self, other: LabelSelector) -> LabelSelector {
        self.requirements.extend(other.requirements);
        self.requirements.sort_by(|a, b| a.key.cmp(&b.key));
        self
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Lexical token of the label selector grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    Ident,
    In,
    NotIn,
    Comma,
    OpenPar,
    ClosedPar,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
}

/// Whether `in` / `notin` are keywords (operator position) or plain words (key/value position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Operator,
    Values,
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits the input into tokens; the last one is always `End` with an empty literal.
fn lex(s: &str) -> Vec<(Tok, &str)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else {
            out.push((Tok::End, ""));
            return out;
        };
        if is_special(b) {
            // The only two-character symbols are `==` and `!=`; otherwise take one character.
            let two = s.get(i..i + 2);
            let (tok, len) = match (two, b) {
                (Some("=="), _) => (Tok::DoubleEq, 2),
                (Some("!="), _) => (Tok::NotEq, 2),
                (_, b'=') => (Tok::Eq, 1),
                (_, b'!') => (Tok::Bang, 1),
                (_, b'(') => (Tok::OpenPar, 1),
                (_, b')') => (Tok::ClosedPar, 1),
                (_, b',') => (Tok::Comma, 1),
                (_, b'>') => (Tok::Gt, 1),
                _ => (Tok::Lt, 1),
            };
            out.push((tok, &s[i..i + len]));
            i += len;
        } else {
            let start = i;
            while i < bytes.len() && !is_special(bytes[i]) && !is_space(bytes[i]) {
                i += 1;
            }
            // Splitting only at ASCII bytes keeps `start..i` on char boundaries.
            let word = &s[start..i];
            let tok = match word {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident,
            };
            out.push((tok, word));
        }
    }
}

/// Recursive-descent parser over the token list.
struct Parser<'s> {
    items: Vec<(Tok, &'s str)>,
    pos: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self, ctx: Ctx) -> (Tok, &'s str) {
        let (tok, lit) = self.items.get(self.pos).copied().unwrap_or((Tok::End, ""));
        match (ctx, tok) {
            (Ctx::Values, Tok::In | Tok::NotIn) => (Tok::Ident, lit),
            _ => (tok, lit),
        }
    }

    fn next(&mut self, ctx: Ctx) -> (Tok, &'s str) {
        let item = self.peek(ctx);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.peek(Ctx::Values);
            match tok {
                Tok::Ident | Tok::Bang => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.next(Ctx::Values);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.peek(Ctx::Values);
                            if t2 != Tok::Ident && t2 != Tok::Bang {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (mut tok, mut key) = self.next(Ctx::Values);
        let negated = tok == Tok::Bang;
        if negated {
            (tok, key) = self.next(Ctx::Values);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{key}', expected: identifier"));
        }
        let key_errs = qualified_name_errors(key);
        if !key_errs.is_empty() {
            return Err(invalid_value("<nil>", key, &key_errs.join("; ")));
        }
        if negated {
            return new_requirement(key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.peek(Ctx::Values).0, Tok::End | Tok::Comma) {
            return new_requirement(key, Operator::Exists, Vec::new());
        }
        let (tok, lit) = self.next(Ctx::Operator);
        let op = match tok {
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Eq => Operator::Equals,
            Tok::DoubleEq => Operator::DoubleEquals,
            Tok::NotEq => Operator::NotEquals,
            Tok::Gt => Operator::GreaterThan,
            Tok::Lt => Operator::LessThan,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        new_requirement(key, op, values)
    }

    /// `( v1, v2, ... )`; empty entries stand for the empty string.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.next(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.peek(Ctx::Values);
        match tok {
            Tok::Ident | Tok::Comma => {
                let set = self.value_list()?;
                if self.next(Ctx::Values).0 != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Tok::ClosedPar => {
                self.next(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// The inside of a value set, stopping before the closing parenthesis.
    fn value_list(&mut self) -> Result<Vec<String>, String> {
        let mut set: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.next(Ctx::Values);
            match tok {
                Tok::Ident => {
                    set.push(lit.to_string());
                    let (t2, l2) = self.peek(Ctx::Values);
                    match t2 {
                        Tok::Comma => {}
                        Tok::ClosedPar => return Ok(set),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        set.push(String::new());
                    }
                    match self.peek(Ctx::Values).0 {
                        Tok::ClosedPar => {
                            set.push(String::new());
                            return Ok(set);
                        }
                        Tok::Comma => {
                            self.next(Ctx::Values);
                            set.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; nothing means the empty string.
    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(Ctx::Values).0, Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        let (tok, lit) = self.next(Ctx::Values);
        if tok == Tok::Ident {
            Ok(lit.to_string())
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// Builds a requirement, checking the operator's value count, numeric values for `>`/`<`
/// and every value's syntax. Several problems are reported together like Kubernetes does.
fn new_requirement(
    key: &str,
    op: Operator,
    mut values: Vec<String>,
) -> Result<Requirement, String> {
    values.sort();
    values.dedup();
    let mut errs: Vec<String> = Vec::new();
    let key_errs = qualified_name_errors(key);
    if !key_errs.is_empty() {
        errs.push(invalid_value("key", key, &key_errs.join("; ")));
    }
    match op {
        Operator::In | Operator::NotIn if values.is_empty() => errs.push(
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
                .to_string(),
        ),
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
            errs.push(format!(
                "values: Invalid value: {}: exact-match compatibility requires one single value",
                go_string_slice(&values)
            ))
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.push(format!(
            "values: Invalid value: {}: values set must be empty for exists and does not exist",
            go_string_slice(&values)
        )),
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errs.push(format!(
                    "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                    go_string_slice(&values)
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(invalid_value(
                        &format!("values[{i}]"),
                        v,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let value_errs = label_value_errors(v);
        if !value_errs.is_empty() {
            errs.push(invalid_value(
                &format!("values[{i}][{key}]"),
                v,
                &value_errs.join("; "),
            ));
        }
    }
    if errs.is_empty() {
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    } else {
        Err(aggregate(errs))
    }
}

/// Joins several messages like a Kubernetes error aggregate: one message alone, otherwise
/// the distinct messages in brackets.
fn aggregate(errs: Vec<String>) -> String {
    let mut distinct: Vec<String> = Vec::new();
    for e in errs {
        if !distinct.contains(&e) {
            distinct.push(e);
        }
    }
    if distinct.len() == 1 {
        distinct.pop().unwrap_or_default()
    } else {
        format!("[{}]", distinct.join(", "))
    }
}

/// `<path>: Invalid value: "<value>": <detail>`, the shape of a Kubernetes field error.
fn invalid_value(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {}: {detail}", go_quote(value))
}

/// Double-quoted string with backslash escapes, as Go's `%q` prints it.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string slice as Go's `%#v` prints it, e.g. `[]string{"a", "b"}`.
fn go_string_slice(values: &[String]) -> String {
    let inner: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Message for a failed pattern check, listing examples and the pattern like Kubernetes.
fn regex_error(msg: &str, pattern: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{ex}', "));
    }
    out.push_str(&format!("regex used for validation is '{pattern}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Lowercase RFC 1123 subdomain syntax: dot-separated labels of `[a-z0-9-]`, each starting
/// and ending with an alphanumeric character.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (l.is_ascii_lowercase() || l.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

/// Problems with a label key (`[prefix/]name`); empty when valid.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let name_examples = ["MyName", "my.name", "123-abc"];
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push(format!("prefix part {}", max_len_error(253)));
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(
                            DNS1123_SUBDOMAIN_MSG,
                            DNS1123_SUBDOMAIN_FMT,
                            &["example.com"]
                        )
                    ));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &name_examples)
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &name_examples)
        ));
    }
    errs
}

/// Problems with a label value (empty or a qualified-name-like word of ≤ 63 characters).
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// One `field=value` or `field!=value` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    negated: bool,
}

/// A Kubernetes field selector: `=`, `==` and `!=` terms that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses a comma-separated field selector; `\,`, `\=` and `\\` escape values.
    /// The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_field_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_field_term(part) else {
                return Err(SelectorError::Invalid(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let value = unescape_field_value(raw).map_err(SelectorError::Invalid)?;
            terms.push(FieldTerm {
                field: field.to_string(),
                value,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// True when the selector has no terms and therefore matches everything.
    pub fn is_everything(&self) -> bool {
        self.terms.is_empty()
    }

    /// The field names the selector refers to, each once, in term order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms
            .iter()
            .enumerate()
            .filter(|(i, t)| !self.terms[..*i].iter().any(|p| p.field == t.field))
            .map(|(_, t)| t.field.as_str())
    }

    /// The value required by an `=`/`==` requirement on `field`, if any.
    pub fn exact_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| !t.negated && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// True when every term holds; a field the closure does not know counts as `""`.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.terms.iter().all(|t| {
            let have = get(&t.field).unwrap_or("");
            (have == t.value) != t.negated
        })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", t.field, escape_field_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits at commas that are not escaped with a backslash; escapes stay in the pieces.
fn split_field_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each position).
fn split_field_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

/// Resolves `\\`, `\,` and `\=`; any other escape, or a bare `,`/`=`, is an error.
fn unescape_field_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if matches!(c, '\\' | ',' | '=') {
                out.push(c);
                escaped = false;
                continue;
            }
            return Err(format!(
                "invalid field selector: invalid escape sequence: \\{c}"
            ));
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            c => out.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// Inverse of [`unescape_field_value`].
fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn compact_labels_answer_every_selector_as_the_map_of_the_same_labels_does() {
        let obj = serde_json::json!({"metadata": {"labels": {
            "tier": "gold", "app": "web", "": "odd", "count": "7", "zone": "", "skip": 3
        }}});
        let compact = Labels::of(&obj);
        let map = labels(&[
            ("tier", "gold"),
            ("app", "web"),
            ("", "odd"),
            ("count", "7"),
            ("zone", ""),
        ]);
        assert_eq!(compact.len(), 5, "the non-string label is not kept");
        let pairs: Vec<(&str, &str)> = compact.iter().collect();
        let want: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, want, "key order");
        for key in [
            "tier", "app", "", "count", "zone", "skip", "missing", "ap", "tiers",
        ] {
            assert_eq!(
                compact.get(key),
                map.get(key).map(String::as_str),
                "{key:?}"
            );
        }
        for s in [
            "tier=gold",
            "tier!=gold",
            "app in (web,api),tier",
            "!zone",
            "zone",
            "count>5",
            "count<5",
            "missing notin (x)",
            "",
        ] {
            let selector = sel(s);
            assert_eq!(
                selector.matches_labels(&compact),
                selector.matches(&map),
                "{s:?}"
            );
        }
        assert!(Labels::of(&serde_json::json!({"metadata": {}})).is_empty());
        assert!(Labels::of(&serde_json::json!({"metadata": {"labels": "x"}})).is_empty());
    }

    fn sel(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(x) => x,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn label_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(x) => panic!("{s:?} should fail, got {x}"),
            Err(SelectorError::Invalid(m)) => m,
        }
    }

    fn field_err(s: &str) -> String {
        match FieldSelector::parse(s) {
            Ok(x) => panic!("{s:?} should fail, got {x}"),
            Err(SelectorError::Invalid(m)) => m,
        }
    }

    fn fsel(s: &str) -> FieldSelector {
        match FieldSelector::parse(s) {
            Ok(x) => x,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    const NAME_PART_REGEX_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    #[test]
    fn empty_and_blank_selectors_match_everything() {
        for s in ["", "   ", "\t\n"] {
            let x = sel(s);
            assert!(x.is_everything());
            assert!(x.matches(&labels(&[])));
            assert_eq!(x.to_string(), "");
        }
        assert!(LabelSelector::everything().is_everything());
        assert!(LabelSelector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn equality_requires_key_with_that_value() {
        for s in ["a=b", "a==b", " a = b ", "a ==b"] {
            let x = sel(s);
            assert!(x.matches(&labels(&[("a", "b")])), "{s}");
            assert!(!x.matches(&labels(&[("a", "c")])), "{s}");
            assert!(!x.matches(&labels(&[])), "{s}");
        }
    }

    #[test]
    fn equality_without_value_means_empty_value() {
        let x = sel("a=");
        assert!(x.matches(&labels(&[("a", "")])));
        assert!(!x.matches(&labels(&[("a", "x")])));
        assert!(!x.matches(&labels(&[])));
        assert_eq!(x.to_string(), "a=");
        assert!(sel("a=,b").matches(&labels(&[("a", ""), ("b", "1")])));
    }

    #[test]
    fn not_equals_also_matches_when_key_is_absent() {
        let x = sel("a!=b");
        assert!(!x.matches(&labels(&[("a", "b")])));
        assert!(x.matches(&labels(&[("a", "c")])));
        assert!(x.matches(&labels(&[])));
    }

    #[test]
    fn in_requirement_matches_any_listed_value() {
        let x = sel("env in (prod, staging)");
        assert!(x.matches(&labels(&[("env", "prod")])));
        assert!(x.matches(&labels(&[("env", "staging")])));
        assert!(!x.matches(&labels(&[("env", "dev")])));
        assert!(!x.matches(&labels(&[])));
    }

    #[test]
    fn notin_requirement_excludes_listed_values_and_accepts_absent_key() {
        let x = sel("env notin (prod,staging)");
        assert!(!x.matches(&labels(&[("env", "prod")])));
        assert!(x.matches(&labels(&[("env", "dev")])));
        assert!(x.matches(&labels(&[])));
    }

    #[test]
    fn value_sets_may_contain_empty_strings() {
        let x = sel("a in (b,)");
        assert!(x.matches(&labels(&[("a", "")])));
        assert!(x.matches(&labels(&[("a", "b")])));
        assert!(!x.matches(&labels(&[("a", "c")])));
        assert_eq!(x.to_string(), "a in (,b)");
        assert_eq!(sel("a in (,b)").to_string(), "a in (,b)");
        assert_eq!(sel("a in (b,,c)").to_string(), "a in (,b,c)");
        assert_eq!(sel("a in ()").to_string(), "a in ()");
        assert!(sel("a in ()").matches(&labels(&[("a", "")])));
        assert!(!sel("a notin ()").matches(&labels(&[("a", "")])));
    }

    #[test]
    fn keywords_are_plain_words_in_key_and_value_position() {
        let x = sel("in in (notin, in)");
        assert!(x.matches(&labels(&[("in", "notin")])));
        assert!(!x.matches(&labels(&[("in", "x")])));
        assert!(sel("notin=in").matches(&labels(&[("notin", "in")])));
    }

    #[test]
    fn exists_and_does_not_exist_check_only_presence() {
        let x = sel("a");
        assert!(x.matches(&labels(&[("a", "")])));
        assert!(!x.matches(&labels(&[("b", "")])));
        let y = sel("!a");
        assert!(!y.matches(&labels(&[("a", "x")])));
        assert!(y.matches(&labels(&[("b", "x")])));
        assert_eq!(sel(" ! a ").to_string(), "!a");
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        let gt = sel("n>5");
        assert!(gt.matches(&labels(&[("n", "6")])));
        assert!(!gt.matches(&labels(&[("n", "5")])));
        assert!(!gt.matches(&labels(&[("n", "x")])));
        assert!(!gt.matches(&labels(&[])));
        let lt = sel("n < 5");
        assert!(lt.matches(&labels(&[("n", "4")])));
        assert!(lt.matches(&labels(&[("n", "-4")])));
        assert!(!lt.matches(&labels(&[("n", "5")])));
    }

    #[test]
    fn numeric_operators_reject_non_integer_values() {
        assert_eq!(
            label_err("n>abc"),
            "unable to parse requirement: values[0]: Invalid value: \"abc\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn all_requirements_must_hold() {
        let x = sel("a=b,c in (x,y),!d,e");
        assert!(x.matches(&labels(&[("a", "b"), ("c", "y"), ("e", "")])));
        assert!(!x.matches(&labels(&[("a", "b"), ("c", "y")])));
        assert!(!x.matches(&labels(&[("a", "b"), ("c", "y"), ("e", ""), ("d", "1")])));
    }

    #[test]
    fn prefixed_keys_are_accepted() {
        let x = sel("cache.kcp.io/object-schema=v1.cpuflavors.cloud.example.com");
        assert!(x.matches(&labels(&[(
            "cache.kcp.io/object-schema",
            "v1.cpuflavors.cloud.example.com"
        )])));
    }

    #[test]
    fn matches_with_uses_the_lookup_closure() {
        let x = sel("a=b,!c");
        assert!(x.matches_with(|k| if k == "a" { Some("b") } else { None }));
        assert!(!x.matches_with(|_| Some("b")));
    }

    #[test]
    fn display_renders_canonical_sorted_form_that_parses_back() {
        let x = sel("z notin (b, a), c in (y,x,x), a==b, !k, e, n>3, m<7, q!=r");
        let text = x.to_string();
        assert_eq!(text, "a==b,c in (x,y),e,!k,m<7,n>3,q!=r,z notin (a,b)");
        assert_eq!(sel(&text), x);
        assert_eq!(sel(&text).to_string(), text);
    }

    #[test]
    fn from_match_labels_builds_sorted_equality_requirements() {
        let m = labels(&[("tier", "small"), ("app", "web")]);
        let x = LabelSelector::from_match_labels(&m);
        assert_eq!(x.to_string(), "app=web,tier=small");
        assert!(x.matches(&labels(&[("app", "web"), ("tier", "small"), ("x", "y")])));
        assert!(!x.matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::from_match_labels(&BTreeMap::new()).is_everything());
        assert_eq!(sel(&x.to_string()), x);
    }

    #[test]
    fn and_combines_both_selectors() {
        let x = sel("b=2").and(sel("a=1"));
        assert_eq!(x.to_string(), "a=1,b=2");
        assert!(x.matches(&labels(&[("a", "1"), ("b", "2")])));
        assert!(!x.matches(&labels(&[("a", "1")])));
        assert!(
            LabelSelector::everything()
                .and(LabelSelector::everything())
                .is_everything()
        );
    }

    #[test]
    fn missing_operator_reports_expected_operators() {
        assert_eq!(
            label_err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            label_err("a (b)"),
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
        );
    }

    #[test]
    fn syntax_errors_use_kubernetes_messages() {
        assert_eq!(
            label_err("a=b,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            label_err("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            label_err("=b"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            label_err("!=b"),
            "found '!=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            label_err("!!a"),
            "unable to parse requirement: found '!', expected: identifier"
        );
        assert_eq!(
            label_err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            label_err("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
        assert_eq!(
            label_err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            label_err("a in (=)"),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            label_err("a==(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            label_err("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn invalid_keys_are_reported_as_qualified_name_errors() {
        assert_eq!(
            label_err("app:monolith"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"app:monolith\": {NAME_PART_REGEX_MSG}"
            )
        );
        assert_eq!(
            label_err("a/b/c=d"),
            "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        );
        assert_eq!(
            label_err("app.kubernetes_io/name=x"),
            "unable to parse requirement: <nil>: Invalid value: \"app.kubernetes_io/name\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            label_err("/a"),
            "unable to parse requirement: <nil>: Invalid value: \"/a\": prefix part must be non-empty"
        );
        assert_eq!(
            label_err("a/"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"a/\": name part must be non-empty; {NAME_PART_REGEX_MSG}"
            )
        );
        let long = "k".repeat(64);
        assert_eq!(
            label_err(&long),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"{long}\": name part must be no more than 63 characters"
            )
        );
        assert!(LabelSelector::parse(&"k".repeat(63)).is_ok());
    }

    #[test]
    fn invalid_values_are_reported_with_their_key() {
        assert_eq!(
            label_err("app=-bad"),
            "unable to parse requirement: values[0][app]: Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let long = "v".repeat(64);
        assert_eq!(
            label_err(&format!("a={long}")),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"{long}\": must be no more than 63 characters"
            )
        );
        assert!(LabelSelector::parse(&format!("a={}", "v".repeat(63))).is_ok());
        let msg = label_err("a in (ok, bad/)");
        assert!(
            msg.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"bad/\""),
            "{msg}"
        );
    }

    #[test]
    fn negative_numbers_are_not_valid_label_values() {
        let msg = label_err("n>-1");
        assert!(
            msg.starts_with(
                "unable to parse requirement: values[0][n]: Invalid value: \"-1\": a valid label"
            ),
            "{msg}"
        );
    }

    #[test]
    fn several_value_problems_are_aggregated_in_brackets() {
        let long = "1".repeat(64);
        let msg = label_err(&format!("n>{long}x"));
        assert!(
            msg.starts_with("unable to parse requirement: [values[0]: "),
            "{msg}"
        );
        assert!(msg.ends_with(']'), "{msg}");
        assert!(msg.contains("the value must be an integer"), "{msg}");
        assert!(msg.contains("must be no more than 63 characters"), "{msg}");
    }

    #[test]
    fn non_ascii_input_does_not_panic_and_is_rejected() {
        let msg = label_err("é=ü");
        assert!(msg.contains("Invalid value: \"é\""), "{msg}");
        assert!(FieldSelector::parse("métadata.name=ü").is_ok());
    }

    #[test]
    fn quoting_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\x01\"");
    }

    // ------------------------------------------------------------------ field selectors

    #[test]
    fn field_equality_and_inequality_terms_match() {
        let x = fsel("metadata.name=cpu-small");
        assert!(x.matches_with(|f| (f == "metadata.name").then_some("cpu-small")));
        assert!(!x.matches_with(|f| (f == "metadata.name").then_some("other")));
        let y = fsel("metadata.name==cpu-small");
        assert_eq!(y, x);
        let z = fsel("metadata.name!=cpu-small");
        assert!(!z.matches_with(|_| Some("cpu-small")));
        assert!(z.matches_with(|_| Some("x")));
    }

    #[test]
    fn missing_fields_compare_as_empty_string() {
        assert!(fsel("spec.color=").matches_with(|_| None));
        assert!(!fsel("spec.color=red").matches_with(|_| None));
        assert!(fsel("spec.color!=red").matches_with(|_| None));
    }

    #[test]
    fn empty_field_selector_matches_everything() {
        let x = fsel("");
        assert!(x.is_everything());
        assert!(x.matches_with(|_| None));
        assert!(FieldSelector::everything().is_everything());
        assert_eq!(fsel(",").to_string(), "");
    }

    #[test]
    fn all_field_terms_must_hold() {
        let x = fsel("metadata.name=a,metadata.namespace=ns");
        let get = |f: &str| match f {
            "metadata.name" => Some("a"),
            "metadata.namespace" => Some("ns"),
            _ => None,
        };
        assert!(x.matches_with(get));
        assert!(!x.matches_with(|f| (f == "metadata.name").then_some("a")));
    }

    #[test]
    fn field_values_support_backslash_escapes() {
        let x = fsel(r"spec.note=a\,b\=c\\d,metadata.name=n");
        assert_eq!(x.exact_value("spec.note"), Some(r"a,b=c\d"));
        assert_eq!(x.exact_value("metadata.name"), Some("n"));
        assert_eq!(x.to_string(), r"metadata.name=n,spec.note=a\,b\=c\\d");
        assert_eq!(fsel(&x.to_string()), x);
    }

    #[test]
    fn bad_field_escapes_are_rejected() {
        assert_eq!(
            field_err(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            field_err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            field_err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
    }

    #[test]
    fn field_terms_without_operator_are_not_understood() {
        assert_eq!(
            field_err("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            field_err("a=b,c"),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
    }

    #[test]
    fn field_operators_split_at_the_first_operator() {
        let x = fsel("a!=b");
        assert_eq!(x.exact_value("a"), None);
        assert_eq!(x.to_string(), "a!=b");
        let y = fsel("a==b");
        assert_eq!(y.exact_value("a"), Some("b"));
        assert_eq!(y.to_string(), "a=b");
    }

    #[test]
    fn fields_lists_each_field_once() {
        let x = fsel("metadata.name!=x,metadata.name=a,spec.color=red");
        let names: Vec<&str> = x.fields().collect();
        assert_eq!(names, vec!["metadata.name", "spec.color"]);
        assert_eq!(x.exact_value("metadata.name"), Some("a"));
        assert_eq!(x.exact_value("spec.size"), None);
    }

    #[test]
    fn field_selector_display_round_trips() {
        let x = fsel("b!=2,a=1");
        assert_eq!(x.to_string(), "a=1,b!=2");
        assert_eq!(fsel(&x.to_string()), x);
    }
}
