"""scripts/diagnose_priors.py in a workspace after `sample`: both reports run and say what they measure."""
import importlib.util
from pathlib import Path

import pytest

from stages import sample
from tests.stages.conftest import args


def _script():
    path = Path(__file__).parents[2] / "scripts/diagnose_priors.py"
    spec = importlib.util.spec_from_file_location("diagnose_priors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_diagnose_priors_reports(models_workdir, capsys):
    assert sample.main(args("sample.count=3", "sample.videos=0")) == 0
    script = _script()
    assert script.main(["--draws", "1", "--temperature", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "temperature 1.0, 1 draws per clip" in out and "centroid error px" in out
    for system in ("model", "true_top", "one_step", "copied_bottom", "reconstruction", "copy_last_frame"):
        assert system in out
    (line,) = [x for x in out.splitlines() if x.startswith("the decoder's use of the top level")]
    psnrs = [float(w.rstrip(",;")) for w in line.split("top codes", 1)[1].split(";")[0].split()
             if w.rstrip(",;").replace(".", "", 1).isdigit()]
    assert len(psnrs) == 3 and all(0 < v < 100 for v in psnrs)        # own, another clip's, one code
    assert "a top code kept from slice to slice" in line and line.endswith("%")
    assert script.main(["--one-slice", "2", "--draws", "1"]) == 0
    out = capsys.readouterr().out
    assert "bottom slice 2 drawn given the true past" in out and "frames 5-6" in out
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("all")]
    assert len(lines) == 1 and int(lines[0][1]) > 0 and lines[0][2].endswith("%")
    assert "area of an object over the truth's: median" in out
