"""The data of an interview: the session and its document, snapshots, history, operations."""

import uuid

from django.db import models
from django.utils import timezone


class Language(models.TextChoices):
    JAVASCRIPT = "javascript", "JavaScript"
    PYTHON = "python", "Python"
    JAVA = "java", "Java"
    CPP = "cpp", "C++"


# The longest title, participant name and user id: the columns' widths, and the one definition
# of each limit (the REST serializers, the import and the WebSocket messages read them here).
TITLE_MAX_LENGTH = 200
NAME_MAX_LENGTH = 100
USER_ID_MAX_LENGTH = 128

STARTER_CODE = {
    Language.JAVASCRIPT: "// Write your JavaScript solution here\n",
    Language.PYTHON: "# Write your Python solution here\n",
    Language.JAVA: "// Write your Java solution here\n",
    Language.CPP: "// Write your C++ solution here\n",
}


class InterviewSession(models.Model):
    """One interview: a shared document with a version that rises by one per change."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=TITLE_MAX_LENGTH, null=True, blank=True)
    language = models.CharField(max_length=16, choices=Language.choices, default=Language.JAVASCRIPT)
    code = models.TextField(blank=True, default="")
    version = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    code_modified_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    # SHA-256 of the owner token returned once at creation; the token itself is never kept.
    owner_token_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    # Roughly the bytes its operation log holds, kept up to date as operations are added, so
    # the log can be trimmed at SESSION_MAX_LOG_BYTES without measuring it on every change.
    log_bytes = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "interview session"

    def __str__(self):
        return f"{self.title or 'Untitled'} ({self.id})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class CodeSnapshot(models.Model):
    """Code saved explicitly through the REST API."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(InterviewSession, on_delete=models.CASCADE, related_name="snapshots")
    code = models.TextField(blank=True)
    language = models.CharField(max_length=16, choices=Language.choices)
    version = models.PositiveBigIntegerField(help_text="Document version this snapshot made current.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        # The newest snapshots of a session without reading their code (SESSION_MAX_SNAPSHOTS).
        indexes = [models.Index(fields=["session", "-created_at", "-id"], name="snapshot_session_newest")]

    def __str__(self):
        return f"Snapshot {self.id} of {self.session_id}"


class ChangeType(models.TextChoices):
    EDIT = "edit", "Edit"
    LANGUAGE_CHANGE = "language-change", "Language change"
    SNAPSHOT = "snapshot", "Snapshot"
    EXECUTION = "execution", "Execution"
    TITLE_CHANGE = "title-change", "Title change"


class HistoryEntry(models.Model):
    """A readable line of what happened in a session (edits are coalesced per burst).

    An `edit` entry's timestamp is its burst's latest change, so history reads in
    timestamp order; any other entry of the session ends the bursts before it.
    """

    session = models.ForeignKey(InterviewSession, on_delete=models.CASCADE, related_name="history")
    timestamp = models.DateTimeField(default=timezone.now)
    user_id = models.CharField(max_length=USER_ID_MAX_LENGTH, null=True, blank=True)
    change_type = models.CharField(max_length=32, choices=ChangeType.choices)
    description = models.CharField(max_length=500)
    code_snapshot = models.TextField(null=True, blank=True)
    count = models.PositiveIntegerField(default=1, help_text="Changes coalesced into this entry.")
    # The document's version when it was recorded (null on entries older than the timeline).
    version = models.PositiveBigIntegerField(null=True, blank=True)
    # What the timeline shows of it beyond the description: a language change's languages, a
    # save's snapshot id, a run's language, status, exit code and time (small, fixed keys).
    details = models.JSONField(null=True, blank=True)
    # A run's output, capped at HISTORY_OUTPUT_BYTES each; cleared with its code (SESSION_MAX_HISTORY_CODES).
    stdout = models.TextField(null=True, blank=True)
    stderr = models.TextField(null=True, blank=True)

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [
            models.Index(fields=["session", "-id"]),
            models.Index(fields=["session", "-timestamp", "-id"], name="history_session_newest"),
            # Only the entries that still carry code: at most SESSION_MAX_HISTORY_CODES + 1 a
            # session, so finding the ones past the bound reads neither code nor other entries.
            models.Index(
                fields=["session", "-id"], condition=models.Q(code_snapshot__isnull=False), name="history_session_codes"
            ),
            # The timeline's events in order, without the edit entries (its changes come from the log).
            models.Index(
                fields=["session", "version", "id"],
                condition=~models.Q(change_type="edit"),
                name="history_session_timeline",
            ),
        ]
        verbose_name_plural = "history entries"

    def __str__(self):
        return f"{self.change_type} by {self.user_id or '-'} at {self.timestamp:%Y-%m-%d %H:%M:%S}"


class DocumentOperation(models.Model):
    """The operation log: every accepted change of a document, in version order."""

    session = models.ForeignKey(InterviewSession, on_delete=models.CASCADE, related_name="operations")
    version = models.PositiveBigIntegerField(help_text="The version this change produced.")
    user_id = models.CharField(max_length=USER_ID_MAX_LENGTH, null=True, blank=True)
    seq = models.BigIntegerField(null=True, blank=True)
    # Hash of the request (base version and changes as sent) that made this change, so
    # that only the same request with the same (user_id, seq) counts as a resend.
    digest = models.CharField(max_length=32, blank=True, default="")
    changes = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["version"]
        constraints = [
            models.UniqueConstraint(fields=["session", "version"], name="operation_version_unique"),
        ]
        indexes = [models.Index(fields=["session", "user_id", "seq"])]

    def __str__(self):
        return f"v{self.version} of {self.session_id}"


class DocumentCheckpoint(models.Model):
    """The document's text at a version: one every DOCUMENT_CHECKPOINT_INTERVAL versions (and
    at the first version a session's log holds), so any version is a checkpoint plus at most
    that many operations. Trimmed with the operation log (SESSION_MAX_LOG_BYTES)."""

    session = models.ForeignKey(InterviewSession, on_delete=models.CASCADE, related_name="checkpoints")
    version = models.PositiveBigIntegerField()
    code = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["version"]
        constraints = [
            models.UniqueConstraint(fields=["session", "version"], name="checkpoint_version_unique"),
        ]

    def __str__(self):
        return f"checkpoint v{self.version} of {self.session_id}"


class SessionNotes(models.Model):
    """The interviewer's private notes on a session: read and written with the owner token only."""

    session = models.OneToOneField(InterviewSession, on_delete=models.CASCADE, primary_key=True, related_name="notes")
    text = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "session notes"

    def __str__(self):
        return f"Notes on {self.session_id}"


class Role(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    INTERVIEWER = "interviewer", "Interviewer"


class Participant(models.Model):
    """A user who joined a session; present while one of their connections is alive.

    Written by collaboration.presence (join, leave, cursor), and by a session import."""

    session = models.ForeignKey(InterviewSession, on_delete=models.CASCADE, related_name="participants")
    user_id = models.CharField(max_length=USER_ID_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    joined_at = models.DateTimeField(default=timezone.now)
    cursor_position = models.JSONField(null=True, blank=True)
    # "interviewer" when the latest join carried the session's owner token.
    # The database's default too: presence inserts participants in plain SQL.
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CANDIDATE, db_default=Role.CANDIDATE)

    class Meta:
        ordering = ["joined_at"]
        constraints = [
            models.UniqueConstraint(fields=["session", "user_id"], name="participant_user_unique"),
        ]

    def __str__(self):
        return f"{self.name} ({self.user_id})"


class ParticipantConnection(models.Model):
    """One open WebSocket of a participant, kept alive by its server process's heartbeat.

    Presence lives in the database, not in a process, so several server processes agree
    on who is connected; a crashed process's rows stop being refreshed and expire.
    """

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="connections")
    channel_name = models.CharField(max_length=200, unique=True)
    server_id = models.CharField(max_length=64, db_index=True)
    opened_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self):
        return self.channel_name
