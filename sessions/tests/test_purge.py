"""Purging expired sessions: `sessions_purge_expired` and the `purge_expired_sessions` command."""

import pytest
from django.core.management import CommandError

from sessions.lifecycle import PurgeReport, sessions_purge_expired
from sessions.models import InterviewSession
from sessions.tests.factories import populate
from sessions.tests.helpers import all_rows, rows, run, total


@pytest.mark.django_db
class TestPurgeExpired:
    def test_deletes_expired_sessions_with_everything_they_hold(self):
        """Expired sessions go with their snapshots, history, operations, participants and connections."""
        old = [populate(expired_hours_ago=1), populate(expired_hours_ago=30)]
        live = populate()
        expected = total(*old)
        live_rows = rows(live.id)
        assert all(expected[key] > 0 for key in expected)

        report = sessions_purge_expired()

        assert report == PurgeReport(**expected)
        for session in old:
            assert set(rows(session.id).values()) == {0}
        assert rows(live.id) == live_rows

    def test_dry_run_deletes_nothing(self):
        """A dry run counts what it would delete and deletes nothing."""
        old = [populate(expired_hours_ago=2), populate(expired_hours_ago=3)]
        populate()
        before = all_rows()

        report = sessions_purge_expired(dry_run=True)

        assert report == PurgeReport(**total(*old), dry_run=True)
        assert all_rows() == before

    def test_older_than_is_respected(self):
        """Only sessions expired at least `older_than_hours` ago are deleted."""
        recent = populate(expired_hours_ago=1)
        old = populate(expired_hours_ago=48)
        recent_rows = rows(recent.id)

        report = sessions_purge_expired(older_than_hours=24)

        assert report.sessions == 1
        assert rows(old.id)["sessions"] == 0
        assert rows(recent.id) == recent_rows

    def test_small_batches_still_delete_everything(self):
        """With a batch of one session per transaction, every expired session is still deleted."""
        old = [populate(expired_hours_ago=h) for h in (1, 2, 3)]
        expected = total(*old)

        report = sessions_purge_expired(batch_size=1)

        assert report == PurgeReport(**expected)
        assert not InterviewSession.objects.exists()

    def test_nothing_expired_deletes_nothing(self):
        """With only live sessions, a purge reports nothing and leaves them alone."""
        populate()
        before = all_rows()
        report = sessions_purge_expired()
        assert report == PurgeReport()
        assert report.describe() == "No expired sessions to delete."
        assert all_rows() == before

    @pytest.mark.parametrize("kwargs", [{"older_than_hours": -1}, {"batch_size": 0}])
    def test_bad_arguments_are_refused(self, kwargs):
        """A negative age or an empty batch is a ValueError."""
        with pytest.raises(ValueError, match="must"):
            sessions_purge_expired(**kwargs)


@pytest.mark.django_db
class TestPurgeCommand:
    def test_prints_what_it_deleted(self):
        """The command deletes the expired sessions and says how much of each kind went."""
        old = [populate(expired_hours_ago=1), populate(expired_hours_ago=5)]
        live = populate()
        c = total(*old)

        out = run("purge_expired_sessions")

        assert out.strip() == (
            f"Deleted 2 expired sessions ({c['snapshots']} snapshots, {c['history_entries']} history entries, "
            f"{c['operations']} operations, {c['participants']} participants, {c['connections']} connections)."
        )
        assert InterviewSession.objects.get() == live

    def test_dry_run_says_what_it_would_delete(self):
        """--dry-run prints "Would delete ..." and deletes nothing."""
        populate(expired_hours_ago=1)
        before = all_rows()
        out = run("purge_expired_sessions", "--dry-run")
        assert out.startswith("Would delete 1 expired session (1 snapshot, ")
        assert all_rows() == before

    def test_older_than_option(self):
        """--older-than HOURS keeps sessions that expired more recently."""
        recent = populate(expired_hours_ago=1)
        populate(expired_hours_ago=10)
        out = run("purge_expired_sessions", "--older-than", "2.5")
        assert out.startswith("Deleted 1 expired session ")
        assert list(InterviewSession.objects.all()) == [recent]

    def test_nothing_to_do(self):
        """With nothing expired it says so."""
        populate()
        assert run("purge_expired_sessions").strip() == "No expired sessions to delete."

    @pytest.mark.parametrize("value", ["-1", "soon", "nan"])
    def test_bad_older_than_is_a_command_error(self, value):
        """A negative or non-numeric --older-than is refused before anything is deleted."""
        populate(expired_hours_ago=1)
        with pytest.raises(CommandError, match="older-than"):
            run("purge_expired_sessions", "--older-than", value)
        assert InterviewSession.objects.count() == 1
