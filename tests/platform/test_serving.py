"""Real-time scoring service: API contract, errors, model lifecycle, prediction log, stream path, fuzzing,
Redis outage and champion promotion under load.

Everything is real: a Feast repo applied from ``feature_repo/fraud/`` with a SQLite (and, for the outage test,
a Redis) online store, an XGBoost model logged with ``mlflow.xgboost`` in the session's MLflow registry
(under a test-only model name), uvicorn serving the app on 127.0.0.1, and a ``redis-server`` this
module starts and kills on its own port (never the machine's shared Redis).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest

from tests.support.server import Server, free_port

pytestmark = pytest.mark.timeout(300)

MODEL_NAME = "fraud-detector-serving-tests"


# --- helpers ---------------------------------------------------------------------------------
def body(tx) -> dict:
    return {
        "transaction_id": int(tx["transaction_id"]),
        "customer_id": int(tx["customer_id"]),
        "terminal_id": int(tx["terminal_id"]),
        "tx_amount": float(tx["tx_amount"]),
        "tx_datetime": pd.Timestamp(tx["tx_datetime"]).isoformat(),
    }


class Load:
    """Closed-loop load from ``threads`` client threads; records (time, status, json) of every response."""

    def __init__(self, url: str, bodies: list[dict], threads: int = 2, headers: dict | None = None) -> None:
        self.url, self.bodies, self.headers = url, bodies, headers or {}
        self.results: list[tuple[float, int, dict]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self._lock = threading.Lock()

    def _run(self, k: int) -> None:
        import httpx

        with httpx.Client(timeout=10, headers=self.headers) as client:
            i = k
            while not self._stop.is_set():
                try:
                    r = client.post(self.url + "/v1/score", json=self.bodies[i % len(self.bodies)])
                    item = (time.monotonic(), r.status_code, r.json())
                except httpx.HTTPError as exc:  # a failed request is a result too
                    item = (time.monotonic(), -1, {"exception": repr(exc)})
                with self._lock:
                    self.results.append(item)
                i += len(self._threads)
                time.sleep(0.002)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)

    def snapshot(self) -> list[tuple[float, int, dict]]:
        with self._lock:
            return list(self.results)

    def wait_for(self, predicate, timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, status, payload in self.snapshot():
                if predicate(t, status, payload):
                    return t
            time.sleep(0.05)
        raise AssertionError(f"{what} not seen within {timeout} s; last: {self.snapshot()[-3:]}")


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def serving_settings(settings):
    return settings.with_case(model_name=MODEL_NAME).model_copy(
        update={
            "serving_reload_seconds": 0.25,
            "serving_log_flush_seconds": 0.2,
            "serving_api_key": None,
        }
    )


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    from tests.support.sandbox import build_feature_store

    return build_feature_store(
        tmp_path_factory.mktemp("feast-sqlite"), n_customers=200, n_terminals=300, days=6
    )


@pytest.fixture(scope="session")
def champion(serving_settings, sandbox) -> str:
    from tests.support.sandbox import train_and_register

    return train_and_register(serving_settings, sandbox.training, sandbox.feature_columns, alias="champion")


@pytest.fixture(scope="session")
def challenger(serving_settings, sandbox, champion) -> str:
    from tests.support.sandbox import train_and_register

    return train_and_register(
        serving_settings,
        sandbox.training,
        sandbox.feature_columns,
        alias="challenger",
        n_estimators=8,
        seed=3,
    )


def make_app(settings, sandbox, registry_settings=None, **kwargs):
    """The app on the sandbox's Feast store and the session's MLflow registry (``registry_settings``
    when the app's own settings point elsewhere, e.g. the production profile's PostgreSQL)."""
    from serving.app import create_app
    from serving.models import RegistryModelSource

    return create_app(
        settings,
        feature_client=sandbox.feature_client(),
        model_source=RegistryModelSource(registry_settings or settings),
        **kwargs,
    )


def tmp_layout(settings, tmp_path):
    """A storage layout rooted in the test's folder (the registry stays the session's)."""
    from jobs.platform.storage import StorageLayout

    return StorageLayout(settings.model_copy(update={"home": tmp_path / "home"}))


def read_log(layout) -> pd.DataFrame:
    files = sorted(layout.dataset_root("prediction_log").rglob("part-*.parquet"))
    assert files, "no prediction log files"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@pytest.fixture()
def client(serving_settings, sandbox, champion):
    from fastapi.testclient import TestClient

    with TestClient(make_app(serving_settings, sandbox)) as c:
        yield c


# --- the API contract ----------------------------------------------------------------------------
def test_score_matches_feast_and_mlflow_directly(client, serving_settings, sandbox, champion):
    """The served probability equals the registered model applied to Feast's own online features."""
    import mlflow.xgboost
    from mlflow import MlflowClient

    from jobs.fraud.training_data import request_features

    txs = sandbox.transactions.head(5)
    responses = [client.post("/v1/score", json=body(tx)) for _, tx in txs.iterrows()]
    assert [r.status_code for r in responses] == [200] * 5, responses[0].text

    online = sandbox.store.get_online_features(
        features=sandbox.store.get_feature_service("fraud_v1"),
        entity_rows=[
            {"customer_id": int(c), "terminal_id": int(t)}
            for c, t in zip(txs.customer_id, txs.terminal_id, strict=True)
        ],
    ).to_df()
    frame = request_features(
        txs.reset_index(drop=True).join(online.drop(columns=["customer_id", "terminal_id"]))
    )
    mlflow.set_tracking_uri(serving_settings.mlflow_tracking_uri)
    model = mlflow.xgboost.load_model(f"models:/{MODEL_NAME}@champion")
    expected = model.predict_proba(
        frame.reindex(columns=model.get_booster().feature_names).fillna(0.0).astype("float32")
    )[:, 1]
    threshold = float(
        MlflowClient(serving_settings.mlflow_tracking_uri)
        .get_model_version(MODEL_NAME, champion)
        .tags["decision_threshold"]
    )
    for r, p in zip(responses, expected, strict=True):
        out = r.json()
        assert out["probability"] == pytest.approx(float(p), abs=1e-6)
        assert out["threshold"] == pytest.approx(threshold)
        assert out["decision"] == int(out["probability"] >= threshold)
        assert (out["model_name"], out["model_version"], out["arm"]) == (MODEL_NAME, champion, "champion")
        assert out["unknown_entities"] == []
        views = {f["feature_view"]: f for f in out["feature_freshness"]}
        assert {"customer_spending", "terminal_risk"} <= set(views)
        tx_time = pd.Timestamp(
            txs.set_index("transaction_id").loc[out["transaction_id"], "tx_datetime"]
        ).tz_localize("UTC")
        snap = pd.Timestamp(views["customer_spending"]["event_timestamp"])
        assert views["customer_spending"]["age_seconds"] == pytest.approx((tx_time - snap).total_seconds())


