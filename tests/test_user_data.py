"""``datasets.load_file``: your own data from an .npz or a .csv, checked against independent references
(scikit-learn's StandardScaler and float64 NumPy for the scaling, np.unique for the class names, the split
drawn again with NumPy), and every bad file refused in one line naming the file and where in it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from softgrad import datasets


def write_csv(path, header, rows) -> None:
    path.write_text("\n".join([",".join(header), *(",".join(str(v) for v in row) for row in rows)]) + "\n")


def split_indices(n: int, fraction: float, seed: int = 0):
    """The split as documented: default_rng(seed).permutation(n), the first round(n * fraction) held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * fraction)) if fraction > 0 else 0
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@pytest.fixture
def pets(tmp_path):
    """A csv with a string target column, features of very different scales and a constant column."""
    rng = np.random.default_rng(3)
    species = np.array(["dog", "cat", "bird", "cat", "ant"])[rng.integers(0, 5, 50)]
    weight = rng.normal(20, 8, 50).round(3)
    height = rng.normal(0.3, 0.01, 50).round(5)
    path = tmp_path / "pets.csv"
    write_csv(path, ["weight", "species", "height", "legs"], zip(weight, species, height, [4] * 50))
    return path, np.stack([weight, height, np.full(50, 4.0)], axis=1), species


def test_csv_with_a_string_target_matches_standard_scaler_and_np_unique(pets):
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    path, x, species = pets
    data = datasets.load_file(path, "species")
    train, test = split_indices(50, 0.2)
    assert data.task == "classification" and data.name == "pets"
    names, codes = np.unique(species, return_inverse=True)
    assert data.classes == tuple(names)
    np.testing.assert_array_equal(data.y_train, codes[train])
    np.testing.assert_array_equal(data.y_test, codes[test])
    scaler = preprocessing.StandardScaler().fit(x[train])  # a constant column: scale 1 there too
    for ours, rows in ((data.x_train, train), (data.x_test, test)):
        np.testing.assert_allclose(ours, scaler.transform(x[rows]), rtol=1e-6, atol=1e-6)
    # raw rows scale exactly as the loader scaled them: what predict relies on
    np.testing.assert_array_equal(data.scale_inputs(x[test]), data.x_test)
    assert data.record().recipe["options"]["columns"] == ["weight", "height", "legs"]


def test_the_recipe_loads_the_same_data_again_and_refuses_a_changed_file(pets):
    path, _, _ = pets
    data = datasets.load_file(path, "species", test_fraction=0.3)
    record = datasets.DataRecord.from_json(json.loads(json.dumps(data.record().to_json())))
    assert record.dataset == "pets" and record.recipe["name"] == "file"
    again = record.load()
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, field), getattr(data, field))
    assert again.classes == data.classes and len(again.y_test) == 15
    path.write_text(path.read_text().replace("dog", "wolf"))
    with pytest.raises(ValueError, match=r"pets\.csv has changed since the run was trained on it"):
        record.load()


def test_npz_tasks_are_inferred_and_can_be_overridden(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2, 3)) * 5 + 1

    def load(y, **options):
        np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
        return datasets.load_file(tmp_path / "d.npz", **options)

    three = rng.integers(0, 3, 40) * 10  # integers, few values: classes named by their values, sorted numerically
    data = load(three)
    assert data.task == "classification" and data.classes == ("0", "10", "20") and data.x_train.shape == (32, 6)
    train, test = split_indices(40, 0.2)
    np.testing.assert_array_equal(data.y_train, np.unique(three, return_inverse=True)[1][train])
    assert load(np.arange(40)).task == "regression"  # more distinct integers than CLASS_LIMIT
    assert load(three, task="regression").task == "regression"
    values = rng.normal(50, 10, 40)
    data = load(values)
    assert data.task == "regression" and data.target_names == ("y",)
    mean, std = values[train].mean(), values[train].std()
    assert data.target_mean == pytest.approx((mean,), rel=1e-12) and data.target_std == pytest.approx((std,), rel=1e-12)
    np.testing.assert_allclose(data.y_test[:, 0], (values[test] - mean) / std, rtol=1e-6)
    assert load(values.round(), task="classification").task == "classification"
    assert load(np.stack([values, -values], axis=1)).target_names == ("y0", "y1")
    labels = np.array(["no", "yes"])[rng.integers(0, 2, 40)]
    assert load(labels).classes == ("no", "yes")
    with pytest.raises(ValueError, match=r"y_train holds 'no', not a number: a regression needs numeric targets"):
        load(labels, task="regression")


