"""The audit store on real DuckDB files: idempotent writes, exported segments, readers beside a live writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

import audit
from audit import VIEWS, AuditError, AuditStore, InvalidRecordError, StoreLockedError, connect, query
from audit.inputs import stored_inputs
from audit.segments import Segments

REPO = Path(audit.__file__).resolve().parent.parent
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in epoch millis
FEATURES = {"feature_names": ["amount_z", "card_tx_count_1d"]}  # model v1's names, the order of ``features``


def decision(tx_id: str, *, alert: bool = False, score: float = 0.1, model: str = "v1") -> dict:
    """A decoded Decision record; alerts carry reasons given largest |contribution| first except one tie."""
    reasons = (
        [
            {"feature": "amount_z", "label": "amount is unusual", "value": 4.0, "contribution": -0.9},
            {"feature": "card_tx_count_1d", "label": "many transactions", "value": 7.0, "contribution": 0.5},
            {"feature": "terminal_risk", "label": "risky terminal", "value": None, "contribution": 0.5},
        ]
        if alert
        else []
    )
    return {
        "tx_id": tx_id, "event_time": T0, "card_id": "card-1", "terminal_id": "term-1", "amount": 42.5,
        "score": score, "score_logit": -2.0, "threshold": 0.5, "is_alert": alert, "model_version": model,
        "decided_at": T0 + 250, "features": [4.0, 7.0],
        "base_value": -1.0 if alert else None, "additivity_gap": 1e-9 if alert else None, "reasons": reasons,
    }


def label(tx_id: str, is_fraud: bool = True, source: str = "chargeback", reported_at: int = T0 + 86_400_000) -> dict:
    return {"tx_id": tx_id, "is_fraud": is_fraud, "source": source, "reported_at": reported_at,
            "card_id": "card-1", "terminal_id": None}


def rows(root: Path, sql: str) -> list[tuple]:
    with connect(root) as con:
        return con.sql(sql).fetchall()


def segments(root: Path, table: str) -> list[str]:
    return sorted(p.name for p in (root / "segments" / table).iterdir())


_WRITE_AND_FLUSH = (
    "import json, os, sys; from audit import AuditStore\n"
    "store = AuditStore(sys.argv[1], export_interval_s=float(sys.argv[3]))\n"
    "store.add_decisions(json.loads(open(sys.argv[2]).read())); store.flush()\n"
)


@contextmanager
def writer_process(root: Path, records: list[dict], *, export_interval_s: float = 0.0) -> Iterator[None]:
    """A second process that writes ``records`` and keeps the store open until the block ends."""
    (root.parent / "records.json").write_text(json.dumps(records))
    script = _WRITE_AND_FLUSH + "print('ready', flush=True); sys.stdin.readline(); store.close()\n"
    proc = _python(script, root, export_interval_s, stdin=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        yield
    finally:
        proc.communicate("close\n", timeout=30)
    assert proc.returncode == 0


def crashing_writer(root: Path, records: list[dict], *, export_interval_s: float) -> None:
    """Write and flush ``records`` in another process that then dies without closing the store."""
    (root.parent / "records.json").write_text(json.dumps(records))
    script = _WRITE_AND_FLUSH + "os._exit(3)\n"
    proc = _python(script, root, export_interval_s)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr


def _python(script: str, root: Path, export_interval_s: float, **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", script, str(root), str(root.parent / "records.json"), str(export_interval_s)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "audit"


def test_decisions_reasons_and_features_round_trip_through_the_reader(root: Path) -> None:
    with AuditStore(root, export_interval_s=0) as store:
        store.add_model("v1", FEATURES)
        store.add_decisions([decision("t1"), decision("t2", alert=True, score=0.93)])
        result = store.flush()
    assert (result.decisions_inserted, result.decisions_duplicate) == (2, 0)
    assert result.exported_rows == 2 + 3 + 1  # two decisions, three reasons, one model

    got = rows(root, "SELECT tx_id, event_time, decided_at, features['card_tx_count_1d'], base_value "
                     "FROM decisions ORDER BY tx_id")
    assert got == [
        ("t1", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 0, 0, 250_000), 7.0, None),
        ("t2", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 0, 0, 250_000), 7.0, -1.0),
    ]
    assert rows(root, "SELECT tx_id, score FROM alerts") == [("t2", 0.93)]
    # rank by |contribution| descending; the 0.5 tie keeps the order the model gave
    assert rows(root, "SELECT rank, feature, value FROM reasons ORDER BY rank") == [
        (1, "amount_z", 4.0), (2, "card_tx_count_1d", 7.0), (3, "terminal_risk", None),
    ]
    types = dict(rows(root, "SELECT column_name, column_type FROM (DESCRIBE decisions)"))
    assert types["features"] == "MAP(VARCHAR, DOUBLE)" and types["event_time"] == "TIMESTAMP"


def test_duplicate_tx_id_is_ignored_within_a_batch_across_batches_and_after_reopen(root: Path) -> None:
    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([decision("t1", alert=True, model="first"), decision("t2")])
        store.add_decisions([decision("t1", alert=True, model="replayed")])  # same flush, later call
        first = store.flush()
        store.add_decisions([decision("t2", model="replayed"), decision("t3")])
        second = store.flush()
    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([decision("t1", alert=True, model="replayed"), decision("t3"), decision("t4")])
        third = store.flush()

    assert (first.decisions_inserted, first.decisions_duplicate) == (2, 1)
    assert (second.decisions_inserted, second.decisions_duplicate) == (1, 1)
    assert (third.decisions_inserted, third.decisions_duplicate) == (1, 2)
    assert rows(root, "SELECT tx_id, model_version FROM decisions ORDER BY tx_id") == [
        ("t1", "first"), ("t2", "v1"), ("t3", "v1"), ("t4", "v1"),
    ]
    assert rows(root, "SELECT tx_id, count(*), max(seq) FROM reasons GROUP BY tx_id") == [("t1", 3, 1)]


def test_rows_added_during_a_background_flush_go_to_the_next_and_the_first_copy_still_wins(root: Path) -> None:
    with AuditStore(root, export_interval_s=0, export_in_background=True) as store:
        store.add_decisions([decision("t1", model="first")])
        first = store.flush_in_background()
        store.add_decisions([decision("t1", model="replayed"), decision("t2")])  # while the first may still run
        second = store.flush_in_background()
        assert (first.result().decisions_inserted, second.result().decisions_inserted) == (1, 1)
        assert second.result().decisions_duplicate == 1
    assert rows(root, "SELECT tx_id, model_version FROM decisions ORDER BY tx_id") == [("t1", "first"), ("t2", "v1")]


def test_a_failed_background_flush_buffers_its_rows_again_ahead_of_those_added_since(root: Path) -> None:
    with AuditStore(root, export_interval_s=0, export_in_background=True) as store:
        with store._con.cursor() as other:  # a real DuckDB error inside the flush: its reasons table is gone
            other.execute("ALTER TABLE reasons RENAME TO reasons_away")
        store.add_decisions([decision("t1", alert=True, model="first")])
        failed = store.flush_in_background()
        store.add_decisions([decision("t1", alert=True, model="replayed"), decision("t2")])
        with pytest.raises(AuditError, match="stay buffered"):
            failed.result()
        with store._con.cursor() as other:
            other.execute("ALTER TABLE reasons_away RENAME TO reasons")
        retried = store.flush()
    assert (retried.decisions_inserted, retried.decisions_duplicate) == (2, 1)
    assert rows(root, "SELECT tx_id, model_version FROM decisions ORDER BY tx_id") == [("t1", "first"), ("t2", "v1")]
    assert rows(root, "SELECT count(*) FROM reasons") == [(3,)]


def test_exact_duplicate_labels_are_ignored_and_a_second_verdict_is_kept(root: Path) -> None:
    later = T0 + 2 * 86_400_000
    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([decision("t1"), decision("t2")])
        store.add_labels([label("t1"), label("t1")])
        first = store.flush()
        store.add_labels([label("t1"), label("t1", is_fraud=False, source="analyst", reported_at=later)])
        second = store.flush()

    assert (first.labels_inserted, first.labels_duplicate) == (1, 1)
    assert (second.labels_inserted, second.labels_duplicate) == (1, 1)
    assert rows(root, "SELECT count(*) FROM label_history") == [(2,)]
    assert rows(root, "SELECT tx_id, is_fraud, source, reports FROM labels") == [("t1", False, "analyst", 2)]
    assert rows(root, "SELECT tx_id, label, label_source FROM decisions_labelled ORDER BY tx_id") == [
        ("t1", False, "analyst"), ("t2", None, None),  # the latest verdict wins; unlabelled stays NULL
    ]


def test_readers_see_rows_once_exported_into_named_segments(root: Path) -> None:
    with AuditStore(root, export_interval_s=3600) as store:
        store.add_decisions([decision("t1")])
        assert store.flush().exported_rows == 0  # not due yet: committed, invisible to readers
        assert rows(root, "SELECT count(*) FROM decisions") == [(0,)]
        store.add_decisions([decision("t2")])
        store.flush()
        assert store.export() == 2
        assert rows(root, "SELECT count(*) FROM decisions") == [(2,)]
        assert segments(root, "decisions") == ["000000000000.parquet", "000000000001.parquet"]
        assert store.export() == 0
        store.add_decisions([decision("t3")])
        store.flush()
        assert store.export() == 1  # the open segment is rewritten with the new row, not a new file
        assert segments(root, "decisions") == ["000000000000.parquet", "000000000001.parquet"]
        assert rows(root, "SELECT count(*), max(seq) FROM decisions") == [(3, 3)]


def test_reader_works_beside_an_open_writer_in_the_same_process(root: Path) -> None:
    with AuditStore(root, export_interval_s=0) as store:
        for i in range(3):
            store.add_decisions([decision(f"t{i}", alert=i == 2)])
            store.flush()
            assert query(root, "SELECT count(*) AS n FROM decisions").column("n").to_pylist() == [i + 1]
        assert query(root, "SELECT tx_id FROM alerts").column("tx_id").to_pylist() == ["t2"]


def test_readers_and_catalog_work_while_another_process_holds_the_writer(root: Path) -> None:
    with writer_process(root, [decision("t1", alert=True), decision("t2")]):
        with pytest.raises(duckdb.IOException, match="lock"):  # the fact the design works around
            duckdb.connect(str(root / "writer.duckdb"), read_only=True)
        with pytest.raises(StoreLockedError, match="another audit writer"):
            AuditStore(root)
        assert rows(root, "SELECT count(*) FROM decisions") == [(2,)]
        with duckdb.connect(str(root / "catalog.duckdb"), read_only=True) as con:
            views = {name for (name,) in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
            assert views == set(VIEWS)
            assert con.sql("SELECT tx_id FROM alerts").fetchall() == [("t1",)]


def test_a_process_holding_the_database_file_is_reported_as_a_locked_store(root: Path) -> None:
    AuditStore(root).close()
    script = "import duckdb, sys; con = duckdb.connect(sys.argv[1] + '/writer.duckdb'); print('ready', flush=True); sys.stdin.readline()"
    proc = _python(script, root, 0, stdin=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        with pytest.raises(StoreLockedError, match="another process holds"):
            AuditStore(root)
    finally:
        proc.communicate("\n", timeout=30)
    AuditStore(root).close()  # the lock is released with the process


def test_a_second_writer_in_the_same_process_is_refused(root: Path) -> None:
    with AuditStore(root):
        with pytest.raises(StoreLockedError):
            AuditStore(root)
    AuditStore(root).close()


def test_committed_rows_a_crash_left_unexported_are_exported_at_reopen(root: Path) -> None:
    crashing_writer(root, [decision("t1"), decision("t2", alert=True)], export_interval_s=3600)
    assert rows(root, "SELECT count(*) FROM decisions") == [(0,)]
    with AuditStore(root, export_interval_s=3600) as store:
        assert rows(root, "SELECT count(*) FROM decisions UNION ALL SELECT count(*) FROM reasons") == [(2,), (3,)]
        store.add_decisions([decision("t2"), decision("t3")])
        assert store.flush().decisions_inserted == 1


def test_a_crash_during_export_leaves_no_partial_file_and_no_duplicate(root: Path) -> None:
    crashing_writer(root, [decision("t1"), decision("t2", alert=True)], export_interval_s=0)
    decisions_dir = root / "segments" / "decisions"
    assert segments(root, "decisions")[-1] == "000000000001.parquet"
    # as if the crash came during the export: the rename never happened, a partial temp file remains
    (decisions_dir / "000000000001.parquet").rename(decisions_dir / "000000000001.parquet.tmp")
    (decisions_dir / "000000000001.parquet.tmp").write_bytes(b"PAR1 partial")
    assert rows(root, "SELECT count(*) FROM decisions") == [(0,)]  # readers never see the partial file

    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([decision("t1"), decision("t3")])
        assert store.flush().decisions_inserted == 1
    assert rows(root, "SELECT tx_id, count(*) FROM decisions GROUP BY tx_id ORDER BY tx_id") == [
        ("t1", 1), ("t2", 1), ("t3", 1),
    ]
    assert rows(root, "SELECT count(*), count(DISTINCT rank) FROM reasons") == [(3, 3)]
    assert segments(root, "decisions") == ["000000000000.parquet", "000000000001.parquet"]


# The columns decisions gained with the model's whole input and the shadow model.
_NEWER = ("sequence", "batch_id", "batch_row", "shadow_model_version", "shadow_score", "shadow_score_logit", "shadow_is_alert", "threshold_logit")


def test_a_store_written_before_the_newer_columns_is_upgraded_when_opened(root: Path) -> None:
    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([decision("t-old"), decision("t-alert", alert=True)])
    # as an older version left it: its table and its segment files without the newer columns
    with duckdb.connect(str(root / "writer.duckdb")) as con:
        for column in _NEWER:
            con.execute(f"ALTER TABLE decisions DROP COLUMN {column}")
        for path in (root / "segments" / "decisions").glob("*.parquet"):
            con.execute(f"COPY (SELECT * EXCLUDE ({', '.join(_NEWER)}) FROM read_parquet('{path}')) TO '{path}' (FORMAT parquet)")
    with pytest.raises(AuditError, match="shadow_model_version"):  # the views need the newer columns
        rows(root, "SELECT count(*) FROM decisions")

    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([{**decision("t-new"), "sequence": [0.5] * 32, "batch_id": 7, "batch_row": 0}])
        assert store.flush().decisions_inserted == 1
    assert rows(root, "SELECT tx_id, len(sequence), batch_id FROM decisions ORDER BY tx_id") == [
        ("t-alert", None, None), ("t-new", 32, 7), ("t-old", None, None),
    ]
    assert rows(root, "SELECT count(*) FROM reasons") == [(3,)]
    inputs = stored_inputs(root)
    assert inputs.column("tx_id").to_pylist() == ["t-alert", "t-new", "t-old"]
    assert inputs.column("sequence").to_pylist()[1] == [0.5] * 32
    assert inputs.column("threshold_logit").to_pylist() == [None, None, None]  # replay derives it from the probability


def segments_before_threshold_logit(root: Path, decisions: int) -> list[Path]:
    """A store of one decision per segment, whose files were written before decisions had threshold_logit."""
    with AuditStore(root, export_interval_s=0, segment_rows=1) as store:
        for index in range(decisions):
            store.add_decisions([decision(f"t{index}")])
            store.flush()
            store.export()
    paths = sorted((root / "segments" / "decisions").glob("*.parquet"))
    with duckdb.connect(str(root / "writer.duckdb")) as con:
        for path in paths:
            con.execute(f"COPY (SELECT * EXCLUDE (threshold_logit) FROM read_parquet('{path}')) TO '{path}' (FORMAT parquet)")
    return paths


def test_an_upgrade_cut_short_is_finished_by_the_next_open(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new columns commit before the files are rewritten: a crash in between must not leave old files."""
    segments_before_threshold_logit(root, 3)
    with duckdb.connect(str(root / "writer.duckdb")) as con:
        con.execute("ALTER TABLE decisions DROP COLUMN threshold_logit")
    written = []

    def crash_after_one(segments: Segments, first: int, last: int) -> None:
        if written:
            raise OSError("disk full")
        written.append(first)
        original_write(segments, first, last)

    original_write = Segments._write
    monkeypatch.setattr(Segments, "_write", crash_after_one)
    with pytest.raises(OSError, match="disk full"):
        AuditStore(root, export_interval_s=0, segment_rows=1)
    monkeypatch.undo()

    AuditStore(root, export_interval_s=0, segment_rows=1).close()
    assert rows(root, "SELECT tx_id, threshold_logit FROM decisions ORDER BY tx_id") == [("t0", None), ("t1", None), ("t2", None)]


