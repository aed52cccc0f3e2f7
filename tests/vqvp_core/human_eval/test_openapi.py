"""The rating server's OpenAPI document is valid, documents every error it answers, and a bounded
schemathesis run against it finds no server error and no answer the document does not describe."""
from __future__ import annotations

import hypothesis
import openapi_spec_validator
import pytest
import schemathesis
from schemathesis.generation import GenerationMode

from tests.vqvp_core.human_eval.conftest import Rater, TestClient
from vqvp_core.human_eval.server import create_app


def test_the_document_is_valid_openapi(client):
    doc = client.get("/openapi.json").json()
    openapi_spec_validator.validate(doc)
    post = doc["paths"]["/api/judgments"]["post"]
    assert set(post["responses"]) >= {"201", "400", "401", "403", "404", "408", "409", "413", "415", "422", "429"}
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"pair_id", "choice", "elapsed_ms"} and body["additionalProperties"] is False
    assert post["security"] and doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert doc["paths"]["/api/next"]["get"]["security"]
    assert "/" not in doc["paths"]  # the page is HTML, not API


@pytest.fixture(scope="module")
def fuzzed(package, tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz") / "judgments.sqlite"
    app = create_app(package, db_path=db, rate_per_s=1e6, burst=1e6)
    rater = Rater(TestClient(app), db)
    return app, rater


def test_schemathesis_finds_nothing(fuzzed):
    """Up to 60 valid and 60 invalid generated requests per operation, each sent with a valid token and without one:
    no 5xx, and every answer's status, content type and body as the document says."""
    app, rater = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /api/judgments", "GET /api/next"}
    sent = []
    takes_input = {"POST /api/judgments", "GET /api/next"}  # what the others take cannot be made invalid
    for operation, mode in [(op, m) for op in operations for m in GenerationMode
                            if m is GenerationMode.POSITIVE or op.label in takes_input]:
        @hypothesis.settings(max_examples=60, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck))
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            case.call_and_validate(headers=rater.auth)
            case.call_and_validate(headers={"Authorization": ""})
            sent.append(2)

        run()
    assert sum(sent) > 200  # the run really sent requests
