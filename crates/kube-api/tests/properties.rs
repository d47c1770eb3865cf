//! Property tests of the request parsers a client controls (the inputs the fuzz targets of the
//! operations issue cover, run in `cargo test` so CI keeps them honest): for any input they
//! answer `Ok` or a client error, never panic; what they accept round-trips.

use kube_api::continuation;
use kube_api::params::ListOptions;
use kube_api::selector::{FieldSelector, LabelSelector};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn label_selectors_parse_or_refuse_without_panicking(s in "\\PC{0,80}") {
        let _ = LabelSelector::parse(&s);
    }

    #[test]
    fn label_selectors_of_selector_characters_parse_or_refuse(s in "[a-z0-9=!,()/ .in-]{0,60}") {
        if let Ok(sel) = LabelSelector::parse(&s) {
            // An accepted selector can be evaluated against anything.
            let _ = sel.matches(&Default::default());
        }
    }

    #[test]
    fn field_selectors_parse_or_refuse_without_panicking(s in "\\PC{0,80}") {
        let _ = FieldSelector::parse(&s);
    }

    #[test]
    fn continue_tokens_decode_or_refuse_with_a_client_error(s in "\\PC{0,120}") {
        if let Err(status) = continuation::decode(&s, 3) {
            prop_assert!(status.code < 500, "{}", status.message);
        }
    }

    #[test]
    fn continue_tokens_round_trip(rv in 1u64..u64::MAX, a in "[a-z0-9-]{0,20}", b in "[a-z0-9-]{1,20}") {
        let token = continuation::encode(rv, &[&a, &b]);
        let (back, keys) = continuation::decode(&token, 2).expect("our own token decodes");
        prop_assert_eq!(back, rv);
        prop_assert_eq!(keys, vec![a, b]);
    }

    #[test]
    fn list_options_parse_or_refuse_with_a_client_error(
        pairs in proptest::collection::vec(
            (prop_oneof![
                Just("limit".to_string()), Just("continue".to_string()),
                Just("resourceVersion".to_string()), Just("resourceVersionMatch".to_string()),
                Just("labelSelector".to_string()), Just("fieldSelector".to_string()),
                Just("watch".to_string()), Just("timeoutSeconds".to_string()),
                Just("sendInitialEvents".to_string()), Just("allowWatchBookmarks".to_string()),
                "[a-zA-Z]{1,12}",
            ], "\\PC{0,30}"),
            0..8,
        ),
        watch_path in any::<bool>(),
    ) {
        if let Err(status) = ListOptions::from_pairs(&pairs, watch_path) {
            prop_assert!(status.code < 500, "{}", status.message);
        }
    }
}
