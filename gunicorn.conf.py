"""gunicorn's settings for prefstudio, read from the working directory (command-line flags and
GUNICORN_CMD_ARGS override them).

Synchronous workers, 3 by default (WEB_CONCURRENCY sets another number), behind the TLS proxy a
deployment puts in front (it holds the browsers' kept-open connections). A sync worker takes one
connection at a time and closes it after the response, so the next request goes to whichever worker
is free: on the load bench (bench/labeling_load.py, 2 cores, 50 annotators judging without pause)
p99 was 113-130 ms against 169-265 ms for threaded workers that keep connections open, where a
connection stays with the worker that accepted it however busy that worker is. The threaded workers
used about 7% less CPU per judgment, nearly all of it the client's TCP connects.
3 workers: 2 gave 489 judgments/s, 3 gave 509-522 and 4 gave 537, the third overlapping database waits.

Hostile requests: gunicorn caps the request line and headers (below) but not the body. The app refuses
a body whose Content-Length is over PREFSTUDIO_MAX_UPLOAD_BYTES before reading it
(prefstudio.middleware), and the TLS proxy in front should cap bodies too (nginx:
`client_max_body_size 501m;`, with `proxy_request_buffering on;` so a slow upload ties up the proxy,
not a worker) and set X-Forwarded-For for the login throttle (USE_X_FORWARDED_FOR=true).
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY") or 3)
worker_class = "sync"
timeout = 120
# The defaults, written out: a request line of 4 KB, 100 header fields of 8 KB each at most.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
