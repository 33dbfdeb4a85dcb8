"""`manage.py import_session FILE`: recreate a session from `export_session`'s JSON."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from sessions.lifecycle import SessionImportError, session_import


class Command(BaseCommand):
    help = "Import a session exported by export_session, with its ids and timestamps; prints its id."

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE", help="The export (UTF-8 JSON); '-' reads stdin.")
        parser.add_argument(
            "--replace", action="store_true", help="Replace a session with the same id (else that is an error)."
        )

    def handle(self, *args, file, replace=False, **options):
        name = "stdin" if file == "-" else file
        try:
            if file == "-":
                text = sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(f"{name} is not UTF-8 text: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{name} is not valid JSON: {exc}") from exc
        try:
            session = session_import(data=data, replace=replace)
        except SessionImportError as exc:
            raise CommandError(f"Cannot import {name}: {exc}") from exc
        self.stdout.write(str(session.id))
