"""The shipped model: present with a matching hash, or a clear 'none ships yet'."""

import shutil

import pytest

import dermdx.default_model as default_model
from dermdx.checkpoint import file_sha256


def test_a_shipped_model_matches_its_recorded_hash_and_size_limit() -> None:
    if not default_model.DEFAULT_RECORD.is_file():
        with pytest.raises(FileNotFoundError, match="no default model ships"):
            default_model.default_model_path()
        pytest.skip("no default model ships in this version")
    record = default_model.default_model_record()
    path = default_model.default_model_path()
    assert file_sha256(path) == record["sha256"]
    assert path.stat().st_size <= 25 * 1024 * 1024
    assert record["classes"] == ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]


def test_a_replaced_default_model_is_refused(tmp_path, isic_model_file, monkeypatch) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copyfile(isic_model_file, weights / "default.safetensors")
    (weights / "default.json").write_text('{"sha256": "%s"}' % ("0" * 64))
    monkeypatch.setattr(default_model, "DEFAULT_MODEL", weights / "default.safetensors")
    monkeypatch.setattr(default_model, "DEFAULT_RECORD", weights / "default.json")
    with pytest.raises(ValueError, match="damaged or replaced"):
        default_model.default_model_path()
    (weights / "default.json").write_text('{"sha256": "%s"}' % file_sha256(isic_model_file))
    assert default_model.default_model_path() == weights / "default.safetensors"
