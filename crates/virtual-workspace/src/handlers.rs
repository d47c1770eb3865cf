//! The Replication virtual workspace HTTP surface (`kcp-reference.md` §5): URL digest,
//! authentication and authorization, discovery, and get, list and watch served from the index.
//! Every write verb is refused; every error is a `metav1.Status`. A CachedResource that does not
//! exist is a 404 for every caller, a cluster segment that is no logical cluster name a 400,
//! and a consumer that does not exist is answered like one that binds nothing.

use super::authz::{self, Attributes, Decision};
use super::body::{ItemView, ListBody, write_item};
use super::index::{
    Change, Index, ObjKey, ResolvedApi, ServedEvent, ServedObject, cluster_literal,
};
use super::slices::Domain;
use super::url::{self, Digest, Target};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures_util::StreamExt;
use kcp_model::types::PrinterColumn;
use kube_api::Status;
use kube_api::negotiate::{Format, Offer, negotiate};
use kube_api::params::{ListOptions, check_fields_with, name_selector};
use kube_api::request::RequestInfo;
use kube_api::selector::{FieldSelector, LabelSelector};
use kube_api::status::qualified;
use kube_api::user::{RequestUser, UserInfo};
use kube_api::watch::{self, EventType};
use rest::printing::{self as table, IncludeObject};
use serde_json::json;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The virtual workspace's routes.
pub fn router(index: Arc<Index>) -> Router {
    Router::new()
        .route("/services/replication/{*rest}", any(handle))
        .with_state(index)
}

/// What a path under the virtual root addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KubePath {
    Root,
    Version,
    Api,
    ApiV1,
    Apis,
    Group(String),
    GroupVersion(String, String),
    OpenApiIndex,
    OpenApiGroupVersion(String, String),
    Resource(ResourcePath),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
    watch_path: bool,
}

fn parse_kube_path(path: &str) -> KubePath {
    let segs = kube_api::request::segments(path);
    match segs.as_slice() {
        [] => KubePath::Root,
        ["version"] => KubePath::Version,
        ["openapi", "v3"] => KubePath::OpenApiIndex,
        ["openapi", "v3", "apis", g, v] => {
            KubePath::OpenApiGroupVersion(g.to_string(), v.to_string())
        }
        ["api"] => KubePath::Api,
        ["api", "v1"] => KubePath::ApiV1,
        ["apis"] => KubePath::Apis,
        ["apis", g] => KubePath::Group(g.to_string()),
        ["apis", g, v] => KubePath::GroupVersion(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => {
            let (watch_path, rest) = match rest {
                ["watch", r @ ..] => (true, r),
                r => (false, r),
            };
            let (namespace, rest) = match rest {
                ["namespaces", ns, r @ ..] if !r.is_empty() => (Some(ns.to_string()), r),
                r => (None, r),
            };
            let (resource, name, subresource) = match rest {
                [r] => (r, None, None),
                [r, n] => (r, Some(n.to_string()), None),
                [r, n, s] if !watch_path => (r, Some(n.to_string()), Some(s.to_string())),
                _ => return KubePath::Other,
            };
            KubePath::Resource(ResourcePath {
                group: g.to_string(),
                version: v.to_string(),
                namespace,
                resource: resource.to_string(),
                name,
                subresource,
                watch_path,
            })
        }
        _ => KubePath::Other,
    }
}

async fn handle(State(index): State<Arc<Index>>, req: Request) -> Response {
    serve_request(index, req).await
}

/// Answer a request under `/services/replication/` ([`router`]'s one route, for a caller that
/// routes by that prefix itself).
pub async fn serve_request(index: Arc<Index>, req: Request) -> Response {
    match serve(index, req).await {
        Ok(r) => r,
        Err(s) => s.into_response(),
    }
}

const DENIED: &str = "virtual.replication.content.authorization.kcp.io: access denied";

fn forbidden_resource(user: &UserInfo, verb: &str, rp: &ResourcePath) -> Status {
    let what = match &rp.name {
        Some(n) => format!("{} \"{n}\"", qualified(&rp.group, &rp.resource)),
        None => qualified(&rp.group, &rp.resource),
    };
    let scope = match &rp.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    Status::forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}: {DENIED}",
        user.name, rp.resource, rp.group
    ))
    .with_details(rp.name.as_deref().unwrap_or(""), &rp.group, &rp.resource)
}

