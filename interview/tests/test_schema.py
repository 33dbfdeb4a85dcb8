"""The OpenAPI document: builds without warnings and describes the contract."""

import pytest
from django.core.management import call_command


def test_schema_validates_without_warnings(tmp_path):
    """`spectacular --validate --fail-on-warn` passes."""
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "openapi: 3" in out.read_text()


@pytest.mark.django_db
class TestSchemaContent:
    def test_every_operation_has_tags_and_error_responses(self, client):
        """Each operation is tagged and documents the error shape."""
        schema = client.get("/openapi.json").json()
        for path, item in schema["paths"].items():
            for method, op in item.items():
                assert op.get("tags"), (method, path)
                assert "400" in op["responses"], (method, path)
                assert "404" in op["responses"], (method, path)

    def test_participant_role_is_an_enum(self, client):
        """A participant's `role` is required and is the enum candidate | interviewer."""
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        participant = schemas["Participant"]
        assert "role" in participant["required"]
        role = participant["properties"]["role"]
        ref = role.get("$ref") or role["allOf"][0]["$ref"]
        assert ref == "#/components/schemas/RoleEnum"
        assert schemas["RoleEnum"]["enum"] == ["candidate", "interviewer"]

    def test_requests_have_examples(self, client):
        """Request bodies of session create and code save carry examples."""
        schema = client.get("/openapi.json").json()
        create = schema["paths"]["/api/sessions"]["post"]["requestBody"]["content"]["application/json"]
        assert create.get("examples")
        save = schema["paths"]["/api/sessions/{id}/code"]["post"]["requestBody"]["content"]["application/json"]
        assert save.get("examples")

    def test_the_replay_endpoints_are_described_with_examples(self, client):
        """The timeline, notes and `code?version` are in the schema, with examples and their errors."""
        paths = client.get("/openapi.json").json()["paths"]
        timeline = paths["/api/sessions/{id}/timeline"]["get"]
        assert {p["name"] for p in timeline["parameters"]} >= {"id", "after", "afterEvent", "limit"}
        assert timeline["responses"]["200"]["content"]["application/json"].get("examples")
        notes = paths["/api/sessions/{id}/notes"]
        assert {"401", "403"} <= set(notes["get"]["responses"]) and {"401", "403"} <= set(notes["put"]["responses"])
        assert notes["put"]["requestBody"]["content"]["application/json"].get("examples")
        assert notes["get"]["responses"]["200"]["content"]["application/json"].get("examples")
        code = paths["/api/sessions/{id}/code"]["get"]
        assert "version" in {p["name"] for p in code["parameters"]}
        assert "410" in code["responses"]
