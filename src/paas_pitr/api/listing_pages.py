"""Encoded pages of the backups listing, kept until what they were encoded from changes.

Building a page (50 projected Backups, the WAL archive and the window) as models and encoding
it as JSON took more of a listing request than anything else once the projections and the
window were kept (:mod:`paas_pitr.archive_cache`); the pages change a few times a day. A page
is kept under the key of the archive state it was built from
(:meth:`paas_pitr.backups.BackupService.keyed_archive_state`: the Backups' revision or
``resourceVersion``s, the Cluster and ObjectStore as read, the newest archived instant, the
earlier incarnations' ranges) and the page and page size asked for; a state that depends on
the time has no key, and its pages are encoded on every request. The caller's access to
the addon is checked before a page is looked up, on every request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from datetime import datetime

from fastapi import Request, Response
from pydantic import TypeAdapter

from paas_pitr.api.contract import Envelope
from paas_pitr.backups import BackupListing, BackupService
from paas_pitr.engines.base import Manifest

# What FastAPI encodes a route's answer with, given the route's response_model: the same
# adapter gives the same bytes whether a page is kept or built anew.
LISTING_ENVELOPE: TypeAdapter[Envelope[BackupListing]] = TypeAdapter(Envelope[BackupListing])

# Bytes of encoded pages kept in all: a page of 50 Backups is ~25 KiB, of 500 ~250 KiB.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class ListingPages:
    """Encoded listing pages of one process, the least recently used dropped past
    ``max_bytes`` (``0``: none kept)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._bytes = 0
        # (cluster name, page, per page) -> (state key, body): a cluster's pages of an
        # older state are replaced as they are asked for again, or age out.
        self._pages: OrderedDict[tuple[str, int, int], tuple[Hashable, bytes]] = OrderedDict()

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    async def body(
        self,
        backups: BackupService,
        cluster: Manifest,
        *,
        page: int,
        per_page: int,
        now: datetime | None = None,
    ) -> bytes:
        """The JSON envelope of page ``page`` of ``cluster``'s listing at ``now`` (default:
        the clock), as the route answers it (``{"data": BackupListing}``)."""
        state, key = await backups.keyed_archive_state(cluster, now=now)
        slot = (cluster["metadata"]["name"], page, per_page)
        if key is not None:
            kept = self._pages.get(slot)
            if kept is not None and kept[0] == key:
                self._pages.move_to_end(slot)
                return kept[1]
        body = LISTING_ENVELOPE.dump_json(
            Envelope(data=backups.page_of(state, page=page, per_page=per_page)), by_alias=True
        )
        if key is not None:
            self._keep(slot, key, body)
        return body

    async def response(
        self, backups: BackupService, cluster: Manifest, *, page: int, per_page: int
    ) -> Response:
        body = await self.body(backups, cluster, page=page, per_page=per_page)
        return Response(content=body, media_type="application/json")

    def _keep(self, slot: tuple[str, int, int], key: Hashable, body: bytes) -> None:
        old = self._pages.pop(slot, None)
        if old is not None:
            self._bytes -= len(old[1])
        if len(body) > self.max_bytes:
            return
        self._pages[slot] = (key, body)
        self._bytes += len(body)
        while self._bytes > self.max_bytes:
            _, (_, dropped) = self._pages.popitem(last=False)
            self._bytes -= len(dropped)


def listing_pages(request: Request) -> ListingPages:
    """The app's pages (one per app: keys are only unique within one engine)."""
    pages: ListingPages = request.app.state.listing_pages
    return pages
