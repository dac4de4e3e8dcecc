"""Publish a finished local partition (predictions, reports) to S3 with boto3, all or nothing.

S3 has no atomic rename, so a partition is published as *generations* plus a commit marker::

    s3://<bucket>/<prefix>/<use case>/predictions/date=2018-05-05/_gen=20181106T010203Z-1a2b3c4d/part-00000.parquet
    s3://<bucket>/<prefix>/<use case>/predictions/date=2018-05-05/_manifest.json      <- written LAST

1. every file is uploaded under a fresh generation prefix (multipart above a size threshold, a SHA-256
   checksum sent with every request and checked by S3, then compared again with the checksum S3 reports);
   botocore retries throttling (``SlowDown``/503) in adaptive mode and each file upload is retried a
   bounded number of times on top of that;
2. only when every file is verified, ``_manifest.json`` (files, sizes, sha256, rows, model version,
   published_at) is written with one PUT - the commit. The PUT is conditional (``If-None-Match: *`` for a
   first publication, ``If-Match: <etag>`` on a re-run) so two concurrent publishers cannot both win;
3. objects no manifest refers to (the previous generation, leftovers of a killed run) are deleted.

Readers go through the manifest (:func:`read_manifest`, :func:`download_partition`): a partition without
one is absent, and a re-run swaps the whole partition in one PUT from a reader's point of view.

A partition that is already published is never overwritten unless the caller says it is a re-run of the
same date (``overwrite=True``); re-publishing identical files is a no-op that returns the manifest in place.

Endpoint, bucket, region and retry knobs come from :class:`jobs.platform.config.Settings`; credentials come from
the standard AWS chain (environment, shared profile, instance role) - never from this code.

CLI: ``python -m jobs.platform.publish <dataset> --date D [--sub KIND] [--overwrite]`` publishes one local partition
of the storage layout to its ``StorageLayout.s3_uri``; ``python -m jobs.platform.publish show s3://...`` prints a
manifest.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger

MANIFEST_NAME = "_manifest.json"
GENERATION_PREFIX = "_gen="
MANIFEST_FORMAT = 1
_MB = 1024 * 1024
_READ_BLOCK = 1024 * 1024


class PublishError(RuntimeError):
    """Publishing failed; the partition is unchanged for readers (no new manifest was written)."""


class PartitionAlreadyPublished(PublishError):
    """The target partition has a manifest with different content and ``overwrite`` was not given."""


class ChecksumMismatch(PublishError):
    """S3 reports a different checksum than the local file has."""


class ConcurrentPublish(PublishError):
    """Another publisher committed the partition between our read of its manifest and our commit."""


class PartitionNotPublished(LookupError):
    """A reader asked for a partition that has no manifest (absent or half-published)."""


# --- S3 plumbing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading/trailing slash; may be ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise ValueError(f"s3_uri={uri!r}: must start with 's3://'")
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"s3_uri={uri!r}: no bucket name")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def s3_client(settings: Settings | None = None, max_attempts: int | None = None):
    """A boto3 S3 client for the configured endpoint, with adaptive (throttling-aware) retries."""
    import boto3
    from botocore.config import Config

    settings = settings or get_settings()
    config = Config(
        region_name=settings.s3_region,
        retries={"mode": "adaptive", "total_max_attempts": max_attempts or settings.s3_max_attempts},
        connect_timeout=10,
        read_timeout=60,
        # path-style works with every S3-compatible store (moto, MinIO, Ceph) and with AWS
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


def ensure_bucket(settings: Settings | None = None, client=None) -> str:
    """Create the configured bucket if missing (local stacks and tests; production provisions it)."""
    settings = settings or get_settings()
    client = client or s3_client(settings)
    try:
        client.head_bucket(Bucket=settings.s3_bucket)
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": settings.s3_bucket}
        if settings.s3_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.s3_region}
        client.create_bucket(**kwargs)
    return settings.s3_bucket


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


# --- local side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    path: Path
    relpath: str
    size: int
    sha256: str  # hex of the whole file
    expected_s3_checksum: str  # base64 SHA-256 as S3 reports it (composite for multipart uploads)
    parts: int
    rows: int | None


def _publishable_files(local_dir: Path) -> list[Path]:
    """Data files of a partition: hidden files, Hadoop markers (_SUCCESS) and .crc files are skipped."""
    out = []
    for path in sorted(local_dir.rglob("*")):
        rel = path.relative_to(local_dir)
        if not path.is_file() or any(p.startswith((".", "_")) for p in rel.parts) or path.suffix == ".crc":
            continue
        out.append(path)
    return out


def _parquet_rows(path: Path) -> int | None:
    if path.suffix != ".parquet":
        return None
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def describe_file(path: Path, relpath: str, multipart_threshold: int, multipart_chunksize: int) -> LocalFile:
    """Size, SHA-256 and the checksum S3 will report for this file under the given transfer config."""
    from s3transfer.utils import ChunksizeAdjuster

    size = path.stat().st_size
    multipart = size >= multipart_threshold
    chunk = ChunksizeAdjuster().adjust_chunksize(multipart_chunksize, size) if multipart else size or 1
    whole = hashlib.sha256()
    part_digests: list[bytes] = []
    part = hashlib.sha256()
    in_part = 0
    with path.open("rb") as fh:
        while block := fh.read(_READ_BLOCK):
            whole.update(block)
            view = memoryview(block)
            while view:
                take = min(len(view), chunk - in_part)
                part.update(view[:take])
                in_part += take
                view = view[take:]
                if in_part == chunk:
                    part_digests.append(part.digest())
                    part, in_part = hashlib.sha256(), 0
    if in_part:
        part_digests.append(part.digest())
    if multipart:
        expected = base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode()
    else:
        expected = base64.b64encode(whole.digest()).decode()
    return LocalFile(
        path=path,
        relpath=relpath,
        size=size,
        sha256=whole.hexdigest(),
        expected_s3_checksum=expected,
        parts=len(part_digests) if multipart else 1,
        rows=_parquet_rows(path),
    )


# --- publishing ----------------------------------------------------------------------------


def read_manifest(s3_uri: str, settings: Settings | None = None, client=None) -> dict[str, Any] | None:
    """The committed manifest of a partition, or None if the partition is absent (or half-published)."""
    manifest, _ = _read_manifest_with_etag(S3Location.parse(s3_uri), client or s3_client(settings))
    return manifest


def _read_manifest_with_etag(loc: S3Location, client) -> tuple[dict[str, Any] | None, str | None]:
    try:
        obj = client.get_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME))
    except client.exceptions.ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None, None
        raise
    return json.loads(obj["Body"].read()), obj["ETag"]


def _upload_verified(client, local: LocalFile, bucket: str, key: str, transfer_config, attempts: int, log):
    """Upload one file and check S3's SHA-256; retry the whole file a bounded number of times."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            client.upload_file(
                str(local.path),
                bucket,
                key,
                ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": local.sha256}},
                Config=transfer_config,
            )
            head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            if head["ContentLength"] != local.size:
                raise ChecksumMismatch(
                    f"s3://{bucket}/{key}: size {head['ContentLength']} != local size {local.size}"
                )
            reported = head.get("ChecksumSHA256")
            if reported is None:
                log.warning("checksum_not_reported", key=key)  # store without checksum support
            elif reported.split("-")[0] != local.expected_s3_checksum:
                raise ChecksumMismatch(
                    f"s3://{bucket}/{key}: ChecksumSHA256={reported!r} but local file {local.relpath} "
                    f"gives {local.expected_s3_checksum!r} ({local.parts} part(s))"
                )
            return attempt
        except (S3UploadFailedError, ClientError, BotoCoreError, ChecksumMismatch) as exc:
            last = exc
            log.warning("upload_failed", key=key, attempt=attempt, attempts=attempts, error=str(exc)[:300])
            if attempt < attempts:
                time.sleep(min(0.2 * 2**attempt, 5.0) * (0.5 + random.random()))
    raise PublishError(
        f"upload of {local.path} to s3://{bucket}/{key} failed after {attempts} attempts: {last}"
    )