def test_npz_with_its_own_test_split_and_no_test_split(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 2, 30)
    np.savez(tmp_path / "own.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    data = datasets.load_file(tmp_path / "own.npz")
    mean, std = x[:20].mean(axis=0), x[:20].std(axis=0)
    np.testing.assert_allclose(data.x_test, (x[20:] - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(data.y_test, y[20:])
    assert data.recipe["options"]["test_fraction"] is None
    with pytest.raises(ValueError, match="holds its own test split"):
        datasets.load_file(tmp_path / "own.npz", test_fraction=0.1)
    np.savez(tmp_path / "all.npz", x_train=x, y_train=y)
    none = datasets.load_file(tmp_path / "all.npz", test_fraction=0)
    assert none.x_train.shape == (30, 4) and none.x_test.shape == (0, 4) and none.y_test.shape == (0,)


BAD_CSV = {  # the file's text, and what the one line must name
    "empty.csv": ("", r"empty\.csv is empty"),
    "header.csv": ("a,b,y\n", r"header\.csv has a header but no rows"),
    "ragged.csv": ("a,b,y\n1,2,x\n\n1,2\n", r"ragged\.csv line 4: 2 values, but the header names 3 columns"),
    "text.csv": ("a,b,y\n1,2,x\n3,four,y\n", r"text\.csv line 3, column 'b': 'four' is not a number"),
    "gap.csv": ("a,b,y\n1,,x\n", r"gap\.csv line 2, column 'b': empty value"),
    "nan.csv": ("a,b,y\n1,nan,x\n", r"nan\.csv line 2, column 'b': 'nan'; NaN and infinite values"),
    "notarget.csv": ("a,b,y\n1,2,\n", r"notarget\.csv line 2, column 'y': empty value; every row needs a target"),
    "noheader.csv": ("1,2,3\n4,5,6\n", r"noheader\.csv line 1: the first row holds numbers"),
    "twice.csv": ("a,a,y\n1,2,3\n", r"twice\.csv line 1: the header names the column 'a' twice"),
}


@pytest.mark.parametrize("name", list(BAD_CSV))
def test_a_bad_csv_is_one_line_naming_file_line_and_column(tmp_path, name):
    text, message = BAD_CSV[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        datasets.load_file(tmp_path / name, "y")
    assert "\n" not in str(error.value)


def test_a_missing_target_column_lists_the_columns_with_a_hint(pets):
    path, _, _ = pets
    with pytest.raises(ValueError, match=r"pets\.csv has no column 'Species'; its columns: weight, species, height, "
                       r"legs \(did you mean 'species'\?\)"):
        datasets.load_file(path, "Species")
    with pytest.raises(ValueError, match=r"name the column to predict \(--target COLUMN\); its columns"):
        datasets.load_file(path)
    (path.parent / "semi.csv").write_text("a;b;y\n1;2;3\n")
    with pytest.raises(ValueError, match=r"semi\.csv has no column 'y'; its columns: a;b;y \(its header is one column "
                       r"holding ';': softgrad reads comma-separated values\)"):
        datasets.load_file(path.parent / "semi.csv", "y")


def test_bad_npz_files_name_the_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((4, 2)), labels=np.zeros(4))
    with pytest.raises(ValueError, match=r"d\.npz has no array 'y_train'; it holds 'x_train', 'labels'"):
        datasets.load_file(path)
    np.savez(path, x_train=np.ones((4, 2)), y_train=np.zeros(4), x_test=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"has no array 'y_test'"):
        datasets.load_file(path)
    np.savez(path, x_train=np.ones((4, 2)), y_train=np.zeros(3))
    with pytest.raises(ValueError, match=r"y_train has shape \(3,\); expected \(4,\)"):
        datasets.load_file(path)
    np.savez(path, x_train=np.array([[1.0, np.nan]] * 4), y_train=np.zeros(4))
    with pytest.raises(ValueError, match=r"x_train sample 0 holds NaN or inf"):
        datasets.load_file(path)
    np.savez(path, x_train=np.ones((4, 2)), y_train=np.array([{}, {}, {}, {}], dtype=object))
    with pytest.raises(ValueError, match=r"pickled data.*never loads"):
        datasets.load_file(path)
    (tmp_path / "no.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"no\.npz: cannot read it as a NumPy \.npz file"):
        datasets.load_file(tmp_path / "no.npz")
    with pytest.raises(ValueError, match=r"a target column \(--target\) is for \.csv files"):
        datasets.load_file(tmp_path / "no.npz", "y")
    (tmp_path / "d.txt").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"reads your data from \.npz files .* not \.txt"):
        datasets.load_file(tmp_path / "d.txt")


def test_too_few_rows_for_the_test_fraction(tmp_path):
    write_csv(tmp_path / "one.csv", ["a", "y"], [(1, "x")])
    with pytest.raises(ValueError, match=r"one\.csv has 1 row\(s\): too few to hold out a test fraction of 0\.2"):
        datasets.load_file(tmp_path / "one.csv", "y")


def test_csv_feature_rows_for_predict_take_any_column_order_and_ignore_the_target(pets, tmp_path):
    path, x, _ = pets
    write_csv(tmp_path / "new.csv", ["legs", "species", "height", "weight"], [(4, "?", 0.25, 12.5), (4, "", 0.5, 3)])
    rows = datasets.csv_feature_rows(tmp_path / "new.csv", ["weight", "height", "legs"], "species")
    np.testing.assert_array_equal(rows, [[12.5, 0.25, 4], [3, 0.5, 4]])
    with pytest.raises(ValueError, match=r"columns weight, height, legs; it has columns the model does not know: "
                       r"\['species'\]"):
        datasets.csv_feature_rows(tmp_path / "new.csv", ["weight", "height", "legs"], None)
    write_csv(tmp_path / "few.csv", ["legs", "height"], [(4, 0.25)])
    with pytest.raises(ValueError, match=r"trained on the columns weight, height, legs; this file lacks \['weight'\]"):
        datasets.csv_feature_rows(tmp_path / "few.csv", ["weight", "height", "legs"], "species")
