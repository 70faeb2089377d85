"""gunicorn's settings for prefstudio, read from the working directory (command-line flags and
GUNICORN_CMD_ARGS override them).

Threaded workers with one thread each: a worker keeps a client's connection open between requests
(the sync worker closes it after every response), and one thread per process keeps the GIL
uncontended. On the load bench (bench/labeling_load.py, 2 cores) this cut CPU per judgment by about a
sixth against sync workers, most of it the TCP connect and close on both ends.

One worker per core (at least 2): the judge request is CPU-bound, and on 2 cores 2 workers used 10 to
15% less CPU per judgment than 3, and 3 less than 5 (alternating runs in both orders).
WEB_CONCURRENCY sets another number, e.g. more where requests wait on slow clients or downloads.
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY") or max(2, os.cpu_count() or 1))
worker_class = "gthread"
threads = 1
keepalive = 5  # seconds an idle connection stays open
timeout = 120
