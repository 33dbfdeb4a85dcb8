"""`manage.py export_session ID`: a session and everything it holds as JSON."""

import json

from django.core.management.base import BaseCommand, CommandError

from sessions.exceptions import SessionNotFound
from sessions.selectors import session_export


class Command(BaseCommand):
    help = (
        "Export a session (metadata, code, snapshots, history, operation log, checkpoints, participants) as JSON;"
        " the interviewer's private notes only with --with-notes."
    )

    def add_arguments(self, parser):
        parser.add_argument("session_id", metavar="ID", help="The session's id (a UUID).")
        parser.add_argument("--output", "-o", metavar="FILE", help="Write to FILE (UTF-8) instead of stdout.")
        parser.add_argument(
            "--with-notes", action="store_true", help="Include the interviewer's private notes (left out otherwise)."
        )

    def handle(self, *args, session_id, output=None, with_notes=False, **options):
        try:
            data = session_export(session_id=session_id, with_notes=with_notes)
        except SessionNotFound:
            raise CommandError(f"No session with id {session_id!r}.") from None
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        if output is None or output == "-":
            self.stdout.write(text, ending="")
            return
        try:
            with open(output, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror or exc}") from exc
        self.stdout.write(f"Exported session {data['session']['id']} to {output}.")
