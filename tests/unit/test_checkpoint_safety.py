"""Checkpoints are data: read with weights_only=True, every bad file is a one-line error naming
it, and a state weights_only could not read back is refused when it is saved."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from atomgfm.models.checkpoint import (
    FORMAT,
    CheckpointError,
    read_checkpoint,
    save_checkpoint,
)


def _state(**extra):
    return {"model": {"w": torch.arange(3.0)}, "config": {"model": {}, "train": {}},
            "datasets": [{"name": "a", "id": 0, "states": [(0, 1)]}], "elements": [1, 8],
            **extra}


class _OpenPayload:
    """Unpickling it calls open(marker, "w"): the file appears if the pickle runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _SystemPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line_error(path, match):
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: not an atomgfm checkpoint ("), msg
    assert match in msg, msg
    assert isinstance(info.value, ValueError)
    return msg


def test_round_trip_of_every_allowed_type(tmp_path):
    extra = {"od": OrderedDict(a=torch.ones(2)), "tup": (1, 2.5, "x", None, True),
             "set": {1, 2}, "big": 2**100, "bytes": b"ab", "cplx": 1 + 2j,
             "size": torch.Size([2, 3]), "dtype": torch.float64, "device": torch.device("cpu"),
             "param": torch.nn.Parameter(torch.zeros(2)), "nested": [{"k": [(0, 1)]}],
             "optim": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1).state_dict(),
             "module": torch.nn.Linear(2, 2).state_dict()}
    save_checkpoint(tmp_path / "c.pt", _state(**extra))
    st = read_checkpoint(tmp_path / "c.pt")
    assert st["format"] == FORMAT
    assert st["tup"] == (1, 2.5, "x", None, True) and st["set"] == {1, 2}
    assert st["big"] == 2**100 and st["size"] == torch.Size([2, 3])
    assert st["dtype"] is torch.float64 and st["datasets"][0]["states"] == [(0, 1)]
    torch.testing.assert_close(st["model"]["w"], torch.arange(3.0))
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("payload", [_OpenPayload, _SystemPayload])
def test_a_checkpoint_that_would_run_code_is_refused_and_does_not_run(tmp_path, payload):
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(payload(live)))  # the payload is real: plain unpickling runs it
    assert live.exists()

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, **_state(), "x": payload(marker)}, path)
    msg = _one_line_error(path, "it asks to import ")
    assert ("io.open" if payload is _OpenPayload else f"{os.name == 'nt' and 'nt' or 'posix'}"
            ".system") in msg
    assert "refused: a checkpoint holds only tensors and plain data" in msg
    assert not marker.exists()


def test_a_plain_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"format": FORMAT, "x": _OpenPayload(marker)}, protocol=2))
    _one_line_error(path, "(a bare pickle, not a torch zip file)")
    assert not marker.exists()
    legacy = tmp_path / "legacy.pt"  # torch's old pickle-stream format is not ours either
    torch.save({"format": FORMAT, **_state()}, legacy, _use_new_zipfile_serialization=False)
    _one_line_error(legacy, "(a bare pickle, not a torch zip file)")


def test_numpy_inside_a_checkpoint_is_refused_on_read(tmp_path):
    """Only the first version's RNG record (one uint32 array under "rng") is admitted and
    dropped; NumPy anywhere else, or of another type, is refused."""
    path = tmp_path / "np.pt"
    torch.save({"format": FORMAT, **_state(), "weights": np.zeros(3)}, path)
    _one_line_error(path, "it asks to import numpy.")
    both = tmp_path / "np2.pt"
    torch.save({"format": FORMAT, **_state(), "rng": np.random.get_state(),
                "extra": np.arange(3, dtype=np.uint32)}, both)
    _one_line_error(both, "it asks to import numpy.")
    rng_only = tmp_path / "np3.pt"
    torch.save({"format": FORMAT, **_state(), "rng": np.random.get_state()}, rng_only)
    assert "rng" not in read_checkpoint(rng_only)


def test_a_checkpoint_of_the_first_version_still_predicts_the_same(tmp_path):
    """tests/data/foundation/best.pt was written by atomgfm at 7fd7104 (tiny PaiNN, fp64, with
    NumPy RNG state and no graph statistics); expected.json holds what that version predicted."""
    import json
    from pathlib import Path

    from atomgfm.data.structure import Structure
    from atomgfm.inference.predictor import Predictor

    data = Path(__file__).resolve().parents[1] / "data" / "foundation"
    expected = json.loads((data / "expected.json").read_text())
    pred = Predictor.from_checkpoint(data / "best.pt", device="cpu")
    s = Structure(expected["numbers"], expected["positions"], expected["cell"], [True] * 3)
    r = pred.predict([s], head="bulk")[0]
    assert r["energy"] == pytest.approx(expected["energy"], abs=1e-10)
    np.testing.assert_allclose(r["forces"], expected["forces"], atol=1e-10)


