"""The ``tokenauth`` command: ``serve CONFIG``, ``check CONFIG`` and ``keygen``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from shared.access_log import AccessLogger
from shared.config import ConfigError
from shared.listener import ListenError, bind_sockets
from shared.log_queue import configure_logging, queued_logging
from shared.serving import ConnectionTimeouts, serving
from shared.tls import TLSSetupError, server_context
from shared.token import PublicKey, libtrust_key_id, thumbprint
from tokenauth.app import create_app
from tokenauth.config import TokenAuthConfig, load_config, split_address
from tokenauth.errors import INVALID_REQUEST
from tokenauth.keygen import ALGORITHMS, DEFAULT_RSA_BITS, write_key_pair

log = logging.getLogger("tokenauth")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenauth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the token server")
    serve.add_argument("config", type=Path, help="YAML configuration file")
    check = commands.add_parser("check", help="load the configuration, users and ACL, then exit")
    check.add_argument("config", type=Path)
    keygen = commands.add_parser("keygen", help="write a signing key and a certificate for it")
    keygen.add_argument("--algorithm", choices=ALGORITHMS, default="ES256")
    keygen.add_argument("--rsa-bits", type=int, default=DEFAULT_RSA_BITS)
    keygen.add_argument("--key", type=Path, default=Path("token.key"))
    keygen.add_argument("--certificate", type=Path, default=Path("token.crt"))
    keygen.add_argument("--common-name", default="portside tokenauth")
    keygen.add_argument("--days", type=int, default=3650)
    keygen.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        return _keygen(args)
    try:
        config = load_config(args.config, os.environ)
        configure_logging(config.loglevel, config.log.formatter, config.log.fields)
        app = create_app(config)
    except ConfigError as error:
        print(f"tokenauth: configuration error: {error}", file=sys.stderr)
        return 2
    try:
        # An expired certificate or a key of another certificate stops start-up here,
        # with a message, rather than failing every client's handshake later.
        tls = config.http.tls
        context = (
            server_context(
                tls.certificate, tls.key, minimum=tls.minimumtls, client_cas=tls.clientcas
            )
            if tls.certificate
            else None
        )
    except TLSSetupError as error:
        print(f"tokenauth: configuration error in http.tls: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        print("configuration OK")
        return 0
    try:
        sockets = bind_sockets(*split_address(config.http.addr))
    except ListenError as error:
        print(f"tokenauth: {error}", file=sys.stderr)
        return 2
    with queued_logging():  # lines are written by a thread, all of them before exit
        asyncio.run(_serve(app, config, context, sockets))
    return 0


async def _serve(
    app: web.Application,
    config: TokenAuthConfig,
    context: ssl.SSLContext | None,
    sockets: list[socket.socket],
) -> None:
    """Serve on the bound ``sockets`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    timeouts = ConnectionTimeouts(
        read_header=config.http.readheadertimeout.total_seconds(),
        idle=config.http.idletimeout.total_seconds(),
        body=config.http.bodytimeout.total_seconds(),
    )
    access_log = None if config.log.accesslog.disabled else logging.getLogger("tokenauth.access")
    async with serving(
        app,
        sockets,
        timeouts=timeouts,
        error_code=INVALID_REQUEST,
        ssl_context=context,
        access_log=access_log,
        access_log_class=AccessLogger,
    ):
        log.info("tokenauth listening on %s (%s)", config.http.addr, "https" if context else "http")
        await stop.wait()


def _keygen(args: argparse.Namespace) -> int:
    try:
        cert = write_key_pair(
            args.key,
            args.certificate,
            algorithm=args.algorithm,
            common_name=args.common_name,
            lifetime=timedelta(days=args.days),
            rsa_bits=args.rsa_bits,
            force=args.force,
        )
    except (OSError, ValueError) as error:
        print(f"tokenauth keygen: {error}", file=sys.stderr)
        return 1
    public = cert.public_key()
    print(f"wrote {args.key} ({args.algorithm} private key) and {args.certificate}")
    if isinstance(public, PublicKey):
        print(f"kid (RFC 7638): {thumbprint(public)}")
        print(f"libtrust kid:   {libtrust_key_id(public)}")
    print("trust the certificate in the registry: auth.token.rootcertbundle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
