//! Content negotiation: which representation of a response the `Accept` header asks for.
//!
//! Entries are tried in the client's order and the first one we can produce wins; protobuf and
//! other media types we do not speak are skipped so that every client's JSON fallback is used.
//! `406 NotAcceptable` only when no entry at all is acceptable.

use super::status::Status;

/// A representation this server can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain JSON of the object or list.
    Json,
    /// `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`.
    AggregatedDiscovery,
    /// `as=Table;g=meta.k8s.io;v=v1|v1beta1`: the Table's apiVersion.
    Table(&'static str),
    /// `as=PartialObjectMetadata;g=meta.k8s.io;v=v1`.
    PartialObjectMetadata,
    /// `as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`.
    PartialObjectMetadataList,
    /// `application/yaml` (objects and lists, not watches).
    Yaml,
}

/// What the endpoint being served can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Objects, lists and watch events.
    Resource,
    /// `/api` and `/apis`: aggregated or legacy discovery.
    DiscoveryRoot,
    /// Other discovery and metadata documents: JSON only.
    Document,
}

/// Pick the response format for an `Accept` header value.
pub fn negotiate(accept: Option<&str>, offer: Offer) -> Result<Format, Status> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(Format::Json);
    };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut as_ = None;
        let mut g = None;
        let mut v = None;
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                let val = val.trim().trim_matches('"');
                match k.trim() {
                    "as" => as_ = Some(val.to_string()),
                    "g" => g = Some(val.to_string()),
                    "v" => v = Some(val.to_string()),
                    _ => {}
                }
            }
        }
        let json_like = matches!(media.as_str(), "application/json" | "application/*" | "*/*");
        if media == "application/yaml" && offer == Offer::Resource && as_.is_none() {
            return Ok(Format::Yaml);
        }
        if !json_like {
            continue;
        }
        match as_.as_deref() {
            None => return Ok(Format::Json),
            Some("APIGroupDiscoveryList")
                if offer == Offer::DiscoveryRoot
                    && g.as_deref() == Some("apidiscovery.k8s.io")
                    && v.as_deref() == Some("v2") =>
            {
                return Ok(Format::AggregatedDiscovery);
            }
            Some(conversion) if offer == Offer::Resource && g.as_deref() == Some("meta.k8s.io") => {
                let version = match v.as_deref() {
                    Some("v1") => "meta.k8s.io/v1",
                    Some("v1beta1") => "meta.k8s.io/v1beta1",
                    _ => continue,
                };
                match conversion {
                    "Table" => return Ok(Format::Table(version)),
                    "PartialObjectMetadata" => return Ok(Format::PartialObjectMetadata),
                    "PartialObjectMetadataList" => return Ok(Format::PartialObjectMetadataList),
                    _ => continue,
                }
            }
            // Conversions we do not produce: skip the entry so the client's fallback is used.
            Some(_) => continue,
        }
    }
    Err(Status::not_acceptable(
        "only the following media types are accepted: application/json",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    const KUBECTL_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn kubectl_table_accept_gets_a_v1_table() {
        assert_eq!(
            negotiate(Some(KUBECTL_TABLE), Offer::Resource).unwrap(),
            Format::Table("meta.k8s.io/v1")
        );
        assert_eq!(
            negotiate(Some(KUBECTL_TABLE), Offer::Document).unwrap(),
            Format::Json
        );
    }

    #[test]
    fn metadata_client_accept_gets_partial_object_metadata() {
        let accept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(
            negotiate(Some(accept), Offer::Resource).unwrap(),
            Format::PartialObjectMetadataList
        );
    }

    #[test]
    fn discovery_roots_answer_aggregated_discovery_when_asked() {
        assert_eq!(
            negotiate(Some(KUBECTL_DISCOVERY), Offer::DiscoveryRoot).unwrap(),
            Format::AggregatedDiscovery
        );
        assert_eq!(
            negotiate(Some(KUBECTL_DISCOVERY), Offer::Document).unwrap(),
            Format::Json
        );
    }

    #[test]
    fn protobuf_first_clients_get_their_json_fallback() {
        assert_eq!(
            negotiate(
                Some("application/vnd.kubernetes.protobuf,application/json"),
                Offer::Resource
            )
            .unwrap(),
            Format::Json
        );
    }

    #[test]
    fn protobuf_only_is_not_acceptable() {
        let e =
            negotiate(Some("application/vnd.kubernetes.protobuf"), Offer::Resource).unwrap_err();
        assert_eq!(e.code, 406);
    }

    #[test]
    fn missing_accept_means_json() {
        assert_eq!(negotiate(None, Offer::Resource).unwrap(), Format::Json);
    }
}
