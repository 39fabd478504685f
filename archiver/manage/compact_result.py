"""What compacting a unit did, and what a compaction run did (``archiver compact``'s report)."""

from __future__ import annotations

from dataclasses import dataclass, field

from archiver.manage.compact_plan import WorkUnit


@dataclass(slots=True)
class UnitResult:
    """What compacting one unit did: ``outcome`` is compacted, cleaned, done, claimed, skipped, vanished or stopped."""

    unit: WorkUnit
    outcome: str
    files_in: int = 0
    bytes_in: int = 0
    files_out: int = 0
    bytes_out: int = 0
    rows: int = 0
    deleted: int = 0
    #: Of ``deleted``: outputs of a compaction or roll-up that never became live in the table.
    orphans: int = 0
    seconds: float = 0.0
    #: Why a unit was skipped: ``<key>: <reason>`` for each file that cannot be merged.
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CompactStats:
    """What a compaction run did: app-hours compacted, and app-days rolled up (``days_*``)."""

    partitions: int = 0
    compacted: int = 0
    files_in: int = 0
    bytes_in: int = 0
    files_out: int = 0
    bytes_out: int = 0
    rows: int = 0
    deleted: int = 0
    skipped: int = 0
    days: int = 0
    days_rolled_up: int = 0
    day_files_in: int = 0
    day_files_out: int = 0
    day_bytes_out: int = 0

    def add(self, result: UnitResult) -> None:
        """Count one unit's result."""
        self.skipped += result.outcome in ("skipped", "vanished", "claimed")
        self.deleted += result.deleted
        if result.unit.is_day:
            self.days += 1
            self.days_rolled_up += result.outcome == "compacted"
            self.day_files_in += result.files_in
            self.day_files_out += result.files_out
            self.day_bytes_out += result.bytes_out
            return
        self.partitions += 1
        self.compacted += result.outcome == "compacted"
        self.files_in += result.files_in
        self.bytes_in += result.bytes_in
        self.files_out += result.files_out
        self.bytes_out += result.bytes_out
        self.rows += result.rows


def describe(result: UnitResult) -> list[str]:
    """The lines a unit's result is reported with (none when there is nothing to say)."""
    r = result
    if r.outcome == "compacted":
        return [f"{r.unit.label}  {r.files_in} files {r.bytes_in} B -> {r.files_out} file(s) {r.bytes_out} B, "
                f"{r.rows} rows"]  # fmt: skip
    if r.outcome == "skipped":
        return [f"warning: skipped {p} (its app-hour is left as it is)" for p in r.problems]
    if r.outcome == "claimed":
        return [f"{r.unit.label}  skipped: another process is compacting it"]
    return []