/// 404 for a CachedResource that does not exist, the same for every caller.
fn no_cached_resource(key: &ObjKey) -> Status {
    Status::not_found("cache.kcp.io", "cachedresources", &key.1)
}

async fn serve(index: Arc<Index>, mut req: Request) -> Result<Response, Status> {
    let digest = url::parse(&kube_api::params::decoded_path(req.uri().path()));
    if digest == Err(url::DigestError::NotHandled) {
        return Err(Status::path_not_found());
    }
    // Nothing after this reads the user from the request: taken, not cloned.
    let user = RequestUser::take(req.extensions_mut())?;
    // A cluster segment that is no logical cluster name is refused before anything is looked
    // up (after authentication, as kube-apiserver orders it).
    let digest = digest.map_err(|e| Status::bad_request(e.to_string()))?;
    let kube_path = parse_kube_path(&digest.kube_path);
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key: ObjKey = (digest.cr_cluster.clone(), digest.cr_name.clone());
    if !matches!(
        kube_path,
        KubePath::Version | KubePath::Root | KubePath::Other
    ) && !index.read().served.contains_key(&key)
    {
        return Err(no_cached_resource(&key));
    }
    match kube_path {
        KubePath::Version => Ok(json_ok(kube_api::version_document())),
        KubePath::Root | KubePath::Other => Err(Status::path_not_found()),
        KubePath::Resource(rp) => serve_resource(&index, &digest, &key, &user, rp, req).await,
        discovery => {
            if !user.is_master() {
                let st = index.read();
                let attrs = Attributes {
                    user: &user,
                    verb: "get",
                    resource_request: false,
                    key: &key,
                    target: &digest.target,
                };
                match authz::authorize(&st, &attrs) {
                    Decision::Allow(_) => {}
                    Decision::NotFound(g, r, n) => return Err(Status::not_found(g, r, &n)),
                    Decision::NoOpinion(_, Some(err)) => {
                        return Err(internal_authz(req.uri(), &err));
                    }
                    Decision::Deny(_) | Decision::NoOpinion(_, None) => {
                        return Err(Status::forbidden(format!(
                            "forbidden: User \"{}\" cannot get path \"{}\": {DENIED}",
                            user.name, digest.kube_path
                        )));
                    }
                }
            }
            let api = resolved(&index, &key)?;
            if matches!(
                discovery,
                KubePath::OpenApiIndex | KubePath::OpenApiGroupVersion(..)
            ) {
                let info = RequestInfo::of(&req);
                return serve_openapi(&index, &api, discovery, info.param("hash"));
            }
            serve_discovery(&api, &digest, discovery, accept.as_deref(), req.headers())
        }
    }
}

fn internal_authz(uri: &axum::http::Uri, err: &str) -> Status {
    Status::internal(format!("\"{uri}\": {err}"))
}

fn resolved(index: &Index, key: &ObjKey) -> Result<Arc<ResolvedApi>, Status> {
    let st = index.read();
    let Some(served) = st.served.get(key) else {
        return Err(no_cached_resource(key));
    };
    match (&served.api, served.domain) {
        (Ok(api), _) => Ok(api.clone()),
        // A slice that does not resolve (not ready, no export resource referencing it, a
        // schema without the version) has no API: the generic 404 (kcp-head.md §4.2).
        (Err(e), Domain::Slice(_)) => {
            tracing::debug!(cluster = %key.0, slice = %key.1, error = %e, "Slice not resolved.");
            Err(Status::path_not_found())
        }
        (Err(e), Domain::CachedResource) => Err(Status::internal(format!(
            "unable to determine API definition set: {e}"
        ))),
    }
}

