"""Smoke test of benchmarks/tune_one.py: a few steps, options reach fit and the flow."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tune_one_prints_a_gap_for_the_options_given(capsys):
  spec = importlib.util.spec_from_file_location("tune_one", ROOT / "benchmarks" / "tune_one.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  options = {"seed": 1, "steps": 30, "ema_decay": None, "learning_rate": 1e-3,
             "flow": {"num_couplings": 2, "hidden_units": [8]}}
  assert module.main([json.dumps(options)]) == 0
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line["seed"] == 1
  assert line["options"] == {"ema_decay": None, "learning_rate": 1e-3}
  assert line["flow"]["num_couplings"] == 2 and line["flow"]["hidden_units"] == [8]
  assert isinstance(line["gap"], float) and line["gap"] > 0  # 30 steps: far from the oracle
  assert len(line["val_gaps"]) == 1
