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
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from sessions.exceptions import SessionNotFound
from sessions.models import InterviewSession, Participant, ParticipantConnection
from sessions.selectors import parse_session_id, participant_active_count, presence_cutoff
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


def _live_connections(participant: Participant):
    return participant.connections.filter(seen_at__gt=presence_cutoff())


def participant_join(*, session_id, user_id: str, name: str, channel_name: str) -> PresenceChange:
    """Record a connection as `user_id`; `changed` when the user was not present before.

    A join again (this connection or another of the same user) only updates the name.
    Plain SQL but for a participant's first join: a fleet of clients joins at once, and the
    ORM's building of seven queries was most of a join's cost.
    """
    sid = parse_session_id(session_id)
    key = session_pk(sid)
    now = timezone.now()
    at, cutoff = db_datetime(now), db_datetime(presence_cutoff())
    sessions, people, links = table_name(InterviewSession), table_name(Participant), table_name(ParticipantConnection)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {sessions} WHERE id = %s AND expires_at > %s", [key, at])
        if cursor.fetchone() is None:
            raise SessionNotFound()
        cursor.execute(f"SELECT id FROM {people} WHERE session_id = %s AND user_id = %s", [key, user_id])
        row = cursor.fetchone()
        if row is None:
            participant_id, created = _participant_insert(cursor, people, key, sid, user_id, name, now)
        else:
            participant_id, created = row[0], False
        # This connection counts too: joining twice on one socket is not a new arrival.
        was_present = False
        if not created:
            cursor.execute(
                f"SELECT 1 FROM {links} WHERE participant_id = %s AND seen_at > %s LIMIT 1", [participant_id, cutoff]
            )
            was_present = cursor.fetchone() is not None
            if was_present:
                cursor.execute(f"UPDATE {people} SET name = %s WHERE id = %s", [name, participant_id])
            else:
                cursor.execute(
                    f"UPDATE {people} SET name = %s, joined_at = %s WHERE id = %s", [name, at, participant_id]
                )
        # A connection joins once (as one user); joining again refreshes its row.
        cursor.execute(
            f"UPDATE {links} SET participant_id = %s, server_id = %s, seen_at = %s WHERE channel_name = %s",
            [participant_id, SERVER_ID, at, channel_name],
        )
        if cursor.rowcount == 0:
            cursor.execute(
                f"INSERT INTO {links} (participant_id, channel_name, server_id, opened_at, seen_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                [participant_id, channel_name, SERVER_ID, at, at],
            )
        cursor.execute(
            f"SELECT COUNT(*) FROM {people} p WHERE p.session_id = %s AND EXISTS"
            f" (SELECT 1 FROM {links} c WHERE c.participant_id = p.id AND c.seen_at > %s)",
            [key, cutoff],
        )
        (count,) = cursor.fetchone()
    return PresenceChange(sid, user_id, name, not was_present, count)


def _participant_insert(cursor, people: str, key, sid, user_id: str, name: str, now) -> tuple[int, bool]:
    """A new participant row: (its id, True), or (the id, False) of the one another process
    inserted first."""
    if not connection.features.can_return_columns_from_insert:
        participant, created = Participant.objects.get_or_create(
            session_id=sid, user_id=user_id, defaults={"name": name, "joined_at": now}
        )
        return participant.pk, created
    try:
        with transaction.atomic():
            cursor.execute(
                f"INSERT INTO {people} (session_id, user_id, name, joined_at, cursor_position)"
                " VALUES (%s, %s, %s, %s, NULL) RETURNING id",
                [key, user_id, name, db_datetime(now)],
            )
            return cursor.fetchone()[0], True
    except IntegrityError:
        cursor.execute(f"SELECT id FROM {people} WHERE session_id = %s AND user_id = %s", [key, user_id])
        return cursor.fetchone()[0], False


def participant_leave(*, channel_name: str) -> PresenceChange | None:
    """Forget a closed connection; `changed` when it was the user's last one."""
    with transaction.atomic():
        connection = (
            ParticipantConnection.objects.select_related("participant__session")
            .filter(channel_name=channel_name)
            .first()
        )
        if connection is None:
            return None
        participant = connection.participant
        connection.delete()
        still_here = _live_connections(participant).exists()
        count = participant_active_count(session=participant.session)
    return PresenceChange(participant.session_id, participant.user_id, participant.name, not still_here, count)


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
