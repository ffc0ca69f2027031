"""``--quiet`` hides every progress bar: merc's own, and those of the libraries it drives (transformers'
"Loading weights", huggingface_hub's), without leaving them switched off for a later command in the process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from merc.cli import no_progress_bars

DEMO_RUN = Path(__file__).resolve().parents[1] / "merc" / "assets" / "demo_run"


def test_no_progress_bars_switches_the_libraries_off_and_back_on():
    hf_logging = pytest.importorskip("transformers.utils.logging")
    from huggingface_hub.utils import are_progress_bars_disabled
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    with no_progress_bars(True):
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    with no_progress_bars(False):
        assert hf_logging.is_progress_bar_enabled()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["top", "sub"])
def test_quiet_predict_prints_no_bar(tmp_path, where):
    """A real text encoder load (the demo run's MiniLM) in a fresh process: nothing but the table."""
    pytest.importorskip("sentence_transformers")
    talk = tmp_path / "t.txt"
    talk.write_text("Ann: I am so happy today\nBob: that is terrible news\n")
    args = ["predict", str(DEMO_RUN), str(talk), "--no-plots"]
    args = ["--quiet", *args] if where == "top" else [*args, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(DEMO_RUN.parents[2])}
    res = subprocess.run([sys.executable, "-m", "merc.cli", *args], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert "Ann" in res.stdout
    assert res.stderr == "", res.stderr
