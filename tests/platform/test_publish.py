"""Publishing to a real S3-compatible endpoint (moto_server over HTTP), with faults injected by a proxy.

The proxy sits between boto3 and moto_server and can answer ``503 SlowDown`` or hang chosen requests,
exactly what a throttled or dying S3 connection looks like to the client. Nothing in boto3 is patched.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jobs.platform.config import Settings
from jobs.platform.publish import (
    GENERATION_PREFIX,
    MANIFEST_NAME,
    ConcurrentPublish,
    PartitionAlreadyPublished,
    PartitionNotPublished,
    PublishError,
    download_partition,
    ensure_bucket,
    publish_directory,
    read_manifest,
    s3_client,
)
from tests.support.paths import REPO

MB = 1024 * 1024

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>"
)


class FaultProxy:
    """A tiny HTTP proxy in front of moto_server. ``rule(method, path_with_query)`` returns None (forward),
    "slowdown" (answer 503 SlowDown) or "hang" (block until ``release`` is set, then drop the connection)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.rule: Callable[[str, str], str | None] = lambda method, path: None
        self.log: list[tuple[str, str, int]] = []
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                with proxy.lock:
                    action = proxy.rule(self.command, self.path)
                if action == "hang":
                    proxy.hanging.set()
                    proxy.release.wait(60)
                    self.close_connection = True
                    proxy.log.append((self.command, self.path, 0))
                    return
                if action == "slowdown":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOWDOWN)))
                    self.end_headers()
                    self.wfile.write(SLOWDOWN)
                    proxy.log.append((self.command, self.path, 503))
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for key, value in resp.getheaders():
                        if key.lower() not in (
                            "transfer-encoding",
                            "content-length",
                            "connection",
                            "date",
                            "server",
                        ):
                            self.send_header(key, value)
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    proxy.log.append((self.command, self.path, resp.status))
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str, status: int | None = None, contains: str = "") -> int:
        return sum(
            1
            for m, p, s in list(self.log)
            if m == method and contains in p and (status is None or s == status)
        )


def data_put(method: str, path: str) -> bool:
    """A PUT of a data object (single PUT or multipart part), not the manifest commit."""
    return method == "PUT" and GENERATION_PREFIX in path.replace("%3D", "=")


@pytest.fixture
def proxy(s3_endpoint):
    p = FaultProxy(s3_endpoint)
    yield p
    p.close()


@pytest.fixture
def s3_settings(proxy) -> Settings:
    """Settings aimed at the proxy; a fresh bucket per test; botocore gets 2 attempts per request."""
    settings = Settings(
        s3_endpoint_url=proxy.url,
        s3_bucket=f"fraud-test-{uuid.uuid4().hex[:10]}",
        s3_prefix="platform",
        s3_max_attempts=2,
        s3_upload_attempts=3,
    )
    ensure_bucket(settings)
    return settings


def make_partition(root: Path, seed: int = 0, n_files: int = 2, rows: int = 300) -> Path:
    import numpy as np
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_files):
        pd.DataFrame(
            {"transaction_id": np.arange(i * rows, (i + 1) * rows, dtype="int64"), "score": rng.random(rows)}
        ).to_parquet(root / f"part-{i:05d}.parquet", index=False)
    (root / "_SUCCESS").write_bytes(b"")
    (root / ".part-00000.parquet.crc").write_bytes(b"crc")
    return root


def partition_keys(settings: Settings, uri: str) -> list[str]:
    prefix = uri.split("/", 3)[3] + "/"
    client = s3_client(settings)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def uri_for(settings: Settings, date: str = "2018-05-05") -> str:
    return f"s3://{settings.s3_bucket}/{settings.s3_prefix}/fraud/predictions/date={date}"


# --- tests ---------------------------------------------------------------------------------


def test_upload_writes_files_then_manifest_and_readers_get_verified_copies(tmp_path, s3_settings, proxy):
    local = make_partition(tmp_path / "pred", n_files=2, rows=300)
    uri = uri_for(s3_settings)
    manifest = publish_directory(
        local, uri, s3_settings, metadata={"model_version": "7", "date": "2018-05-05"}
    )

    assert manifest["rows"] == 600 and manifest["model_version"] == "7"
    assert [f["name"] for f in manifest["files"]] == ["part-00000.parquet", "part-00001.parquet"]
    for entry in manifest["files"]:
        assert entry["sha256"] == sha(local / entry["name"])
        assert entry["size"] == (local / entry["name"]).stat().st_size
        assert entry["rows"] == 300
    # the commit marker is the last PUT the publisher made
    puts = [p for m, p, _ in proxy.log if m == "PUT"]
    assert puts[-1].endswith(MANIFEST_NAME)
    # hidden files and Hadoop markers are not published
    keys = partition_keys(s3_settings, uri)
    assert not any(k.endswith(("_SUCCESS", ".crc")) for k in keys)
    assert read_manifest(uri, s3_settings) == manifest

    copy = download_partition(uri, tmp_path / "copy", s3_settings)
    assert copy == manifest
    for entry in manifest["files"]:
        assert sha(tmp_path / "copy" / entry["name"]) == entry["sha256"]