def test_an_upgrade_never_rewrites_a_segment_from_a_table_that_lost_its_rows(root: Path) -> None:
    """A writer database replaced by an empty one holds none of the old files' rows: upgrading them from it would
    empty them."""
    paths = segments_before_threshold_logit(root, 2)
    (root / "writer.duckdb").unlink()
    files = {path: path.read_bytes() for path in paths}
    with pytest.raises(AuditError, match=r"holds 0 of its 1 rows \(was it replaced\?\): not rewritten"):
        AuditStore(root, export_interval_s=0, segment_rows=1)
    assert {path: path.read_bytes() for path in files} == files


def test_a_store_lacking_a_required_column_is_refused_with_its_name(root: Path) -> None:
    AuditStore(root).close()
    with duckdb.connect(str(root / "writer.duckdb")) as con:
        con.execute("ALTER TABLE decisions DROP COLUMN amount")
    with pytest.raises(AuditError, match=r"lacks required column\(s\) \['amount'\]"):
        AuditStore(root)
    with duckdb.connect(str(root / "writer.duckdb")) as con:  # the refused open let go of the file
        con.execute("ALTER TABLE decisions ADD COLUMN amount DOUBLE")
    AuditStore(root).close()


def test_an_invalid_record_rejects_its_whole_call_and_names_itself(root: Path) -> None:
    bad = {**decision("t-bad"), "score": "high"}
    with AuditStore(root, export_interval_s=0) as store:
        with pytest.raises(InvalidRecordError, match=r"decision #1 \(tx_id='t-bad'\)"):
            store.add_decisions([decision("t1"), bad])
        with pytest.raises(InvalidRecordError, match="model_version"):
            store.add_decisions([{**decision("t2"), "model_version": None}])
        with pytest.raises(InvalidRecordError, match="source"):
            store.add_labels([{"tx_id": "t1", "is_fraud": True, "reported_at": T0}])
        store.add_decisions([decision("t3")])
        assert store.flush().decisions_inserted == 1
    assert rows(root, "SELECT tx_id FROM decisions") == [("t3",)]


