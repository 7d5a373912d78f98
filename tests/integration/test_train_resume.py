"""A training run stopped by SIGKILL and resumed ends with the weights of one that ran through (both trainers),
and a resume with other arguments is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from modelcache_svc.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT.parent / "shared" / "train" / "qqp_train_en.jsonl"
STEPS = 8


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TRAIN.is_file():
        pytest.skip("../shared/train is not beside this checkout")
    rows = TRAIN.read_text(encoding="utf-8").splitlines()[:160]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _args(kind: list[str], pairs: Path, out: Path, run: Path) -> list[str]:
    # Four pairs a batch and a holdout of 16 leave 36 steps an epoch: 8 steps stay inside the first epoch...
    # 1.5 epochs would cross one; --epochs keeps the schedule planned for the whole, --max-steps stops at 8.
    return ["train", *kind, "--base", "packaged:all-MiniLM-L6-v2", "--pairs", str(pairs), "--out", str(out),
            "--batch-size", "4", "--max-seq-length", "32", "--max-steps", str(STEPS), "--holdout", "16",
            "--threads", "1", "--seed", "3", "--checkpoint-every", "1", "--checkpoint-minutes", "0",
            "--run-dir", str(run), "--json"]


def _kill_after_a_checkpoint(args: list[str], run: Path, at_least: int) -> None:
    """Start the run in a child process, SIGKILL it once a checkpoint of step >= at_least exists."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", "import sys; from modelcache_svc.cli import main; "
                              "sys.exit(main(sys.argv[1:]))", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            progress = run / "progress.json"
            checkpoint = run / "checkpoint.pt"
            if checkpoint.is_file() and child.poll() is None:
                import torch

                try:
                    step = torch.load(str(checkpoint), weights_only=False)["step"]
                except Exception:  # being replaced this instant
                    step = 0
                if step >= at_least:
                    child.send_signal(signal.SIGKILL)
                    child.wait(30)
                    return
            if child.poll() is not None:
                pytest.fail(f"the run ended before it was killed: {child.stderr.read().decode()[-2000:]} "
                            f"{progress.read_text() if progress.is_file() else ''}")
            time.sleep(0.05)
        pytest.fail("no checkpoint in time")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


@pytest.mark.parametrize("kind", [["--cross-encoder"], [],
                                  ["--cross-encoder", "--mine-negatives", "1", "--mine-floor", "0.5"]],
                         ids=["cross-encoder", "bi-encoder", "cross-encoder-mined"])
def test_sigkill_then_resume_gives_the_weights_of_a_run_that_ran_through(
        kind: list[str], pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    through = tmp_path / "through"
    assert main(_args(kind, pairs_file, through, tmp_path / "run-through")) == 0
    capsys.readouterr()

    stopped, run = tmp_path / "stopped", tmp_path / "run-stopped"
    _kill_after_a_checkpoint(_args(kind, pairs_file, stopped, run), run, at_least=3)
    assert (run / "checkpoint.pt").is_file() and not (stopped / "model.safetensors").exists()
    assert main([*_args(kind, pairs_file, stopped, run), "--resume"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 3 <= record["resumed_from_step"] < STEPS and record["stopped_by"] == "steps"
    assert not (run / "checkpoint.pt").exists()
    if "--mine-negatives" in kind:  # the resumed run read the mined pairs back, the same ones
        assert record["mined_negatives"]["pairs"] > 0
        assert (run / "mined_negatives.jsonl").read_bytes() == (tmp_path / "run-through" / "mined_negatives.jsonl").read_bytes()

    a, b = load_file(str(through / "model.safetensors")), load_file(str(stopped / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, f"tensors differ after the resume: {different[:5]}"


def test_a_resume_with_other_arguments_is_refused(pairs_file: Path, tmp_path: Path) -> None:
    out, run = tmp_path / "out", tmp_path / "run"
    args = _args(["--cross-encoder"], pairs_file, out, run)
    args[args.index("--max-steps") + 1] = "20"
    args.extend(["--time-budget", "0.001"])  # one step, then a checkpoint and a stop
    assert main(args) == 0
    assert (run / "checkpoint.pt").is_file()
    changed = [*args, "--resume"]
    changed[changed.index("--seed") + 1] = "4"
    with pytest.raises(SystemExit, match="another run configuration"):
        main(changed)
