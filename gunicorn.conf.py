"""gunicorn's settings for prefstudio, read from the working directory (command-line flags and
GUNICORN_CMD_ARGS override them).

Threaded workers with one thread each: a worker keeps a client's connection open between requests
(the sync worker closes it after every response), and one thread per process keeps the GIL
uncontended. On the load bench (bench/labeling_load.py, 2 cores) this cut CPU per judgment by about a
sixth against sync workers, most of it the TCP connect and close on both ends.

3 workers by default. On 2 cores, 2 workers used 10 to 15% less CPU per judgment than 3 (alternating
runs in both orders), but a kept-open connection stays with the worker that accepted it: with 2
workers, 10 annotators got 165 judgments/s on 0.7 of the 2 cores, as if one worker held them all (330
with 3). WEB_CONCURRENCY sets another number.
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY") or 3)
worker_class = "gthread"
threads = 1
keepalive = 5  # seconds an idle connection stays open
timeout = 120