async fn serve_resource(
    index: &Arc<Index>,
    digest: &Digest,
    key: &ObjKey,
    user: &UserInfo,
    rp: ResourcePath,
    mut req: Request,
) -> Result<Response, Status> {
    // The request as the edge read it: verb and query, decoded once.
    let info = RequestInfo::take(&mut req);
    let verb = info.verb.clone();
    if !user.is_master() {
        if !authz::is_read_only(&verb) {
            return Err(forbidden_resource(user, &verb, &rp));
        }
        let st = index.read();
        let attrs = Attributes {
            user,
            verb: &verb,
            resource_request: true,
            key,
            target: &digest.target,
        };
        match authz::authorize(&st, &attrs) {
            Decision::Allow(_) => {}
            Decision::NotFound(g, r, n) => return Err(Status::not_found(g, r, &n)),
            Decision::NoOpinion(_, Some(err)) => return Err(internal_authz(req.uri(), &err)),
            Decision::Deny(reason) | Decision::NoOpinion(reason, None) => {
                tracing::debug!(user = %user.name, %verb, %reason, "Replication request denied.");
                return Err(forbidden_resource(user, &verb, &rp));
            }
        }
    }
    let api = resolved(index, key)?;
    if rp.group != api.group || rp.version != api.version || rp.resource != api.resource {
        return Err(Status::path_not_found());
    }
    if let Some(sub) = &rp.subresource {
        return Err(if sub == "status" && api.has_status {
            Status::method_not_allowed(&verb, &api.group, &api.resource)
        } else {
            Status::path_not_found()
        });
    }
    if !authz::is_read_only(&verb) {
        return Err(Status::method_not_allowed(&verb, &api.group, &api.resource));
    }
    if api.namespaced {
        if let (Target::Wildcard, Some(ns)) = (&digest.target, &rp.namespace) {
            return Err(Status::new(
                400,
                "",
                format!(
                    "cross-cluster LIST and WATCH are required to be cross-namespace, not scoped to namespace {ns}"
                ),
            ));
        }
    } else if rp.namespace.is_some() {
        return Err(Status::path_not_found());
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = negotiate(accept, Offer::Resource)?;
    let include = IncludeObject::parse(info.param("includeObject")).map_err(Status::bad_request)?;
    let opts = ListOptions::from_pairs(&info.query, rp.watch_path)?;
    check_fields_with(&opts.field_selector, api.namespaced, &api.selectable_fields)?;
    let ns = rp.namespace.as_deref();
    let yaml = format == Format::Yaml;
    let doc_format = if yaml { Format::Json } else { format };
    let document = match (verb.as_str(), &rp.name) {
        ("get", Some(name)) => Some(get(
            index,
            key,
            &api,
            &digest.target,
            ns,
            name,
            doc_format,
            include,
        )),
        ("list", None) => Some(
            list(
                index,
                key,
                &api,
                &digest.target,
                ns,
                &opts,
                doc_format,
                include,
            )
            .await,
        ),
        _ => None,
    };
    if let Some(resp) = document {
        let resp = if yaml { to_yaml(resp?).await? } else { resp? };
        return Ok(resp);
    }
    if yaml {
        return Err(Status::not_acceptable(
            "only the following media types are accepted: application/json",
        ));
    }
    match (verb.as_str(), &rp.name) {
        ("watch", name) => {
            let mut opts = opts;
            if let Some(name) = name {
                opts.field_selector = name_selector(&opts.field_selector, name)?;
            }
            let view = match format {
                Format::Table(v) => View::Table(v, include),
                Format::PartialObjectMetadata | Format::PartialObjectMetadataList => View::Metadata,
                _ => View::Object,
            };
            let target = digest.target.clone();
            watch(
                index.clone(),
                key.clone(),
                api,
                target,
                rp.namespace.clone(),
                opts,
                view,
            )
        }
        _ => Err(Status::method_not_allowed(&verb, &api.group, &api.resource)),
    }
}

/// How objects are shown in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Object,
    Metadata,
    /// A Table with this apiVersion, rows carrying the object as asked.
    Table(&'static str, IncludeObject),
}

impl View {
    /// A small number identifying the view (and whether column definitions are included) for
    /// the per-event frame memo.
    fn memo_key(self, with_defs: bool) -> u8 {
        match self {
            View::Object => 0,
            View::Metadata => 1,
            View::Table(v, include) => {
                let inc = match include {
                    IncludeObject::None => 0,
                    IncludeObject::Metadata => 1,
                    IncludeObject::Object => 2,
                };
                2 + inc * 4 + u8::from(v.ends_with("v1beta1")) * 2 + u8::from(with_defs)
            }
        }
    }
}

fn table_head(api_version: &str, metadata: &serde_json::Value, defs: Option<&[u8]>) -> Vec<u8> {
    let mut head = format!(
        "{{\"kind\":\"Table\",\"apiVersion\":\"{api_version}\",\"metadata\":{metadata},\"columnDefinitions\":"
    )
    .into_bytes();
    head.extend_from_slice(defs.unwrap_or(b"null"));
    head
}

/// One object rendered in `view` for one consumer literal (a single object or a one-row Table).
fn render(
    view: View,
    api: &ResolvedApi,
    o: &ServedObject,
    c: &[u8],
    revision: u64,
    defs: Option<&[u8]>,
) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    match view {
        View::Object => write_item(&mut buf, ItemView::Object, &api.printer_columns, o, c),
        View::Metadata => write_item(&mut buf, ItemView::Metadata, &api.printer_columns, o, c),
        View::Table(v, include) => {
            buf.extend_from_slice(&table_head(
                v,
                &json!({"resourceVersion": revision.to_string()}),
                defs,
            ));
            buf.extend_from_slice(b",\"rows\":[");
            write_item(&mut buf, ItemView::Row(include), &api.printer_columns, o, c);
            buf.extend_from_slice(b"]}");
        }
    }
    buf.freeze()
}

