"""Admin for sessions: searchable, filterable, with snapshots and history inline."""

import json
import uuid

from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from sessions.exceptions import SessionNotFound
from sessions.lifecycle import session_end, session_expiry_set, sessions_purge_expired
from sessions.models import CodeSnapshot, DocumentOperation, HistoryEntry, InterviewSession, Participant
from sessions.selectors import presence_cutoff, session_export
from sessions.services import session_update


def _code_block(code: str | None):
    if code is None:
        return "-"
    return format_html(
        '<pre style="font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre; '
        'max-height: 30em; overflow: auto; padding: .5em; background: var(--darkened-bg)">{}</pre>',
        code,
    )


class ExpiredFilter(admin.SimpleListFilter):
    title = "expired"
    parameter_name = "expired"

    def lookups(self, request, model_admin):
        return [("yes", "Expired"), ("no", "Live")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "no":
            return queryset.filter(expires_at__gt=now)
        return queryset


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class SnapshotInline(ReadOnlyInline):
    model = CodeSnapshot
    fields = ["created_at", "language", "version", "code_view"]
    readonly_fields = fields

    @admin.display(description="code")
    def code_view(self, obj):
        return _code_block(obj.code)


class HistoryInline(ReadOnlyInline):
    model = HistoryEntry
    fields = ["timestamp", "user_id", "change_type", "description", "count"]
    readonly_fields = fields


class UuidSearchMixin:
    """Search by a whole UUID (with or without dashes) as well as by the usual fields."""

    uuid_search_field = "id"

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            wanted = uuid.UUID(search_term.strip())
        except ValueError:
            return results, may_have_duplicates
        return results | queryset.filter(Q(**{self.uuid_search_field: wanted})), may_have_duplicates


@admin.register(InterviewSession)
class InterviewSessionAdmin(UuidSearchMixin, admin.ModelAdmin):
    list_display = ["id", "title", "language", "version", "created_at", "expires_at", "is_live"]
    list_filter = ["language", ExpiredFilter]
    search_fields = ["title"]
    date_hierarchy = "created_at"
    readonly_fields = ["id", "created_at", "code_modified_at", "version", "code_view"]
    fields = ["id", "title", "language", "expires_at", "created_at", "code_modified_at", "version", "code_view"]
    inlines = [SnapshotInline, HistoryInline]
    actions = ["export_sessions", "purge_expired_sessions", "end_sessions"]

    @admin.action(description="Export selected sessions", permissions=["view"])
    def export_sessions(self, request, queryset):
        exports = [
            session_export(session_id=pk) for pk in queryset.order_by("created_at", "id").values_list("id", flat=True)
        ]
        response = HttpResponse(
            json.dumps(exports, ensure_ascii=False, indent=2), content_type="application/json; charset=utf-8"
        )
        name = f"sessions-{timezone.now():%Y%m%d-%H%M%S}.json"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    # The admin runs an action only with a selection; this one ignores it on purpose.
    @admin.action(description="Purge expired sessions (all of them, whatever is selected)", permissions=["delete"])
    def purge_expired_sessions(self, request, queryset):
        report = sessions_purge_expired()
        self.message_user(request, report.describe(), messages.SUCCESS if report.sessions else messages.INFO)

    @admin.action(description="End selected live sessions", permissions=["change"])
    def end_sessions(self, request, queryset):
        ended = skipped = 0
        for pk in queryset.values_list("id", flat=True):
            try:
                session_end(session_id=pk)
                ended += 1
            except SessionNotFound:
                skipped += 1  # expired already (or deleted meanwhile)
        message = f"Ended {ended} live session{'s' if ended != 1 else ''}."
        if skipped:
            message += f" {skipped} {'was' if skipped == 1 else 'were'} not live."
        self.message_user(request, message, messages.SUCCESS if ended else messages.WARNING)

    def save_model(self, request, obj, form, change):
        """Edits go through the services, as the API's do: a language change is recorded and
        announced, a title change recorded, and a session this makes expired is ended."""
        if not change:
            super().save_model(request, obj, form, change)
            return
        changed = set(form.changed_data)
        revived = "expires_at" in changed and not obj.is_expired
        if revived:
            # Revive first, so that a language or title changed with it is a live session's change.
            session_expiry_set(session_id=obj.pk, expires_at=obj.expires_at)
        if changed & {"language", "title"}:
            try:
                session_update(
                    session_id=obj.pk,
                    language=obj.language if "language" in changed else None,
                    title=obj.title,
                    set_title="title" in changed,
                )
            except SessionNotFound:
                # Expired: it answers 404 and nobody is connected, so there is nobody to tell.
                InterviewSession.objects.filter(pk=obj.pk).update(
                    **{name: getattr(obj, name) for name in changed & {"language", "title"}}
                )
        if "expires_at" in changed and not revived:
            session_expiry_set(session_id=obj.pk, expires_at=obj.expires_at)

    @admin.display(boolean=True, description="live")
    def is_live(self, obj):
        return not obj.is_expired

    @admin.display(description="current code")
    def code_view(self, obj):
        return _code_block(obj.code)


@admin.register(CodeSnapshot)
class CodeSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "language", "version", "created_at"]
    list_filter = ["language"]
    search_fields = ["session__title"]
    readonly_fields = ["id", "session", "language", "version", "created_at", "code_view"]
    exclude = ["code"]

    @admin.display(description="code")
    def code_view(self, obj):
        return _code_block(obj.code)

    def has_add_permission(self, request):
        return False


@admin.register(HistoryEntry)
class HistoryEntryAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "session", "user_id", "change_type", "description", "count"]
    list_filter = ["change_type"]
    search_fields = ["user_id", "description", "session__title"]
    readonly_fields = ["session", "timestamp", "user_id", "change_type", "description", "count", "code_view"]
    exclude = ["code_snapshot"]

    @admin.display(description="code snapshot")
    def code_view(self, obj):
        return _code_block(obj.code_snapshot)

    def has_add_permission(self, request):
        return False


@admin.register(DocumentOperation)
class DocumentOperationAdmin(admin.ModelAdmin):
    list_display = ["session", "version", "user_id", "seq", "created_at"]
    search_fields = ["user_id"]
    readonly_fields = ["session", "version", "user_id", "seq", "changes", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["name", "user_id", "role", "session", "joined_at", "live_connections"]
    search_fields = ["name", "user_id"]
    # The role is what the participant's latest join proved (the owner token), not an editable fact.
    readonly_fields = ["session", "user_id", "role", "joined_at", "cursor_position", "live_connections"]

    @admin.display(description="live connections")
    def live_connections(self, obj):
        return obj.connections.filter(seen_at__gt=presence_cutoff()).count()