def test_batch_equals_single(client, sandbox):
    txs = [body(tx) for _, tx in sandbox.transactions.head(20).iterrows()]
    batch = client.post("/v1/score/batch", json={"transactions": txs})
    assert batch.status_code == 200, batch.text
    singles = [client.post("/v1/score", json=tx).json()["probability"] for tx in txs]
    assert [r["probability"] for r in batch.json()["results"]] == pytest.approx(singles, abs=1e-9)
    assert [r["transaction_id"] for r in batch.json()["results"]] == [t["transaction_id"] for t in txs]


def test_responses_are_the_published_schema(client, sandbox):
    """/v1/score answers are encoded without FastAPI's response-model pass: they must still be exactly
    what the published models (ScoreResult, BatchResponse) serialise to."""
    from jobs.fraud.api import BatchResponse, ScoreResult

    txs = [body(tx) for _, tx in sandbox.transactions.head(3).iterrows()]
    unknown = {**txs[0], "transaction_id": 10**12, "customer_id": 10**12}  # ids are unique within a batch
    for tx in [*txs, unknown]:
        r = client.post("/v1/score", json=tx)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert ScoreResult.model_validate(r.json()).model_dump(mode="json") == r.json()
    r = client.post("/v1/score/batch", json={"transactions": [*txs, unknown]})
    assert BatchResponse.model_validate(r.json()).model_dump(mode="json") == r.json()
    stamps = [f["event_timestamp"] for f in r.json()["results"][0]["feature_freshness"]]
    assert any(s is not None for s in stamps)


def test_fast_path_answers_as_the_fastapi_route_does(serving_settings, sandbox, champion):
    """A valid ``POST /v1/score`` is answered by the fast path; with the fast path off, FastAPI's route
    gives the same answer (headers and body, but for the request id; pushes off, so that the first
    answer does not change the second's last-hour features)."""
    from fastapi.testclient import TestClient

    quiet = serving_settings.model_copy(update={"serving_push_features": False})
    with TestClient(make_app(quiet, sandbox, log_predictions=False)) as client:
        _same_answers(client, [body(tx) for _, tx in sandbox.transactions.iloc[3:6].iterrows()])


def _same_answers(client, bodies: list[dict]) -> None:
    fast = [client.post("/v1/score", json=b) for b in bodies]
    routes = dict(client.app.state.fast_routes)
    assert set(routes) == {"/v1/score"}
    client.app.state.fast_routes.clear()
    try:
        slow = [client.post("/v1/score", json=b) for b in bodies]
    finally:
        client.app.state.fast_routes.update(routes)
    for a, b in zip(fast, slow, strict=True):
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        x, y = a.json(), b.json()
        assert x.pop("request_id") != y.pop("request_id")
        assert x == y


def test_fast_path_hands_everything_but_a_valid_request_to_fastapi():
    """The fast path answers only what it validated; any other request reaches the app behind it
    with its body intact (so FastAPI writes every error answer), and a dependency failure is the
    service's 503 JSON."""
    import asyncio

    from pydantic import BaseModel

    from serving.fastpath import FastPath, FastRoute

    class Row(BaseModel):
        n: int

    reached: list[tuple[str, bytes]] = []

    async def downstream(scope, receive, send):
        message = await receive()
        reached.append((scope["path"], message.get("body", b"")))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def submit(row):
        if row["n"] < 0:
            raise RuntimeError("store down")
        return {"double": row["n"] * 2}

    def unavailable(path, exc):
        return 503, {"error": "online_store_unavailable", "reason": str(exc)}, {"Retry-After": "1"}

    layer = FastPath(
        downstream,
        {"/v1/x": FastRoute(Row, submit)},
        render=lambda c: json.dumps(c).encode(),
        on_unavailable=unavailable,
        api_key="k",
    )

    def call(path, payload, content_type=b"application/json", key=b"k", method="POST"):
        headers = [(b"content-type", content_type)] if content_type else []
        if key:
            headers.append((b"x-api-key", key))
        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        sent = []

        async def receive():
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(layer(scope, receive, send))
        return sent[0]["status"], sent[1]["body"]

    assert call("/v1/x", b'{"n": 2}') == (200, b'{"double": 4}')
    status, payload = call("/v1/x", b'{"n": -1}')
    assert status == 503 and json.loads(payload)["error"] == "online_store_unavailable"
    assert reached == []
    cases = {
        "invalid": {"payload": b'{"n": "x"}'},
        "not json": {"payload": b"{n"},
        "text body": {"payload": b'{"n": 2}', "content_type": b"text/plain"},
        "no content type": {"payload": b'{"n": 2}', "content_type": None},
        "wrong key": {"payload": b'{"n": 2}', "key": b"nope"},
        "no key": {"payload": b'{"n": 2}', "key": None},
        "GET": {"payload": b'{"n": 2}', "method": "GET"},
    }
    for name, kwargs in cases.items():
        before = len(reached)
        assert call("/v1/x", **kwargs)[0] == 299, name
        assert reached[before:] == [("/v1/x", kwargs["payload"])], name
    assert call("/v1/other", b'{"n": 2}')[0] == 299


