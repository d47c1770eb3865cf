"""An informer built on the official Python `kubernetes` client, run against the Replication VW.

Usage: informer.py HOST CA_FILE TOKEN
Prints one line per milestone; the Rust test (tests/e2e_python.rs) drives the other side:
  WATCHLIST-SYNCED <n> <rv>   watch-list: n ADDED events, then the initial-events-end bookmark
  READY <rv>                  listed; watching from rv
  EVENT <type> <name> <cores> a change arrived on the watch
  RELISTED <n>                a watch from a compacted revision got 410 Gone; relisted n objects
"""
import json
import sys

from kubernetes import client, watch

GROUP, VERSION, PLURAL = "cloud.example.com", "v1", "cpuflavors"


def say(*parts):
    print(*parts, flush=True)


def main():
    host, ca, token = sys.argv[1:4]
    cfg = client.Configuration()
    cfg.host = host
    cfg.ssl_ca_cert = ca
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api_client = client.ApiClient(cfg)
    api = client.CustomObjectsApi(api_client)

    # 1. Watch-list, as client-go v0.35 informers start: initial ADDED events end with a
    #    bookmark annotated k8s.io/initial-events-end.
    query = ("watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
             "&allowWatchBookmarks=true&timeoutSeconds=30")
    resp = api_client.rest_client.pool_manager.request(
        "GET", f"{host}/apis/{GROUP}/{VERSION}/{PLURAL}?{query}",
        headers={"Accept": "application/json", "Authorization": f"Bearer {token}"},
        preload_content=False, timeout=30)
    if resp.status != 200:
        raise SystemExit(f"watch-list answered {resp.status}: {resp.read()!r}")
    added = 0
    buf = b""
    done = False
    for chunk in resp.stream(4096):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            event = json.loads(line)
            if event["type"] == "ADDED":
                added += 1
            elif event["type"] == "BOOKMARK":
                md = event["object"]["metadata"]
                if md.get("annotations", {}).get("k8s.io/initial-events-end") == "true":
                    say("WATCHLIST-SYNCED", added, md["resourceVersion"])
                    done = True
                    break
        if done:
            break
    resp.release_conn()

    # 2. List, then watch from the list's resourceVersion.
    listing = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    rv = listing["metadata"]["resourceVersion"]
    say("READY", rv)
    w = watch.Watch()
    for event in w.stream(api.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                          resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=30):
        obj = event["object"]
        if event["type"] == "BOOKMARK":
            continue
        say("EVENT", event["type"], obj["metadata"]["name"], obj["spec"]["cores"])
        w.stop()
        break

    # 3. A watch from a revision the server no longer has: 410 Gone, then relist.
    try:
        for _ in watch.Watch().stream(api.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                      resource_version="1", timeout_seconds=10):
            pass
        say("NO-410")
    except client.rest.ApiException as e:
        if e.status != 410:
            raise
        again = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        say("RELISTED", len(again["items"]))


if __name__ == "__main__":
    main()
