"""``registry retention [--dry-run] [--format table|json] CONFIG``: apply
``storage.retention.policies`` once and print every tag and manifest that goes (or would
go), with the rule that decided it.

The table is for a terminal (aligned columns, one row per item); ``--format json`` is one
document for scripts, with times in RFC 3339 UTC.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from typing import Any

from registry.config import RegistryConfig
from registry.storage.retention import Decision, RetentionReport, RetentionRun
from registry.wiring import create_blob_descriptor_cache, create_storage, retention_policies

COLUMNS = ("ACTION", "REPOSITORY", "TAG / MANIFEST", "RULE", "PUSHED", "WHY")


async def evaluate(config: RegistryConfig, *, dry_run: bool) -> RetentionReport:
    registry = create_storage(config)
    # Deleted manifests must also leave the cache the serving registries read.
    registry.blob_store.cache = create_blob_descriptor_cache(config)
    try:
        return await RetentionRun(registry, retention_policies(config), dry_run=dry_run).run()
    finally:
        if registry.blob_store.cache is not None:
            await registry.blob_store.cache.close()
        await registry.close()


def _time(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(stamp, datetime.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _action(decision: Decision, dry_run: bool) -> str:
    if decision.action == "keep":
        return "keep"
    return "would delete" if dry_run else "delete"


def as_json(report: RetentionReport, dry_run: bool) -> dict[str, Any]:
    return {
        "dryRun": dry_run,
        "repositories": report.repositories,
        "decisions": [
            {
                "action": _action(d, dry_run),
                "repository": d.repository,
                "kind": d.kind,
                "tag": d.tag,
                "digest": str(d.digest),
                "rule": d.rule,
                "reason": d.reason,
                "pushed": _time(d.pushed),
            }
            for d in report.decisions
        ],
        "skipped": report.skipped,
    }


def as_table(report: RetentionReport, dry_run: bool) -> str:
    rows = [
        (
            _action(d, dry_run),
            d.repository,
            d.tag if d.tag is not None else str(d.digest),
            d.rule,
            (_time(d.pushed) or "-")[:16].replace("T", " "),
            d.reason.split(": ", 1)[-1] if d.action == "delete" else d.reason,
        )
        for d in report.decisions
    ]
    widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip((*row[:-1],), widths, strict=True)) + "  " + row[-1]
        for row in [COLUMNS, *rows]
    ]
    tags = sum(1 for d in report.deleted if d.kind == "tag")
    manifests = len(report.deleted) - tags
    verb = "would delete" if dry_run else "deleted"
    lines.append(
        f"{verb} {tags} tags and {manifests} manifests in {report.repositories} repositories"
        + ("; run garbage-collect to reclaim their space" if manifests and not dry_run else "")
    )
    lines += [f"left alone, changed meanwhile: {item}" for item in report.skipped]
    return "\n".join(lines)


def retention(config: RegistryConfig, *, dry_run: bool, output: str) -> int:
    if not config.storage.retention.policies:
        print("registry: storage.retention.policies is empty: nothing to do", file=sys.stderr)
        return 2
    report = asyncio.run(evaluate(config, dry_run=dry_run))
    if output == "json":
        print(json.dumps(as_json(report, dry_run), indent=2))
    else:
        print(as_table(report, dry_run))
    return 0
