"""Property-based fuzzing of ingestion (hypothesis): hostile landing files at the door.

Two layers, so the budget stays bounded:

* **the byte-level contract** (:mod:`jobs.platform.landing`, pure Python): hundreds of generated files per second,
  checked against an independent line count and the decoding rules;
* **end to end** (Spark + GX): a few generated landing *days*, each several files ingested in one run. The
  invariant for every day: the run fails with an :class:`IngestError` naming the file, the line or column
  and the rule, or rows in (the contract's data lines) = published + quarantined, every line that is not
  UTF-8 is quarantined with its reason, every row generated clean is published, and what is published
  obeys the lake contract. Never an unexplained exception.

Budgets come from hypothesis profiles (``tests/conftest.py``): ``ci`` (the default, derandomized) in
``make test``; ``fuzz`` in ``make fuzz`` (``--hypothesis-profile=fuzz``), which also writes its tally of
files, rows and outcomes to ``test-artifacts/ingest_fuzz.json``. Examples it finds go to
``tests/platform/bad_inputs/`` (see its README).
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from jobs.platform.config import REPO_ROOT, Settings
from jobs.platform.ingest import PART_FILE, IngestError, dataset_spec, ingest_transactions
from jobs.platform.landing import IngestError as LandingIngestError
from jobs.platform.landing import split_landing
from jobs.platform.storage import StorageLayout

COLUMNS = dataset_spec("transactions").raw_columns
DAY = dt.date(2018, 4, 1)
MAX_ID = 10_000_000  # Settings.max_customer_id / max_terminal_id defaults
TERMINATOR = re.compile(rb"\r\n|\r|\n")
SPARK_SHARE = 150  # one end-to-end Spark day per this many pure-Python examples of the profile
TALLY: Counter = Counter()


def oracle_lines(data: bytes) -> int:
    """Data lines of a landing file as the contract defines them, counted without jobs.platform.landing: one per
    terminator (LF, CRLF, lone CR), plus an unterminated last line; minus the header."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    if not data:
        return 0
    lines = len(TERMINATOR.findall(data)) + (0 if data.endswith((b"\n", b"\r")) else 1)
    return lines - 1


# --- strategies --------------------------------------------------------------------------------

NUMERIC_EDGES = [
    "0", "-0", "+0", "-0.0", "0.0e0", "1e3", "1E-3", "1e308", "1e309", "-1e-400", "4.9e-324", ".5", "5.",
    "NaN", "nan", "-NaN", "inf", "-inf", "Infinity", "+Infinity", "1d", "1f", "0x1p3", "0x10", "1_000",
    "1,000", "١٢٣", "１２", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "99999999999999999999999", "1.5", "00012", " 7 ", "\t7", "7\x00", "\x0b7", "−5", "--1", "+-1", "",
]  # fmt: skip
TIMESTAMP_EDGES = [
    "2018-04-01 00:00:00", "2018-04-01T10:00:00", "2018-04-01 10:00:00.123456", "2018-04-01 10:00:00.5",
    "2018-04-01 10:00:00Z", "2018-04-01 10:00:00+02:00", "2018-04-01T10:00:00-05:00", "2018-04-01 24:00:00",
    "2018-04-01 23:59:60", "2018-02-30 10:00:00", "2018-13-01 10:00:00", "0000-01-01 00:00:00",
    "9999-12-31 23:59:59", "+10000-01-01 00:00:00", "2018-4-1 1:0:0", "2018/04/01 10:00:00", "1522576800",
    "2018-04-01", "10:00:00", "2018-04-01 10:00:00 ", "２０１８-04-01 10:00:00", "",
]  # fmt: skip
CONTROL = st.sampled_from(["\x00", "\x01", "\x07", "\x0b", "\x0c", "\x1b", "\x1c", "\x7f", "\x85", "\u2028"])


