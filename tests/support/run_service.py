"""Runs one paperwire service in a process of its own, with the test stand-ins (tests only).

    python -m tests.support.run_service embed --port 8123

Configured from the environment like `paperwire run SERVICE` (REDIS_URL, PAPERWIRE_DATA_DIR,
EMBED_CONSUMER...), except that embed and recommend get the hashing stand-in encoder from
tests/fakes.py instead of the model: a worker starts in about two seconds and encodes thousands of
papers a second, so tests can run several real workers side by side. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import uvicorn

from paperwire.launcher import SERVICES
from tests.fakes import HashingEncoder, LocalTextEncoder


def build_app(service: str) -> Any:
    settings = importlib.import_module(f"paperwire_{service}.config").Settings()
    create_app = importlib.import_module(f"paperwire_{service}.app").create_app
    adapters: dict[str, Any] = {}
    if service == "embed":
        adapters["encoder"] = HashingEncoder()
    elif service == "recommend":
        adapters["encoder"] = LocalTextEncoder(HashingEncoder())
    return create_app(settings, **adapters)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.service), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
