"""``softgrad train --data FILE``: a csv with a string target column trains, evaluates and predicts from the
command line with no further flags; the predictions match float64 NumPy on the run's own weights and the
scaling scikit-learn's StandardScaler computes; bad files and flags are exit 2 with one line; --resume works.

The commands run in the test's process (tests/in_process.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from softgrad.commands import evaluate, train
from softgrad.training import checkpoint

from tests import in_process

SPECIES = np.array(["setosa", "versicolor", "virginica"])


def train_cli(*args):
    return in_process.run(train.main, *args)


def write_csv(path, header, rows) -> None:
    path.write_text("\n".join([",".join(header), *(",".join(str(v) for v in row) for row in rows)]) + "\n")


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    """60 flowers in three well-separated species, features in very different units; trained once, 2 epochs."""
    folder = tmp_path_factory.mktemp("flowers")
    rng = np.random.default_rng(5)
    label = rng.integers(0, 3, 60)
    x = np.stack([label * 3.0 + rng.normal(0, 0.3, 60), 100 - label * 40 + rng.normal(0, 4, 60)], axis=1).round(3)
    write_csv(folder / "flowers.csv", ["petal", "species", "stem"], zip(x[:, 0], SPECIES[label], x[:, 1]))
    run = folder / "run"
    result = train_cli("--data", folder / "flowers.csv", "--target", "species", "--model", "linear", "--epochs", "2",
                       "--optimizer", "adam", "--lr", "0.1", "--batch-size", "8", "--quiet", "--out", run)
    assert result.returncode == 0, result.stderr
    return folder, run, x, label


def reference_labels(run, raw_train, raw):
    """The run's linear model in float64 NumPy on raw rows scaled by StandardScaler fitted on the train rows."""
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    model = checkpoint.load(run / "checkpoint.npz", "numpy")[0]
    weight, bias = (np.asarray(p, np.float64) for p in model.params)
    logits = preprocessing.StandardScaler().fit(raw_train).transform(raw) @ weight + bias
    ordered = np.sort(logits, axis=1)
    assert (ordered[:, -1] - ordered[:, -2]).min() > 1e-4  # no near-tie that float32 could turn
    return logits.argmax(axis=1)


def split(n: int, fraction: float = 0.2):
    order = np.random.default_rng(0).permutation(n)
    n_test = round(n * fraction)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def test_a_csv_with_a_string_target_trains_evaluates_and_predicts(flowers, tmp_path):
    folder, run, x, label = flowers
    saved = json.loads((run / "run.json").read_text())
    assert saved["dataset"] is None and saved["data"] == str(folder / "flowers.csv")
    assert (saved["target"], saved["task"], saved["test_fraction"]) == ("species", "classification", 0.2)
    train_rows, test_rows = split(60)
    expected = reference_labels(run, x[train_rows], x[test_rows])
    result = in_process.run(evaluate.main, run)
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy == pytest.approx(100 * np.mean(expected == label[test_rows]), abs=0.01)
    assert all(name in result.stdout for name in SPECIES) and "samples)" in result.stdout and "images)" not in result.stdout
    # new rows in the file's units, columns in another order, the target column present and ignored
    new = x[test_rows][:7]
    write_csv(tmp_path / "new.csv", ["stem", "species", "petal"], zip(new[:, 1], ["?"] * 7, new[:, 0]))
    np.save(tmp_path / "new.npy", new)
    result = in_process.run(evaluate.predict_main, run, tmp_path / "new.csv", tmp_path / "new.npy")
    assert result.returncode == 0, result.stderr
    names = ", ".join(SPECIES[expected[:7]])
    assert result.stdout.splitlines() == [f"{tmp_path / 'new.csv'}: {names}", f"{tmp_path / 'new.npy'}: {names}"]


