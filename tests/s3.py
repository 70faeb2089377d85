"""A real S3-protocol server for tests: moto's standalone server (`moto[server]`) on the loopback.

`.ci/run` starts one and names it in PREFSTUDIO_TEST_S3_ENDPOINT; without that variable the first test
that needs it starts its own for the session. Each test gets a bucket of its own, and the settings that
point both file storages (imports and exports, run artifacts) at it; `s3` returns the environment a worker
process needs to reach the same bucket (and nothing else: no shared folder).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

ENDPOINT_VARIABLE = "PREFSTUDIO_TEST_S3_ENDPOINT"
S3_BACKEND = "storages.backends.s3.S3Storage"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def client(endpoint: str):
    """A boto3 S3 client of the test server (moto takes any keys)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def start_moto(env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3 server (`moto_server`, beside this Python) on a free loopback port, answering; (process,
    URL). `env`: its environment (TMPDIR is where it spools large objects). Raises RuntimeError when it
    does not answer within 30 s."""
    url = f"http://127.0.0.1:{_free_port()}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not _answers(url):
        if server.poll() is not None or time.monotonic() > deadline:
            server.terminate()
            raise RuntimeError(f"moto_server did not start on {url}")
        time.sleep(0.1)
    return server, url


@pytest.fixture(scope="session")
def s3_endpoint():
    """The S3 server's URL: the one CI started, or moto_server started here for the session."""
    given = os.environ.get(ENDPOINT_VARIABLE)
    if given:
        yield given
        return
    server, url = start_moto()
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3(settings, s3_endpoint) -> dict[str, str]:
    """Both file storages in a fresh bucket on the S3 server; the worker environment that reaches it."""
    env = {
        "AWS_STORAGE_BUCKET_NAME": f"test-{uuid.uuid4().hex[:16]}",
        "AWS_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_S3_REGION_NAME": "us-east-1",
    }
    client(s3_endpoint).create_bucket(Bucket=env["AWS_STORAGE_BUCKET_NAME"])
    for name, value in env.items():
        setattr(settings, name, value)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": S3_BACKEND, "OPTIONS": {"location": "media"}},
        "artifacts": {"BACKEND": S3_BACKEND, "OPTIONS": {"location": "artifacts"}},
    }
    return env


def bucket_keys(env: dict[str, str], prefix: str = "") -> list[str]:
    """Every key in the test's bucket under `prefix`, read straight from the server."""
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_S3_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=env["AWS_STORAGE_BUCKET_NAME"], Prefix=prefix
    )
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))
