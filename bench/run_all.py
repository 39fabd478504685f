"""Run every benchmark and append the results to BENCHMARKS.md.

    .venv/bin/python bench/run_all.py            # everything, ~40 minutes on 2 cores (storage ~25)
    .venv/bin/python bench/run_all.py --quick    # a smoke run, ~3 minutes (shorter runs, local only)

Each benchmark runs as its own process (bench/ingest.py, bench/storage.py,
bench/query_speed.py; see their docstrings for the method) and writes JSON; this
script turns it into one BENCHMARKS.md section: date, machine, the command,
the targets met or missed with their figures, then a table per benchmark
(ratios first, then the absolute numbers). A benchmark that loses data (or
where the tools disagree) still gets its section, marked FAILED, and this
command exits 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, machine

BENCH = Path(__file__).resolve().parent
MIB = 2**20


def run(name: str, quick: bool, out: Path) -> tuple[int, dict[str, Any] | None, float]:
    script = "query_speed" if name == "query" else name  # not query.py: it would shadow the query package
    argv = [
        sys.executable,
        str(BENCH / f"{script}.py"),
        "--json-out",
        str(out),
        *(["--quick"] if quick else []),
    ]
    print(f"=== {name}: {' '.join(argv[1:])}", flush=True)
    began = time.monotonic()
    code = subprocess.call(argv, cwd=ROOT)
    seconds = time.monotonic() - began
    data = json.loads(out.read_text()) if out.exists() else None
    print(f"=== {name}: exit {code} in {seconds:.0f} s", flush=True)
    return code, data, seconds


def _ok(met: bool | None) -> str:
    return "n/a" if met is None else "**met**" if met else "**missed**"


def _x(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}×"


def ingest_section(d: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    t = d["targets"]
    r20 = d["rates"].get("20000")
    bare_max, one, two = (d["search"][k] for k in ("bare x1", "archiver x1", "archiver x2"))
    peak_run = max((r for r in d["runs"] if r["subscriber"] == "archiver" and r["workers"] == 1),
                   key=lambda r: r["peak_rss_bytes"])  # fmt: skip
    peak_at = "flat out" if peak_run["offered_rate"] is None else f"{peak_run['offered_rate']:,.0f} msg/s"
    targets = [
        ("ingest: CPU archiver / bare subscriber at 20k msg/s ≤ 1.3",
         f"{_x(t['cpu_ratio_20k'])} ({r20['archiver']['cpu_s_per_million']:.2f} vs {r20['bare']['cpu_s_per_million']:.2f} "
         "CPU s per million messages)" if r20 else "n/a", _ok(t["cpu_ratio_20k"] <= 1.3) if r20 else "n/a"),
        ("ingest: zero-loss max rate ≥ 0.8 × the bare subscriber's",
         f"{_x(t['max_rate_ratio'])} ({one['max_rate']:,} vs {bare_max['max_rate']:,} msg/s"
         f"{', bare: a lower bound' if 'at least' in bare_max['ended_by'] else ''})",
         _ok(t["max_rate_ratio"] >= 0.8)),
        ("ingest: peak RSS ≤ MAX_BUFFER_BYTES + 150 MB (406 MiB at the default 256 MiB)",
         f"{t['peak_rss_bytes'] / MIB:,.0f} MiB (at {peak_at})", _ok(t["peak_rss_bytes"] <= t["rss_limit_bytes"])),
        ("ingest: `--workers 2` max rate ≥ 1.7 × one worker's",
         f"{_x(t['workers2_ratio'])} ({two['max_rate']:,} vs {one['max_rate']:,} msg/s)", _ok(t["workers2_ratio"] >= 1.7)),
    ]  # fmt: skip
    lines = [
        "### Ingest",
        "",
        f"Each run: {d['duration_s']:.0f} s of Fly-shaped messages (8 apps × 3 regions × 2 machines, ~380 B) from "
        "bench/publisher.py (raw NATS protocol, its own process) through a loopback nats-server; the archiver with "
        "its defaults (spool on, FLUSH_INTERVAL 60s, MAX_BUFFER_BYTES 256MiB) into a local directory. CPU = "
        "user+sys of the subscriber's process tree from the first message to its exit after SIGTERM (the final "
        "flush included, start-up excluded), per million messages sent. Loss = sent − rows in the archive's files "
        f"(bare: − messages counted). Sustained = no loss and {d['catch_up_rule']} after the publisher's last "
        f"message. Max-rate search runs last {d['search_duration_s']:.0f} s (the buffers reach MAX_BUFFER_BYTES "
        "and flush during the run).",
        "",
        "| offered rate | CPU ratio archiver/bare | archiver CPU s/M msgs | bare CPU s/M msgs | archiver peak RSS "
        "| bare peak RSS | loss archiver / bare | catch-up archiver / bare | files written |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in d["rates"].items():
        a, b = row["archiver"], row["bare"]
        label = "flat out" if key == "flat" else f"{int(key):,} msg/s"
        if key == "flat":
            label += f" (sent {a['publish_rate']:,.0f} / {b['publish_rate']:,.0f} msg/s)"

        def catch(r: dict[str, Any]) -> str:
            return "never" if r["catch_up_s"] is None else f"{r['catch_up_s']:.2f} s"

        lines.append(
            f"| {label} | {_x(row['cpu_ratio'])} | {a['cpu_s_per_million']:.2f} | {b['cpu_s_per_million']:.2f} "
            f"| {a['peak_rss_bytes'] / MIB:,.0f} MiB | {b['peak_rss_bytes'] / MIB:,.0f} MiB | {a['loss']:,} / {b['loss']:,} "
            f"| {catch(a)} / {catch(b)} | {a['files']} |"
        )
    lines += [
        "",
        "| zero-loss max rate | msg/s | ratio | how the search ended |",
        "|---|---|---|---|",
        f"| bare nats-py subscriber (uvloop) | {bare_max['max_rate']:,} | 1 | {bare_max['ended_by']} |",
        f"| archiver, 1 worker | {one['max_rate']:,} | {_x(t['max_rate_ratio'])} of bare | {one['ended_by']} "
        f"(next step {one['next_rate_tried']:,}) |",
        f"| archiver, `--workers 2` | {two['max_rate']:,} | {_x(t['workers2_ratio'])} of 1 worker | {two['ended_by']} "
        f"(next step {two['next_rate_tried']:,}) |",
        "",
        "<details><summary>every ingest run</summary>",
        "",
        "| run | sent | sent/s | received | archived | loss | counted drops | catch-up | CPU s | CPU s/M | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        rate = "flat out" if r["offered_rate"] is None else f"{r['offered_rate']:,.0f}/s"
        who = r["subscriber"] + ("" if r["workers"] == 1 else f" ×{r['workers']}")
        catch = "never" if r["catch_up_s"] is None else f"{r['catch_up_s']:.2f} s"
        lines.append(
            f"| {who} @ {rate} | {r['sent']:,} | {r['publish_rate']:,.0f} | {r['received']:,} | {r['archived']:,} "
            f"| {r['loss']:,} | {r['dropped_counted']:,} | {catch} | {r['cpu_s']:.2f} | {r['cpu_s_per_million']:.2f} "
            f"| {r['peak_rss_bytes'] / MIB:,.0f} MiB |"
        )
    lines += ["", "</details>", ""]
    if d["failures"]:
        lines += ["**FAILED — loss is a bug:**", ""] + [f"- {f}" for f in d["failures"]] + [""]
    return lines, targets


def storage_section(d: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    from storage import markdown  # bench/ is this script's directory

    results = d["results"]
    rates = sorted({r["rate_per_s"] for r in results})

    def worst(key: str) -> dict[float, dict[str, Any]]:
        return {
            rate: min((r for r in results if r["rate_per_s"] == rate), key=lambda r: r[key]) for rate in rates
        }

    def figures(key: str) -> str:
        return ", ".join(
            f"{rate:,.0f} msg/s: {r[key]:.2f}× ({r['system']})" for rate, r in worst(key).items()
        )

    def verdict(key: str, goal: float) -> str:
        met = [rate for rate, r in worst(key).items() if r[key] >= goal]
        if len(met) == len(rates):
            return _ok(True)
        if not met:
            return _ok(False)
        return f"**met** from {min(met):,.0f} msg/s, **missed** below"

    targets = [
        ("storage: live files ≥ 1.4 × smaller than gzip-6 JSON lines (worst system)", figures("gzip_over_live"),
         verdict("gzip_over_live", 1.4)),
        ("storage: after compaction ≥ 2.0 × smaller than gzip-6 JSON lines (worst system)",
         figures("gzip_over_compacted"), verdict("gzip_over_compacted", 2.0)),
    ]  # fmt: skip
    lines = [
        "### Storage",
        "",
        f"{results[0]['messages']:,} messages per run, per LogHub system ({d['corpus']}) and their mix, as Fly "
        f"messages from bench/storage_text.py (each machine's own lines in order, never repeated verbatim): "
        f"{d['apps']} apps × {d['regions_per_app']} regions × {d['machines_per_region']} machines. Live = "
        f"encode_partition at zstd-{d['live_level']}, cut as the service flushes (FLUSH_INTERVAL "
        f"{d['flush_interval_s']:.0f} s, FLUSH_BYTES {d['flush_bytes'] // MIB} MiB), layout v2; compacted = "
        f"archiver.manage.compact.compact_archive (one file per app-hour at zstd-{d['compact_level']}); gzip-6 "
        "JSON lines per (app, region, hour).",
        "",
        markdown(results),
    ]
    return [*lines, ""], targets


def query_section(d: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    res = d["results"]
    targets: list[tuple[str, str, str]] = []
    for store in ("local", "s3"):
        for archive, name in (("day1", "1-day"), ("day30", "30-day")):
            r = res.get(f"{store}/{archive}/since")
            if not r:
                continue
            if "duckdb" not in r:
                targets.append(
                    (f"query: `--since 1h` faster than DuckDB, {store}, {name}", "n/a", d["duckdb_s3"])
                )
                continue
            a, b = r["archiver"]["median_s"], r["duckdb"]["median_s"]
            targets.append((f"query: `--since 1h` faster than DuckDB, {store}, {name}",
                            f"{a / b:.2f}× DuckDB's time ({a:.3f} vs {b:.3f} s)", _ok(a < b)))  # fmt: skip
    for store in ("local", "s3"):
        for q in ("since", "grep", "tail"):
            one, thirty = res.get(f"{store}/day1/{q}"), res.get(f"{store}/day30/{q}")
            if one and thirty:
                a, b = one["archiver"]["median_s"], thirty["archiver"]["median_s"]
                cpu = thirty["archiver"]["cpu_s"] / one["archiver"]["cpu_s"]
                targets.append((f"query: 30-day time ≤ 1.2 × 1-day, {store}, {q}",
                                f"{b / a:.2f}× ({b:.3f} vs {a:.3f} s; CPU {cpu:.2f}×)",
                                _ok(b <= 1.2 * a)))  # fmt: skip
    for store in ("local", "s3"):
        for archive, name in (("day1", "1-day"), ("day30", "30-day")):
            r = res.get(f"{store}/{archive}/grep")
            if r and "duckdb" in r:
                a, b = r["archiver"]["median_s"], r["duckdb"]["median_s"]
                targets.append((f"query: grep throughput ≥ 0.7 × DuckDB's, {store}, {name}",
                                f"{b / a:.2f}× ({a:.3f} vs {b:.3f} s)", _ok(b / a >= 0.7)))  # fmt: skip
    arch = d["archive"]
    lines = [
        "### Query",
        "",
        f"Archives: {arch['apps']} apps, {arch['partitions']} (app, region) partitions over 4 regions; 1 day = "
        f"{arch['day1_files']:,} files, {arch['day1_rows']:,} rows, {arch['day1_bytes'] / MIB:.1f} MiB; 30 days = "
        f"{arch['day30_files']:,} files. Now pinned at {d['now']} (half past an hour: the last hour is 30 min of a "
        "compacted hour and 30 min of live 60 s files). Whole processes, median of "
        f"{d['runs']} runs after one warm-up, the tools alternating; both must print the same rows. DuckDB on S3: "
        f"{d['duckdb_s3']}.",
        "",
        *[f"- `{q}`: `archiver query {cmd}`" for q, cmd in d["questions"].items()],
        "",
        "| question | store | archive | archiver / DuckDB time | archiver s | DuckDB s (archive glob) "
        "| DuckDB s (app glob) | rows | archiver CPU s | DuckDB CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in res.items():
        store, archive, q = key.split("/")
        a = r["archiver"]
        b = r.get("duckdb")
        g = r.get("duckdb_app_glob")
        ratio = f"{a['median_s'] / b['median_s']:.2f}×" if b else "n/a"
        lines.append(
            f"| {q} | {store} | {archive} | {ratio} | {a['median_s']:.3f} | {b['median_s'] if b else 'n/a'} "
            f"| {g['median_s'] if g else '–'} | {a['rows'][0]:,} | {a['cpu_s']:.2f} | {b['cpu_s'] if b else 'n/a'} |"
        )
    if d.get("upload"):
        lines += ["", "Upload to SeaweedFS: " + ", ".join(f"{k} {v['objects']:,} objects in {v['seconds']} s"
                                                          for k, v in d["upload"].items())]  # fmt: skip
    if d["failures"]:
        lines += ["", "**FAILED — the tools disagree:**", ""] + [f"- {f}" for f in d["failures"]]
    return [*lines, ""], targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: shorter, fewer rates, local only")
    parser.add_argument("--only", default="ingest,storage,query", help="comma-separated subset")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    names = [n for n in ("ingest", "storage", "query") if n in args.only.split(",")]
    command = ".venv/bin/python bench/run_all.py" + (" --quick" if args.quick else "")
    if args.only != parser.get_default("only"):
        command += f" --only {args.only}"
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-results-"))
    outcomes = {name: run(name, args.quick, work / f"{name}.json") for name in names}

    import duckdb

    mach = machine()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "archiver", "query"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    failed = [n for n, (code, _, _) in outcomes.items() if code != 0]
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}"
        + (" (quick)" if args.quick else "")
        + (" — FAILED" if failed else ""),
        "",
        f"- command: `{command}` ({time.time() - started:.0f} s: "
        + ", ".join(f"{n} {s:.0f} s" for n, (_, _, s) in outcomes.items())
        + ")",
        f"- machine: {mach['nproc']} cores (`nproc`), {mach['cpu']}, Python {mach['python']}, "
        f"DuckDB {duckdb.__version__}, shared and noisy: compare ratios within this run",
        f"- code: {commit.stdout.strip()}{' + uncommitted changes in archiver/ or query/' if dirty else ''}",
        "",
    ]
    sections: list[str] = []
    targets: list[tuple[str, str, str]] = []
    makers = {"ingest": ingest_section, "storage": storage_section, "query": query_section}
    for name, (code, data, _) in outcomes.items():
        if data is None:
            sections += [f"### {name.capitalize()}", "", f"**FAILED: exit {code}, no results.**", ""]
            continue
        body, goals = makers[name](data)
        sections += body
        targets += goals
    if failed:
        lines += [f"**FAILED: {', '.join(failed)} (see below): loss, disagreeing answers or a crash.**", ""]
    lines += (
        ["| target | figure | |", "|---|---|---|"] + [f"| {t} | {f} | {m} |" for t, f, m in targets] + [""]
    )
    lines += sections
    output = Path(args.output)
    if not output.exists():
        output.write_text(
            "# Benchmarks\n\nAppended by `.venv/bin/python bench/run_all.py` (see bench/run_all.py and the docstrings"
            " of bench/ingest.py, bench/storage.py, bench/query_speed.py for the method). Newest last.\n\n"
        )
    with open(output, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {output}")
    print("\n".join(lines[: lines.index("| target | figure | |") + len(targets) + 2]))
    if failed:
        print(f"\nBENCHMARK FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
