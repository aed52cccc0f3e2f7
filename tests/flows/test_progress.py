"""The flow log shows a stage's progress bar while it runs, not only when its line ends."""
import io
import subprocess
import sys

from flows.pipeline import progress_lines

BAR = "import sys, time\nfor i in range(1, 6):\n    sys.stderr.write(f'\\rstep {i}/5'); sys.stderr.flush(); time.sleep(0.3)\nprint('\\ndone', flush=True)"


def test_a_redrawn_bar_is_logged_while_it_runs():
    proc = subprocess.Popen([sys.executable, "-c", BAR], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = list(progress_lines(proc.stdout, every_s=0.2))
    proc.wait()
    bars = [line for line in lines if line.startswith("step")]
    assert len(bars) >= 3, lines  # intermediate states, not only the last
    assert bars[-1] == "step 5/5" and lines[-1] == "done"
    assert bars == sorted(bars)


def test_lines_and_redraws_in_one_chunk():
    stream = io.BufferedReader(io.BytesIO(b"a\r b\r c\nplain line\n\n tail without newline"))
    assert list(progress_lines(stream, every_s=60)) == ["c", "plain line", "tail without newline"]
