-- wrk script of both experiments: POSTs drone's 3,504-byte webhook
-- (testdata/drone/webhook-build-updated-running.json, or the file named by env BODY).
local f = assert(io.open(os.getenv("BODY") or "body.json", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Drone-Event"] = "build"
