"""benchmarks/bench_step_modes.py on CPU: eager vs the compiled cell step on the same runs (equal objectives, the
compiled step really called), the evaluation phase and its projection, the training stream's window lengths
counted by hand, and the refusals of bad input (CUDA graphs on a CPU among them)."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_step_modes as bench  # noqa: E402


def test_window_lengths_counted_by_hand():
    from nasbench_ptb.builder.presets import get

    p = dataclasses.replace(get("smoke"), bptt=10, variable_bptt=False, batch_size=4)
    # 384 tokens in 4 columns: 96 rows; windows start at 0, 10, ..., 90 and the last one stops at row 95
    assert bench.window_lengths(p, 384) == {"windows": 10, "distinct_lengths": 2, "most_common": 10,
                                            "most_common_share": 0.9}
    assert bench.window_lengths(p, 404)["distinct_lengths"] == 1  # 101 rows: ten whole windows
    awd = bench.window_lengths(dataclasses.replace(p, variable_bptt=True), 40_000)
    assert 3 <= awd["distinct_lengths"] <= 26 and awd["most_common_share"] < 0.5  # lengths 5 .. bptt + 20


def test_eager_and_compiled_cell_step_agree(tmp_path, ptb_path, capsys):
    out = tmp_path / "modes.json"
    assert bench.main(["--preset", "smoke", "--space", "2node", "--slots", "4", "--steps", "2", "--amp", "off",
                       "--data", str(ptb_path), "--device", "cpu", "--modes", "eager,compile",
                       "--compile-backend", "aot_eager", "--eval-tokens", "800", "--eval-batches", "4,8",
                       "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    eager, compiled = r["train"]["eager"], r["train"]["compile"]
    assert r["slots"] == 4 and eager["finite"] and compiled["finite"]
    assert eager["compiled_step_calls"] == 0 and compiled["compiled_step_calls"] == 3 * 10  # 3 windows of bptt 10
    assert compiled["max_rel_diff_to_eager"] < 1e-6 and compiled["agrees"]
    assert r["fastest"] in ("eager", "compile")
    assert set(r["eval"]) == {"4", "8"} and r["eval"]["8"]["compile"]["max_rel_diff_to_eager"] < 1e-6
    # the projection is the reported rates applied to the smoke preset's sizes (2000 train, 400 valid tokens)
    pr, p = r["projected"], bench.presets.get("smoke")
    assert pr["valid_tokens"] == 400
    assert pr["train_s_per_checkpoint"] == pytest.approx(4 * 2000 * p.epochs / p.checkpoints / eager["arch_tokens_s"])
    # the preset's eval batch is 4, not 8
    assert pr["validation_s"] == pytest.approx(4 * 400 / r["eval"]["4"]["eager"]["arch_tokens_s"])
    assert "fastest that agrees with eager" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--modes", "graph"], "CUDA graphs need a CUDA device; this one is cpu"),
    (["--modes", "eager,fast"], "unknown mode 'fast'"),
    (["--set", "hidden"], "--set 'hidden': expected KEY=VALUE"),
    (["--set", "hiden=3"], "unknown preset field 'hiden'"),
    (["--compile-backend", "aot_eager", "--compile-mode", "max-autotune"], "inductor backend only"),
])
def test_bad_input_is_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--device", "cpu", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_failing_mode_is_recorded_and_the_others_kept(tmp_path, ptb_path, monkeypatch):
    def refuse(self, *args):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(bench.CompiledCell, "step", refuse)
    out = tmp_path / "modes.json"
    assert bench.main(["--preset", "smoke", "--slots", "2", "--steps", "1", "--amp", "off", "--data", str(ptb_path),
                       "--device", "cpu", "--compile-backend", "aot_eager", "--eval-tokens", "800",
                       "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    error = "RuntimeError: operation not permitted when stream is capturing"
    assert r["train"]["compile"] == {"error": error} and r["eval"]["4"]["compile"] == {"error": error}
    assert r["train"]["eager"]["arch_tokens_s"] > 0 and r["eval"]["4"]["eager"]["arch_tokens_s"] > 0
    assert r["fastest"] == "eager" and "projected" in r
