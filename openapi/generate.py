"""Writes the cache server's OpenAPI v3 documents, one per group-version, into this directory.

The cache server stores kcp's types schemaless (every object is accepted as it is sent), so the
documents describe each kind's envelope (apiVersion, kind, metadata) and leave spec and status
open. Run `python3 openapi/generate.py` after changing crates/cache-server/src/resources.rs.
"""
import json, os, re

here = os.path.dirname(os.path.abspath(__file__))
table = open(os.path.join(here, "..", "crates", "cache-server", "src", "resources.rs")).read()
rows = re.findall(r'r\(\s*"([^"]*)",\s*"([^"]*)",\s*&\[([^\]]*)\],\s*"([^"]*)",\s*(true|false),?\s*\)', table)

DESCRIPTIONS = {
    "CachedObject": "A replicated object: spec.raw holds the complete source object as the shard wrote it.",
    "CachedResource": "Replicates the objects of one cluster-scoped resource of its workspace into the cache.",
    "CachedResourceEndpointSlice": "Lists the Replication virtual workspace URLs serving a CachedResource.",
    "APIExport": "Offers resources of a workspace to other workspaces.",
    "APIBinding": "Binds the resources of an APIExport into a workspace.",
    "APIResourceSchema": "An immutable schema of one resource, referenced by APIExports.",
    "LogicalCluster": "The logical cluster behind a workspace; always named cluster.",
    "Shard": "A kcp shard and its URLs.",
    "ClusterCachedResource": "kcp main's CachedResource: replicates one cluster-scoped resource, its objects stored as themselves under <plural>:<identity>.",
    "ClusterCachedResourceEndpointSlice": "Lists the Replication virtual workspace URLs of a ClusterCachedResource exported through an APIExport.",
    "LogicalClusterMigration": "A logical cluster moving between shards.",
}

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"


def schema_name(group, version, kind):
    parts = list(reversed(group.split("."))) if group else ["core"]
    return ".".join(parts + [version, kind])


docs = {}
for group, resource, versions, kind, namespaced in rows:
    for v in re.findall(r'"([^"]+)"', versions):
        doc = docs.setdefault((group, v), {
            "openapi": "3.0.0",
            "info": {"title": "replication-vw cache server", "version": "v0.1.0"},
            "paths": {},
            "components": {"schemas": {
                OBJECT_META: {"type": "object", "description": "Standard object metadata.",
                              "x-kubernetes-preserve-unknown-fields": True},
                LIST_META: {"type": "object", "description": "Standard list metadata.",
                            "x-kubernetes-preserve-unknown-fields": True},
            }},
        })
        gvk = {"group": group, "version": v, "kind": kind}
        name = schema_name(group, v, kind)
        list_name = schema_name(group, v, kind + "List")
        open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        props = {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"allOf": [{"$ref": f"#/components/schemas/{OBJECT_META}"}]},
        }
        if kind == "CachedObject":
            props["spec"] = {"type": "object", "required": ["raw"], "properties": {
                "raw": dict(open_object, description="The complete replicated object.")}}
        else:
            props["spec"] = dict(open_object, description="Desired state (stored as sent).")
            props["status"] = dict(open_object, description="Observed state (stored as sent).")
        doc["components"]["schemas"][name] = {
            "type": "object", "description": DESCRIPTIONS.get(kind, f"{kind} as replicated by kcp shards."),
            "properties": props, "x-kubernetes-group-version-kind": [gvk]}
        doc["components"]["schemas"][list_name] = {
            "type": "object", "required": ["items"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"allOf": [{"$ref": f"#/components/schemas/{LIST_META}"}]},
                           "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}},
            "x-kubernetes-group-version-kind": [dict(gvk, kind=kind + "List")]}
        base = f"/apis/{group}/{v}/" + ("namespaces/{namespace}/" if namespaced == "true" else "") + resource

        def op(action, ref):
            return {"operationId": f"{action}{kind}", "x-kubernetes-action": action,
                    "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK", "content": {"application/json": {
                        "schema": {"$ref": f"#/components/schemas/{ref}"}}}}}}
        doc["paths"][base] = {"get": op("list", list_name), "post": op("post", name),
                              "delete": op("deletecollection", list_name)}
        doc["paths"][base + "/{name}"] = {"get": op("get", name), "put": op("put", name),
                                          "delete": op("delete", name)}

for (group, v), doc in sorted(docs.items()):
    path = os.path.join(here, f"apis__{group}__{v}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    print(path)
