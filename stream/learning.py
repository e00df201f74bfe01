"""The learning loop's offline steps, from the audit store to the registry: retrain a challenger, replay decisions.

Both read the audit store like any analyst (safe while the writer runs) and never touch the running workers:
a retrained challenger is saved without being promoted; ``riskstream models shadow|promote`` puts it to work.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from audit.inputs import LabelClock, stored_inputs
from models.challenge import challenge, stored_rows
from models.registry import champion_version, load_artifact, save_artifact
from models.rescore import ReplayReport, rescore
from models.train import TrainConfig

__all__ = ["replay", "retrain"]


def _naive_utc(moment: datetime) -> datetime:
    """The audit store's timestamps are naive UTC; an aware time is converted, a naive one taken as UTC."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def retrain(
    audit_dir: Path,
    registry: Path,
    as_of: datetime,
    *,
    label_clock: LabelClock = "received",
    eval_days: int = 7,
    valid_days: int = 7,
    warmup_days: int = 7,
    config: TrainConfig = TrainConfig(),
) -> tuple[str, dict]:
    """Train a challenger on what the audit store knew at ``as_of``, evaluate it against the champion, and save it
    (not promoted) with the evaluation in its manifest; returns its version and the ``challenge`` record."""
    as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)
    table = stored_inputs(audit_dir, until=_naive_utc(as_of), labels_as_of=_naive_utc(as_of), label_clock=label_clock)
    champion = load_artifact(registry)
    challenger, record = challenge(
        stored_rows(table), champion, as_of, eval_days=eval_days, valid_days=valid_days, warmup_days=warmup_days, config=config
    )
    record["label_clock"] = label_clock
    save_artifact(challenger, registry, promote=False, notes={"challenge": record})
    return challenger.version, record


def replay(audit_dir: Path, registry: Path, since: datetime, until: datetime, model: str | None = None) -> ReplayReport:
    """Score the stored decisions with ``since <= event_time <= until`` again with ``model`` (each decision's own
    when None) and count what would change; decisions stored without their whole input are counted as skipped."""
    if model == "champion":
        model = champion_version(registry)
    table = stored_inputs(audit_dir, since=_naive_utc(since), until=_naive_utc(until), whole_batches=True)
    rows = stored_rows(table)
    report = rescore(rows.frame, rows.inputs, lambda version: load_artifact(registry, version), model)
    report.skipped = int(table.column("in_range").to_numpy(zero_copy_only=False).sum()) - report.decisions
    return report
