"""The README's quick start, run as written: every fenced block under "Quick start", in
order, so that its commands cannot rot.

Every block there must be ``sh``. Two are done by the test's own means, and checked
instead of run, because they start long-running servers the test must own and stop:

- ``scripts/run``: started in the background with :class:`RunScript` (a scratch
  ``PORTSIDE_DATA``, free ports through ``REGISTRY_HTTP_ADDR``/``TOKENAUTH_HTTP_ADDR``),
  waited for until it prints its login hint;
- the block starting ``dockerd`` by hand: its options must be exactly those the session's
  engine was started with (:func:`dockerd_options`), and it must export that socket as
  ``DOCKER_HOST``; the session's engine stands for it.

Every other block runs literally in ``bash -e -o pipefail``, one shell per block, in a
scratch directory standing for the repository's root (its ``data/`` is scripts/run's
data), with ``DOCKER_HOST`` on the session's engine and ``HOME``, ``DOCKER_CONFIG``,
``REGISTRY_AUTH_FILE`` isolated. The one rewrite: ``localhost:5000``, the default
registry address the README names, becomes ``localhost:<the port chosen>``; any other
``:5000``/``:5001`` left afterwards fails the test rather than reach some other server.
A command that fails fails the test. Afterwards every ``localhost:5000/NAME:TAG`` the
blocks name must be in the registry, so a dropped push fails it too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docker_engine import DockerEngine, dockerd_options
from tests.support.markdown import CodeBlock, section_code_blocks
from tests.support.portside_servers import REPOSITORY_ROOT, free_port
from tests.support.run_script import LOGIN_HINT, RunScript, get, token_for
from tests.support.tools import require_tool

SECTION = "Quick start"
DEFAULT_REGISTRY = "localhost:5000"
DEFAULT_PORTS = re.compile(r":500[01]\b")
IMAGE_REFERENCE = re.compile(re.escape(DEFAULT_REGISTRY) + r"/([a-z0-9._/-]+):([\w.-]+)")
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
# Builds, saves and pushes of a one-file image on a busy, shared machine.
BLOCK_SECONDS = 180.0
# Where the README's by-hand engine keeps its state: the shell variable it sets.
README_ENGINE_DIRECTORY = Path("$D")


@pytest.fixture
def run_script(tmp_path: Path) -> Iterator[list[RunScript]]:
    started: list[RunScript] = []
    yield started
    for script in started:
        script.stop()


def readme_blocks() -> list[CodeBlock]:
    blocks = section_code_blocks((REPOSITORY_ROOT / "README.md").read_text(), SECTION)
    others = [block for block in blocks if block.language != "sh"]
    assert not others, f"README.md {SECTION}: blocks this test would not run: {others}"
    return blocks


def commands(block: CodeBlock) -> list[list[str]]:
    """The block's simple commands as words (continuation lines joined, each command up to
    its first redirection or ``&``)."""
    lines = block.text.replace("\\\n", " ").splitlines()
    result = []
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for word in lexer:
            if word and all(char in lexer.punctuation_chars for char in word):
                break
            words.append(word)
        if words:
            result.append(words)
    return result


def check_engine_block(block: CodeBlock) -> None:
    """The by-hand dockerd is started as the session's engine is, and DOCKER_HOST names it."""
    words = next(words for words in commands(block) if words[0] == "dockerd")
    options, rest = [], words[1:]
    while rest:
        option, rest = rest[0], rest[1:]
        if "=" not in option and rest:  # --name value, as a reader types it
            option, rest = f"{option}={rest[0]}", rest[1:]
        options.append(option)
    expected = dockerd_options(README_ENGINE_DIRECTORY)
    assert sorted(options) == sorted(expected), f"README.md line {block.line}: dockerd {options}"
    socket = f"unix://{README_ENGINE_DIRECTORY / 'docker.sock'}"
    assert ["export", f"DOCKER_HOST={socket}"] in commands(block), block.text


def run_block(script: str, directory: Path, env: dict[str, str], log: Path) -> None:
    """``script`` in its own bash and session; fail with its output if it fails."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-x", "-c", script],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        status = process.wait(BLOCK_SECONDS)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        # Whatever the block left running (a command sent to the background, say) ends here.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    text = log.read_text(errors="replace")
    outcome = f"did not end in {BLOCK_SECONDS:.0f}s" if status is None else f"exited with {status}"
    assert status == 0, f"the README block {outcome}:\n{script}\n--- output:\n{text}"


def is_stored(registry: str, realm: str, password: str, name: str, tag: str) -> bool:
    """Whether ``name:tag`` resolves to a manifest, Docker's or OCI's, in the registry."""
    token = token_for(realm, "admin", password, f"repository:{name}:pull")
    headers = {"Authorization": f"Bearer {token}", "Accept": MANIFEST_TYPES}
    return get(f"http://{registry}/v2/{name}/manifests/{tag}", headers).status == 200


def test_the_quick_start_runs_as_written(
    docker_engine: DockerEngine, run_script: list[RunScript], tmp_path: Path
) -> None:
    require_tool("skopeo")
    blocks = readme_blocks()
    registry = f"localhost:{free_port()}"
    tokenauth = f"localhost:{free_port()}"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    client_env = docker_engine.client_env(tmp_path / "home")
    started: dict[str, int] = {"scripts/run": 0, "dockerd": 0}
    named: set[tuple[str, str]] = set()

    for number, block in enumerate(blocks):
        words = [word for command in commands(block) for word in command]
        if "scripts/run" in words:
            # Anything else there would go unrun, or start a server on the default ports.
            assert words[0] == "scripts/run" and len(commands(block)) == 1, (
                f"README.md line {block.line}: scripts/run [ARGS] alone, as the test starts it"
            )
            started["scripts/run"] += 1
            script = RunScript(
                tmp_path,
                {
                    "PORTSIDE_DATA": str(checkout / "data"),
                    "REGISTRY_HTTP_ADDR": registry,
                    "TOKENAUTH_HTTP_ADDR": tokenauth,
                },
                words[1:],
            )
            run_script.append(script.start())
            script.wait_for(LOGIN_HINT)
        elif "dockerd" in words:
            started["dockerd"] += 1
            check_engine_block(block)
        else:
            # Run literally, it would start this very test again, and the whole suite.
            assert "scripts/test" not in words, (
                f"README.md line {block.line}: the test suite is no quick-start step"
            )
            named.update(IMAGE_REFERENCE.findall(block.text))
            rewritten = block.text.replace(DEFAULT_REGISTRY, registry)
            assert not DEFAULT_PORTS.search(rewritten), (
                f"README.md line {block.line}: a default port this test does not rewrite"
            )
            run_block(rewritten, checkout, client_env, tmp_path / f"block-{number}.log")

    assert started == {"scripts/run": 1, "dockerd": 1}, started
    assert named, f"README.md {SECTION} names no image on {DEFAULT_REGISTRY}"
    password = (checkout / "data" / "auth" / "admin-password").read_text().strip()
    realm = f"http://{tokenauth}/auth"
    missing = [
        f"{name}:{tag}"
        for name, tag in sorted(named)
        if not is_stored(registry, realm, password, name, tag)
    ]
    assert not missing, f"named in the quick start but not in the registry: {missing}"
