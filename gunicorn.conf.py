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
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY") or 3)
worker_class = "sync"
timeout = 120
