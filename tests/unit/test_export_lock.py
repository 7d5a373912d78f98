"""Replicas started together on one model cache folder export the same model at once: onnxruntime's quantiser
writes and removes a fixed-name file beside its input, so two exports into one folder must not overlap, across
processes as well as threads (embedding/onnx_backend.export_lock)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from modelcache_svc.embedding.onnx_backend import export_lock

_HOLDER = """
import sys, time
from pathlib import Path
from modelcache_svc.embedding.onnx_backend import export_lock
folder, marks = Path(sys.argv[1]), Path(sys.argv[2])
with export_lock(folder):
    marks.write_text("in\\n")
    time.sleep(1.5)
    with marks.open("a") as f:
        f.write("out\\n")
"""


def test_a_second_process_waits_for_the_first_export_into_the_same_folder(tmp_path: Path) -> None:
    folder, marks = tmp_path / "model-abc", tmp_path / "marks"
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), str(marks)])
    try:
        deadline = time.monotonic() + 60
        while not marks.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.02)
        with export_lock(folder):
            assert marks.read_text().splitlines() == ["in", "out"]  # the holder was done before we got in
    finally:
        assert child.wait(timeout=60) == 0


def test_another_folder_is_not_held_up(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "one"), str(marks)])
    try:
        deadline = time.monotonic() + 60
        while not marks.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.02)
        with export_lock(tmp_path / "two"):
            assert marks.read_text().splitlines() == ["in"]  # the holder is still inside its own folder
    finally:
        assert child.wait(timeout=60) == 0