def test_a_regression_csv_predicts_in_the_files_units(tmp_path):
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 2)) * [3, 50] + [1, 200]
    price = (1000 + 30 * x[:, 0] - 2 * x[:, 1] + rng.normal(0, 5, 40)).round(2)
    write_csv(tmp_path / "houses.csv", ["rooms", "area", "price"], zip(x[:, 0], x[:, 1], price))
    run = tmp_path / "run"
    result = train_cli("--data", tmp_path / "houses.csv", "--target", "price", "--model", "linear", "--epochs", "2",
                       "--quiet", "--out", run)
    assert result.returncode == 0, result.stderr
    assert "test RMSE" in result.stdout and json.loads((run / "run.json").read_text())["task"] == "regression"
    train_rows, _ = split(40)
    model = checkpoint.load(run / "checkpoint.npz", "numpy")[0]
    weight, bias = (np.asarray(p, np.float64) for p in model.params)
    scaled = preprocessing.StandardScaler().fit(x[train_rows]).transform(x[:3]) @ weight + bias
    expected = scaled[:, 0] * price[train_rows].std() + price[train_rows].mean()
    write_csv(tmp_path / "new.csv", ["rooms", "area"], x[:3])
    result = in_process.run(evaluate.predict_main, run, tmp_path / "new.csv")
    assert result.returncode == 0, result.stderr
    shown = [float(v) for v in result.stdout.split(": ")[1].split(", ")]
    np.testing.assert_allclose(shown, expected, rtol=1e-3)  # printed with 4 significant digits


def test_resume_continues_and_the_default_folder_is_named_after_the_file(flowers, tmp_path, monkeypatch):
    folder, _, _, _ = flowers
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flowers.csv").write_bytes((folder / "flowers.csv").read_bytes())
    first = train_cli("--data", "flowers.csv", "--target", "species", "--model", "linear", "--epochs", "1",
                      "--quiet")
    assert first.returncode == 0, first.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("flowers-linear-numpy-")
    resumed = train_cli("--resume", run, "--epochs", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())] == [1, 2]
    other = train_cli("--resume", run, "--epochs", "3", "--target", "petal")
    assert other.returncode == 2 and "drop --target" in other.stderr
    same = train_cli("--resume", run, "--epochs", "3", "--data", tmp_path / "flowers.csv", "--quiet")
    assert same.returncode == 0, same.stderr  # --data repeated as an absolute path is the same file
    with open(tmp_path / "flowers.csv", "a") as csv_file:
        csv_file.write("1.0,versicolor,50\n")
    assert "flowers.csv has changed since the run was trained on it" in bad(train.main, "--resume", run, "--epochs", "4")


def bad(main, *args):
    result = in_process.run(main, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_files_and_flags_are_one_line_and_exit_2(flowers, tmp_path):
    folder, _, _, _ = flowers
    common = ("--model", "linear", "--epochs", "1", "--quiet")
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,x\n1,2\n")
    assert "ragged.csv line 3: 2 values, but the header names 3 columns" in bad(
        train.main, "--data", tmp_path / "ragged.csv", "--target", "y", *common, "--out", tmp_path / "r1")
    (tmp_path / "text.csv").write_text("a,b,y\n1,2,x\n1,two,y\n")
    assert "text.csv line 3, column 'b': 'two' is not a number" in bad(
        train.main, "--data", tmp_path / "text.csv", "--target", "y", *common, "--out", tmp_path / "r2")
    (tmp_path / "empty.csv").write_text("")
    assert "empty.csv is empty" in bad(train.main, "--data", tmp_path / "empty.csv", "--target", "y", *common,
                                       "--out", tmp_path / "r3")
    assert "has no column 'Species'" in bad(train.main, "--data", folder / "flowers.csv", "--target", "Species",
                                            *common, "--out", tmp_path / "r4")
    np.savez(tmp_path / "d.npz", x_train=np.ones((4, 2)))
    assert "d.npz has no array 'y_train'; it holds 'x_train'" in bad(train.main, "--data", tmp_path / "d.npz",
                                                                     *common, "--out", tmp_path / "r5")
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 6))  # a refused run leaves no folder
    assert "give one or the other" in bad(train.main, "--data", folder / "flowers.csv", "--dataset", "synthetic")
    assert "--target: for your own data file (--data FILE)" in bad(train.main, "--target", "y")
    assert "--binary, --root are for the data sets softgrad ships or downloads (--dataset)" in bad(
        train.main, "--data", folder / "flowers.csv", "--binary", "0", "--root", tmp_path)
    assert "no such file" in bad(train.main, "--data", tmp_path / "missing.csv")
    assert "--test-fraction must be in [0, 1)" in bad(train.main, "--data", folder / "flowers.csv", "--test-fraction",
                                                      "1")


