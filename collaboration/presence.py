"""Presence: who is connected to which session, kept in the database so processes agree.

The collaboration app owns presence: while a session lives, `sessions.models.Participant`
(a user in a session, with its name and stored cursor) and `ParticipantConnection` (one
row per open connection) are written only here. The sessions app reads them
(`sessions.selectors`), drops them with their session and restores participants with an
imported one. This module holds those writes, the registry of the connections open in
this process, and the heartbeat that keeps exactly those alive.
"""

import asyncio
import logging
import os
import socket
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from sessions.exceptions import OwnerTokenMismatch, SessionNotFound
from sessions.models import InterviewSession, Participant, ParticipantConnection, Role
from sessions.selectors import parse_session_id, presence_cutoff
from sessions.services import owner_token_matches
from sessions.store import db_datetime, session_pk, table_name

logger = logging.getLogger(__name__)

# This process's name on the connections it owns; its heartbeat keeps them alive.
SERVER_ID = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class PresenceChange:
    session_id: uuid.UUID
    user_id: str
    name: str
    changed: bool  # the user's first connection opened, or last one closed
    participant_count: int
    role: str | None = None  # what a join made the participant (None for a leave)


@dataclass(frozen=True)
class Join:
    """A connection joins its session as `user_id` (or joins again, renamed): as the
    interviewer with the session's owner token, else as a candidate."""

    session_id: uuid.UUID
    user_id: str
    name: str
    channel_name: str
    owner_token: str | None = field(default=None, repr=False)  # a secret: never in a log


@dataclass(frozen=True)
class Leave:
    """A connection closed."""

    channel_name: str


def participant_join(
    *, session_id, user_id: str, name: str, channel_name: str, owner_token: str | None = None
) -> PresenceChange:
    """Record a connection as `user_id`; `changed` when the user was not present before.

    A join again (this connection or another of the same user) only updates the name and
    the role."""
    (result,) = presence_apply(
        changes=[Join(parse_session_id(session_id), user_id, name, channel_name, owner_token=owner_token)]
    )
    if isinstance(result, Exception):
        raise result
    return result


def presence_apply(
    *, changes: list[Join | Leave]
) -> list[PresenceChange | SessionNotFound | OwnerTokenMismatch | None]:
    """Joins and leaves, in order, in one transaction: for each its PresenceChange, a
    SessionNotFound for a join to a session that is not live, an OwnerTokenMismatch for
    a join whose owner token is not the session's (it changed nothing), None for a leave
    of a connection that never joined. Plain SQL but for a participant's first join on a
    database that cannot return an inserted id: a fleet of clients joins at once, and
    the ORM's building of seven queries per join was most of its cost.

    Each session's count of present users is read once, before its first change here,
    and then follows the changes (all of them inside this transaction).

    Every join sets the participant's role: interviewer with the session's owner token,
    candidate without one (so a join without it makes an interviewer a candidate again).
    The token's hash comes with the read that finds the session live: a token costs no
    query of its own."""
    with transaction.atomic(), connection.cursor() as cursor:
        batch = _PresenceBatch(cursor)
        return [batch.join(change) if isinstance(change, Join) else batch.leave(change) for change in changes]


