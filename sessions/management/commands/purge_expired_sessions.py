"""`manage.py purge_expired_sessions`: delete expired sessions and all they hold (safe from cron)."""

import argparse

from django.core.management.base import BaseCommand, CommandError

from sessions.lifecycle import sessions_purge_expired


def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {value!r}") from None
    if not hours >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError("must be 0 or more hours")
    return hours


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


class Command(BaseCommand):
    help = (
        "Delete sessions that have expired, with their snapshots, history, operation log and "
        "participants, in small transactions (safe to run from cron while the server runs)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be deleted.")
        parser.add_argument(
            "--older-than",
            type=_hours,
            default=0.0,
            metavar="HOURS",
            help="Only sessions that expired at least this many hours ago (default 0: all expired ones).",
        )
        parser.add_argument(
            "--batch-size",
            type=_positive,
            default=200,
            help="Sessions deleted per transaction (default 200).",
        )

    def handle(self, *args, dry_run=False, older_than=0.0, batch_size=200, **options):
        try:
            report = sessions_purge_expired(older_than_hours=older_than, dry_run=dry_run, batch_size=batch_size)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(report.describe())
