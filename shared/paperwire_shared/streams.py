"""Stream and consumer-group names, and the bootstrap step that creates the groups.

Groups are created at id ``0`` before any worker reads: FastStream 0.7.8 creates them at ``$``, which
skips everything published before a worker first starts (see STACK-NOTES.md).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

PAPERS_INGESTED = "paperwire.papers.ingested"
PAPERS_EMBEDDED = "paperwire.papers.embedded"
DIGESTS_DUE = "paperwire.digests.due"
FEEDBACK_RECORDED = "paperwire.feedback.recorded"
# What became of each digest, reported by notify to recommend's delivery log.
DIGESTS_SENT = "paperwire.digests.sent"
DIGESTS_FAILED = "paperwire.digests.failed"
TEXTS_TO_ENCODE = "paperwire.texts.to-encode"
# Entries a consumer could not decode or handle, each with the original body and the cause.
DEAD_LETTERS = "paperwire.dead-letters"

EMBED_GROUP = "embed"
RECOMMEND_GROUP = "recommend"
NOTIFY_GROUP = "notify"

# Which group reads which stream: the whole topology in one place.
GROUPS: dict[str, tuple[str, ...]] = {
    PAPERS_INGESTED: (EMBED_GROUP,),
    TEXTS_TO_ENCODE: (EMBED_GROUP,),
    PAPERS_EMBEDDED: (RECOMMEND_GROUP,),
    FEEDBACK_RECORDED: (RECOMMEND_GROUP,),
    DIGESTS_DUE: (NOTIFY_GROUP,),
    DIGESTS_SENT: (RECOMMEND_GROUP,),
    DIGESTS_FAILED: (RECOMMEND_GROUP,),
}

# One read takes at most this many entries, so one consumer never swallows the whole backlog.
MAX_RECORDS = 64


async def ensure_groups(redis_url: str) -> None:
    """Create every stream and consumer group at id 0; safe to run any number of times."""
    client = aioredis.from_url(redis_url)
    try:
        for stream, groups in GROUPS.items():
            for group in groups:
                try:
                    await client.xgroup_create(stream, group, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
    finally:
        await client.aclose()