def test_rerun_is_idempotent_and_overwrite_needs_consent(tmp_path, s3_settings, proxy):
    uri = uri_for(s3_settings)
    first = publish_directory(make_partition(tmp_path / "a", seed=1), uri, s3_settings)

    puts_before = proxy.count("PUT")
    again = publish_directory(make_partition(tmp_path / "a2", seed=1), uri, s3_settings)
    assert again == first, "identical content must be a no-op returning the committed manifest"
    assert proxy.count("PUT") == puts_before, "a no-op re-run must not upload anything"

    changed = make_partition(tmp_path / "b", seed=2)
    with pytest.raises(PartitionAlreadyPublished, match="overwrite=True"):
        publish_directory(changed, uri, s3_settings)
    assert read_manifest(uri, s3_settings) == first

    second = publish_directory(changed, uri, s3_settings, overwrite=True)
    assert second["generation"] != first["generation"]
    assert second["replaces_generation"] == first["generation"]
    # the replaced generation is gone: the partition holds exactly the manifest and its files
    expected = sorted([*(f["key"] for f in second["files"]), uri.split("/", 3)[3] + "/" + MANIFEST_NAME])
    assert partition_keys(s3_settings, uri) == expected


def test_throttled_upload_is_retried_by_botocore_and_by_the_publisher(tmp_path, s3_settings, proxy):
    # 3 SlowDowns on data PUTs: botocore's 2 attempts absorb the first one only partly, so the
    # first whole-file upload fails and the publisher's own bounded retry completes it.
    budget = {"left": 3}

    def rule(method, path):
        if data_put(method, path) and budget["left"] > 0:
            budget["left"] -= 1
            return "slowdown"
        return None

    proxy.rule = rule
    local = make_partition(tmp_path / "p", n_files=1)
    uri = uri_for(s3_settings)
    manifest = publish_directory(local, uri, s3_settings)
    assert proxy.count("PUT", 503) == 3
    assert read_manifest(uri, s3_settings) == manifest
    download_partition(uri, tmp_path / "copy", s3_settings)  # sha256 verified on the way back


def test_upload_that_keeps_failing_publishes_nothing(tmp_path, s3_settings, proxy):
    proxy.rule = lambda method, path: "slowdown" if data_put(method, path) else None
    uri = uri_for(s3_settings)
    with pytest.raises(PublishError, match="failed after 3 attempts"):
        publish_directory(make_partition(tmp_path / "p"), uri, s3_settings)
    assert proxy.count("PUT", 503) == 3 * 2  # 3 publisher attempts x 2 botocore attempts, then it gives up
    assert read_manifest(uri, s3_settings) is None
    with pytest.raises(PartitionNotPublished):
        download_partition(uri, tmp_path / "copy", s3_settings)


def test_multipart_upload_with_a_throttled_part(tmp_path, s3_settings, proxy):
    local = tmp_path / "big"
    local.mkdir()
    (local / "scores.bin").write_bytes(os.urandom(11 * MB))
    budget = {"left": 1}

    def rule(method, path):
        if method == "PUT" and "partNumber=2" in path and budget["left"]:
            budget["left"] -= 1
            return "slowdown"
        return None

    proxy.rule = rule
    uri = uri_for(s3_settings)
    manifest = publish_directory(
        local, uri, s3_settings, multipart_threshold=5 * MB, multipart_chunksize=5 * MB
    )
    (entry,) = manifest["files"]
    assert entry["parts"] == 3
    assert proxy.count("PUT", 200, "partNumber=") == 3 and proxy.count("PUT", 503, "partNumber=2") == 1
    assert proxy.count("POST", 200, "uploads") >= 1  # CreateMultipartUpload
    head = s3_client(s3_settings).head_object(
        Bucket=s3_settings.s3_bucket, Key=entry["key"], ChecksumMode="ENABLED"
    )
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ChecksumSHA256"].split("-")[0] == entry["s3_checksum_sha256"]
    download_partition(uri, tmp_path / "copy", s3_settings)
    assert sha(tmp_path / "copy" / "scores.bin") == sha(local / "scores.bin")


