"""``export-gateway verify EXPORT_ID``: re-read an export's archived copy and compare its
sha256 with the one recorded when it was made.

An operator's command: it reads the gateway's own settings from the environment (Redis and
the archive, ``GATEWAY_REDIS_URL``, ``GATEWAY_ARCHIVE_URL`` and the ``AWS_*`` variables), not
an API key, and changes nothing. It prints the finding as JSON. Exit codes: 0 the copy matches,
1 it differs, is missing, cannot be read or the export has no copy, 2 archiving is off.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.archive.service import ArchiveVerifier
from app.config import get_settings
from app.exports.store import ExportStore
from app.platform.connections import connect_redis
from app.wiring.runtime import archive_copies


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "verify",
        help="re-read an export's archived copy and compare its sha256",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    command.add_argument("export_id", metavar="EXPORT_ID", help="the export id (exp_...)")
    command.set_defaults(handler=verify)


def verify(args: argparse.Namespace) -> int:
    settings = get_settings()
    copies = archive_copies(settings)
    if copies is None:
        print("export-gateway: archiving is off (GATEWAY_ARCHIVE_URL is not set)", file=sys.stderr)
        return 2

    async def check() -> int:
        redis = connect_redis(settings)
        try:
            store = ExportStore(redis, record_ttl=settings.record_retention_seconds)
            found = await ArchiveVerifier(store=store, copies=copies).check_export(args.export_id)
        finally:
            await redis.aclose()
        print(found.model_dump_json(indent=2))
        return 0 if found.ok else 1

    return asyncio.run(check())
