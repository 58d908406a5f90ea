"""``python -m bench.serve recommend``: the recommend service for a benchmark, served by uvicorn.

As ``paperwire run recommend`` serves it (settings from the environment, same uvicorn options),
with two changes: the text encoder is a local stand-in (``tests/fakes.py``) instead of a request
to embed over the stream, and the digest scheduler does not run. The benchmark users' interest
vectors are cached in their rows, so the stand-in is never called on the measured path.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from bench import corpus


def main() -> None:
    from paperwire_recommend.app import create_app
    from paperwire_recommend.config import Settings
    from tests.fakes import HashingEncoder, LocalTextEncoder

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    if sys.argv[1:] != ["recommend"]:
        raise SystemExit("usage: python -m bench.serve recommend")
    settings = Settings()
    app = create_app(
        settings, encoder=LocalTextEncoder(HashingEncoder(corpus.DIM)), run_scheduler=False
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, lifespan="on", log_level="warning"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