def test_empty_store_views_are_typed_and_a_closed_store_refuses_work(root: Path) -> None:
    store = AuditStore(root)
    store.close()
    store.close()
    with pytest.raises(AuditError, match="closed"):
        store.add_decisions([decision("t1")])
    table = query(root, "SELECT * FROM decisions_labelled")
    assert table.num_rows == 0
    assert str(table.schema.field("features").type) == "map<string, double>"
    assert str(table.schema.field("labelled_at").type) == "timestamp[us]"


def test_query_is_read_only_and_needs_a_store(root: Path, tmp_path: Path) -> None:
    AuditStore(root).close()
    for sql in ("DELETE FROM decisions", "COPY decisions TO 'x.csv'", "SELECT 1; DROP VIEW decisions",
                f"ATTACH '{root / 'writer.duckdb'}'"):
        with pytest.raises(AuditError, match="read-only"):
            query(root, sql)
    assert query(root, "SUMMARIZE decisions").num_rows > 0
    with pytest.raises(AuditError, match="no audit store"):
        connect(tmp_path / "nowhere")


def test_queries_never_fail_while_another_process_rewrites_the_open_segment(root: Path) -> None:
    """Each flush of the writer below replaces the open segment file; readers see whole versions only."""
    batches = [[decision(f"t{i}-{j}") for j in range(200)] for i in range(40)]
    (root.parent / "records.json").write_text(json.dumps(batches))
    script = (
        "import json, sys; from audit import AuditStore\n"
        "store = AuditStore(sys.argv[1], export_interval_s=0)\n"
        "print('ready', flush=True)\n"
        "for batch in json.loads(open(sys.argv[2]).read()): store.add_decisions(batch); store.flush()\n"
        "store.close()\n"
    )
    proc = _python(script, root, 0)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    seen = []
    while proc.poll() is None:
        seen.append(query(root, "SELECT count(*) AS n, count(DISTINCT tx_id) AS d FROM decisions").to_pylist()[0])
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(seen) > 5 and all(row["n"] == row["d"] and row["n"] % 200 == 0 for row in seen)
    assert [row["n"] for row in seen] == sorted(row["n"] for row in seen)
    assert segments(root, "decisions") == ["000000000000.parquet", "000000000001.parquet"]
    assert rows(root, "SELECT count(*) FROM decisions") == [(8000,)]


def test_queries_run_in_utc_whatever_the_machines_time_zone(root: Path) -> None:
    """current_date must be the day the store's UTC times name: a machine east of UTC saw tomorrow's."""
    AuditStore(root).close()
    script = f"from audit import query; print(query({str(root)!r}, \"SELECT current_setting('TimeZone') AS tz\").column('tz')[0])"
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TZ": "Pacific/Kiritimati"},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "UTC"
