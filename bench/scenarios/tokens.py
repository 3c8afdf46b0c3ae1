"""Scenario 4: token auth — tokenauth issuing, the registries verifying — and issuance itself.

tokenauth runs as shipped (``tokenauth serve``: ES256 key from ``tokenauth keygen``, users
in an htpasswd file with bcrypt cost 10, audit and access lines at level info into a log
file). Token issuance is a user re-authenticating with Basic credentials, as ``docker``
does before each push or pull: tokens/s with wrk. The registries are started with
``auth.token`` pointing at it; a registry that refuses that configuration at start-up
(portside before its token auth lands) is reported as not available, not as a failure.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import BlobFile, SmallImage
from bench.loadgen import run_wrk
from bench.measure import MEASUREMENT_ERRORS, Step, alternate
from bench.plan import format_size
from bench.results import Metric, Target
from bench.scenarios import blobs, requests
from bench.servers import (
    PORTSIDE,
    REFERENCE,
    TOKENAUTH,
    Server,
    ServerRefused,
    TokenSettings,
    free_port,
)
from shared.htpasswd import format_htpasswd_line

GROUP = "4. token auth"
SERVICE = "bench-registry"
ISSUER = "bench-issuer"
USER = "bench"
PASSWORD = "bench-password-0123456789"  # noqa: S105 - a throwaway account on loopback
BCRYPT_COST = 10  # htpasswd -B uses 5; 10 is what shared.htpasswd writes by default
ISSUANCE_TARGET = Target(">= 2,000 tokens/s", min_value=2000)
# Issue 13: repeat-login issuance with ``tokenauth serve --workers 2``.
WORKERS_ISSUANCE_TARGET = Target(">= 5,000 tokens/s", min_value=5000)
ISSUANCE_WORKERS = 2
SCOPES = (f"repository:{blobs.REPO}:pull,push", f"repository:{requests.REPO}:pull,push")


@dataclass(frozen=True)
class TokenServer:
    server: Server
    certificate: Path

    @property
    def realm(self) -> str:
        return f"{self.server.url}/auth"

    def settings(self) -> TokenSettings:
        return TokenSettings(self.realm, SERVICE, ISSUER, self.certificate)


def basic_header() -> dict[str, str]:
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


async def start_tokenauth(ctx: Context, workers: int = 1) -> TokenServer:
    return await start_token_server(
        ctx,
        [format_htpasswd_line(USER, PASSWORD, cost=BCRYPT_COST)],
        f'acl:\n  - match: {{account: {USER}}}\n    actions: ["*"]\n',
        "loglevel: info\n",
        workers=workers,
    )


async def start_token_server(
    ctx: Context, users: Sequence[str], acl: str, settings: str = "", *, workers: int = 1
) -> TokenServer:
    """tokenauth as shipped: a key from ``tokenauth keygen``, ``users`` (htpasswd lines),
    the ``acl`` file's text, and extra top-level ``settings`` in its config; ``workers``:
    ``tokenauth serve --workers N``."""
    directory = ctx.new_dir("tokenauth")
    key, certificate = directory / "token.key", directory / "token.crt"
    keygen = [
        sys.executable,
        "-m",
        "tokenauth",
        "keygen",
        "--key",
        str(key),
        "--certificate",
        str(certificate),
    ]
    process = await _run(keygen, ctx.plan.portside_tree)
    if process:
        raise RuntimeError(f"tokenauth keygen failed: {process}")
    (directory / "users.htpasswd").write_text("\n".join(users) + "\n")
    (directory / "acl.yml").write_text(acl)
    port = free_port()
    config = directory / "tokenauth.yml"
    config.write_text(
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"token:\n  issuer: {ISSUER}\n  services: [{SERVICE}]\n"
        "  key: token.key\n  certificate: token.crt\n"
        "users: [users.htpasswd]\nacl: acl.yml\n" + settings
    )
    server = Server(
        TOKENAUTH,
        [sys.executable, "-m", "tokenauth", "serve", "--workers", str(workers), str(config)],
        port,
        directory / "tokenauth.log",
        ready_path="/.well-known/jwks.json",
        cwd=ctx.plan.portside_tree,
    )
    await ctx.lab.start(server)
    return TokenServer(server, certificate)


async def _run(command: Sequence[str], cwd: Path | None) -> str:
    """Run a command to completion: '' on success, else its output."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd
    )
    output, _ = await process.communicate()
    return "" if process.returncode == 0 else output.decode(errors="replace")


