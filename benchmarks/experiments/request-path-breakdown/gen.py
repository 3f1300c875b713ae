# Renders envoy.json next to this script: one listener without a filter (NOF) and one per
# status-sync module /tmp/v0.wasm .. /tmp/v6.wasm (variants.py), watching /hook.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
from envoy_config import listener, wasm_filter, write  # noqa: E402


def status_sync(name, path):
    plugin = {"webhook_path": "/hook", "pipeline_cluster": "up", "drone_cluster": "up",
              "drone_token": "x", "instance": name}
    return wasm_filter(name, path, "status-sync", configuration=plugin)


listeners = [listener("NOF", 10001)] + [
    listener(f"V{i}", 10002 + i, status_sync(f"V{i}", f"/tmp/v{i}.wasm")) for i in range(7)]
write(os.path.join(HERE, "envoy.json"), listeners, admin_port=19902)
