"""The `chaperone` command line. Parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import Config, ConfigError, HttpConfig, check_warnings, load_config

DEFAULT_HEALTH_URL = f"http://{HttpConfig().listen}/health"
"""`/health` at `http.listen`'s default, for `chaperone healthcheck` in the image."""


def _load(path: str) -> Config:
    if not os.path.exists(path):
        # The first thing a new container says: name the command that creates the file.
        print(
            f"{path}: no such file; create it with: chaperone init-config {path}", file=sys.stderr
        )
        raise SystemExit(2)
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"{path}: invalid configuration:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    if not config.database.url and importlib.util.find_spec("pgserver") is None:
        from bot.db.database import PGSERVER_MISSING

        print(f"{path}: {PGSERVER_MISSING}", file=sys.stderr)
        raise SystemExit(2)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    for warning in check_warnings(config):
        print(f"warning: {warning}")
    if config.database.url:
        from bot.db.database import role_warning_of

        role_warning = asyncio.run(role_warning_of(config.database.url))
        if role_warning:
            print(f"WARNING: database.url: {role_warning}")
    print(f"{args.config}: configuration is valid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bot.app import Chaperone
    from bot.logging_setup import setup_logging

    config = _load(args.config)
    setup_logging(config.logging.level, config.secret_values())
    return asyncio.run(_run_until_signal(Chaperone(config)))


async def _run_until_signal(bot: object) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bot.run_until_stopped(stop)  # type: ignore[attr-defined]
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from bot.service.audit_cli import verify

    ok, message = asyncio.run(verify(_load(args.config)))
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from bot.service.audit_cli import ExportCutShort, FilterError, export, parse_filters

    try:
        filters = parse_filters(args.filters)
    except FilterError as e:
        print(f"audit export: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(export(_load(args.config), filters, args.format, sys.stdout))
    except ExportCutShort as e:
        # The reader went away (`| head`): say so in one line, and point stdout at /dev/null
        # so the flush at exit does not fail a second time with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"audit export: {e}; recorded as cut short in the audit log", file=sys.stderr)
        return 1
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from bot.service.archive import generate_keypair_text

    print(generate_keypair_text(), end="")
    return 0


def cmd_archive_export(args: argparse.Namespace) -> int:
    from bot.policy.archive import ArchiveKeyError
    from bot.service.archive import archive_filter, export_archive
    from bot.service.audit_cli import FilterError

    try:
        where = archive_filter(args.filters)
        with open(args.private_key_file, encoding="utf8") as f:
            key_text = f.read()
    except (FilterError, OSError) as e:
        print(f"archive export: {e}", file=sys.stderr)
        return 2
    try:
        opened, unopened = asyncio.run(
            export_archive(_load(args.config), key_text, where, sys.stdout)
        )
    except ArchiveKeyError as e:
        print(f"archive export: --private-key-file: {e}", file=sys.stderr)
        return 2
    print(f"{opened} archived message(s) opened", file=sys.stderr)
    if unopened:
        print(f"{unopened} sealed to another key; not opened", file=sys.stderr)
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from bot.clock import Clock
    from bot.service.verification_cli import decide, list_waiting

    config, clock = _load(args.config), Clock()
    if args.list:
        print("\n".join(asyncio.run(list_waiting(config, clock))))
        return 0
    confirmed = args.confirm is not None
    row_id = args.confirm if confirmed else args.cancel
    ok, message = asyncio.run(decide(config, row_id, confirmed, clock))
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_init_config(args: argparse.Namespace) -> int:
    from importlib.resources import files

    target = Path(args.path)
    text = files("bot").joinpath("config.example.yaml").read_text(encoding="utf-8")
    try:
        # O_EXCL: never overwrite, not even a file that appears meanwhile; 0600: it will hold
        # secrets once filled in.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"init-config: {target} already exists; left unchanged", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"init-config: {target}: cannot create ({e.strerror})", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {target}: replace every CHANGE_ME (or give secrets as CHAPERONE_*_FILE), then")
    print(f"  chaperone check-config -c {target}")
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    url: str = args.url
    if not url.startswith(("http://", "https://")):
        print(f"healthcheck: --url {url}: expected an http:// or https:// URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310 - scheme checked above
            status = int(response.status)
    except urllib.error.HTTPError as e:
        status = e.code
    except (OSError, ValueError) as e:  # URLError, refused, timeout
        reason = getattr(e, "reason", None) or type(e).__name__
        print(f"healthcheck: {url}: unreachable ({reason})", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return asyncio.run(run_demo(args.data_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaperone", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", required=True, help="path to config.yaml")
        return p

    with_config(sub.add_parser("run", help="run the bot")).set_defaults(func=cmd_run)
    with_config(sub.add_parser("check-config", help="validate a config file")).set_defaults(
        func=cmd_check_config
    )
    demo = sub.add_parser("demo", help="local homeserver + Postgres + the bot, ready for Element")
    demo.add_argument("--data-dir", default=None, help="keep demo state here (default: temp)")
    demo.set_defaults(func=cmd_demo)

    audit = sub.add_parser("audit", help="audit log tools").add_subparsers(
        dest="audit_command", required=True
    )
    with_config(audit.add_parser("verify", help="recompute the hash chain")).set_defaults(
        func=cmd_audit_verify
    )
    export = with_config(audit.add_parser("export", help="export rows as JSON Lines or CSV"))
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument(
        "filters",
        nargs="*",
        metavar="FILTER",
        help="room=!id:server user=@u:server action=message.sent since=2026-11-01 until=...",
    )
    export.set_defaults(func=cmd_audit_export)

    verify = with_config(
        sub.add_parser("verify", help="interactive verification: compare and confirm the emoji")
    )
    choice = verify.add_mutually_exclusive_group(required=True)
    choice.add_argument("--list", action="store_true", help="verifications waiting, with emoji")
    choice.add_argument("--confirm", type=int, metavar="ID", help="the emoji match: complete it")
    choice.add_argument("--cancel", type=int, metavar="ID", help="they do not: cancel it")
    verify.set_defaults(func=cmd_verify)

    init = sub.add_parser("init-config", help="write the documented example config")
    init.add_argument("path", nargs="?", default="config.yaml", help="default: config.yaml")
    init.set_defaults(func=cmd_init_config)
    health = sub.add_parser("healthcheck", help="exit 0 iff /health answers 200")
    health.add_argument("--url", default=DEFAULT_HEALTH_URL, help=f"default: {DEFAULT_HEALTH_URL}")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    health.set_defaults(func=cmd_healthcheck)

    sub.add_parser("keygen", help="print a new archive key pair").set_defaults(func=cmd_keygen)
    archive = sub.add_parser("archive", help="sealed message archive").add_subparsers(
        dest="archive_command", required=True
    )
    opened = with_config(archive.add_parser("export", help="open archived messages (JSON Lines)"))
    opened.add_argument("--private-key-file", required=True, help="file from chaperone keygen")
    opened.add_argument(
        "filters", nargs="*", metavar="FILTER", help="room=!id:server user=@u:server since=.."
    )
    opened.set_defaults(func=cmd_archive_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