class _PresenceBatch:
    """The statements of `presence_apply`, with what they learnt along the way."""

    def __init__(self, cursor):
        self.cursor = cursor
        self.sessions = table_name(InterviewSession)
        self.people = table_name(Participant)
        self.links = table_name(ParticipantConnection)
        self.now = timezone.now()
        self.at, self.cutoff = db_datetime(self.now), db_datetime(presence_cutoff())
        self.owners: dict = {}  # session key -> its owner token's hash, for the sessions found live here
        self.counts: dict = {}  # session key -> users present, as this batch left it

    def count(self, key) -> int:
        if key not in self.counts:
            self.cursor.execute(
                f"SELECT COUNT(*) FROM {self.people} p WHERE p.session_id = %s AND EXISTS"
                f" (SELECT 1 FROM {self.links} c WHERE c.participant_id = p.id AND c.seen_at > %s)",
                [key, self.cutoff],
            )
            self.counts[key] = self.cursor.fetchone()[0]
        return self.counts[key]

    def join(self, join: Join) -> PresenceChange | SessionNotFound:
        cursor, people, links, at = self.cursor, self.people, self.links, self.at
        sid, user_id, name = join.session_id, join.user_id, join.name
        key = session_pk(sid)
        if key not in self.owners:
            cursor.execute(f"SELECT owner_token_hash FROM {self.sessions} WHERE id = %s AND expires_at > %s", [key, at])
            row = cursor.fetchone()
            if row is None:
                return SessionNotFound()
            self.owners[key] = row[0]
        role = Role.CANDIDATE.value
        if join.owner_token is not None:
            # Before any write: a refused join changes nothing.
            if not owner_token_matches(owner_token_hash=self.owners[key], token=join.owner_token):
                return OwnerTokenMismatch()
            role = Role.INTERVIEWER.value
        count = self.count(key)
        # This connection counts too: joining twice on one socket is not a new arrival.
        cursor.execute(
            f"SELECT p.id, EXISTS (SELECT 1 FROM {links} c WHERE c.participant_id = p.id AND c.seen_at > %s)"
            f" FROM {people} p WHERE p.session_id = %s AND p.user_id = %s",
            [self.cutoff, key, user_id],
        )
        row = cursor.fetchone()
        if row is None:
            participant_id, created = _participant_insert(cursor, people, key, sid, user_id, name, role, self.now)
            was_present = False
        else:
            (participant_id, was_present), created = row, False
        updated = 0
        if not created:
            if was_present:
                cursor.execute(f"UPDATE {people} SET name = %s, role = %s WHERE id = %s", [name, role, participant_id])
            else:
                cursor.execute(
                    f"UPDATE {people} SET name = %s, role = %s, joined_at = %s WHERE id = %s",
                    [name, role, at, participant_id],
                )
            # A connection joins as one user, so never before as a participant just
            # created; joining again refreshes its row.
            cursor.execute(
                f"UPDATE {links} SET participant_id = %s, server_id = %s, seen_at = %s WHERE channel_name = %s",
                [participant_id, SERVER_ID, at, join.channel_name],
            )
            updated = cursor.rowcount
        if updated == 0:
            cursor.execute(
                f"INSERT INTO {links} (participant_id, channel_name, server_id, opened_at, seen_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                [participant_id, join.channel_name, SERVER_ID, at, at],
            )
        if not was_present:
            count = self.counts[key] = count + 1
        return PresenceChange(sid, user_id, name, not was_present, count, role)

    def leave(self, leave: Leave) -> PresenceChange | None:
        cursor, links = self.cursor, self.links
        cursor.execute(
            f"SELECT c.id, c.seen_at > %s, p.id, p.session_id, p.user_id, p.name FROM {links} c"
            f" JOIN {self.people} p ON p.id = c.participant_id WHERE c.channel_name = %s",
            [self.cutoff, leave.channel_name],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        link_id, link_live, participant_id, key, user_id, name = row
        count = self.count(key)
        cursor.execute(f"DELETE FROM {links} WHERE id = %s", [link_id])
        cursor.execute(
            f"SELECT 1 FROM {links} WHERE participant_id = %s AND seen_at > %s LIMIT 1", [participant_id, self.cutoff]
        )
        still_here = cursor.fetchone() is not None
        if link_live and not still_here:
            count = self.counts[key] = count - 1
        return PresenceChange(_session_uuid(key), user_id, name, not still_here, count)


def _session_uuid(key) -> uuid.UUID:
    """A session id as read by plain SQL (a UUID, or its hex where the database has no UUID type)."""
    return key if isinstance(key, uuid.UUID) else uuid.UUID(str(key))


def _participant_insert(cursor, people: str, key, sid, user_id: str, name: str, role: str, now) -> tuple[int, bool]:
    """A new participant row: (its id, True), or (the id, False) of the one another process
    inserted first."""
    if not connection.features.can_return_columns_from_insert:
        participant, created = Participant.objects.get_or_create(
            session_id=sid, user_id=user_id, defaults={"name": name, "role": role, "joined_at": now}
        )
        return participant.pk, created
    try:
        with transaction.atomic():
            cursor.execute(
                f"INSERT INTO {people} (session_id, user_id, name, role, joined_at, cursor_position)"
                " VALUES (%s, %s, %s, %s, %s, NULL) RETURNING id",
                [key, user_id, name, role, db_datetime(now)],
            )
            return cursor.fetchone()[0], True
    except IntegrityError:
        cursor.execute(f"SELECT id FROM {people} WHERE session_id = %s AND user_id = %s", [key, user_id])
        return cursor.fetchone()[0], False


def participant_cursor_set(*, session_id, user_id: str, cursor: dict) -> None:
    Participant.objects.filter(session_id=session_id, user_id=user_id).update(cursor_position=cursor)


def connections_heartbeat(*, channel_names: Iterable[str], server_id: str = SERVER_ID) -> int:
    """Keep alive the connections this process knows are open, and drop expired rows.

    Only the names the process holds open are refreshed, not every row carrying its
    server id: a row whose connection ended without its cleanup (a path nobody thought
    of) then expires after PRESENCE_TTL_SECONDS like a crashed process's rows.
    """
    now = timezone.now()
    names = sorted(channel_names)
    refreshed = 0
    for start in range(0, len(names), 500):  # under every database's parameter limit
        chunk = names[start : start + 500]
        refreshed += ParticipantConnection.objects.filter(server_id=server_id, channel_name__in=chunk).update(
            seen_at=now
        )
    ParticipantConnection.objects.filter(seen_at__lte=presence_cutoff()).delete()
    return refreshed


_heartbeats: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()

# Channel names of the connections open in this process: a consumer adds its own when it
# starts and removes it when it ends, whatever ended it. Only these are kept alive.
_open: set[str] = set()


def connection_opened(channel_name: str) -> None:
    _open.add(channel_name)


def connection_closed(channel_name: str) -> None:
    _open.discard(channel_name)


def open_connections() -> frozenset[str]:
    return frozenset(_open)


async def _beat():
    while True:
        try:
            await database_sync_to_async(connections_heartbeat)(channel_names=open_connections())
        except Exception:
            logger.exception("Presence heartbeat failed")
        await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)


def ensure_heartbeat() -> None:
    """Start the heartbeat of the running event loop once; it also clears dead processes' rows."""
    loop = asyncio.get_running_loop()
    task = _heartbeats.get(loop)
    if task is None or task.done():
        _heartbeats[loop] = loop.create_task(_beat())