def test_killed_publisher_leaves_no_partition_and_the_next_run_completes(tmp_path, s3_settings, proxy):
    local = make_partition(tmp_path / "p", n_files=3)
    uri = uri_for(s3_settings)
    seen = {"data_puts": 0}

    def rule(method, path):
        if data_put(method, path):
            seen["data_puts"] += 1
            if seen["data_puts"] == 2:
                return "hang"  # the second file never finishes: the publisher is killed meanwhile
        return None

    proxy.rule = rule
    env = {
        **os.environ,
        "MLP_S3_ENDPOINT_URL": proxy.url,
        "MLP_S3_BUCKET": s3_settings.s3_bucket,
        "MLP_S3_PREFIX": s3_settings.s3_prefix,
        "PYTHONPATH": str(REPO),
    }
    code = f"from jobs.platform.publish import publish_directory; publish_directory({str(local)!r}, {uri!r})"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, start_new_session=True)
    try:
        assert proxy.hanging.wait(60), "publisher never reached its second upload"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    proxy.release.set()

    keys = partition_keys(s3_settings, uri)
    assert any(GENERATION_PREFIX in k for k in keys), "the first file was uploaded before the kill"
    assert not any(k.endswith(MANIFEST_NAME) for k in keys)
    assert read_manifest(uri, s3_settings) is None
    with pytest.raises(PartitionNotPublished):
        download_partition(uri, tmp_path / "copy", s3_settings)

    proxy.rule = lambda method, path: None
    manifest = publish_directory(local, uri, s3_settings)
    assert len(manifest["files"]) == 3
    expected = sorted([*(f["key"] for f in manifest["files"]), uri.split("/", 3)[3] + "/" + MANIFEST_NAME])
    assert partition_keys(s3_settings, uri) == expected, "orphans of the killed run are cleaned up"


def test_failed_rerun_keeps_serving_the_previous_partition(tmp_path, s3_settings, proxy):
    uri = uri_for(s3_settings)
    old_dir = make_partition(tmp_path / "old", seed=1)
    old = publish_directory(old_dir, uri, s3_settings)

    proxy.rule = lambda method, path: "slowdown" if data_put(method, path) else None
    with pytest.raises(PublishError):
        publish_directory(make_partition(tmp_path / "new", seed=2), uri, s3_settings, overwrite=True)
    assert read_manifest(uri, s3_settings) == old
    download_partition(uri, tmp_path / "copy", s3_settings)
    assert sha(tmp_path / "copy" / "part-00000.parquet") == sha(old_dir / "part-00000.parquet")


def test_concurrent_first_publication_has_exactly_one_winner(tmp_path, s3_settings, proxy):
    uri = uri_for(s3_settings)
    state = {"first": True}

    def rule(method, path):
        if data_put(method, path) and state["first"]:
            state["first"] = False
            return "hang"  # publisher A stalls on its upload; botocore retries after the drop
        return None

    proxy.rule = rule
    outcome: dict[str, object] = {}

    def publisher_a():
        try:
            outcome["a"] = publish_directory(
                make_partition(tmp_path / "a", seed=1, n_files=1), uri, s3_settings
            )
        except Exception as exc:  # the loser's error is the assertion target
            outcome["a"] = exc

    thread = threading.Thread(target=publisher_a)
    thread.start()
    assert proxy.hanging.wait(30)
    b = publish_directory(make_partition(tmp_path / "b", seed=2, n_files=1), uri, s3_settings)
    proxy.release.set()
    thread.join(120)
    assert isinstance(outcome["a"], ConcurrentPublish)
    assert read_manifest(uri, s3_settings) == b


def test_publish_partition_maps_the_storage_layout_and_the_cli_shows_it(s3_settings, capsys, monkeypatch):
    from jobs.platform.publish import main, publish_partition
    from jobs.platform.storage import StorageLayout

    layout = StorageLayout(s3_settings)
    make_partition(layout.path("reports", "2018-05-06", "monitoring"), n_files=1)
    manifest = publish_partition("reports", "2018-05-06", "monitoring", settings=s3_settings)
    assert manifest["uri"] == layout.s3_uri("reports", "2018-05-06", "monitoring")
    assert manifest["uri"].endswith("/platform/fraud/reports/monitoring/date=2018-05-06")
    assert manifest["metadata"] == {"dataset": "reports", "date": "2018-05-06"}

    # the CLI reads settings from the environment like every job; aim it at the same endpoint
    from jobs.platform.config import get_settings

    monkeypatch.setenv("MLP_S3_ENDPOINT_URL", s3_settings.s3_endpoint_url)
    monkeypatch.setenv("MLP_S3_BUCKET", s3_settings.s3_bucket)
    get_settings.cache_clear()
    try:
        assert main(["show", manifest["uri"]]) == 0
        assert json.loads(capsys.readouterr().out)["generation"] == manifest["generation"]
        assert main(["show", manifest["uri"].replace("2018-05-06", "2018-05-07")]) == 1
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
