"""The server side of a session's document: a batch of changes applied under the session's
lock (`locked_document`), the cache of recent operations it rebases over (`operation_cache`),
the rebase work a round may spend (`work_budget`) and the edit bursts it records in history
(`edit_history`). `sessions.services.code_changes_apply` is the entry point; the text and
operational-transformation logic itself is the pure `sessions.document`."""