def test_unknown_entities_scored_with_defaults_and_flagged(client, sandbox):
    tx = body(sandbox.transactions.iloc[0])
    unknown = client.post("/v1/score", json={**tx, "customer_id": 10**12, "terminal_id": 10**12})
    assert unknown.status_code == 200, unknown.text
    out = unknown.json()
    assert sorted(out["unknown_entities"]) == ["customer", "terminal"]
    fresh = {f["feature_view"]: f for f in out["feature_freshness"]}
    assert fresh["customer_spending"]["event_timestamp"] is None
    # the documented default is 0 for every store feature: same score as an explicit all-zero entity
    metrics = client.get("/metrics").text
    assert 'serving_unknown_entities_total{entity="customer"}' in metrics
    assert 0.0 <= out["probability"] <= 1.0


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"tx_amount": -1}, "tx_amount", "greater_than_equal"),
        ({"tx_amount": "lots"}, "tx_amount", "float_type"),
        ({"customer_id": -5}, "customer_id", "greater_than_equal"),
        ({"customer_id": 2**64}, "customer_id", "less_than_equal"),
        ({"tx_datetime": "yesterday"}, "tx_datetime", "datetime_from_date_parsing"),
        ({"tx_datetime": "1900-01-01T00:00:00"}, "tx_datetime", "value_error"),
        ({"terminal_id": None}, "terminal_id", "int_type"),
        ({"surprise": 1}, "surprise", "extra_forbidden"),
    ],
)
def test_bad_requests_get_422_with_field_and_rule(client, sandbox, change, field, rule):
    tx = {**body(sandbox.transactions.iloc[0]), **change}
    r = client.post("/v1/score", json=tx)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert {"field": field, "rule": rule} in [{"field": e["field"], "rule": e["rule"]} for e in errors], (
        errors
    )


def test_missing_field_and_empty_batch_get_422(client, sandbox):
    tx = body(sandbox.transactions.iloc[0])
    del tx["tx_amount"]
    r = client.post("/v1/score", json=tx)
    assert r.status_code == 422
    assert (r.json()["errors"][0]["field"], r.json()["errors"][0]["rule"]) == ("tx_amount", "missing")
    r = client.post("/v1/score/batch", json={"transactions": []})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "transactions"
    r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and _issue(r) == ("body", "json_invalid")
    assert "at character 1" in r.json()["errors"][0]["message"]


