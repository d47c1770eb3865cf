//! Local RBAC evaluation: answers a cluster-scoped SubjectAccessReview for a resource request
//! from ClusterRole and ClusterRoleBinding objects, with Kubernetes RBAC authorizer semantics
//! (no namespaced Roles/RoleBindings, no non-resource URLs).

use serde::{Deserialize, Deserializer};

/// Treats an explicit JSON `null` like a missing list.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The part of an object's metadata this module needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ObjectMetaName {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
}

/// One `rules[]` entry of a (Cluster)Role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// API groups the rule covers; `""` is the core group, `*` any group.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub api_groups: Vec<String>,
    /// Resources (`r`, `r/sub`, `*/sub` or `*`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub resources: Vec<String>,
    /// Verbs, or `*` for all.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub verbs: Vec<String>,
    /// Object names the rule is limited to; empty means any name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource URLs; never matched by this evaluator (resource requests only).
    #[serde(
        default,
        rename = "nonResourceURLs",
        deserialize_with = "null_as_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// `rbac.authorization.k8s.io/v1` ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClusterRole {
    /// The role's metadata (only the name is used).
    pub metadata: ObjectMetaName,
    /// The permissions the role grants.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rules: Vec<PolicyRule>,
}

/// The role a binding grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// Normally `rbac.authorization.k8s.io`.
    #[serde(default)]
    pub api_group: String,
    /// `ClusterRole` (or `Role`, which never applies at cluster scope).
    #[serde(default)]
    pub kind: String,
    /// Name of the referenced role.
    #[serde(default)]
    pub name: String,
}

/// Who a binding applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    #[serde(default)]
    pub kind: String,
    /// `rbac.authorization.k8s.io` for users and groups, empty for service accounts.
    #[serde(default)]
    pub api_group: Option<String>,
    /// User, group or service account name.
    #[serde(default)]
    pub name: String,
    /// Service account namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `rbac.authorization.k8s.io/v1` ClusterRoleBinding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClusterRoleBinding {
    /// The binding's metadata (only the name is used).
    pub metadata: ObjectMetaName,
    /// The role granted.
    #[serde(rename = "roleRef")]
    pub role_ref: RoleRef,
    /// Who receives the role.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub subjects: Vec<Subject>,
}

/// The resource request being authorized (cluster scope; no namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceAttributes<'a> {
    /// Request verb, e.g. `get`, `list`, `watch`, `create`.
    pub verb: &'a str,
    /// API group; `""` for the core group.
    pub group: &'a str,
    /// Resource (plural), e.g. `apiexports`.
    pub resource: &'a str,
    /// Subresource, e.g. `content`; `""` for none.
    pub subresource: &'a str,
    /// Object name; `""` for collection requests.
    pub name: &'a str,
}

/// The requesting user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRef<'a> {
    /// User name, e.g. `alice` or `system:serviceaccount:<ns>:<name>`.
    pub name: &'a str,
    /// Groups the user belongs to.
    pub groups: &'a [String],
}

/// Returns Some(reason) naming the binding and role that allow it, None when nothing allows.
///
/// Bindings are visited in the given order, subjects in binding order; the first rule that
/// allows the request wins. Only bindings whose `roleRef.kind` is `ClusterRole` count, and a
/// binding whose role `roles` cannot find grants nothing.
pub fn allows<'r>(
    roles: impl Fn(&str) -> Option<&'r ClusterRole>,
    bindings: impl IntoIterator<Item = &'r ClusterRoleBinding>,
    user: &UserRef<'_>,
    attrs: &ResourceAttributes<'_>,
) -> Option<String> {
    for binding in bindings {
        if binding.role_ref.kind != "ClusterRole" {
            continue;
        }
        let Some(subject) = binding.subjects.iter().find(|s| subject_applies(s, user)) else {
            continue;
        };
        let Some(role) = roles(&binding.role_ref.name) else {
            continue;
        };
        if role.rules.iter().any(|r| rule_allows(r, attrs)) {
            return Some(format!(
                "RBAC: allowed by ClusterRoleBinding \"{}\" of ClusterRole \"{}\" to {}",
                binding.metadata.name,
                binding.role_ref.name,
                describe_subject(subject)
            ));
        }
    }
    None
}

