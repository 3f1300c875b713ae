import json
UP = 18080
variants = [("NOF", 10001, None)] + [(f"V{i}", 10002+i, f"/tmp/v{i}.wasm") for i in range(7)]
def wasm_filter(name, path):
    plugin = {"webhook_path": "/hook", "pipeline_cluster": "up", "drone_cluster": "up",
              "drone_token": "x", "instance": name}
    return {"name": "envoy.filters.http.wasm",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": name, "root_id": "status-sync", "failure_policy": "FAIL_RELOAD",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(plugin)},
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": path}}}}}}
listeners = []
for name, port, path in variants:
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "60s"}}]
    filters = ([wasm_filter(name, path)] if path else []) + [
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
    listeners.append({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": 8388608,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": filters}}]}]})
cfg = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 19902}}},
       "static_resources": {"listeners": listeners, "clusters": [{"name": "up", "type": "STATIC",
            "connect_timeout": "2s", "per_connection_buffer_limit_bytes": 8388608,
            "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": UP}}}}]}]}}]}}
json.dump(cfg, open("/tmp/wasmcost2/envoy.json", "w"), indent=1)
