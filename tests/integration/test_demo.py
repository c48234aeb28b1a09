"""`make demo` in CI: the whole tutorial flow, quick mode (fewer rounds and trials)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_tutorial_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"DEMO_QUICK": "1", "DEMO_OUTPUT": str(tmp_path / "demo-output")})
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    metrics = json.loads((tmp_path / "demo-output" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.85  # quick mode trains 30 rounds; `make demo` trains 100
    assert metrics["leftovers"] == []
    for path in metrics["plots"] + metrics["reports"]:
        assert Path(path).stat().st_size > 1000, path
    assert any(r.endswith("profiler-report.html") for r in metrics["reports"])
    assert set(metrics["timings_s"]) >= {"3a. train", "3b. tune (Bayesian)", "4. deploy and predict", "7. clean up"}