/// Whether a ClusterRoleBinding names the user (directly, by group or as a service account).
pub fn binds(binding: &ClusterRoleBinding, user: &UserRef<'_>) -> bool {
    binding.subjects.iter().any(|s| subject_applies(s, user))
}

/// Whether a binding subject designates the user.
fn subject_applies(subject: &Subject, user: &UserRef<'_>) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            // Cluster-scoped bindings have no namespace to default to.
            let ns = subject.namespace.as_deref().unwrap_or("");
            !ns.is_empty()
                && user
                    .name
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    .is_some_and(|(n, name)| n == ns && name == subject.name)
        }
        _ => false,
    }
}

/// `Kind "name"`, with `name/namespace` for service accounts.
fn describe_subject(subject: &Subject) -> String {
    if subject.kind == "ServiceAccount" {
        let ns = subject.namespace.as_deref().unwrap_or("");
        format!("{} \"{}/{}\"", subject.kind, subject.name, ns)
    } else {
        format!("{} \"{}\"", subject.kind, subject.name)
    }
}

/// Whether one policy rule covers the resource request.
fn rule_allows(rule: &PolicyRule, attrs: &ResourceAttributes<'_>) -> bool {
    let verb_ok = rule.verbs.iter().any(|v| v == "*" || v == attrs.verb);
    let group_ok = rule.api_groups.iter().any(|g| g == "*" || g == attrs.group);
    let name_ok = rule.resource_names.is_empty()
        || (!attrs.name.is_empty() && rule.resource_names.iter().any(|n| n == attrs.name));
    verb_ok && group_ok && resource_matches(rule, attrs) && name_ok
}