fn column_defs(api: &ResolvedApi) -> Bytes {
    to_bytes(&table::column_definitions(&api.printer_columns))
}

/// The filters one list or watch applies to served objects.
#[derive(Clone)]
struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, o: &ServedObject) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| **ns == *o.namespace)
            && (self.labels.is_everything() || self.labels.matches_labels(&o.labels))
            && (self.fields.is_everything()
                || self.fields.matches_with(|f| match f {
                    "metadata.name" => Some(&*o.name),
                    "metadata.namespace" => Some(&*o.namespace),
                    other => o
                        .fields
                        .iter()
                        .find(|(k, _)| &**k == other)
                        .map(|(_, v)| &**v),
                }))
    }
}

/// The synthetic clusters of a request (§5.8).
fn clusters_for(target: &Target, consumers: &BTreeSet<String>) -> Vec<Vec<u8>> {
    match target {
        Target::Wildcard => consumers.iter().map(|c| cluster_literal(c)).collect(),
        Target::Cluster(c) if consumers.contains(c) => vec![cluster_literal(c)],
        Target::Cluster(_) => Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn get(
    index: &Index,
    key: &ObjKey,
    api: &ResolvedApi,
    target: &Target,
    ns: Option<&str>,
    name: &str,
    format: Format,
    include: IncludeObject,
) -> Result<Response, Status> {
    let Target::Cluster(cluster) = target else {
        return Err(Status::bad_request("Wildcard request not supported"));
    };
    let view = match format {
        Format::Table(v) => View::Table(v, include),
        Format::PartialObjectMetadata => View::Metadata,
        Format::PartialObjectMetadataList => {
            return Err(Status::not_acceptable(format!(
                "you requested PartialObjectMetadataList, but the requested object is not a list ({}/{}, Kind={})",
                api.group, api.version, api.names.kind
            )));
        }
        _ => View::Object,
    };
    let object = {
        let st = index.read();
        let served = st
            .served
            .get(key)
            .ok_or_else(|| Status::not_found(&api.group, &api.resource, name))?;
        if !served.consumers.contains(cluster) {
            return Err(Status::not_found(&api.group, &api.resource, name));
        }
        served
            .object(ns.unwrap_or(""), name)
            .cloned()
            .ok_or_else(|| Status::not_found(&api.group, &api.resource, name))?
    };
    let c = cluster_literal(cluster);
    // Column definitions are only part of a Table; a plain GET must not pay for them.
    let defs = matches!(view, View::Table(..)).then(|| column_defs(api));
    Ok(json_ok(render(
        view,
        api,
        &object,
        &c,
        object.revision,
        defs.as_deref(),
    )))
}

/// The VW's `continue` tokens: the snapshot revision and the last (namespace, name, cluster).
struct ContinueToken;

impl ContinueToken {
    fn encode(rv: u64, ns: &str, name: &str, cluster: &str) -> String {
        kube_api::continuation::encode(rv, &[ns, name, cluster])
    }

    fn decode(s: &str) -> Result<(u64, (String, String, String)), Status> {
        let (rv, mut parts) = kube_api::continuation::decode(s, 3)?;
        let cluster = parts.pop().unwrap_or_default();
        let name = parts.pop().unwrap_or_default();
        let ns = parts.pop().unwrap_or_default();
        Ok((rv, (ns, name, cluster)))
    }
}

/// How long a read waits for the index to reach a requested resourceVersion.
const RV_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn too_large(requested: u64, current: u64) -> Status {
    let mut s = Status::new(
        504,
        "Timeout",
        format!("Too large resource version: {requested}, current: {current}"),
    );
    s.details = Some(Box::new(kube_api::status::StatusDetails {
        causes: vec![kube_api::status::StatusCause {
            reason: "ResourceVersionTooLarge".into(),
            message: "Too large resource version".into(),
            field: String::new(),
        }],
        ..Default::default()
    }));
    s
}

#[allow(clippy::too_many_arguments)]
async fn list(
    index: &Index,
    key: &ObjKey,
    api: &ResolvedApi,
    target: &Target,
    ns: Option<&str>,
    opts: &ListOptions,
    format: Format,
    include: IncludeObject,
) -> Result<Response, Status> {
    use kube_api::params::RvMatch;
    let filter = Filter {
        namespace: ns.map(str::to_string),
        labels: opts.label_selector.clone(),
        fields: opts.field_selector.clone(),
    };
    let requested = opts.revision()?;
    let resume = match opts.continue_token.as_deref() {
        Some(t) => {
            if requested.is_some() {
                return Err(Status::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            Some(ContinueToken::decode(t)?)
        }
        None => None,
    };
    // `resourceVersionMatch=Exact`, or the legacy resourceVersion + limit, read one revision.
    let exact = match (opts.resource_version_match, requested, opts.limit) {
        (Some(RvMatch::Exact), Some(n), _) | (None, Some(n), Some(_)) => Some(n),
        _ => None,
    };
    if let Some(n) = requested {
        index
            .wait_for_revision(n, RV_WAIT)
            .await
            .map_err(|cur| too_large(n, cur))?;
    }
    let objects: Vec<Arc<ServedObject>>;
    let clusters;
    let revision;
    {
        let st = index.read();
        let Some(served) = st.served.get(key) else {
            return Err(no_cached_resource(key));
        };
        clusters = clusters_for(target, &served.consumers);
        let at = resume.as_ref().map(|(rv, _)| *rv).or(exact);
        match at {
            Some(rv) if rv < st.revision => {
                let snapshot = served.snapshot_at(rv).map_err(|_| match resume {
                    Some(_) => kube_api::continuation::expired_continue(),
                    None => kube_api::continuation::expired_list(),
                })?;
                objects = snapshot
                    .into_values()
                    .filter(|o| filter.matches(o))
                    .collect();
                revision = rv;
            }
            _ => {
                objects = served
                    .objects
                    .values()
                    .filter(|o| filter.matches(o))
                    .cloned()
                    .collect();
                revision = st.revision;
            }
        }
    }
    let cluster_names: Vec<String> = clusters
        .iter()
        .map(|c| serde_json::from_slice::<String>(c).unwrap_or_default())
        .collect();
    // Pagination walks (object, cluster) pairs in order.
    let mut pairs: Option<Vec<(usize, usize)>> = None;
    let mut next_token = None;
    let mut remaining = None;
    if resume.is_some() || opts.limit.is_some() {
        let after = resume.map(|(_, k)| k);
        let limit = opts.limit.map_or(usize::MAX, |l| l as usize);
        let mut page = Vec::new();
        let mut left = 0u64;
        for (oi, o) in objects.iter().enumerate() {
            for (ci, cname) in cluster_names.iter().enumerate() {
                if let Some((a_ns, a_name, a_cluster)) = &after
                    && (&*o.namespace, &*o.name, cname.as_str())
                        <= (a_ns.as_str(), a_name.as_str(), a_cluster.as_str())
                {
                    continue;
                }
                if page.len() < limit {
                    page.push((oi, ci));
                } else {
                    left += 1;
                }
            }
        }
        if left > 0
            && let Some(&(oi, ci)) = page.last()
        {
            let o = &objects[oi];
            next_token = Some(ContinueToken::encode(
                revision,
                &o.namespace,
                &o.name,
                &cluster_names[ci],
            ));
            if opts.label_selector.is_everything() && opts.field_selector.is_everything() {
                remaining = Some(left);
            }
        }
        pairs = Some(page);
    }
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(t) = &next_token {
        metadata["continue"] = json!(t);
    }
    if let Some(r) = remaining {
        metadata["remainingItemCount"] = json!(r);
    }
    let (mut head, view) = match format {
        Format::Table(v) => {
            let defs = column_defs(api);
            (table_head(v, &metadata, Some(&defs)), ItemView::Row(include))
        }
        Format::PartialObjectMetadataList => (
            to_bytes(&json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})).to_vec(),
            ItemView::Metadata,
        ),
        Format::PartialObjectMetadata => {
            return Err(Status::not_acceptable(format!(
                "you requested PartialObjectMetadata, but the requested object is a list ({}/{}, Kind={})",
                api.group, api.version, api.list_kind()
            )));
        }
        _ => (
            to_bytes(&json!({"apiVersion": api.api_version(), "kind": api.list_kind(), "metadata": metadata})).to_vec(),
            ItemView::Object,
        ),
    };
    if !matches!(format, Format::Table(_)) {
        head.pop(); // the closing brace; items follow
    }
    let columns: Arc<[PrinterColumn]> = Arc::from(api.printer_columns.clone());
    let mut body = ListBody::with_view(Bytes::from(head), objects, clusters, view, columns);
    if let Some(p) = pairs {
        body = body.with_pairs(p);
    }
    Ok(json_ok(body.into_body()))
}

/// The state of one VW watch stream.
struct WatchState {
    index: Arc<Index>,
    key: ObjKey,
    target: Target,
    filter: Filter,
    pending: VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<ServedEvent>>,
    last: u64,
    last_seq: u64,
    /// The stream's deadline and bookmark timers (registered once, not per event).
    timers: watch::Timers,
    bookmarks: bool,
    api: Arc<ResolvedApi>,
    view: View,
    /// Column definitions, sent with the first Table event only.
    defs: Option<Bytes>,
    done: bool,
}

impl WatchState {
    fn push_event(&mut self, ev: &ServedEvent) {
        self.timers.activity();
        if ev.seq <= self.last_seq {
            return;
        }
        self.last_seq = ev.seq;
        self.last = self.last.max(ev.revision);
        let new_match = self.filter.matches(&ev.object);
        let kind = match ev.change {
            Change::Added if new_match => EventType::Added,
            // kube (slice-keyed URLs): an object entering the selector arrives as ADDED.
            Change::Modified
                if new_match
                    && self.api.kube_watch()
                    && ev.prev.as_ref().is_some_and(|p| !self.filter.matches(p)) =>
            {
                EventType::Added
            }
            // kcp v0.30: an object entering the selector arrives as MODIFIED.
            Change::Modified if new_match => EventType::Modified,
            // kube: an object leaving the selector arrives as DELETED.
            Change::Modified if ev.prev.as_ref().is_some_and(|p| self.filter.matches(p)) => {
                EventType::Deleted
            }
            Change::Deleted if new_match => EventType::Deleted,
            _ => return,
        };
        for c in clusters_for(&self.target, &ev.consumers) {
            let frame = match self.view {
                View::Object => ev.frame(kind, &c),
                view => {
                    let defs = self.defs.take();
                    let key = view.memo_key(defs.is_some());
                    ev.memo(kind, &c, key, || {
                        watch::frame(
                            kind,
                            &[&render(
                                view,
                                &self.api,
                                &ev.object,
                                &c,
                                ev.revision,
                                defs.as_deref(),
                            )],
                        )
                    })
                }
            };
            self.pending.push_back(frame);
        }
    }

    /// An initial ADDED event for an object of the snapshot.
    fn push_initial(&mut self, o: &ServedObject, c: &[u8]) {
        let frame = match self.view {
            View::Object => o.frame(EventType::Added, c),
            view => {
                let defs = self.defs.take();
                watch::frame(
                    EventType::Added,
                    &[&render(view, &self.api, o, c, o.revision, defs.as_deref())],
                )
            }
        };
        self.pending.push_back(frame);
    }
}

async fn next_frame(mut st: WatchState) -> Option<(Result<Bytes, std::io::Error>, WatchState)> {
    loop {
        if let Some(f) = st.pending.pop_front() {
            return Some((Ok(f), st));
        }
        if st.done {
            return None;
        }
        let bookmarks = st.bookmarks;
        tokio::select! {
            tick = st.timers.next(bookmarks) => match tick {
                watch::Tick::Deadline => return None,
                watch::Tick::Bookmark => {
                    let f = watch::bookmark_frame(&st.api.api_version(), &st.api.names.kind, st.last, false);
                    return Some((Ok(f), st));
                }
            },
            r = st.rx.recv() => match r {
                Ok(ev) => st.push_event(&ev),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let replay = {
                        let s = st.index.read();
                        match s.served.get(&st.key) {
                            Some(served) => {
                                st.rx = served.subscribe();
                                served.events_after_seq(st.last_seq)
                            }
                            None => Ok(Vec::new()),
                        }
                    };
                    match replay {
                        Ok(events) => for ev in events { st.push_event(&ev) },
                        Err(oldest) => {
                            watch::closed_behind();
                            let status = kube_api::continuation::too_old(st.last, oldest);
                            st.pending.push_back(watch::error_frame(&status));
                            st.done = true;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => st.done = true,
            }
        }
    }
}

fn watch(
    index: Arc<Index>,
    key: ObjKey,
    api: Arc<ResolvedApi>,
    target: Target,
    ns: Option<String>,
    opts: ListOptions,
    view: View,
) -> Result<Response, Status> {
    let requested = opts.revision()?;
    let initial = opts.send_initial_events.unwrap_or(requested.is_none());
    let defs = matches!(view, View::Table(..)).then(|| column_defs(&api));
    let st = index.read();
    let Some(served) = st.served.get(&key) else {
        return Err(no_cached_resource(&key));
    };
    // Subscribing under the read lock means no event falls between the snapshot or replay
    // below and the live stream.
    let mut ws = WatchState {
        index: index.clone(),
        key: key.clone(),
        target,
        filter: Filter {
            namespace: ns,
            labels: opts.label_selector.clone(),
            fields: opts.field_selector.clone(),
        },
        pending: VecDeque::new(),
        rx: served.subscribe(),
        last: st.revision,
        last_seq: 0,
        timers: watch::Timers::new(
            tokio::time::Instant::now() + watch::timeout(opts.timeout_seconds),
        ),
        bookmarks: opts.allow_watch_bookmarks,
        api: api.clone(),
        view,
        defs,
        done: false,
    };
    if initial {
        let clusters = clusters_for(&ws.target, &served.consumers);
        for o in served.objects.values() {
            if ws.filter.matches(o) {
                for c in &clusters {
                    ws.push_initial(o, c);
                }
            }
        }
        if opts.send_initial_events == Some(true) && opts.allow_watch_bookmarks {
            ws.pending.push_back(watch::bookmark_frame(
                &api.api_version(),
                &api.names.kind,
                st.revision,
                true,
            ));
        }
    } else {
        let after = requested.unwrap_or(st.revision);
        match served.events_after(after) {
            Ok(events) => {
                ws.last = after;
                for ev in &events {
                    ws.push_event(ev);
                }
                ws.last = ws.last.max(st.revision);
            }
            Err(oldest) => {
                let status = kube_api::continuation::too_old(after, oldest);
                let one = futures_util::stream::once(async move {
                    Ok::<_, std::io::Error>(watch::error_frame(&status))
                });
                return Ok(watch::response(one));
            }
        }
    }
    ws.last_seq = served.last_seq();
    drop(st);
    Ok(watch::response(
        futures_util::stream::unfold(ws, next_frame).boxed(),
    ))
}

/// Re-encode a JSON response as YAML (the slow path: only for clients that ask for YAML).
async fn to_yaml(resp: Response) -> Result<Response, Status> {
    use http_body_util::BodyExt;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(Status::internal)?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(Status::internal)?;
    let text = serde_saphyr::to_string(&value).map_err(Status::internal)?;
    let mut r = Response::new(axum::body::Body::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    Ok(r)
}

fn json_ok(body: impl Into<axum::body::Body>) -> Response {
    kube_api::json_response(200, body)
}

fn to_bytes(v: &serde_json::Value) -> Bytes {
    // invariant: json! values serialize.
    Bytes::from(serde_json::to_vec(v).expect("invariant: document serializes"))
}

fn storage_version_hash(key: &str) -> String {
    use base64::Engine;
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&h[..8])
}

fn serve_openapi(
    index: &Index,
    api: &ResolvedApi,
    path: KubePath,
    asked_hash: Option<&str>,
) -> Result<Response, Status> {
    let (doc, hash) = index.openapi(api);
    match path {
        KubePath::OpenApiIndex => Ok(json_ok(to_bytes(&super::openapi::index(api, &hash)))),
        KubePath::OpenApiGroupVersion(g, v) if g == api.group && v == api.version => {
            let mut r = json_ok(doc);
            let h = r.headers_mut();
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                h.insert(header::ETAG, etag);
            }
            if asked_hash == Some(hash.as_str()) {
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, immutable"),
                );
            } else {
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache, private"),
                );
            }
            Ok(r)
        }
        _ => Err(Status::path_not_found()),
    }
}

/// Discovery of the one resource a CachedResource URL serves (read-only verbs, the status
/// subresource when the schema has one), through the shared [`rest::discovery`].
fn serve_discovery(
    api: &ResolvedApi,
    digest: &Digest,
    path: KubePath,
    accept: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, Status> {
    let tail: Vec<String> = match path {
        KubePath::Api => vec!["api".into()],
        KubePath::ApiV1 => vec!["api".into(), "v1".into()],
        KubePath::Apis => vec!["apis".into()],
        KubePath::Group(g) => vec!["apis".into(), g],
        KubePath::GroupVersion(g, v) => vec!["apis".into(), g, v],
        _ => return Err(Status::path_not_found()),
    };
    let resource = rest::discovery::ApiResource {
        group: api.group.clone(),
        version: api.version.clone(),
        resource: api.resource.clone(),
        singular: api.names.singular.clone(),
        kind: api.names.kind.clone(),
        namespaced: api.namespaced,
        verbs: ["get", "list", "watch"].map(String::from).to_vec(),
        short_names: api.names.short_names.clone(),
        categories: api.names.categories.clone(),
        subresources: if api.has_status {
            vec![("status".into(), Vec::new())]
        } else {
            Vec::new()
        },
        storage_version_hash: Some(storage_version_hash(&format!(
            "{}/{}/{}/{}",
            digest.cr_cluster, api.group, api.version, api.names.kind
        ))),
    };
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    rest::discovery::serve(&[resource], &tail, accept, if_none_match)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_paths_are_split_into_group_version_namespace_resource_and_name() {
        assert_eq!(parse_kube_path("/apis"), KubePath::Apis);
        assert_eq!(
            parse_kube_path("/apis/g/v"),
            KubePath::GroupVersion("g".into(), "v".into())
        );
        let KubePath::Resource(rp) = parse_kube_path("/apis/g/v/namespaces/ns/things/x/status")
        else {
            panic!()
        };
        assert_eq!(rp.namespace.as_deref(), Some("ns"));
        assert_eq!(rp.name.as_deref(), Some("x"));
        assert_eq!(rp.subresource.as_deref(), Some("status"));
        let KubePath::Resource(rp) = parse_kube_path("/apis/g/v/watch/things") else {
            panic!()
        };
        assert!(rp.watch_path);
        assert_eq!(parse_kube_path("/openapi/v2"), KubePath::Other);
    }
}
