"""The ``tokenauth`` command: ``serve [--workers N] CONFIG``, ``check CONFIG``, ``keygen``
and ``robot``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from shared import cpu_affinity
from shared.config import ConfigError
from shared.jose_keys import PublicKey, libtrust_key_id, thumbprint
from shared.listener import ListenError
from shared.log_queue import configure_logging
from shared.tls import TLSSetupError, server_context
from tokenauth import keydir, robot_command
from tokenauth.app import create_app
from tokenauth.config import load_config
from tokenauth.keydir import KeyOptions
from tokenauth.keygen import ALGORITHMS, DEFAULT_RSA_BITS, write_key_pair
from tokenauth.server import serve
from tokenauth.signing import read_key_directory

log = logging.getLogger("tokenauth")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenauth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the token server")
    serve_parser.add_argument("config", type=Path, help="YAML configuration file")
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("PORTSIDE_WORKERS", "1")),
        help="worker processes sharing the port (default 1, or $PORTSIDE_WORKERS)",
    )
    cpu_affinity.add_argument(serve_parser)
    check = commands.add_parser("check", help="load the configuration, users and ACL, then exit")
    check.add_argument("config", type=Path)
    keygen = commands.add_parser("keygen", help="write a signing key and a certificate for it")
    keygen.add_argument("--algorithm", choices=ALGORITHMS, default=None, help="default ES256")
    keygen.add_argument("--rsa-bits", type=int, default=DEFAULT_RSA_BITS)
    keygen.add_argument("--key", type=Path, default=Path("token.key"))
    keygen.add_argument("--certificate", type=Path, default=Path("token.crt"))
    keygen.add_argument("--common-name", default="portside tokenauth")
    keygen.add_argument("--days", type=int, default=3650)
    keygen.add_argument("--force", action="store_true", help="replace existing files")
    keygen.add_argument(
        "--dir", type=Path, help="write a key directory (token.keydir) instead of one key"
    )
    keygen.add_argument(
        "--rotate",
        action="store_true",
        help="with --dir: previous <- current <- next <- a new key",
    )
    robot_command.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        return _keygen(args)
    if args.command == "robot":
        return robot_command.run(args)
    try:
        config = load_config(args.config, os.environ)
        configure_logging(config.loglevel, config.log.formatter, config.log.fields)
        create_app(config)  # every file loads, or start-up stops here with the key named
    except ConfigError as error:
        print(f"tokenauth: configuration error: {error}", file=sys.stderr)
        return 2
    try:
        # An expired certificate or a key of another certificate stops start-up here,
        # with a message, rather than failing every client's handshake later.
        tls = config.http.tls
        if tls.certificate:
            server_context(
                tls.certificate, tls.key, minimum=tls.minimumtls, client_cas=tls.clientcas
            )
    except TLSSetupError as error:
        print(f"tokenauth: configuration error in http.tls: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        print("configuration OK")
        return 0
    try:
        serve(config, max(1, args.workers), cpu_affinity=args.cpu_affinity)
    except ListenError as error:
        print(f"tokenauth: {error}", file=sys.stderr)
        return 2
    return 0


def _keygen(args: argparse.Namespace) -> int:
    if args.dir is not None or args.rotate:
        return _keygen_directory(args)
    try:
        cert = write_key_pair(
            args.key,
            args.certificate,
            algorithm=args.algorithm or "ES256",
            common_name=args.common_name,
            lifetime=timedelta(days=args.days),
            rsa_bits=args.rsa_bits,
            force=args.force,
        )
    except (OSError, ValueError) as error:
        print(f"tokenauth keygen: {error}", file=sys.stderr)
        return 1
    public = cert.public_key()
    print(f"wrote {args.key} ({args.algorithm or 'ES256'} private key) and {args.certificate}")
    if isinstance(public, PublicKey):
        print(f"kid (RFC 7638): {thumbprint(public)}")
        print(f"libtrust kid:   {libtrust_key_id(public)}")
    print("trust the certificate in the registry: auth.token.rootcertbundle")
    return 0


def _keygen_directory(args: argparse.Namespace) -> int:
    """``keygen --dir DIR [--rotate]``: create or rotate a key directory."""
    if args.dir is None:
        print("tokenauth keygen: --rotate needs --dir", file=sys.stderr)
        return 2
    options = KeyOptions(args.algorithm, args.common_name, timedelta(days=args.days), args.rsa_bits)
    try:
        if args.rotate:
            keydir.rotate(args.dir, options)
        else:
            keydir.initialise(args.dir, options, force=args.force)
        keys = read_key_directory(args.dir)
    except (OSError, ValueError) as error:
        print(f"tokenauth keygen: {error}", file=sys.stderr)
        return 1
    names = ("current", "next", "previous")
    for name, published in zip(names, keys.published, strict=False):
        print(f"{name:8} kid {thumbprint(published.key)}")
    print(
        f"{'rotated' if args.rotate else 'wrote'} {args.dir}; tokenauth re-reads it within seconds"
    )
    print(f"trust {args.dir / keydir.BUNDLE} in every registry (auth.token.rootcertbundle)")
    print("before the next rotation (or its jwks.json: auth.token.jwks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
