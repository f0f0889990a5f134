-- wrk script: PUT the file below as the body of every request.
-- run.sh rewrites the path to the file it generated.
wrk.method = "PUT"
local f = io.open("/tmp/bench/4k.bin", "rb")
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
