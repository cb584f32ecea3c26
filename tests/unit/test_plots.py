"""Plots are written with matplotlib's object API: no pyplot, no global backend switch."""

from __future__ import annotations

import json
import subprocess
import sys


def test_curves_png_without_pyplot_or_backend_change(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"kind": "train", "step": s, "loss": 1.0 / s, "forces": 0.5 / s} for s in (1, 2, 3)]
    records.append({"kind": "val", "step": 3, "metrics": {"a": {"forces_mae_meV_A": 10.0,
                                                                 "energy_mae_meV_atom": 2.0}}})
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    code = f"""
import sys, matplotlib
matplotlib.use("pdf")  # the caller's choice must survive
from atomgfm.telemetry.curves import plot_curves
path = plot_curves({str(log)!r})
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
print(path)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    png = tmp_path / "curves.png"
    assert out.stdout.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