@st.composite
def clean_values(draw, transaction_id: int) -> dict[str, str]:
    """A row the contract accepts, in the spellings a network might use."""
    second = draw(st.integers(0, 86_399))
    ts = dt.datetime.combine(DAY, dt.time()) + dt.timedelta(seconds=second)
    fmt = draw(st.sampled_from(["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.000000"]))
    amount = draw(st.decimals(0, 100_000, places=2, allow_nan=False, allow_infinity=False))
    return {
        "transaction_id": str(transaction_id),
        "tx_datetime": ts.strftime(fmt),
        "customer_id": str(draw(st.integers(0, MAX_ID - 1))),
        "terminal_id": str(draw(st.integers(0, MAX_ID - 1))),
        "tx_amount": draw(st.sampled_from([str(amount), f"{float(amount):.6g}", f"{float(amount):e}"])),
    }


def quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@st.composite
def hostile_field(draw, column: str, clean: str) -> str:
    kind = draw(
        st.sampled_from(["edge", "text", "control", "long", "quoted", "quote_junk", "offset_ts", "unicode"])
    )
    event(f"field: {kind}")
    if kind == "edge":
        return draw(st.sampled_from(TIMESTAMP_EDGES if column == "tx_datetime" else NUMERIC_EDGES))
    if kind == "text":
        return draw(st.text(max_size=20))
    if kind == "control":
        at = draw(st.integers(0, len(clean)))
        return clean[:at] + draw(CONTROL) + clean[at:]
    if kind == "long":
        return draw(st.sampled_from(["9", "1", " ", "x"])) * draw(st.sampled_from([1_000, 70_000]))
    if kind == "quoted":
        return quote(clean)
    if kind == "quote_junk":
        return draw(st.sampled_from(['"' + clean, clean + '"', '\\"' + clean, '"a,b"', '"x""y"', "''"]))
    if kind == "offset_ts":
        return clean + draw(st.sampled_from(["Z", "+00:00", "+05:30", " UTC", "-0800"]))
    return clean + draw(st.sampled_from(["é", "€", "\ufeff", "\U0001f4b3", "\u0301", "\ufffd"]))


GOOD_HEADERS = ["plain"] * 6 + ["bom", "quoted", "spaced"]
BROKEN_HEADERS = ["missing", "unknown", "twice", "utf16"]


@st.composite
def landing_file(draw, next_id, broken_header: bool = False) -> tuple[bytes, list[int]]:
    """(file bytes, ids of the rows generated clean). Rows mix clean ones and every kind of breakage."""
    order = draw(st.permutations(COLUMNS))
    header_kind = draw(st.sampled_from(BROKEN_HEADERS if broken_header else GOOD_HEADERS))
    event(f"header: {header_kind}")
    header = list(order)
    if header_kind == "quoted":
        header = [quote(c) for c in header]
    elif header_kind == "spaced":
        header = [f" {c} " for c in header]
    elif header_kind == "missing":
        header = header[:-1]
    elif header_kind == "unknown":
        header = [*header, "merchant"]
    elif header_kind == "twice":
        header = [*header, header[0]]
    eol = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))

    def end() -> str:
        return draw(st.sampled_from(["\n", "\r\n", "\r"])) if eol == "mixed" else eol

    parts: list[bytes] = [",".join(header).encode() + end().encode()]
    clean_ids = []
    for _ in range(draw(st.integers(0, 40))):  # rows are nearly free next to a Spark run's overhead
        kind = draw(
            st.sampled_from(
                ["clean"] * 6
                + ["field", "field", "fields", "bytes", "latin1", "cp1252", "utf16", "nul", "blank"]
                + ["header_again", "short", "long_row", "dup"]
            )
        )
        event(f"row: {kind}")
        if kind == "clean":
            tid = next_id()
            clean_ids.append(tid)
            values = draw(clean_values(tid))
        else:
            values = draw(clean_values(next_id() + 5_000_000))  # never collides with a clean row's id
        if kind in ("field", "fields"):
            for column in draw(
                st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=1 if kind == "field" else 5)
            ):
                values[column] = draw(hostile_field(column, values[column]))
        text = ",".join(values[c] for c in order)
        if kind == "bytes":
            raw = draw(st.binary(max_size=60))
        elif kind in ("latin1", "cp1252"):
            raw = (text + draw(st.sampled_from([" café", " Müller", " naïve", " ½"]))).encode(kind)
        elif kind == "utf16":
            raw = text.encode("utf-16-le")
        elif kind == "nul":
            raw = text.replace(",", "\x00", 1).encode()
        elif kind == "blank":
            raw = draw(st.sampled_from([b"", b" ", b"\t", b",,,,"]))
        elif kind == "header_again":
            raw = ",".join(header).encode()
        elif kind == "short":
            raw = ",".join(values[c] for c in order[:-1]).encode()
        elif kind == "long_row":
            raw = (text + ",extra").encode()
        elif kind == "dup":
            raw = parts[-1].rstrip(b"\r\n") if len(parts) > 1 else text.encode()
        else:
            raw = text.encode()
        parts.append(raw + end().encode())
    data = b"".join(parts)
    if draw(st.booleans()):  # no terminator after the last line
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    if header_kind == "bom":
        data = codecs.BOM_UTF8 + data
    elif header_kind == "utf16":
        data = codecs.BOM_UTF16_LE + data.decode("utf-8", "replace").encode("utf-16-le")
    return data, clean_ids


