"""Device choice for training: auto picks a GPU when there is one, a missing device is an error."""

import pytest
import torch

from dermdx.devices import autocast, batch_to, describe_device, model_device, resolve_device
from dermdx.training import fit


def _no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_is_the_cpu_without_a_gpu_and_the_gpu_with_one(monkeypatch) -> None:
    _no_gpu(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    _gpus(monkeypatch, 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(" CUDA:0 ") == torch.device("cuda:0")


def test_cpu_is_always_available(monkeypatch) -> None:
    _no_gpu(monkeypatch)
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_the_machine_lacks_is_an_error_not_a_silent_cpu_run(monkeypatch) -> None:
    _no_gpu(monkeypatch)
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        resolve_device("cuda")
    _gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["gpu0", "banana", ""])
def test_unknown_device_names_are_named_in_the_error(name) -> None:
    with pytest.raises(ValueError, match="train.device"):
        resolve_device(name)


def test_batch_to_moves_tensors_and_keeps_other_values() -> None:
    batch = {"image": torch.ones(2, 3, 4, 4), "label": torch.tensor([0, 1]), "path": ["a.jpg", "b.jpg"]}
    assert batch_to(batch, torch.device("cpu")) is batch
    moved = batch_to(batch, torch.device("meta"))
    assert moved["image"].device.type == "meta" and moved["label"].device.type == "meta"
    assert moved["path"] == ["a.jpg", "b.jpg"]
    assert batch["image"].device.type == "cpu"  # the caller's batch is not changed


def test_model_device_follows_the_parameters() -> None:
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


def test_autocast_is_off_on_the_cpu_even_when_asked_for() -> None:
    with autocast(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_fit_stops_before_writing_anything_when_the_device_is_missing(tiny_run_config, monkeypatch, tmp_path) -> None:
    _no_gpu(monkeypatch)
    tiny_run_config.train.device = "cuda"
    tiny_run_config.output_dir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        fit(tiny_run_config)
    assert not (tmp_path / "run").exists()


def test_describe_device_names_the_gpu_or_the_cpu_threads(monkeypatch) -> None:
    assert describe_device(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"Test GPU {index}")
    assert describe_device(torch.device("cuda:1")) == "cuda:1 (Test GPU 1)"


def test_fit_on_an_explicit_cpu_trains_and_says_where(tiny_run_config, monkeypatch, capsys) -> None:
    _no_gpu(monkeypatch)
    tiny_run_config.train.device = "cpu"
    summary = fit(tiny_run_config)
    assert "training on cpu (" in capsys.readouterr().out
    assert len(summary["history"]) == tiny_run_config.train.epochs
    assert all(record["loss"] > 0 for record in summary["history"])
