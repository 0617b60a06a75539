"""Smoke test of benchmarks/datasets_table.py in --quick mode (one small slice)."""

import importlib.util
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_script():
  spec = importlib.util.spec_from_file_location("datasets_table", ROOT / "benchmarks" / "datasets_table.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def test_quick_digits_row_with_baselines(tmp_path):
  script = _load_script()
  assert script.main(["--quick", "--datasets", "digits", "--couplings", "affine",
                      "--out", str(tmp_path)]) == 0
  saved = json.loads((tmp_path / "datasets.json").read_text())
  models = [r["model"] for r in saved["results"]]
  assert models == ["realnvp-affine", "gaussian-full-cov", "maf"]
  for r in saved["results"]:
    assert 0.0 < r["bits_per_dim"] < 10.0 and r["gap"] is None
  maf, flow = saved["results"][2], saved["results"][0]
  assert abs(maf["params"] - flow["params"]) < 0.2 * flow["params"]
  table = (tmp_path / "datasets.md").read_text()
  assert "| digits | maf |" in table


def test_quick_moons_reports_oracle_gap(tmp_path):
  script = _load_script()
  script.main(["--quick", "--datasets", "moons", "--couplings", "spline", "--out", str(tmp_path)])
  (record,) = json.loads((tmp_path / "datasets.json").read_text())["results"]
  assert record["gap"] == record["test_nll"] - record["oracle_nll"]
  assert record["config"]["coupling"] == "spline"
