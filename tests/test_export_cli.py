"""``softgrad export`` end to end: a run trained by ``softgrad train`` on MNIST, exported, loaded into
torch.nn.Sequential (and onnxruntime), agrees with ``softgrad predict`` on the 10,000 test images fed as raw
pixels; ``--from`` brings a torch MLP in as a run that ``softgrad predict`` runs. Bad input: one line, status 2."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.in_process import run

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from softgrad.commands.evaluate import predict_main  # noqa: E402
from softgrad.commands.export import main as export_main  # noqa: E402
from softgrad.commands.train import main as train_main  # noqa: E402
from softgrad.datasets import SHIPPED_MNIST  # noqa: E402
from softgrad.datasets.idx import find_idx, read_idx  # noqa: E402

ROWS_PER_FILE = 20  # softgrad predict prints a file's first 20 predictions: the test set goes in 500 files


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A run of softgrad train (MNIST, 1 epoch, one small hidden layer) and the raw test pixels as .npy files."""
    folder = tmp_path_factory.mktemp("export-cli")
    result = run(train_main, "--dataset", "mnist", "--epochs", "1", "--hidden", "32", "--batch-size", "512",
                 "--out", folder / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    raw = read_idx(find_idx(SHIPPED_MNIST, "t10k-images-idx3-ubyte"))  # uint8 (10000, 28, 28), as shipped
    files = []
    for i in range(0, len(raw), ROWS_PER_FILE):
        files.append(folder / f"raw-{i:05d}.npy")
        np.save(files[-1], raw[i:i + ROWS_PER_FILE])
    return folder, raw.reshape(len(raw), -1).astype(np.float32), files


def predicted_classes(run_folder, files) -> np.ndarray:
    """What ``softgrad predict RUN FILE...`` prints, one class per raw test image, in order."""
    result = run(predict_main, run_folder, *files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(files)
    return np.array([int(label) for line in lines for label in line.split(": ", 1)[1].split(", ")])


def torch_module(meta: dict) -> torch.nn.Sequential:
    """The module the file's metadata names: its architecture is torch code."""
    names = {name: getattr(torch.nn, name) for name in ("Sequential", "Linear", "ReLU", "Tanh", "Sigmoid", "LeakyReLU")}
    return eval(meta["architecture"], names)


def test_train_export_and_torch_agree_with_softgrad_predict_on_raw_pixels(work):
    folder, raw, files = work
    result = run(export_main, folder / "run", "--to", folder / "model.safetensors")
    assert result.returncode == 0, result.stderr
    assert "Sequential(Linear(784, 32), ReLU(), Linear(32, 10))" in result.stdout and "0..255" in result.stdout
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "pt" and json.loads(meta["input_shape"]) == [28, 28]
    net = torch_module(meta)
    net.load_state_dict(safetensors_torch.load_file(str(folder / "model.safetensors")), strict=True)
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(raw)).numpy()
    expected = predicted_classes(folder / "run", files)
    assert len(expected) == 10000 and len(np.unique(expected)) == 10
    assert np.array_equal(torch_logits.argmax(axis=1), expected)
    # the logits too, against the run's model on the test set softgrad normalises itself
    import softgrad
    from softgrad.training import checkpoint

    model = checkpoint.load(folder / "run" / "checkpoint.npz")[0]
    ours = np.asarray(model.logits(softgrad.load("mnist").x_test), dtype=np.float64)
    relative = (np.abs(torch_logits - ours) / np.abs(ours).max(axis=1, keepdims=True)).max()
    print(f"softgrad train -> export -> torch: largest difference {relative:.3g} of an image's largest logit")
    assert relative < 1e-5


def test_the_onnx_export_agrees_with_softgrad_predict_on_raw_pixels(work):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    folder, raw, files = work
    result = run(export_main, folder / "run", "--to", folder / "model.onnx")
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {session.get_inputs()[0].name: raw})))
    assert np.array_equal(outputs["class_index"], predicted_classes(folder / "run", files))


def test_a_torch_mlp_comes_in_as_a_run_that_softgrad_predict_runs(work):
    folder, raw, files = work
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)).eval()
    with torch.no_grad():
        net[0].weight.div_(255.0)  # a network that takes raw 0..255 pixels
    torch.save(net.state_dict(), folder / "net.pt")
    result = run(export_main, "--from", folder / "net.pt", "--to", folder / "imported", "--activation", "tanh")
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = net(torch.from_numpy(raw)).numpy().argmax(axis=1)
    assert len(np.unique(expected)) > 1
    assert np.array_equal(predicted_classes(folder / "imported", files[:50]), expected[:50 * ROWS_PER_FILE])


def test_softgrad_s_own_export_comes_back_as_the_run_it_was(work):
    folder, raw, files = work
    if not (folder / "model.safetensors").exists():
        assert run(export_main, folder / "run", "--to", folder / "model.safetensors").returncode == 0
    result = run(export_main, "--from", folder / "model.safetensors", "--to", folder / "back")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(predicted_classes(folder / "back", files[:50]), predicted_classes(folder / "run", files[:50]))
    # a .npz checkpoint instead of a folder; an existing one is replaced only with --overwrite
    assert run(export_main, "--from", folder / "model.safetensors", "--to", folder / "back.npz").returncode == 0
    assert run(export_main, "--from", folder / "model.safetensors", "--to", folder / "back.npz").returncode == 2
    assert run(export_main, "--from", folder / "model.safetensors", "--to", folder / "back.npz",
               "--overwrite").returncode == 0
    assert np.array_equal(predicted_classes(folder / "back.npz", files[:5]), predicted_classes(folder / "run", files[:5]))


def test_an_existing_file_is_kept_unless_overwrite(work):
    folder, _, _ = work
    target = folder / "mine.safetensors"
    target.write_text("the user's own file")
    result = run(export_main, folder / "run", "--to", target)
    assert result.returncode == 2 and "exists" in result.stderr and "--overwrite" in result.stderr
    assert target.read_text() == "the user's own file"
    assert run(export_main, folder / "run", "--to", target, "--overwrite").returncode == 0
    assert len(safetensors_torch.load_file(str(target))) == 4


@pytest.mark.parametrize("args, words", [
    (["RUN", "--to", "x.bin"], "the format is chosen by the suffix"),
    (["--to", "x.safetensors"], "give RUN"),
    (["RUN", "--from", "CRAFTED", "--to", "new"], "not both"),
    (["--from", "CRAFTED", "--to", "new"], "more than the"),
    (["--from", "nothing.safetensors", "--to", "new"], "no such file"),
    (["--from", "CRAFTED", "--to", "x.safetensors"], "with --from, --to is the run to write"),
    (["RUN", "--to", "y.safetensors", "--activation", "tanh"], "use them with --from"),
    (["no-such-run", "--to", "z.safetensors"], "no checkpoint.npz there"),
    (["--from", "net.pt", "--to", "RUN"], "holds run.json, checkpoint.npz"),
    (["--from", "net.pt", "--to", "imported.npz", "--activation", "tanh", "--head", "sigmoid"],
     "a sigmoid head takes one logit; the network gives 10"),
])
def test_bad_input_is_one_line_and_status_2(work, monkeypatch, args, words):
    folder, _, _ = work
    monkeypatch.chdir(folder)
    (folder / "crafted.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    net = torch.nn.Sequential(torch.nn.Linear(784, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
    torch.save(net.state_dict(), folder / "net.pt")
    args = [str(folder / "run") if a == "RUN" else "crafted.safetensors" if a == "CRAFTED" else a for a in args]
    result = run(export_main, *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.match(r"softgrad export: ", result.stderr) and words in result.stderr, result.stderr
