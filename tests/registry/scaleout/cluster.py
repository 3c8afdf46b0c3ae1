"""Several registry processes behind nginx, as docs/scaling.md deploys them: each runs
``python -m registry serve CONFIG`` with the same S3 bucket, Redis and ``http.secret``;
nginx balances them round-robin and retries a request on the next instance when one
cannot be reached. Every instance names itself in an ``X-Portside-Instance`` header
(through ``http.headers``), so a test sees where each request landed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.backing_services import S3Service, Service
from tests.support.balancer import NginxBalancer
from tests.support.portside_servers import REPOSITORY_ROOT

INSTANCE_HEADER = "X-Portside-Instance"


class RegistryProcess(Service):
    name = "registry"

    def __init__(self, workdir: Path, label: str, settings: dict[str, Any]) -> None:
        super().__init__(workdir)
        self.label = label
        self.settings = settings

    def command(self) -> list[str]:
        config = json.loads(json.dumps(self.settings))  # JSON is YAML
        config["http"]["addr"] = f"127.0.0.1:{self.port}"
        config["http"]["headers"] = {INSTANCE_HEADER: [self.label]}
        path = self.workdir / f"config-{self.label}.yml"
        path.write_text(json.dumps(config, indent=2))
        return [sys.executable, "-m", "registry", "serve", str(path)]

    def environ(self) -> dict[str, str]:
        # The registry reads every REGISTRY_* variable as configuration. It runs in its
        # own directory: the code is this checkout's, not whatever is installed.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        return {**env, "PYTHONPATH": str(REPOSITORY_ROOT)}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def instance_settings(moto: S3Service, bucket: str, redis_addr: str, secret: str) -> dict[str, Any]:
    """The configuration every instance shares (each adds its own address)."""
    # The environment's strings, read as YAML reads them (numbers, booleans).
    s3 = {
        k.removeprefix("REGISTRY_STORAGE_S3_").lower(): yaml.safe_load(v)
        for k, v in moto.s3_environ(bucket).items()
    }
    return {
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "s3": s3,
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "redis"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "redis": {"addr": redis_addr},
        "http": {"secret": secret, "draintimeout": "1s"},
    }


class Cluster:
    def __init__(self, workdir: Path, settings: dict[str, Any], size: int = 3) -> None:
        self.instances = [
            RegistryProcess(workdir / f"registry-{label}", label, settings)
            for label in "abcdefgh"[:size]
        ]
        self.balancer = NginxBalancer(workdir / "nginx", self.instances)

    def start(self) -> None:
        for instance in self.instances:
            instance.launch()  # in parallel: each takes a second to import
        try:
            for instance in self.instances:
                instance.wait_ready()
            self.balancer.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.balancer.stop()
        for instance in self.instances:
            instance.stop()
