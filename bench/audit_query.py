"""How fast analysts' everyday queries answer over 10 M decisions in the audit store, through its views.

The store is built with the writer's own code (``AuditStore``): 30 days of decisions flushed six hours at a time,
in segment files of about 250,000 rows (41 for decisions), about the layout the writer's defaults give at about 4
decisions a second (a segment is sealed at 250,000 rows or after a day; building it, an export seals a file at
the first flush past each 250,000 rows); ~1 % alerts, chargeback labels for every fraud and analyst verdicts for
half the alerts, one model with its training bins.
Each query runs as ``riskstream sql`` runs it (``audit.query``: a fresh connection, the views, the query), 5 times;
the table gives medians. Side by side, the same rows in one file per table show what the segment layout costs.

    python bench/audit_query.py --dir var/bench/audit-10m [--decisions 10000000]

The store is kept in ``--dir`` and reused by later runs with the same size (building it takes minutes).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from audit import AuditError, AuditStore, query
from audit.schema import SEGMENTS_DIR, TABLES, segment_name, sql_string
from models.features import FEATURE_NAMES
from models.reference import reference_profile

DAYS = 30
HOUR_MS = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
THRESHOLD = 0.1
SEGMENT_ROWS = 250_000
FLUSH_HOURS = 6  # the writer flushes every few seconds; fewer, larger flushes only build the store faster
LAST_DAY = "2026-01-30"
QUERIES = {
    "daily alert rate and precision, 30 days": "SELECT day, alert_rate, precision FROM daily ORDER BY day",
    "one day's alerts with their labels": (
        f"SELECT tx_id, score, label FROM decisions_labelled WHERE is_alert AND event_time >= TIMESTAMP '{LAST_DAY}'"
    ),
    "one transaction, labelled, with reasons": (
        "SELECT d.tx_id, d.score, d.label, r.feature, r.contribution FROM decisions_labelled d "
        "LEFT JOIN reasons r USING (tx_id) WHERE d.tx_id = 'tx-000005000000'"
    ),
    "alerts per terminal, last 7 days": (
        "SELECT terminal_id, count(*) AS alerts FROM alerts WHERE event_time >= TIMESTAMP '2026-01-24' "
        "GROUP BY ALL ORDER BY alerts DESC LIMIT 10"
    ),
    "labels for unknown transactions": "SELECT count(*) AS n FROM labels_unmatched",
    "drift of every variable, one day": f"SELECT variable, psi FROM drift WHERE day = DATE '{LAST_DAY}' ORDER BY psi DESC",
}


def hour_batch(hour: int, per_hour: int, first: int, rng: np.random.Generator) -> tuple[pa.Table, list[dict]]:
    """One hour of decisions as the writer buffers them, and the labels that will arrive for them."""
    n = per_hour
    scores = rng.beta(1.0, 40.0, n)
    alert = scores >= THRESHOLD
    fraud = np.where(alert, rng.random(n) < 0.3, rng.random(n) < 0.001)
    features = np.round(rng.gamma(2.0, 10.0, (n, len(FEATURE_NAMES))), 2)
    times = T0 + hour * HOUR_MS + np.sort(rng.integers(0, HOUR_MS, n))
    tx_ids = [f"tx-{i:012d}" for i in range(first, first + n)]
    reason = [{"feature": "amount", "label": "amount is high", "value": 100.0, "contribution": 1.0}]
    table = pa.table({
        "tx_id": tx_ids,
        "event_time": pa.array(times, pa.timestamp("ms")),
        "card_id": [f"{i % 50_000:032x}" for i in range(first, first + n)],
        "terminal_id": [f"term-{i % 10_000}" for i in range(first, first + n)],
        "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
        "score": scores, "score_logit": np.log(scores / (1 - scores)), "threshold": np.full(n, THRESHOLD),
        "is_alert": alert, "model_version": ["v1"] * n, "decided_at": pa.array(times + 40, pa.timestamp("ms")),
        "features": pa.FixedSizeListArray.from_arrays(features.reshape(-1), len(FEATURE_NAMES)).cast(pa.list_(pa.float64())),
        "reasons": [reason if a else [] for a in alert],
    })
    labels = [
        {"tx_id": tx_ids[i], "is_fraud": bool(fraud[i]), "source": "chargeback" if fraud[i] else "analyst",
         "reported_at": int(times[i]) + 7 * 24 * HOUR_MS}
        for i in np.flatnonzero(fraud | (alert & (rng.random(n) < 0.5)))
    ]
    return table, labels


def build(root: Path, decisions: int) -> None:
    rng = np.random.default_rng(0)
    per_hour = decisions // (DAYS * 24)
    started = time.perf_counter()
    with AuditStore(root, export_interval_s=float("inf"), segment_open_s=0) as store:  # each export seals its file
        x = rng.gamma(2.0, 10.0, (20_000, len(FEATURE_NAMES)))
        store.add_model("v1", reference_profile(x, rng.beta(1.0, 40.0, 20_000), FEATURE_NAMES))
        for hour in range(DAYS * 24):
            table, labels = hour_batch(hour, per_hour, hour * per_hour, rng)
            store.add_decision_table(table)
            store.add_labels(labels)
            if (hour + 1) % FLUSH_HOURS == 0:
                store.flush()
                if (hour + 1) * per_hour // SEGMENT_ROWS > (hour + 1 - FLUSH_HOURS) * per_hour // SEGMENT_ROWS:
                    store.export()
    print(f"built {per_hour * DAYS * 24:,} decisions in {time.perf_counter() - started:.0f} s")


def single_file_copy(root: Path, target: Path) -> None:
    """The same store with each table's segments merged into one file."""
    shutil.rmtree(target, ignore_errors=True)
    with duckdb.connect() as con:
        for table in TABLES:
            (target / SEGMENTS_DIR / table).mkdir(parents=True)
            source = sql_string(root / SEGMENTS_DIR / table / "*.parquet")
            out = sql_string(target / SEGMENTS_DIR / table / segment_name(0))
            con.execute(f"COPY (SELECT * FROM read_parquet({source})) TO {out} (FORMAT parquet, COMPRESSION zstd)")


def timed(root: Path, sql: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        query(root, sql)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("var/bench/audit-10m"))
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root, merged = args.dir / "segmented", args.dir / "one-file"
    try:
        stored = query(root, "SELECT count(*) AS n FROM decisions").column("n")[0].as_py()
    except AuditError:  # none yet, or one an older version built
        stored = 0
    if stored != args.decisions // (DAYS * 24) * DAYS * 24:
        shutil.rmtree(args.dir, ignore_errors=True)
        build(root, args.decisions)
        single_file_copy(root, merged)
    files = len(list((root / SEGMENTS_DIR / "decisions").glob("*.parquet")))
    counts = query(root, "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM alerts) AS a, "
                         "(SELECT count(*) FROM labels) AS l").to_pylist()[0]
    print(f"{counts['d']:,} decisions, {counts['a']:,} alerts, {counts['l']:,} labels; {files} decision segment files; "
          f"median of {args.runs} runs, seconds\n")
    print("| query | segmented store | same rows, one file per table |\n|---|---|---|")
    results = {}
    for name, sql in QUERIES.items():
        results[name] = (timed(root, sql, args.runs), timed(merged, sql, args.runs))
        print(f"| {name} | {results[name][0]:.3f} | {results[name][1]:.3f} |")
    typical, one_file = results["daily alert rate and precision, 30 days"]
    print(f"\nratio: the typical query takes {typical:.2f} s, {typical / one_file:.1f}x its time over one file per table")
    print(f"checked {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