/// `*`, the exact (resource or resource/subresource) string, or `*/<subresource>`.
fn resource_matches(rule: &PolicyRule, attrs: &ResourceAttributes<'_>) -> bool {
    rule.resources.iter().any(|r| {
        if r == "*" {
            return true;
        }
        if attrs.subresource.is_empty() {
            return r == attrs.resource;
        }
        match r.split_once('/') {
            Some((res, sub)) => sub == attrs.subresource && (res == "*" || res == attrs.resource),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMetaName {
                name: name.to_string(),
            },
            rules,
        }
    }

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            api_groups: v(groups),
            resources: v(resources),
            verbs: v(verbs),
            resource_names: v(names),
            non_resource_urls: Vec::new(),
        }
    }

    fn binding(
        name: &str,
        role_kind: &str,
        role: &str,
        subjects: Vec<Subject>,
    ) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: ObjectMetaName {
                name: name.to_string(),
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_string(),
                kind: role_kind.to_string(),
                name: role.to_string(),
            },
            subjects,
        }
    }

    fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Subject {
        Subject {
            kind: kind.to_string(),
            api_group: None,
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
        }
    }

    struct World {
        roles: BTreeMap<String, ClusterRole>,
        bindings: Vec<ClusterRoleBinding>,
    }

    impl World {
        fn new(roles: Vec<ClusterRole>, bindings: Vec<ClusterRoleBinding>) -> Self {
            World {
                roles: roles
                    .into_iter()
                    .map(|r| (r.metadata.name.clone(), r))
                    .collect(),
                bindings,
            }
        }

        fn check(
            &self,
            user: &str,
            groups: &[&str],
            attrs: ResourceAttributes<'_>,
        ) -> Option<String> {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            let user = UserRef {
                name: user,
                groups: &groups,
            };
            allows(|n| self.roles.get(n), &self.bindings, &user, &attrs)
        }
    }

    fn content(verb: &'static str, name: &'static str) -> ResourceAttributes<'static> {
        ResourceAttributes {
            verb,
            group: "apis.kcp.io",
            resource: "apiexports",
            subresource: "content",
            name,
        }
    }

    /// The grant from the kcp reference: alice may read the `compute` export's content.
    fn kcp_world() -> World {
        let yaml_as_json = r#"[
          {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
           "metadata":{"name":"compute-content-reader"},
           "rules":[{"apiGroups":["apis.kcp.io"],"resources":["apiexports/content"],
                     "resourceNames":["compute"],"verbs":["get","list","watch"]}]},
          {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
           "metadata":{"name":"compute-content-reader"},
           "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"compute-content-reader"},
           "subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"alice"}]}
        ]"#;
        let docs: Vec<serde_json::Value> = match serde_json::from_str(yaml_as_json) {
            Ok(d) => d,
            Err(e) => panic!("fixture: {e}"),
        };
        let role: ClusterRole = match serde_json::from_value(docs[0].clone()) {
            Ok(r) => r,
            Err(e) => panic!("role: {e}"),
        };
        let binding: ClusterRoleBinding = match serde_json::from_value(docs[1].clone()) {
            Ok(b) => b,
            Err(e) => panic!("binding: {e}"),
        };
        World::new(vec![role], vec![binding])
    }

    #[test]
    fn kcp_grant_allows_alice_to_read_the_compute_export_content() {
        let w = kcp_world();
        for verb in ["get", "list", "watch"] {
            let reason = w.check("alice", &[], content(verb, "compute"));
            assert_eq!(
                reason.as_deref(),
                Some(
                    "RBAC: allowed by ClusterRoleBinding \"compute-content-reader\" of ClusterRole \"compute-content-reader\" to User \"alice\""
                ),
                "{verb}"
            );
        }
    }

    #[test]
    fn kcp_grant_does_not_allow_other_verbs_names_or_users() {
        let w = kcp_world();
        assert_eq!(w.check("alice", &[], content("create", "compute")), None);
        assert_eq!(w.check("alice", &[], content("get", "storage")), None);
        assert_eq!(w.check("alice", &[], content("get", "")), None);
        assert_eq!(w.check("bob", &[], content("get", "compute")), None);
        let no_sub = ResourceAttributes {
            subresource: "",
            ..content("get", "compute")
        };
        assert_eq!(w.check("alice", &[], no_sub), None);
        let other_group = ResourceAttributes {
            group: "",
            ..content("get", "compute")
        };
        assert_eq!(w.check("alice", &[], other_group), None);
    }

    #[test]
    fn group_subject_applies_to_members() {
        let w = World::new(
            vec![role(
                "r",
                vec![rule(
                    &["apis.kcp.io"],
                    &["apiexports/content"],
                    &["get"],
                    &[],
                )],
            )],
            vec![binding(
                "b",
                "ClusterRole",
                "r",
                vec![subject("Group", "readers", None)],
            )],
        );
        let reason = w.check(
            "carol",
            &["system:authenticated", "readers"],
            content("get", "x"),
        );
        assert_eq!(
            reason.as_deref(),
            Some(
                "RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"r\" to Group \"readers\""
            )
        );
        assert_eq!(w.check("carol", &["writers"], content("get", "x")), None);
        assert_eq!(w.check("readers", &[], content("get", "x")), None);
    }

    #[test]
    fn wildcard_verbs_groups_and_resources_allow_anything() {
        let w = World::new(
            vec![role("admin", vec![rule(&["*"], &["*"], &["*"], &[])])],
            vec![binding(
                "b",
                "ClusterRole",
                "admin",
                vec![subject("User", "root", None)],
            )],
        );
        assert!(w.check("root", &[], content("delete", "compute")).is_some());
        let core = ResourceAttributes {
            verb: "create",
            group: "",
            resource: "configmaps",
            subresource: "",
            name: "",
        };
        assert!(w.check("root", &[], core).is_some());
        assert!(w.check("alice", &[], core).is_none());
    }

    #[test]
    fn wildcard_verb_still_requires_group_and_resource() {
        let w = World::new(
            vec![role(
                "r",
                vec![rule(&["apis.kcp.io"], &["apiexports/content"], &["*"], &[])],
            )],
            vec![binding(
                "b",
                "ClusterRole",
                "r",
                vec![subject("User", "alice", None)],
            )],
        );
        assert!(
            w.check("alice", &[], content("create", "compute"))
                .is_some()
        );
        let parent = ResourceAttributes {
            subresource: "",
            ..content("get", "compute")
        };
        assert!(w.check("alice", &[], parent).is_none());
    }

    #[test]
    fn subresource_wildcard_matches_any_parent_resource() {
        let w = World::new(
            vec![role(
                "r",
                vec![rule(&["apis.kcp.io"], &["*/content"], &["get"], &[])],
            )],
            vec![binding(
                "b",
                "ClusterRole",
                "r",
                vec![subject("User", "alice", None)],
            )],
        );
        assert!(w.check("alice", &[], content("get", "compute")).is_some());
        let status = ResourceAttributes {
            subresource: "status",
            ..content("get", "compute")
        };
        assert!(w.check("alice", &[], status).is_none());
        let parent = ResourceAttributes {
            subresource: "",
            ..content("get", "compute")
        };
        assert!(w.check("alice", &[], parent).is_none());
    }

    #[test]
    fn plain_resource_rule_does_not_cover_subresources() {
        let w = World::new(
            vec![role(
                "r",
                vec![rule(&["apis.kcp.io"], &["apiexports"], &["get"], &[])],
            )],
            vec![binding(
                "b",
                "ClusterRole",
                "r",
                vec![subject("User", "alice", None)],
            )],
        );
        assert!(w.check("alice", &[], content("get", "compute")).is_none());
        let parent = ResourceAttributes {
            subresource: "",
            ..content("get", "compute")
        };
        assert!(w.check("alice", &[], parent).is_some());
    }

    #[test]
    fn binding_to_a_missing_role_allows_nothing() {
        let w = World::new(
            vec![],
            vec![binding(
                "b",
                "ClusterRole",
                "gone",
                vec![subject("User", "alice", None)],
            )],
        );
        assert_eq!(w.check("alice", &[], content("get", "compute")), None);
    }

    #[test]
    fn bindings_to_namespaced_roles_are_ignored() {
        let w = World::new(
            vec![role("r", vec![rule(&["*"], &["*"], &["*"], &[])])],
            vec![binding(
                "b",
                "Role",
                "r",
                vec![subject("User", "alice", None)],
            )],
        );
        assert_eq!(w.check("alice", &[], content("get", "compute")), None);
    }

    #[test]
    fn service_account_subject_matches_its_username() {
        let w = World::new(
            vec![role(
                "r",
                vec![rule(
                    &["apis.kcp.io"],
                    &["apiexports/content"],
                    &["get"],
                    &[],
                )],
            )],
            vec![binding(
                "b",
                "ClusterRole",
                "r",
                vec![
                    subject("ServiceAccount", "nons", None),
                    subject("ServiceAccount", "syncer", Some("kcp-system")),
                ],
            )],
        );
        assert_eq!(
            w.check(
                "system:serviceaccount:kcp-system:syncer",
                &[],
                content("get", "c")
            )
            .as_deref(),
            Some(
                "RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"r\" to ServiceAccount \"syncer/kcp-system\""
            )
        );
        assert!(
            w.check(
                "system:serviceaccount:other:syncer",
                &[],
                content("get", "c")
            )
            .is_none()
        );
        assert!(w.check("syncer", &[], content("get", "c")).is_none());
        assert!(
            w.check("system:serviceaccount::nons", &[], content("get", "c"))
                .is_none()
        );
    }

    #[test]
    fn later_rules_and_bindings_are_considered() {
        let w = World::new(
            vec![
                role("none", vec![rule(&["x"], &["y"], &["get"], &[])]),
                role(
                    "two",
                    vec![
                        rule(&["x"], &["y"], &["get"], &[]),
                        rule(
                            &["apis.kcp.io"],
                            &["apiexports/content"],
                            &["list"],
                            &["compute"],
                        ),
                    ],
                ),
            ],
            vec![
                binding(
                    "first",
                    "ClusterRole",
                    "none",
                    vec![subject("User", "alice", None)],
                ),
                binding(
                    "second",
                    "ClusterRole",
                    "two",
                    vec![subject("User", "bob", None), subject("User", "alice", None)],
                ),
            ],
        );
        assert_eq!(
            w.check("alice", &[], content("list", "compute")).as_deref(),
            Some(
                "RBAC: allowed by ClusterRoleBinding \"second\" of ClusterRole \"two\" to User \"alice\""
            )
        );
    }

    #[test]
    fn null_lists_deserialize_as_empty() {
        let r: Result<ClusterRole, _> = serde_json::from_str(
            r#"{"metadata":{"name":"r"},"rules":[{"verbs":["get"],"apiGroups":null,"nonResourceURLs":["/healthz"]}]}"#,
        );
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert!(r.rules[0].api_groups.is_empty());
        assert_eq!(r.rules[0].non_resource_urls, vec!["/healthz".to_string()]);
        let b: Result<ClusterRoleBinding, _> = serde_json::from_str(
            r#"{"metadata":{"name":"b"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"r"},"subjects":null}"#,
        );
        assert!(matches!(b, Ok(b) if b.subjects.is_empty()));
    }
}
