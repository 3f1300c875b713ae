"""The Envoy bootstrap both experiments render: one Envoy, one listener per variant, all
routed to the upstream on 127.0.0.1:18080 (`fast-upstream`, see ../proxy-wasm-cost/README.md).

An experiment's gen.py lists its variants and calls `write`; bench.sh reads the listener
ports back from the file it wrote.
"""
import json

UPSTREAM_PORT = 18080
ROUTE = {"cluster": "up", "timeout": "60s"}


def wasm_filter(name, path, root_id, configuration=None, disabled=False):
    """Envoy's wasm HTTP filter running module `path` in its own V8 VM."""
    config = {"name": name, "root_id": root_id, "failure_policy": "FAIL_RELOAD",
              "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": path}}}}
    if configuration is not None:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": json.dumps(configuration)}
    f = {"name": "envoy.filters.http.wasm",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                          "config": config}}
    if disabled:
        f["disabled"] = True
    return f


def listener(name, port, wasm=None, routes=()):
    """A listener named for its variant: `wasm` (a `wasm_filter` or None) before the router,
    `routes` before the catch-all route to the upstream."""
    filters = ([wasm] if wasm else []) + [
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
    routes = list(routes) + [{"match": {"prefix": "/"}, "route": ROUTE}]
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": 8388608,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": filters}}]}]}


def write(path, listeners, admin_port):
    """Writes the bootstrap with `listeners` and the upstream cluster `up` to `path`."""
    cfg = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
           "static_resources": {"listeners": listeners, "clusters": [{"name": "up", "type": "STATIC",
                "connect_timeout": "2s", "per_connection_buffer_limit_bytes": 8388608,
                "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": UPSTREAM_PORT}}}}]}]}}]}}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