def test_truncated_and_empty_files(tmp_path):
    save_checkpoint(tmp_path / "good.pt", _state())
    data = (tmp_path / "good.pt").read_bytes()
    for n in [*range(4, len(data), len(data) // 16), len(data) - 1]:  # a copy cut anywhere
        (tmp_path / "cut.pt").write_bytes(data[:n])
        _one_line_error(tmp_path / "cut.pt", "(truncated or corrupt file)")
    (tmp_path / "empty.pt").write_bytes(b"")
    _one_line_error(tmp_path / "empty.pt", "(empty file)")


def test_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    _one_line_error(tmp_path / "notes.txt", "(not a torch file)")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    _one_line_error(tmp_path / "tensor.pt", "(holds a Tensor, not a checkpoint dict)")
    torch.save({"model": {}}, tmp_path / "dict.pt")
    _one_line_error(tmp_path / "dict.pt", "(a dict without the 'format' key)")
    torch.save({"format": "other-2"}, tmp_path / "other.pt")
    _one_line_error(tmp_path / "other.pt", f"(format 'other-2', expected {FORMAT!r})")
    torch.save({"format": FORMAT, "model": {}}, tmp_path / "partial.pt")
    _one_line_error(tmp_path / "partial.pt", "(lacks key(s) ['config', 'datasets', 'elements'])")
    with zipfile.ZipFile(tmp_path / "archive.pt", "w") as z:
        z.writestr("readme.txt", "not a model")
    _one_line_error(tmp_path / "archive.pt", "(a zip archive that is not a torch file)")
    (tmp_path / "folder.pt").mkdir()
    _one_line_error(tmp_path / "folder.pt", "(a directory)")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"checkpoint not found: {tmp_path / 'no.pt'}"):
        read_checkpoint(tmp_path / "no.pt")


@pytest.mark.parametrize("extra, where, what", [
    ({"rng": {"numpy": np.random.get_state()}}, "state['rng']['numpy'][1]", "numpy.ndarray"),
    ({"metrics": {"bulk": {"mae": np.float64(0.1)}}}, "state['metrics']['bulk']['mae']",
     "numpy.float64"),
    ({"steps": [1, np.int64(2)]}, "state['steps'][1]", "numpy.int64"),
    ({"obj": {"x": object()}}, "state['obj']['x']", "builtins.object"),
    ({"frozen": frozenset({1})}, "state['frozen']", "builtins.frozenset"),
])
def test_save_refuses_state_weights_only_cannot_load(tmp_path, extra, where, what):
    with pytest.raises(TypeError) as info:
        save_checkpoint(tmp_path / "c.pt", _state(**extra))
    assert str(info.value).startswith(f"checkpoint state {where}: {what} cannot be loaded back "
                                      "with weights_only=True")
    assert ("NumPy value" in str(info.value)) == what.startswith("numpy")
    assert os.listdir(tmp_path) == []  # nothing written


def test_save_refuses_non_data_keys_and_missing_keys(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint state state\['d'\]: key <object object"):
        save_checkpoint(tmp_path / "c.pt", _state(d={object(): 1}))
    with pytest.raises(KeyError, match="checkpoint state lacks 'elements'"):
        save_checkpoint(tmp_path / "c.pt", {k: v for k, v in _state().items() if k != "elements"})


def test_a_read_checkpoint_can_be_saved_again(tmp_path):
    save_checkpoint(tmp_path / "a.pt", _state(step=3))
    state = read_checkpoint(tmp_path / "a.pt")
    state["step"] = 4
    save_checkpoint(tmp_path / "b.pt", state)
    again = read_checkpoint(tmp_path / "b.pt")
    assert again["format"] == FORMAT and again["step"] == 4


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    import atomgfm.models.checkpoint as ckpt

    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(step=1))

    def broken_save(obj, f):
        f.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(step=2))
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


# ---------------------------------------------------------------- every entry point


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_text("this is not a checkpoint\n")
    return path


@pytest.mark.parametrize("verb", ["info", "evaluate"])
def test_cli_reports_a_bad_checkpoint_in_one_line(bad_file, capsys, verb):
    from atomgfm.cli.main import main

    assert main([verb, str(bad_file)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"atomgfm {verb}: error: {bad_file}: not an atomgfm checkpoint "
                            "(not a torch file)\n")
    assert captured.out == ""


def test_cli_info_reports_code_in_a_checkpoint(tmp_path, capsys):
    from atomgfm.cli.main import main

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, **_state(), "x": _OpenPayload(marker)}, path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"atomgfm info: error: {path}: not an atomgfm checkpoint (it asks to "
                          "import io.open; refused")
    assert err.count("\n") == 1 and not marker.exists()


def test_calculator_reports_a_bad_checkpoint(bad_file):
    import atomgfm

    with pytest.raises(ValueError) as info:
        atomgfm.Calculator(str(bad_file))
    assert str(info.value) == f"{bad_file}: not an atomgfm checkpoint (not a torch file)"


def test_trainer_resume_reports_a_bad_checkpoint(tmp_path):
    from atomgfm.config.schema import config_from_dict
    from atomgfm.testing.fixtures import tiny_datasets
    from atomgfm.train.loop import Trainer

    (tmp_path / "last.pt").write_bytes(b"")
    cfg = config_from_dict({"model": {"backbone_kwargs": {"num_features": 8, "num_layers": 1,
                                                          "cutoff": 4.0, "num_rbf": 4}},
                            "train": {"out_dir": str(tmp_path), "progress": False}})
    with pytest.raises(ValueError) as info:
        Trainer.from_config(cfg, tiny_datasets(n_bulk=4, n_clusters=4))
    assert str(info.value) == f"{tmp_path / 'last.pt'}: not an atomgfm checkpoint (empty file)"