def test_a_changed_file_and_no_test_split_at_evaluate(tmp_path):
    rows = [(i % 4, i * 0.5, "ab"[i % 2]) for i in range(12)]
    write_csv(tmp_path / "t.csv", ["a", "b", "y"], rows)
    run = tmp_path / "run"
    result = train_cli("--data", tmp_path / "t.csv", "--target", "y", "--test-fraction", "0", "--model", "linear",
                       "--epochs", "1", "--out", run)
    assert result.returncode == 0, result.stderr
    assert "no test split: no test figures" in result.stdout
    assert "no test split (--test-fraction 0): nothing to evaluate on" in bad(evaluate.main, run)
    write_csv(tmp_path / "new.csv", ["a", "b"], [(1, 2)])
    assert in_process.run(evaluate.predict_main, run, tmp_path / "new.csv").returncode == 0
    write_csv(tmp_path / "t.csv", ["a", "b", "y"], rows[:-1])
    assert "t.csv has changed since the run was trained on it" in bad(evaluate.main, run)
    np.save(tmp_path / "new.npy", np.ones((1, 3)))
    assert "takes samples of 2 features" in bad(evaluate.predict_main, run, tmp_path / "new.npy")


def test_tensorboard_flag_writes_the_runs_epochs(flowers, tmp_path):
    """--tensorboard DIR: the run's history as TensorBoard scalars, read back with test_tensorboard's own
    TFRecord reader; without tensorboardX it is one line saying what to install."""
    pytest.importorskip("tensorboardX")
    from tests.test_tensorboard import CLASSES, expected, read_events, scalars

    folder, _, _, _ = flowers
    run = tmp_path / "run"
    result = train_cli("--data", folder / "flowers.csv", "--target", "species", "--model", "linear", "--epochs", "2",
                       "--quiet", "--out", run, "--tensorboard", tmp_path / "tb")
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "tb").iterdir()
    history = json.loads((run / "history.json").read_text())
    assert scalars(read_events(path)) == expected(history, CLASSES)


def test_tensorboard_without_tensorboardx_is_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "tensorboardX.event_file_writer", None)
    line = bad(train.main, "--dataset", "synthetic", "--model", "linear", "--epochs", "1", "--out", tmp_path / "run",
               "--tensorboard", tmp_path / "tb")
    assert "--tensorboard:" in line and "pip install 'softgrad[tensorboard]'" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


def test_an_npz_with_text_labels_and_images_predicts_its_labels(tmp_path):
    """x_train (N, 4, 4) is flattened, y_train text labels; predict prints them; a .csv is for csv runs only."""
    rng = np.random.default_rng(4)
    label = rng.integers(0, 2, 48)
    x = rng.normal(size=(48, 4, 4)) + label[:, None, None] * 4
    names = np.array(["no", "yes"])
    np.savez(tmp_path / "marks.npz", x_train=x[:40], y_train=names[label[:40]], x_test=x[40:], y_test=names[label[40:]])
    run = tmp_path / "run"
    result = train_cli("--data", tmp_path / "marks.npz", "--model", "linear", "--epochs", "2", "--batch-size", "8",
                       "--quiet", "--out", run)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "run.json").read_text())["test_fraction"] is None  # the file's own test split
    np.save(tmp_path / "new.npy", x[40:])
    expected = reference_labels(run, x[:40].reshape(40, -1), x[40:].reshape(8, -1))
    result = in_process.run(evaluate.predict_main, run, tmp_path / "new.npy")
    assert result.returncode == 0 and result.stdout == f"{tmp_path / 'new.npy'}: {', '.join(names[expected])}\n"
    write_csv(tmp_path / "new.csv", ["a"], [(1,)])
    assert "are for a model trained on a csv file" in bad(evaluate.predict_main, run, tmp_path / "new.csv")