def _delete_keys(client, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[i : i + 1000]]
        result = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if result.get("Errors"):
            raise PublishError(f"could not delete {result['Errors'][:3]}")


def _list_keys(client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def publish_directory(
    local_dir: str | Path,
    s3_uri: str,
    settings: Settings | None = None,
    overwrite: bool = False,
    *,
    metadata: dict[str, Any] | None = None,
    client=None,
    multipart_threshold: int | None = None,
    multipart_chunksize: int | None = None,
    upload_attempts: int | None = None,
) -> dict[str, Any]:
    """Publish every data file under ``local_dir`` as the partition ``s3_uri``; return its manifest.

    ``metadata`` is recorded in the manifest (e.g. ``{"model_version": "3", "date": "2018-05-05"}``;
    ``model_version`` and ``rows`` are lifted to top-level keys). Raises :class:`PartitionAlreadyPublished`
    when the partition holds different content and ``overwrite`` is False, :class:`PublishError` when an
    upload keeps failing - in both cases readers still see the previous state of the partition.
    """
    from boto3.s3.transfer import TransferConfig

    settings = settings or get_settings()
    local_dir = Path(local_dir)
    loc = S3Location.parse(s3_uri)
    log = get_logger("publish", (metadata or {}).get("date"))
    if not local_dir.is_dir():
        raise PublishError(f"local_dir={str(local_dir)!r}: not a directory")
    client = client or s3_client(settings)
    threshold = multipart_threshold or settings.s3_multipart_threshold_mb * _MB
    chunksize = multipart_chunksize or settings.s3_multipart_chunksize_mb * _MB
    transfer_config = TransferConfig(
        multipart_threshold=threshold, multipart_chunksize=chunksize, max_concurrency=4
    )
    attempts = upload_attempts or settings.s3_upload_attempts

    files = [
        describe_file(p, p.relative_to(local_dir).as_posix(), threshold, chunksize)
        for p in _publishable_files(local_dir)
    ]
    if not files:
        raise PublishError(f"local_dir={str(local_dir)!r}: no data files to publish")

    previous, previous_etag = _read_manifest_with_etag(loc, client)
    if previous is not None:
        same = {(f["name"], f["sha256"]) for f in previous["files"]} == {(f.relpath, f.sha256) for f in files}
        if same:
            log.info("publish_unchanged", uri=loc.uri, generation=previous["generation"])
            return previous
        if not overwrite:
            raise PartitionAlreadyPublished(
                f"{loc.uri} was published at {previous['published_at']} (generation {previous['generation']}) "
                f"with different content; pass overwrite=True only when re-running the same date"
            )

    generation = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    gen_dir = f"{GENERATION_PREFIX}{generation}"
    started = time.monotonic()
    entries = []
    for i, local in enumerate(files, 1):
        key = loc.key(gen_dir, local.relpath)
        tries = _upload_verified(client, local, loc.bucket, key, transfer_config, attempts, log)
        entries.append(
            {
                "name": local.relpath,
                "key": key,
                "size": local.size,
                "sha256": local.sha256,
                "s3_checksum_sha256": local.expected_s3_checksum,
                "parts": local.parts,
                "rows": local.rows,
            }
        )
        log.info(
            "uploaded", key=key, size=local.size, parts=local.parts, attempts=tries, done=i, total=len(files)
        )

    meta = dict(metadata or {})
    parquet_rows = [f.rows for f in files if f.rows is not None]
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "uri": loc.uri,
        "generation": generation,
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": meta.pop("rows", sum(parquet_rows) if parquet_rows else None),
        "model_version": meta.pop("model_version", None),
        "files": entries,
        "total_bytes": sum(f.size for f in files),
        "replaces_generation": previous["generation"] if previous else None,
        "metadata": meta,
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    condition = {"IfMatch": previous_etag} if previous_etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(
            Bucket=loc.bucket,
            Key=loc.key(MANIFEST_NAME),
            Body=body,
            ContentType="application/json",
            ChecksumAlgorithm="SHA256",
            **condition,
        )
    except client.exceptions.ClientError as exc:
        if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            _delete_keys(client, loc.bucket, [e["key"] for e in entries])
            raise ConcurrentPublish(f"{loc.uri}: another publisher committed first ({exc})") from exc
        raise
    log.info(
        "published",
        uri=loc.uri,
        generation=generation,
        files=len(entries),
        bytes=manifest["total_bytes"],
        rows=manifest["rows"],
        seconds=round(time.monotonic() - started, 2),
    )

    # garbage: the replaced generation and anything a killed or failed run left behind
    keep = {loc.key(MANIFEST_NAME), *(e["key"] for e in entries)}
    stale = [
        k for k in _list_keys(client, loc.bucket, loc.prefix + "/" if loc.prefix else "") if k not in keep
    ]
    if stale:
        _delete_keys(client, loc.bucket, stale)
        log.info("removed_stale_objects", uri=loc.uri, objects=len(stale))
    return manifest


def publish_partition(
    dataset: str,
    date: str | dt.date,
    *sub: str,
    settings: Settings | None = None,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish one local partition of the storage layout to its S3 URI (``StorageLayout.s3_uri``)."""
    from jobs.platform.storage import StorageLayout, as_date

    layout = StorageLayout(settings or get_settings())
    meta = {"dataset": dataset, "date": as_date(date).isoformat(), **(metadata or {})}
    return publish_directory(
        layout.path(dataset, date, *sub),
        layout.s3_uri(dataset, date, *sub),
        layout.settings,
        overwrite=overwrite,
        metadata=meta,
    )


# --- reading -------------------------------------------------------------------------------


def download_partition(
    s3_uri: str, local_dir: str | Path, settings: Settings | None = None, client=None
) -> dict[str, Any]:
    """Download exactly the files the manifest lists, verifying each SHA-256; return the manifest."""
    client = client or s3_client(settings)
    manifest = read_manifest(s3_uri, settings, client)
    if manifest is None:
        raise PartitionNotPublished(f"{s3_uri}: no {MANIFEST_NAME}; the partition is not published")
    loc = S3Location.parse(s3_uri)
    local_dir = Path(local_dir)
    for entry in manifest["files"]:
        target = local_dir / entry["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(loc.bucket, entry["key"], str(target))
        digest = hashlib.sha256()
        with target.open("rb") as fh:
            while block := fh.read(_READ_BLOCK):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            raise ChecksumMismatch(
                f"{entry['key']}: sha256 {digest.hexdigest()} != manifest sha256 {entry['sha256']}"
            )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.platform.publish", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dataset", help="dataset name of the storage layout, or 'show' to print a manifest")
    parser.add_argument("uri", nargs="?", help="with 'show': the s3:// partition URI")
    parser.add_argument("--date", help="partition date YYYY-MM-DD")
    parser.add_argument("--sub", action="append", default=[], help="sub-folder (e.g. the report kind)")
    parser.add_argument("--overwrite", action="store_true", help="re-run of the same date: replace it")
    args = parser.parse_args(argv)
    if args.dataset == "show":
        if not args.uri:
            parser.error("show needs an s3:// URI")
        manifest = read_manifest(args.uri)
        if manifest is None:
            print(f"{args.uri}: not published", file=sys.stderr)
            return 1
        json.dump(manifest, sys.stdout, indent=2)
        print()
        return 0
    if not args.date:
        parser.error("--date is required")
    manifest = publish_partition(args.dataset, args.date, *args.sub, overwrite=args.overwrite)
    print(json.dumps({k: manifest[k] for k in ("uri", "generation", "rows", "published_at")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
