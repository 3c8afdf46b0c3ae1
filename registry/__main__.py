"""The ``registry`` command: ``registry serve [CONFIG]``, ``registry garbage-collect CONFIG``,
``registry retention CONFIG`` and ``registry htpasswd ...``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from registry.config import RegistryConfig, load_config, unsupported_settings
from shared import cpu_affinity
from shared.config import ConfigError
from shared.log_queue import configure_logging

# Each command imports what only it needs when it runs: the server's modules (aiohttp's
# web and client, TLS, ACME, the auth controllers, Redis) took about 0.5 s of CPU at the
# start of every ``garbage-collect``, a one-shot command timed against the reference's.

log = logging.getLogger("registry")

# Distribution reads the config path from this variable when none is given; it is not a
# configuration key, so it must not reach the REGISTRY_* override parser.
CONFIG_PATH_VARIABLE = "REGISTRY_CONFIGURATION_PATH"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registry", description="portside container registry")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the registry API")
    serve_parser.add_argument("config", nargs="?", help="a Distribution-style config.yml")
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("PORTSIDE_WORKERS", "1")),
        help="worker processes sharing the port (default 1, or $PORTSIDE_WORKERS)",
    )
    cpu_affinity.add_argument(serve_parser)
    gc_parser = commands.add_parser(
        "garbage-collect", help="delete blobs no manifest references (Distribution's semantics)"
    )
    gc_parser.add_argument("config", help="the registry's config.yml")
    gc_parser.add_argument(
        "-d", "--dry-run", action="store_true", help="only print what would be deleted"
    )
    gc_parser.add_argument(
        "-m",
        "--delete-untagged",
        action="store_true",
        help="also delete manifests no tag points at (and what only they reference)",
    )
    gc_parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only the summary, not every item"
    )
    gc_parser.add_argument(
        "--low-priority",
        action="store_true",
        help="run at storage.gc.priority (default idle: only CPU and disk time nothing "
        "else wants), beside a registry serving from this machine",
    )
    retention_parser = commands.add_parser(
        "retention", help="delete tags and manifests as storage.retention.policies say"
    )
    retention_parser.add_argument("config", help="the registry's config.yml")
    retention_parser.add_argument(
        "-d", "--dry-run", action="store_true", help="only print what would be deleted"
    )
    retention_parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="a table for a terminal (default) or one JSON document",
    )
    commands.add_parser(
        "htpasswd", help="print or update bcrypt htpasswd entries (htpasswd -Bbn USER PASSWORD)"
    )
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["htpasswd"]:
        from registry.htpasswd_command import htpasswd_main

        # Apache's flag syntax (-Bbn), which argparse cannot express: parsed by the command.
        return htpasswd_main(arguments[1:])
    args = parser.parse_args(arguments)

    # Logging first, so warnings raised while loading the config are formatted too.
    configure_logging("info")
    environ = dict(os.environ)
    config_path = args.config or environ.pop(CONFIG_PATH_VARIABLE, None)
    environ.pop(CONFIG_PATH_VARIABLE, None)
    try:
        config = load_config(config_path, environ)
    except (ConfigError, OSError) as error:
        print(f"registry: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log.level or "info", config.log.formatter, config.log.fields)
    if args.command == "garbage-collect":
        from registry.gc_command import garbage_collect

        try:
            return garbage_collect(
                config,
                dry_run=args.dry_run,
                delete_untagged=args.delete_untagged,
                quiet=args.quiet,
                low_priority=args.low_priority,
            )
        except Exception as error:  # storage unreachable, a failed delete: one line
            print(f"registry: garbage collection failed: {error}", file=sys.stderr)
            return 1
    if args.command == "retention":
        from registry.retention_command import retention

        try:
            return retention(config, dry_run=args.dry_run, output=args.format)
        except Exception as error:  # storage unreachable, a failed delete: one line
            print(f"registry: retention failed: {error}", file=sys.stderr)
            return 1
    return _serve(config, args.workers, bind_cpus=args.cpu_affinity)


def _serve(config: RegistryConfig, workers: int, *, bind_cpus: bool) -> int:
    """``registry serve``: check what would fail later once, then serve."""
    from registry.auth.factory import create_access_controller
    from registry.server import serve
    from registry.storage.errors import StorageUnwritable
    from registry.tls import TLSSetupError, tls_context
    from registry.wiring import check_storage
    from shared.listener import ListenError
    from shared.token_errors import TokenError

    unsupported = unsupported_settings(config)
    if config.auth.method_name is not None and any(k.startswith("auth") for k in unsupported):
        # Never serve openly while the configuration says the registry is protected.
        print(
            f"registry: auth.{config.auth.method_name} is not supported by this version; "
            "refusing to start without the access control the configuration asks for",
            file=sys.stderr,
        )
        return 2
    try:
        # Built here, once, so that a bad key file, bundle, algorithm or users file stops
        # start-up with a message instead of a worker's traceback; the workers then use
        # this one, so a users file is read (and its warnings logged) once.
        controller = create_access_controller(config)
    except (ValueError, OSError, TokenError) as error:
        print(f"registry: configuration error in auth: {error}", file=sys.stderr)
        return 2
    try:
        # The same for TLS: an expired certificate or a key of another certificate is
        # reported once, before any worker starts.
        tls_context(config)
    except TLSSetupError as error:
        print(f"registry: configuration error in http.tls: {error}", file=sys.stderr)
        return 2
    try:
        # An unwritable root would serve pulls of nothing and fail every push later.
        check_storage(config)
    except StorageUnwritable as error:
        print(f"registry: storage.filesystem.rootdirectory: {error}", file=sys.stderr)
        return 2
    if config.http.net == "unix" and workers > 1:
        # Workers share a TCP port through SO_REUSEPORT, which Unix sockets lack.
        print("registry: http.net: unix needs --workers 1", file=sys.stderr)
        return 2
    if config.http.tls.letsencrypt.cachefile and workers > 1:
        # Only one process can answer the ACME challenges and own the cachefile.
        print("registry: http.tls.letsencrypt needs --workers 1", file=sys.stderr)
        return 2
    for key in unsupported:
        log.warning("configuration key %s is accepted but not implemented; ignored", key)
    try:
        serve(config, workers=max(1, workers), controller=controller, cpu_affinity=bind_cpus)
    except ListenError as error:
        print(f"registry: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
