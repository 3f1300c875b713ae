# Renders /tmp/wasmcost/envoy.yaml: one Envoy (--concurrency 2), one listener per variant.
import json
UP = 18080
variants = [  # name, port, wasm file or None, disabled-by-default
    ("NOF", 10001, None, False),
    ("ALL", 10002, "/tmp/wasmcost/all.wasm", False),
    ("MIN", 10003, "/tmp/wasmcost/min.wasm", False),
    ("SDK", 10004, "/tmp/wasmcost/sdk.wasm", False),
    ("DIS", 10005, "/tmp/wasmcost/sdk.wasm", True),
    ("NONE", 10006, "/tmp/wasmcost/none.wasm", False),
    ("ALLH", 10007, "/tmp/wasmcost/allh.wasm", False),
]
def wasm_filter(name, path, disabled):
    f = {"name": "envoy.filters.http.wasm",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": name, "root_id": name, "failure_policy": "FAIL_RELOAD",
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": path}}}}}}
    if disabled:
        f["disabled"] = True
    return f
listeners = []
for name, port, path, disabled in variants:
    routes = []
    if disabled:
        # The filter runs only on /hook; everything else skips it entirely.
        routes.append({"match": {"prefix": "/hook"}, "route": {"cluster": "up", "timeout": "60s"},
                       "typed_per_filter_config": {"envoy.filters.http.wasm": {
                           "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}})
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "60s"}})
    filters = ([wasm_filter(name, path, disabled)] if path else []) + [
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
    listeners.append({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": 8388608,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": filters}}]}]})
cfg = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 19901}}},
       "static_resources": {"listeners": listeners, "clusters": [{"name": "up", "type": "STATIC",
            "connect_timeout": "2s", "per_connection_buffer_limit_bytes": 8388608,
            "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": UP}}}}]}]}}]}}
json.dump(cfg, open("/tmp/wasmcost/envoy.json", "w"), indent=1)