def _issue(r) -> tuple[str, str]:
    """(field, rule) of a 4xx answer: every one names both (validation errors one per issue)."""
    payload = r.json()
    if "errors" in payload:
        return payload["errors"][0]["field"], payload["errors"][0]["rule"]
    return payload["field"], payload["rule"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_amount_gets_422_not_500(client, sandbox, literal):
    """Regression (issue 18): Python's JSON parser accepts NaN/Infinity; the 422 body then failed to render
    (500 {"error":"internal","reason":"ValueError"})."""
    tx = body(sandbox.transactions.iloc[0])
    raw = json.dumps({**tx, "tx_amount": 0.5}).replace("0.5", literal).encode()
    for path, payload in (("/v1/score", raw), ("/v1/score/batch", b'{"transactions": [' + raw + b"]}")):
        r = client.post(path, content=payload, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        field = "tx_amount" if path == "/v1/score" else "transactions.0.tx_amount"
        assert _issue(r) == (field, "finite_number")
        assert r.json()["errors"][0]["value"] == literal


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"tx_amount": True}, "tx_amount", "float_type"),  # regression (issue 18): was scored as 1.0
        ({"tx_amount": False}, "tx_amount", "float_type"),
        ({"customer_id": True}, "customer_id", "int_type"),
        ({"transaction_id": False}, "transaction_id", "int_type"),
        ({"tx_amount": "57.2"}, "tx_amount", "float_type"),  # numbers are JSON numbers, never strings
        ({"customer_id": "42"}, "customer_id", "int_type"),
        ({"customer_id": 42.5}, "customer_id", "int_from_float"),  # ids are JSON integers (42.0 is one)
        ({"tx_amount": 1e400}, "tx_amount", "finite_number"),  # overflows to inf
    ],
)
def test_booleans_and_numeric_strings_are_never_numbers(client, sandbox, change, field, rule):
    tx = {**body(sandbox.transactions.iloc[0]), **change}
    r = client.post(
        "/v1/score", content=json.dumps(tx).encode(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert _issue(r) == (field, rule)
    assert (
        client.post("/v1/score", json={**tx, field: body(sandbox.transactions.iloc[0])[field]}).status_code
        == 200
    )


def test_integral_amount_and_integral_ids_are_numbers(client, sandbox):
    tx = body(sandbox.transactions.iloc[0])
    r = client.post("/v1/score", json={**tx, "tx_amount": 57, "customer_id": float(tx["customer_id"])})
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == tx["customer_id"]


def test_duplicate_ids_in_a_batch_get_422(client, sandbox):
    txs = [body(tx) for _, tx in sandbox.transactions.head(3).iterrows()]
    txs.append({**txs[0], "tx_amount": 1.0})
    r = client.post("/v1/score/batch", json={"transactions": txs})
    assert r.status_code == 422, r.text
    assert _issue(r) == ("transactions", "unique_transaction_id")
    assert "at transactions.3 repeats the one first at transactions.0" in r.json()["errors"][0]["message"]


def test_oversized_requests_get_413_before_the_body_is_read(serving_settings, sandbox, champion):
    """A declared Content-Length over the limit is answered before any body byte is read; a chunked body
    is cut off as soon as it passes the limit; either way the JSON answer names the field and the rule."""
    import httpx

    settings = serving_settings.model_copy(update={"serving_max_request_bytes": 4096})
    with Server(make_app(settings, sandbox, log_predictions=False)) as server:
        # 1. declared: headers only, no body sent at all -> the answer comes anyway
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/score HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 10485760\r\n\r\n"
            )
            head = b""
            while chunk := sock.recv(65536):  # the server closes the connection after its answer
                head += chunk
            head = head.decode()
        assert head.startswith("HTTP/1.1 413"), head
        payload = json.loads(head.split("\r\n\r\n", 1)[1])
        assert (payload["field"], payload["rule"]) == ("body", "max_request_bytes")
        assert "4096" in payload["reason"]

        # 2. chunked, no length: refused once the limit is passed (a body that is not even JSON: never parsed)
        def chunks():
            for _ in range(100):
                yield b"x" * 1024

        r = httpx.post(
            server.url + "/v1/score/batch", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and _issue(r) == ("body", "max_request_bytes")
        # 3. a body under the limit is served
        ok = httpx.post(server.url + "/v1/score", json=body(sandbox.transactions.iloc[0]))
        assert ok.status_code == 200, ok.text
    schema = make_app(settings, sandbox, log_predictions=False).openapi()
    assert "413" in schema["paths"]["/v1/score"]["post"]["responses"]


def test_every_4xx_names_field_and_rule(serving_settings, sandbox, champion):
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    settings = serving_settings.model_copy(update={"serving_api_key": SecretStr("s3cret")})
    tx = body(sandbox.transactions.iloc[0])
    with TestClient(make_app(settings, sandbox, log_predictions=False)) as c:
        key = {"X-API-Key": "s3cret"}
        assert _issue(c.post("/v1/score", json=tx)) == ("X-API-Key", "api_key_required")
        assert _issue(c.get("/nope", headers=key)) == ("path", "known_route")
        assert _issue(c.get("/v1/score", headers=key)) == ("method", "allowed_method")
        r = c.post("/v1/score", content=b"\xff\xfe", headers={**key, "content-type": "application/json"})
        assert 400 <= r.status_code < 500 and all(_issue(r)), r.text


def test_api_key_required_when_configured(serving_settings, sandbox, champion):
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    settings = serving_settings.model_copy(update={"serving_api_key": SecretStr("s3cret")})
    tx = body(sandbox.transactions.iloc[0])
    with TestClient(make_app(settings, sandbox)) as c:
        assert c.post("/v1/score", json=tx).status_code == 401
        wrong = c.post("/v1/score", json=tx, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        assert c.post("/v1/score", json=tx, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open
        schemes = c.get("/openapi.json").json()["components"]["securitySchemes"]
        assert any(s.get("name") == "X-API-Key" for s in schemes.values())


def test_production_profile_turns_auth_on(serving_settings):
    from jobs.platform.config import Settings

    prod = Settings(profile="production", home=serving_settings.home)
    assert prod.serving_api_key is not None


def test_no_champion_gives_503_not_500(serving_settings, sandbox, champion):
    from fastapi.testclient import TestClient

    settings = serving_settings.with_case(model_name="no-such-model-serving-tests")
    with TestClient(make_app(settings, sandbox)) as c:
        r = c.post("/v1/score", json=body(sandbox.transactions.iloc[0]))
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "model_unavailable" and r.json()["reason"]
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["champion_version"] is None
        assert c.get("/healthz").status_code == 200


def test_unreachable_online_store_gives_503(serving_settings, sandbox, champion, tmp_path):
    """An online store that cannot be read (its SQLite file replaced by a directory) -> 503 with a reason."""
    from fastapi.testclient import TestClient

    from tests.support.sandbox import clone_sandbox

    broken = clone_sandbox(sandbox, tmp_path / "feast", "sqlite")
    online_db = tmp_path / "feast" / "online.db"
    with TestClient(make_app(serving_settings, broken)) as c:
        assert c.post("/v1/score", json=body(sandbox.transactions.iloc[0])).status_code == 200
        broken.store._get_provider().online_store._conn = None  # drop the cached connection
        online_db.unlink()
        online_db.mkdir()  # not a database any more
        r = c.post("/v1/score", json=body(sandbox.transactions.iloc[1]))
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "online_store_unavailable"
        assert c.get("/readyz").json()["online_store"] == "unreachable"


def test_openapi_and_metrics(client, champion):
    schema = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/score/batch", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    score = schema["paths"]["/v1/score"]["post"]
    assert {"200", "422", "503"} <= set(score["responses"])
    client.get("/healthz")
    text = client.get("/metrics").text
    assert "serving_requests_total" in text and "serving_request_latency_seconds_bucket" in text
    assert f'serving_model_version{{alias="champion"}} {float(champion)}' in text
    assert client.get("/readyz").json()["status"] == "ready"


# --- prediction log ------------------------------------------------------------------------------
def test_prediction_log_has_every_scored_request(serving_settings, sandbox, champion, tmp_path):
    from fastapi.testclient import TestClient

    settings = serving_settings
    layout = tmp_layout(settings, tmp_path)
    txs = [body(tx) for _, tx in sandbox.transactions.head(30).iterrows()]
    with TestClient(make_app(settings, sandbox, layout=layout)) as c:
        single = [c.post("/v1/score", json=tx).json() for tx in txs[:10]]
        batch = c.post("/v1/score/batch", json={"transactions": txs[10:]}).json()["results"]
    # leaving the client shut the app down: the writer flushed everything
    day = pd.Timestamp(txs[0]["tx_datetime"]).date()
    part = layout.path("prediction_log", day)
    files = sorted(part.glob("part-*.parquet"))
    assert files and not list(part.glob("_tmp-*")), "only committed files in the partition"
    log = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    responses = pd.DataFrame(single + batch)
    assert len(log) == 30 and set(log["request_id"]) == set(responses["request_id"])
    merged = log.merge(responses, on="request_id", suffixes=("", "_api"))
    assert np.allclose(merged["score"], merged["probability"])
    assert (merged["decision"] == merged["decision_api"]).all()
    assert set(log["arm"]) == {"champion"} and set(log["model_version"]) == {champion}
    for column in (
        "transaction_id",
        "customer_id",
        "terminal_id",
        "tx_datetime",
        "scored_at",
        "customer_nb_tx_7d",
    ):
        assert column in log.columns
    assert str(log["tx_datetime"].dtype).startswith("datetime64")


# --- challenger: shadow and canary --------------------------------------------------------------
def test_shadow_scores_challenger_without_returning_it(
    serving_settings, sandbox, champion, challenger, tmp_path
):
    from fastapi.testclient import TestClient

    settings = serving_settings.model_copy(update={"serving_challenger_mode": "shadow"})
    layout = tmp_layout(settings, tmp_path)
    txs = [body(tx) for _, tx in sandbox.transactions.head(12).iterrows()]
    with TestClient(make_app(settings, sandbox, layout=layout)) as c:
        out = [c.post("/v1/score", json=tx).json() for tx in txs]
        ready = c.get("/readyz").json()
        assert ready["challenger_version"] == challenger, ready["reasons"]
    assert {o["arm"] for o in out} == {"champion"} and {o["model_version"] for o in out} == {champion}
    log = read_log(layout)
    assert log.groupby("arm").size().to_dict() == {"champion": 12, "shadow": 12}
    shadow = log[log.arm == "shadow"]
    assert set(shadow["model_version"]) == {challenger}
    assert set(shadow["request_id"]) == {o["request_id"] for o in out}


def test_canary_split_is_deterministic_by_customer(serving_settings, sandbox, champion, challenger):
    from fastapi.testclient import TestClient

    from serving.models import canary_bucket

    settings = serving_settings.model_copy(
        update={"serving_challenger_mode": "canary", "serving_canary_share": 0.5}
    )
    txs = [body(tx) for _, tx in sandbox.transactions.head(60).iterrows()]
    with TestClient(make_app(settings, sandbox, log_predictions=False)) as c:
        first = c.post("/v1/score/batch", json={"transactions": txs}).json()["results"]
        again = c.post("/v1/score/batch", json={"transactions": txs}).json()["results"]
    arms = [r["arm"] for r in first]
    assert arms == [r["arm"] for r in again]
    salt = f"{settings.case.model_name}/{challenger}"  # the experiment: the challenger's name and version
    assert arms == ["challenger" if canary_bucket(t["customer_id"], salt) < 0.5 else "champion" for t in txs]
    assert {"champion", "challenger"} == set(arms)
    for r in first:
        assert r["model_version"] == (challenger if r["arm"] == "challenger" else champion)


def test_each_experiment_draws_its_own_canary_customers():
    from serving.models import canary_bucket

    customers = range(20_000)
    canary = {
        salt: {c for c in customers if canary_bucket(c, salt) < 0.1}
        for salt in ("fraud-detector/2", "fraud-detector/3")
    }
    a, b = canary.values()
    assert 0.09 < len(a) / 20_000 < 0.11 and 0.09 < len(b) / 20_000 < 0.11
    # independent draws overlap in about share^2 of the customers, not in all of the canary
    assert 0.005 < len(a & b) / 20_000 < 0.015
    assert a == {c for c in customers if canary_bucket(c, "fraud-detector/2") < 0.1}  # stable per experiment


# --- stream path ----------------------------------------------------------------------------------
def test_pushed_transactions_make_short_window_features_fresh(serving_settings, sandbox, champion, tmp_path):
    from fastapi.testclient import TestClient

    settings = serving_settings
    layout = tmp_layout(settings, tmp_path)
    t0 = dt.datetime(2018, 4, 6, 12, 0, tzinfo=dt.UTC)
    customer, terminal = (
        int(sandbox.transactions.customer_id.iloc[0]),
        int(sandbox.transactions.terminal_id.iloc[0]),
    )
    tx = {"customer_id": customer, "terminal_id": terminal, "tx_amount": 10.0}
    with TestClient(make_app(settings, sandbox, layout=layout)) as c:
        pusher = c.app.state.service.pusher
        for k, minutes in enumerate((0, 10, 20, 90)):
            when = (t0 + dt.timedelta(minutes=minutes)).isoformat()
            r = c.post("/v1/score", json={**tx, "transaction_id": 9_000_000 + k, "tx_datetime": when})
            assert r.status_code == 200
            assert pusher.wait_idle(10), "push not done"
        views = {f["feature_view"]: f for f in r.json()["feature_freshness"]}
        assert views["customer_recent_activity"]["age_seconds"] == pytest.approx(70 * 60)
    log = read_log(layout)
    log = log.sort_values("tx_datetime")
    # [t-1h, t): 0 before the first, then 1 and 2, and none within the hour before the 90-minute one
    assert log["customer_nb_tx_1h"].tolist() == [0, 1, 2, 0]
    assert log["customer_amount_1h"].tolist() == [0.0, 10.0, 20.0, 0.0]


def test_stream_window_functions():
    from jobs.fraud.features import derive_recent, derive_today
    from jobs.fraud.online import merge_recent

    ids, epochs, amounts = merge_recent([], [], [], [(1, 1000, 5.0), (2, 2000, 7.0)])
    ids, epochs, amounts = merge_recent(ids, epochs, amounts, [(2, 2000, 7.0), (3, 5000, 1.0)])
    assert ids == [1, 2, 3]  # id 1 is outside the last hour but in the newest's UTC day; id 2 once
    assert derive_recent(ids, epochs, amounts, tx_id=4, tx_epoch=5000) == {
        "customer_nb_tx_1h": 1.0,
        "customer_amount_1h": 7.0,
    }
    assert derive_recent(ids, epochs, amounts, tx_id=3, tx_epoch=5000)["customer_nb_tx_1h"] == 1.0
    # the next UTC day: what is older than both its start and the hour before the newest is dropped
    ids, epochs, amounts = merge_recent(ids, epochs, amounts, [(4, 86_000, 3.0), (5, 87_400, 2.0)])
    assert ids == [4, 5]
    assert derive_today(ids, epochs, amounts, tx_id=6, tx_epoch=87_500, tx_amount=1.0) == {
        "customer_nb_tx_today": 2.0,
        "customer_amount_today": 3.0,
    }


def test_pusher_pushes_a_burst_in_few_batches():
    """The pusher lingers after the first transaction: a burst is one read-modify-write, not one per
    request; everything submitted is pushed."""
    from serving.streaming import FeaturePusher

    class Recorder:  # the pusher's client protocol (push)
        def __init__(self) -> None:
            self.calls: list[int] = []

        def push(self, batch) -> int:
            self.calls.append(len(batch))
            return len(batch)

    rec = Recorder()
    pusher = FeaturePusher(rec, linger_seconds=0.2)
    pusher.start()
    try:
        pusher.submit([{"transaction_id": i} for i in range(40)])
        for i in range(40, 60):
            pusher.submit([{"transaction_id": i}])
        assert pusher.wait_idle(10)
    finally:
        pusher.close()
    assert sum(rec.calls) == 60 and pusher.pushed == 60
    assert len(rec.calls) <= 2, rec.calls


def test_benchmark_load_generator_counts_answers_and_errors(serving_settings, sandbox, champion):
    """The benchmark's raw-socket generator against the real service: every fixed-rate request is
    answered and timed; non-200 answers are errors."""
    import asyncio

    from benchmarks.serving import run_load

    bodies = [body(tx) for _, tx in sandbox.transactions.head(50).iterrows()]
    with Server(make_app(serving_settings, sandbox, log_predictions=False)) as srv:
        spec = {
            "system": "ours",
            "port": srv.port,
            "bodies": bodies,
            "connections": 4,
            "drain_seconds": 10,
            "warmup": 2,
            "mode": "open",
            "rate": 50,
            "seconds": 1.0,
        }
        ok = asyncio.run(run_load(spec))
        bad = asyncio.run(run_load({**spec, "bodies": [{**b, "tx_amount": -1} for b in bodies], "warmup": 0}))
    assert (ok["ok"], ok["errors"]) == (50, 0)
    assert 0 < ok["p50_ms"] <= ok["p99_ms"] <= ok["max_ms"] < 10_000
    assert (bad["ok"], bad["errors"]) == (0, 50) and "HTTP 422" in bad["first_error"]


def test_two_workers_share_the_port_each_with_its_own_model(serving_settings, sandbox, champion, tmp_path):
    """``--workers 2`` (what ``python -m serving.app --workers`` and the benchmark run): uvicorn's
    supervisor and two worker processes on one port, each with its own loaded champion, answering."""
    import os
    import sys

    import httpx
    import psutil

    from benchmarks.serving import stop, wait_http

    port = free_port()
    env = {**os.environ, "FRAUD_MODEL_NAME": MODEL_NAME, "MLP_SERVING_RELOAD_SECONDS": "0.25"}
    log = (tmp_path / "workers.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serving", "--serve-ours", str(sandbox.root), str(port), "", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
        workers = psutil.Process(proc.pid).children(recursive=True)
        serving = [w for w in workers if "multiprocessing.spawn" in " ".join(w.cmdline())]
        assert len(serving) == 2, [w.cmdline() for w in workers]
        deadline = time.monotonic() + 60
        answers: list[dict] = []
        while len(answers) < 40 and time.monotonic() < deadline:  # until both workers have their model
            answers = []
            for _, tx in sandbox.transactions.head(40).iterrows():  # a new connection each: both workers
                r = httpx.post(f"http://127.0.0.1:{port}/v1/score", json=body(tx), timeout=10)
                if r.status_code != 200:
                    time.sleep(0.5)
                    break
                answers.append(r.json())
        assert len(answers) == 40, (tmp_path / "workers.log").read_text()[-2000:]
        assert {a["model_version"] for a in answers} == {champion}
        assert all(w.is_running() for w in serving)
    finally:
        proc.stdout_log = str(tmp_path / "workers.log")
        stop(proc)
        log.close()


# --- fuzzing ---------------------------------------------------------------------------------------
def _names_field_and_rule(ctx, response, case):
    """schemathesis check: a 4xx answer is JSON naming the field and the rule it broke."""
    if 400 <= response.status_code < 500:
        payload = response.json()
        issues = payload.get("errors") or [payload]
        missing = [i for i in issues if not (i.get("field") and i.get("rule"))]
        assert not missing, f"{response.status_code} without field/rule: {payload}"


def test_fuzz_openapi_schema_finds_no_server_errors(serving_settings, sandbox, champion):
    """Schemathesis against the running service: generated (positive and negative) requests per operation,
    the hostile cases of issue 18 through the same checks, and stateful sequences along the OpenAPI links.
    Zero 5xx; every 4xx names the field and the rule; negative data is always rejected."""
    from collections import Counter

    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, response_schema_conformance, _names_field_and_rule]
    statuses: Counter = Counter()
    settings = serving_settings.model_copy(update={"serving_max_request_bytes": 64 * 1024})
    with Server(make_app(settings, sandbox, log_predictions=False)) as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        rejection = schema.config.checks.negative_data_rejection  # a body over the size limit is rejected too
        rejection.expected_statuses = [*rejection.expected_statuses, "413"]
        budget = hsettings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )

        def fuzz(operation, mode, mode_checks) -> None:
            @budget
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                response = case.call_and_validate(base_url=server.url, checks=mode_checks)
                statuses[response.status_code] += 1

            run()

        for path, method in (
            ("/v1/score", "POST"),
            ("/v1/score/batch", "POST"),
            ("/readyz", "GET"),
            ("/healthz", "GET"),
        ):
            operation = schema[path][method]
            modes = (
                (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                if method == "POST"
                else (GenerationMode.POSITIVE,)
            )
            for mode in modes:
                fuzz(
                    operation,
                    mode,
                    checks + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else []),
                )

        # the hostile inputs of issue 18, sent as raw JSON text (NaN / Infinity are not JSON, Python accepts them)
        tx = body(sandbox.transactions.iloc[0])
        text = json.dumps(tx)
        hostile = {
            "/v1/score": [
                (text.replace(str(tx["tx_amount"]), literal), 422)
                for literal in ("NaN", "Infinity", "-Infinity", "1e400", "true", "false", '"57.2"')
            ]
            + [(json.dumps({**tx, "customer_id": True}), 422), (json.dumps({**tx, "customer_id": "42"}), 422)]
            + [(json.dumps({**tx, "pad": "x" * 70_000}), 413), (text, 200)],
            "/v1/score/batch": [
                (json.dumps({"transactions": [tx, {**tx, "tx_amount": 1.0}]}), 422),
                (json.dumps({"transactions": [tx] * 600}), 413),
                (json.dumps({"transactions": [tx]}).replace(str(tx["tx_amount"]), "NaN"), 422),
            ],
        }
        for path, cases in hostile.items():
            operation = schema[path]["POST"]
            for raw, expected in cases:
                case = operation.Case(media_type="application/json")
                response = case.call(
                    base_url=server.url, data=raw.encode(), headers={"content-type": "application/json"}
                )
                case.validate_response(response, checks=checks)
                assert response.status_code == expected, (raw[:200], response.text)
                statuses[response.status_code] += 1

        # stateful: sequences of calls following the OpenAPI links (score -> same card again)
        # positive data, so that sequences get past their first 200 (negative data was fuzzed above)
        schema.config.generation.modes = [GenerationMode.POSITIVE]
        machine = schema.as_state_machine()

        class Stateful(machine):
            def validate_response(self, response, case, additional_checks=None, **kwargs):
                case.validate_response(response, checks=checks)
                statuses[response.status_code] += 1
                statuses["stateful steps"] += 1

            def step(self, input):
                statuses["stateful steps along a link"] += input.transition is not None
                return super().step(input)

        Stateful.run(settings=hsettings(budget, max_examples=20, stateful_step_count=4))
    print("schemathesis statuses:", dict(statuses))
    assert not [code for code in statuses if isinstance(code, int) and code >= 500], statuses
    assert statuses[200] >= 10 and statuses[422] >= 20 and statuses[413] >= 2, statuses
    assert statuses["stateful steps"] >= 10 and statuses["stateful steps along a link"] >= 2, statuses
    assert sum(v for k, v in statuses.items() if isinstance(k, int)) >= 120, statuses


# --- outage and promotion under load ---------------------------------------------------------------
@pytest.fixture()
def own_redis(tmp_path):
    """A redis-server of this test only (AOF on, so a restart keeps the data), on a free port."""
    binary = shutil.which("redis-server")
    assert binary, (
        "redis-server not found; install Redis (the platform needs it): it is started as "
        '`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no`'
    )
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
            assert time.monotonic() < deadline, f"redis-server on port {port} did not start"
            time.sleep(0.05)

    state = {"proc": start()}

    class Handle:
        connection = f"127.0.0.1:{port}"

        def stop(self) -> None:
            state["proc"].kill()
            state["proc"].wait(10)

        def restart(self) -> None:
            state["proc"] = start()

    yield Handle()
    state["proc"].kill()
    state["proc"].wait(10)


def test_redis_and_sqlite_serve_the_same_features_for_known_and_unknown_entities(
    sandbox, own_redis, tmp_path
):
    """The one-round-trip Redis read (every view of every row of a batch in one pipeline, one HMGET
    per entity for the views it keys) gives what the SQLite store gives, value for value: snapshots,
    timestamps, the last-hour features, and for entities the store has no row for the documented
    defaults and flags (Redis answers a missing hash with empty values, not with a missing row)."""
    from jobs.fraud.api import Transaction
    from tests.support.sandbox import clone_sandbox

    sqlite_box = clone_sandbox(sandbox, tmp_path / "feast-sqlite", "sqlite")  # nothing pushed yet
    redis_box = clone_sandbox(sandbox, tmp_path / "feast-redis", "redis", own_redis.connection)
    known = [
        Transaction.model_validate(body(tx)).model_dump()
        for _, tx in sandbox.transactions.head(40).iterrows()
    ]
    stranger = {**known[0], "transaction_id": 1, "customer_id": 10**12, "terminal_id": 10**12}
    half = {**known[1], "transaction_id": 2, "terminal_id": 10**12}  # known customer, unknown terminal
    rows = [*known, stranger, half, known[0]]  # and a repeated entity within the batch
    sqlite, redis = sqlite_box.feature_client(), redis_box.feature_client()
    on_sqlite, on_redis = sqlite.fetch(rows), redis.fetch(rows)
    assert on_redis.columns == on_sqlite.columns
    np.testing.assert_array_equal(on_redis.matrix, on_sqlite.matrix)
    assert on_redis.unknown == on_sqlite.unknown
    assert on_redis.timestamps == on_sqlite.timestamps
    assert on_redis.unknown[40] == ["customer", "terminal"] and on_redis.unknown[41] == ["terminal"]
    assert all(u == [] for u in on_redis.unknown[:40])
    served = on_redis[40].values
    assert all(served[f] == 0.0 for f in served if f.startswith(("customer_", "terminal_")))
    assert on_redis[41].values["customer_nb_tx_7d"] == on_redis[1].values["customer_nb_tx_7d"] > 0
    assert on_redis.timestamps["terminal_risk"][41] is None
    # the stream view too: the same pushes, then the same last-hour features from both stores
    for client in (sqlite, redis):
        client.push(known[:20])
    later = [{**r, "transaction_id": r["transaction_id"] + 10**9} for r in known[:20]]
    after_sqlite, after_redis = sqlite.fetch(later), redis.fetch(later)
    np.testing.assert_array_equal(after_redis.matrix, after_sqlite.matrix)
    assert after_redis.timestamps == after_sqlite.timestamps
    assert sum(v.values["customer_nb_tx_1h"] for v in after_redis) > 0


def test_redis_outage_gives_503_then_recovers_without_restart(
    serving_settings, sandbox, champion, own_redis, tmp_path
):
    from pydantic import SecretStr

    from tests.support.sandbox import clone_sandbox

    redis_box = clone_sandbox(sandbox, tmp_path / "feast-redis", "redis", own_redis.connection)
    # production profile: Redis online store, API key on (the model registry stays the session's)
    settings = serving_settings.model_copy(
        update={"profile": "production", "serving_api_key": SecretStr("k")}
    )
    headers = {"X-API-Key": "k"}
    bodies = [body(tx) for _, tx in sandbox.transactions.head(50).iterrows()]
    import httpx

    with (
        Server(
            make_app(settings, redis_box, registry_settings=serving_settings, log_predictions=False)
        ) as server,
        Load(server.url, bodies, headers=headers) as load,
    ):
        load.wait_for(lambda t, s, p: s == 200, 20, "a first 200")
        time.sleep(0.5)
        own_redis.stop()
        stopped = time.monotonic()
        load.wait_for(lambda t, s, p: t > stopped and s == 503, 20, "a 503 after Redis stopped")
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["online_store"] == "unreachable"
        time.sleep(0.5)
        own_redis.restart()
        restarted = time.monotonic()
        load.wait_for(lambda t, s, p: t > restarted and s == 200, 30, "a 200 after Redis came back")
        load.wait_for(lambda t, s, p: t > restarted + 3, 30, "load going on after the recovery")
        assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
    results = load.snapshot()
    statuses = {s for _, s, _ in results}
    assert statuses <= {200, 503}, statuses
    for _, s, payload in results:
        if s == 503:
            assert payload["error"] == "online_store_unavailable" and "reason" in payload
    after = [s for t, s, _ in results if t > restarted + 3]
    assert after and set(after) == {200}, "recovered for good"


def test_promoting_a_new_champion_under_load_fails_no_request(
    serving_settings, sandbox, champion, challenger
):
    from jobs.platform import registry
    from tests.support.sandbox import train_and_register

    settings = serving_settings.model_copy(update={"serving_challenger_mode": "off"})
    new_version = train_and_register(
        settings, sandbox.training, sandbox.feature_columns, alias=None, seed=11, n_estimators=12
    )
    previous = registry.champion_version(settings)
    bodies = [body(tx) for _, tx in sandbox.transactions.head(50).iterrows()]
    try:
        with (
            Server(make_app(settings, sandbox, log_predictions=False)) as server,
            Load(server.url, bodies) as load,
        ):
            load.wait_for(lambda t, s, p: s == 200, 20, "a first 200")
            time.sleep(0.5)
            promoted = time.monotonic()
            registry.promote(new_version, reason="serving test: promotion under load", settings=settings)
            first_new = load.wait_for(
                lambda t, s, p: s == 200 and p["model_version"] == new_version, 10, "the new champion"
            )
            load.wait_for(lambda t, s, p: t > first_new + 1.5, 30, "load continuing after the swap")
        results = sorted(load.snapshot(), key=lambda r: r[0])
        assert {s for _, s, _ in results} == {200}, "no failed request during the swap"
        assert first_new - promoted < 5.0, "new champion served within 5 s (poll interval 0.25 s)"
        before = {p["model_version"] for t, _, p in results if t < promoted}
        assert before == {previous}
        # a request scored just before the swap may be answered a moment after the first new one
        late_old = [
            t - first_new for t, _, p in results if t > first_new and p["model_version"] != new_version
        ]
        assert not [d for d in late_old if d > 0.5], f"old version answered long after the swap: {late_old}"
        assert sum(1 for t, _, _ in results if t > first_new + 0.5) >= 5
    finally:
        registry.promote(previous, reason="serving test: restore", settings=settings)


def test_model_poller_survives_registry_errors(serving_settings, champion):
    from serving.models import LoadedModel, ModelManager, ModelUnavailable, RegistryModelSource

    real = RegistryModelSource(serving_settings)

    class Flaky:
        name = MODEL_NAME
        fail = False

        def version(self, alias):
            if self.fail:
                raise ModelUnavailable("registry down")
            return real.version(alias)

        def load(self, alias) -> LoadedModel:
            return real.load(alias)

    source = Flaky()
    manager = ModelManager(source)
    assert manager.refresh() and manager.bundle.champion.version == champion
    source.fail = True
    assert manager.refresh() is False
    assert manager.bundle.champion.version == champion and "registry down" in manager.last_error
    source.fail = False
    manager.refresh()
    assert manager.last_error is None
    assert not math.isnan(manager.bundle.champion.threshold)


def test_the_service_refuses_to_start_on_a_home_without_a_feature_repository(tmp_path):
    """`python -m serving.app` on a fresh home: exit 2 with the field and the command, no traceback;
    once the repository is applied it starts (and answers 503 until a champion exists, tested above)."""
    import os
    import sys

    env = {**os.environ, "MLP_HOME": str(tmp_path / "fresh")}
    done = subprocess.run(
        [sys.executable, "-m", "serving.app", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot start: feature_service: 'fraud_v3' is not registered" in done.stderr
    assert "python -m jobs.platform.feature_store apply" in done.stderr and "Traceback" not in done.stderr
