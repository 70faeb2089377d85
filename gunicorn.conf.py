"""gunicorn's settings for prefstudio, read from the working directory (command-line flags and
GUNICORN_CMD_ARGS override them).

Threaded workers with one thread each: a worker keeps a client's connection open between requests
(the sync worker closes it after every response), and one thread per process keeps the GIL
uncontended. On the load bench (bench/labeling_load.py, 2 cores) this cut CPU per judgment by about a
sixth against sync workers, most of it the TCP connect and close on both ends.
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "gthread"
threads = 1
keepalive = 5  # seconds an idle connection stays open
timeout = 120
