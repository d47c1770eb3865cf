//! The check of the `selectors` fuzz target, shared with the cargo test `tests/fuzz_inputs.rs`:
//! any string parses as a `labelSelector` and a `fieldSelector` or is refused without a panic,
//! an accepted selector can be matched against labels and fields, and its rendered form parses
//! back to the same selector (for field selectors: the same terms, possibly in another order,
//! and the rendering of that is a fixed point).

use std::collections::BTreeMap;

use kube_api::selector::{FieldSelector, LabelSelector};

/// Whether two field selectors match (or both miss) an object whose fields `probe` gives.
fn agree<'a>(
    x: &FieldSelector,
    y: &FieldSelector,
    probe: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    x.matches_with(&probe) == y.matches_with(&probe)
}

/// Checks one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let labels = BTreeMap::from([
        ("app".to_string(), "web".to_string()),
        ("tier".to_string(), "1".to_string()),
        (text.to_string(), text.to_string()),
    ]);
    if let Ok(sel) = LabelSelector::parse(text) {
        let _ = sel.matches(&labels);
        let _ = sel.matches(&BTreeMap::new());
        let _ = sel.is_everything();
        let rendered = sel.to_string();
        let back = LabelSelector::parse(&rendered)
            .unwrap_or_else(|e| panic!("{text:?} renders as {rendered:?}, which fails: {e}"));
        assert_eq!(back, sel, "{text:?} renders as {rendered:?}");
        assert_eq!(back.to_string(), rendered);
        let _ = sel.and(LabelSelector::everything());
    }
    if let Ok(sel) = FieldSelector::parse(text) {
        let _ = sel.matches_with(|f| labels.get(f).map(String::as_str));
        let fields: Vec<&str> = sel.fields().collect();
        for f in &fields {
            let _ = sel.exact_value(f);
        }
        let rendered = sel.to_string();
        let back = FieldSelector::parse(&rendered)
            .unwrap_or_else(|e| panic!("{text:?} renders as {rendered:?}, which fails: {e}"));
        // Like Kubernetes, parsing orders the terms by their text as written (`a==x` and its
        // rendering `a=x` sort differently), so the terms may come back in another order: the
        // same terms, though, and rendering again is then a fixed point.
        for (i, same) in [
            agree(&sel, &back, |f| labels.get(f).map(String::as_str)),
            agree(&sel, &back, |f| sel.exact_value(f)),
            agree(&sel, &back, |f| back.exact_value(f)),
        ]
        .into_iter()
        .enumerate()
        {
            assert!(same, "probe {i}: {text:?} renders as {rendered:?}");
        }
        let mut a: Vec<&str> = sel.fields().collect();
        let mut b: Vec<&str> = back.fields().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{text:?} renders as {rendered:?}");
        let again = back.to_string();
        assert_eq!(
            FieldSelector::parse(&again).as_ref(),
            Ok(&back),
            "{again:?}"
        );
    }
}
