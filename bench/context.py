"""What every scenario gets: the plan, the running servers, a scratch directory, the data."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import BlobFile
from bench.measure import Lab
from bench.plan import Plan
from bench.servers import PORTSIDE, REFERENCE, Server, TokenSettings, registry_server


@dataclass
class Context:
    plan: Plan
    lab: Lab
    workdir: Path
    blobs: dict[int, BlobFile] = field(default_factory=dict)  # by size
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def largest_blob(self) -> BlobFile:
        return self.blobs[max(self.blobs)]

    def new_dir(self, label: str) -> Path:
        path = self.workdir / f"{next(self._counter):02d}-{label}"
        path.mkdir(parents=True)
        return path

    def registry(self, name: str, root: Path, token: TokenSettings | None = None) -> Server:
        """A portside or reference registry (not started) with the run's settings."""
        return registry_server(
            name,
            root.parent,
            root,
            token,
            self.plan.portside_env,
            self.plan.portside_tree,
            access_log=self.plan.access_log,
        )

    async def start_pair(
        self, roots: dict[str, Path], token: TokenSettings | None = None
    ) -> Sequence[Server]:
        """Start portside and the reference on their roots; portside first, as in rounds."""
        servers = []
        for name in (PORTSIDE, REFERENCE):
            servers.append(await self.lab.start(self.registry(name, roots[name], token)))
        return servers
