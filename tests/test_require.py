"""CI (`.ci/run`, VQVP_REQUIRE=containers,browser) fails where a real part is missing; locally it skips."""
import pytest

from tests.conftest import import_or_skip, skip_unless_required


@pytest.mark.parametrize("part", ["containers", "browser"])
def test_required_parts_fail_instead_of_skipping(part, monkeypatch):
    monkeypatch.setenv("VQVP_REQUIRE", "containers,browser")
    with pytest.raises(pytest.fail.Exception, match=f"requires the {part} tests, but: no podman"):
        skip_unless_required(part, "no podman")
    with pytest.raises(pytest.fail.Exception):
        import_or_skip("no_such_module_xyz", part, "missing")


def test_other_parts_and_local_runs_skip(monkeypatch):
    monkeypatch.setenv("VQVP_REQUIRE", "browser")
    with pytest.raises(pytest.skip.Exception):
        skip_unless_required("containers", "no podman")
    monkeypatch.delenv("VQVP_REQUIRE")
    with pytest.raises(pytest.skip.Exception):
        skip_unless_required("browser", "no chromium")


def test_ci_requires_them():
    from pathlib import Path

    text = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "VQVP_REQUIRE=containers,browser" in text and "make test" in text
