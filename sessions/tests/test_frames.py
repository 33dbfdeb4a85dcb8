"""The server's frames keep the contract's shapes."""

import json

from sessions import frames


class TestFrames:
    def test_every_frame_has_the_envelope(self):
        """type, timestamp (UTC, Z), userId and data, as the contract says."""
        frame = frames.pong()
        assert set(frame) == {"type", "timestamp", "userId", "data"}
        assert frame["timestamp"].endswith("Z")
        assert (frame["type"], frame["userId"], frame["data"]) == ("pong", None, {})

    def test_resync_required_carries_the_document(self):
        """RESYNC_REQUIRED holds the current code as currentCode, and the version."""
        frame = frames.resync_required(code="abc", version=7, message="why")
        assert frame["type"] == "error"
        assert frame["data"] == {"code": "RESYNC_REQUIRED", "message": "why", "currentCode": "abc", "version": 7}

    def test_code_ack_has_seq_only_when_sent(self):
        """A change sent without seq is acknowledged with its version alone."""
        assert frames.code_ack(user_id="u", version=3, seq=None)["data"] == {"version": 3}
        assert frames.code_ack(user_id="u", version=3, seq=9)["data"] == {"version": 3, "seq": 9}

    def test_encode_is_compact_json_keeping_characters(self):
        """One frame, one compact JSON text; non-ASCII text is sent as is."""
        text = frames.encode(frames.invalid_message("é"))
        assert " " not in text.replace("é", "")
        assert "é" in text
        assert json.loads(text)["data"] == {"code": "INVALID_MESSAGE", "message": "é"}