def id_counter():
    state = {"n": 0}

    def next_id() -> int:
        state["n"] += 1
        return state["n"]

    return next_id


# --- the byte-level contract, fast ---------------------------------------------------------------


def check_split(data: bytes, name: str = "f.csv") -> None:
    try:
        landed = split_landing(data, name)
    except LandingIngestError as exc:
        message = str(exc)
        assert (
            message.startswith(f"{name}:1: invalid UTF-8 at byte ")
            and "(rule: landing files are UTF-8" in message
        )
        TALLY["pure: header not UTF-8"] += 1
        return
    assert len(landed.lines) == max(oracle_lines(data), 0)
    assert [line.number for line in landed.lines] == list(range(2, len(landed.lines) + 2))
    for line in landed.lines:
        assert not TERMINATOR.search(line.raw)
        if line.text is not None:
            assert line.error is None and line.raw.decode("utf-8") == line.text == line.record
        else:
            n = int(line.error.removeprefix("encoding: invalid UTF-8 at byte "))
            line.raw[:n].decode("utf-8")  # everything before byte N decodes
            with pytest.raises(UnicodeDecodeError):
                line.raw[n:].decode("utf-8")
            assert line.record.encode("utf-8") and "\\x" in line.record
            TALLY["pure: line not UTF-8"] += 1
    TALLY["pure: files"] += 1
    TALLY["pure: lines"] += len(landed.lines)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_split_into_lines_or_fail_on_the_header(data):
    check_split(data)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(st.data())
def test_generated_landing_files_split_as_the_contract_says(data):
    raw, _ = data.draw(landing_file(id_counter(), broken_header=data.draw(st.integers(0, 4)) == 4))
    check_split(raw)


# --- end to end: a generated landing day through Spark and GX, several files per run --------------


