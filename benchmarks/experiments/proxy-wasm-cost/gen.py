# Renders envoy.json next to this script: one Envoy (--concurrency 2), one listener per variant.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
from envoy_config import ROUTE, listener, wasm_filter, write  # noqa: E402

variants = [  # name, port, wasm file or None, disabled-by-default
    ("NOF", 10001, None, False),
    ("ALL", 10002, "all.wasm", False),
    ("MIN", 10003, "min.wasm", False),
    ("SDK", 10004, "sdk.wasm", False),
    ("DIS", 10005, "sdk.wasm", True),
    ("NONE", 10006, "none.wasm", False),
    ("ALLH", 10007, "allh.wasm", False),
]
listeners = []
for name, port, path, disabled in variants:
    wasm = path and wasm_filter(name, os.path.join(HERE, path), name, disabled=disabled)
    # DIS: the filter runs only on /hook; everything else skips it entirely.
    routes = [{"match": {"prefix": "/hook"}, "route": ROUTE,
               "typed_per_filter_config": {"envoy.filters.http.wasm": {
                   "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}}] if disabled else []
    listeners.append(listener(name, port, wasm, routes))
write(os.path.join(HERE, "envoy.json"), listeners, admin_port=19901)
