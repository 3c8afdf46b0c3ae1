"""``tokenauth robot create|list|revoke``: manage the robot accounts of a configuration.

The robots file is the one the configuration's ``robots`` key names; a running tokenauth
re-reads it on the next token request. ``create`` prints the secret once, on standard
output alone (so ``> secret`` captures just it); nothing else ever shows it again.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from shared.config import ConfigError
from tokenauth.config import load_config
from tokenauth.robots import PREFIX, RobotError, RobotsFile, create, parse_expiry, revoke


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    robot = commands.add_parser("robot", help="create, list or revoke robot accounts")
    robot.add_argument("--config", type=Path, required=True, help="tokenauth's configuration")
    actions = robot.add_subparsers(dest="action", required=True)
    made = actions.add_parser("create", help="add a robot; prints its secret once")
    made.add_argument("name")
    made.add_argument(
        "--rights",
        action="append",
        required=True,
        help="TYPE:NAME:ACTIONS, e.g. 'repository:ci/*:pull,push' (repeatable, or "
        "several separated by spaces)",
    )
    made.add_argument("--expires", default="90d", help="90d, 12h, 30m or never (default 90d)")
    actions.add_parser("list", help="robots, their rights and expiry (never a secret)")
    gone = actions.add_parser("revoke", help="remove a robot: its logins stop at once")
    gone.add_argument("name")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, os.environ)
        if not config.robots:
            raise ConfigError("robots: must be set to use robot accounts")
        robots = RobotsFile(config.robots)
        if args.action == "create":
            rights = [right for value in args.rights for right in value.split()]
            secret = create(robots, args.name, rights, parse_expiry(args.expires))
            print(secret)
            print(f"robot {args.name!r} created; log in as {PREFIX}{args.name}", file=sys.stderr)
        elif args.action == "revoke":
            revoke(robots, args.name)
            print(f"robot {args.name!r} revoked", file=sys.stderr)
        else:
            now = datetime.datetime.now(datetime.UTC)
            for robot in sorted(robots.current().values(), key=lambda r: r.name):
                expires = robot.expires.isoformat() if robot.expires else "never"
                state = " (expired)" if robot.expired(now) else ""
                shown = " ".join(str(right) for right in robot.rights)
                print(f"{PREFIX}{robot.name}\t{shown}\texpires {expires}{state}")
    except (ConfigError, RobotError, OSError) as error:
        print(f"tokenauth robot: {error}", file=sys.stderr)
        return 2
    return 0