def spark_examples() -> int:
    return max(2, settings.default.max_examples // SPARK_SHARE)


def write_tally() -> None:
    """The run's figures so far, to test-artifacts/ingest_fuzz.json (rewritten after every Spark day)."""
    out = REPO_ROOT / "test-artifacts" / "ingest_fuzz.json"
    out.parent.mkdir(exist_ok=True)
    payload = {"profile": settings.get_current_profile_name(), **dict(sorted(TALLY.items()))}
    out.write_text(json.dumps(payload, indent=2) + "\n")


@pytest.fixture(scope="module")
def tally():
    yield TALLY
    write_tally()
    print("\ningest fuzz tally:", json.dumps(dict(sorted(TALLY.items()))))


def header_rule(message: str) -> str:
    for pattern, rule in [
        ("invalid UTF-8", "header not UTF-8"),
        ("appears twice", "repeated column"),
        ("is missing from the header", "missing column"),
        ("unknown column", "unknown column"),
        ("empty file", "empty file"),
    ]:
        if pattern in message:
            return rule
    raise AssertionError(f"an IngestError the contract does not define: {message}")


def _check_day(files: dict[str, bytes], clean_ids: set[int], broken: str | None, home: Path, spark) -> None:
    """Ingest one generated day; ``broken`` is the file whose header breaks the contract (None: all good)."""
    settings_ = Settings(home=home, max_bad_fraction=1.0)  # the rows are the subject here, not the gate
    layout = StorageLayout(settings_)
    landing = layout.path("landing_transactions", DAY)
    shutil.rmtree(home, ignore_errors=True)
    landing.mkdir(parents=True)
    for name, data in files.items():
        (landing / name).write_bytes(data)
    TALLY["e2e: days"] += 1
    TALLY["e2e: files"] += len(files)
    try:
        result = ingest_transactions(DAY, settings_, spark)
    except IngestError as exc:
        message = str(exc)
        note(message)
        assert broken is not None, f"a day the contract accepts failed: {message}"
        assert re.match(rf"^{re.escape(broken)}(:1)?: ", message), message  # names the file (and line)
        assert "(rule: " in message
        TALLY[f"e2e: IngestError {header_rule(message)}"] += 1
        assert not layout.path("transactions", DAY).exists()
        return
    assert broken is None, f"{broken} breaks the header contract, yet the run did not fail"
    expected_in = sum(oracle_lines(d) for d in files.values())
    assert result.rows_in == expected_in == result.published + result.quarantined
    # the files themselves: pandas reads a folder holding one empty file as a frame without columns
    lake = pd.read_parquet(layout.path("transactions", DAY) / PART_FILE)
    quarantine = pd.read_parquet(layout.path("quarantine_transactions", DAY) / PART_FILE)
    assert len(lake) == result.published and len(quarantine) == result.quarantined
    assert not quarantine.duplicated(["source_file", "source_line"]).any()
    assert (quarantine["reasons"].map(len) >= 1).all()
    # every line that is not UTF-8 is quarantined with the encoding reason, and only those carry it
    undecodable = set()
    for name, data in files.items():
        for line in split_landing(data, name).lines:
            if line.text is None:
                undecodable.add((name, line.number))
    encoding = {
        (r.source_file.rsplit("/", 1)[-1], int(r.source_line))
        for r in quarantine.itertuples()
        if "encoding: invalid UTF-8" in list(r.rules)
    }
    assert encoding == undecodable
    # nothing clean is lost, nothing broken is published
    assert clean_ids <= set(lake["transaction_id"])
    assert lake["transaction_id"].is_unique
    assert lake["tx_amount"].map(math.isfinite).all() and (lake["tx_amount"] >= 0).all()
    assert not lake["tx_amount"].map(lambda v: math.copysign(1, v) < 0).any()  # no -0.0 in the lake
    assert (lake["tx_datetime"].dt.date == DAY).all()
    assert lake[["customer_id", "terminal_id"]].ge(0).all().all()
    assert lake[["customer_id", "terminal_id"]].lt(MAX_ID).all().all()
    TALLY["e2e: rows in"] += result.rows_in
    TALLY["e2e: published"] += result.published
    TALLY["e2e: quarantined"] += result.quarantined
    for rule, count in result.rules.items():
        TALLY[f"e2e: quarantined {rule}"] += count


@pytest.mark.spark
def test_generated_landing_days_are_accounted_for(spark, tmp_path_factory, tally):
    home = tmp_path_factory.mktemp("ingest-fuzz")

    @settings(
        max_examples=spark_examples(),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(st.data())
    def run(data):
        next_id = id_counter()
        drawn = data.draw(st.lists(landing_file(next_id), min_size=2, max_size=10), label="files")
        broken = None
        if data.draw(st.integers(0, 4), label="one broken header in five days") == 4:  # shrinks to "none"
            at = data.draw(st.integers(0, len(drawn)), label="broken file at")
            drawn.insert(at, data.draw(landing_file(next_id, broken_header=True), label="broken file"))
            broken = f"f{at:02d}.csv"
        files = {f"f{i:02d}.csv": raw for i, (raw, _) in enumerate(drawn)}
        clean = {tid for _, ids in drawn for tid in ids}
        try:
            _check_day(files, clean, broken, home / "day", spark)
        finally:
            write_tally()

    run()