async def fetch_token(session: aiohttp.ClientSession, tokens: TokenServer) -> str:
    query = [("service", SERVICE), *(("scope", scope) for scope in SCOPES)]
    async with session.get(tokens.realm, params=query, headers=basic_header()) as response:
        if response.status != 200:
            raise RuntimeError(f"tokenauth answered {response.status}: {await response.text()}")
        body = await response.json()
    return str(body["token"])


async def run_issuance(ctx: Context, tokens: TokenServer, workers: int = 1) -> Metric:
    """Repeat-login tokens/s from ``tokens`` (started with ``workers`` processes)."""
    plan = ctx.plan
    suffix = f"_workers{workers}" if workers > 1 else ""
    metric = Metric(
        f"token_issuance{suffix}",
        "token issuance, Basic re-authentication"
        + (f", tokenauth --workers {workers}" if workers > 1 else ""),
        "tokens/s",
        GROUP,
        target=WORKERS_ISSUANCE_TARGET if workers > 1 else ISSUANCE_TARGET,
        note=f"wrk, {plan.connections} connections; bcrypt cost {BCRYPT_COST}; "
        "tokenauth only (the reference registry has no token server)",
    )
    metric.unavailable[REFERENCE] = "the reference registry has no token server"
    url = f"{tokens.realm}?service={SERVICE}&scope={SCOPES[0]}&account={USER}"

    async def issue() -> float:
        result = await run_wrk(
            url, duration=plan.rate_seconds, connections=plan.connections, headers=basic_header()
        )
        return result.requests_per_second

    for _ in range(plan.rounds):
        try:
            sample = await ctx.lab.sample(tokens.server, issue)
        except MEASUREMENT_ERRORS as error:
            metric.unavailable[PORTSIDE] = f"failed: {error}"
            break
        # Under portside's name: tokenauth is portside's token server.
        metric.add(PORTSIDE, sample)
    return metric


async def run_tokens(
    ctx: Context, roots: Mapping[str, Path], image: SmallImage, tokens: TokenServer
) -> list[Metric]:
    """Pull and manifest/HEAD rates with token auth, on registries serving ``roots``."""
    running: list[Server] = []
    refused: dict[str, str] = {}
    for name in (PORTSIDE, REFERENCE):
        try:
            running.append(await ctx.lab.start(ctx.registry(name, roots[name], tokens.settings())))
        except ServerRefused as error:
            refused[name] = f"not available: start-up refused auth.token ({error})"
    blob = ctx.largest_blob
    pull = Metric(
        f"pull_verified_token_{format_size(blob.size).replace(' ', '')}",
        f"blob pull, verified, with token, {format_size(blob.size)}",
        "MB/s",
        GROUP,
        target=blobs.PULL_TARGET,
    )
    async with new_session() as session:
        bearer: dict[str, str] = {}

        async def authenticate(server: Server) -> Mapping[str, str]:
            bearer[server.name] = await fetch_token(session, tokens)
            return {"Authorization": f"Bearer {bearer[server.name]}"}

        for server in running:
            await authenticate(server)
            client = RegistryClient(session, server.url, bearer[server.name])
            await ensure_content(client, image, blob)

        async def prepare(server: Server) -> None:
            await authenticate(server)
            await blobs.settle()

        async def pull_verified(server: Server) -> float:
            client = RegistryClient(session, server.url, bearer[server.name])
            started = time.perf_counter()
            await client.pull_verify(blobs.REPO, blob.digest, blob.size)
            return blobs.mb_per_second(blob.size, started)

        await alternate(ctx.lab, running, ctx.plan.rounds, [Step(pull, pull_verified, prepare)])
        measured = [
            pull,
            *await requests.run_requests(
                ctx, running, image, authenticate, suffix=", with token", group=GROUP
            ),
        ]
    for server in running:
        await ctx.lab.stop(server)
    for metric in measured:
        metric.unavailable.update(refused)
    return measured


async def ensure_content(client: RegistryClient, image: SmallImage, blob: BlobFile) -> None:
    """The blob of scenario 1 and the image of scenario 2, pushed unless already there."""
    await requests.push_image(client, requests.REPO, requests.TAG, image)
    if not await client.blob_exists(blobs.REPO, blob.digest):
        await client.push_file(blobs.REPO, blob.path, blob.size, blob.digest)
