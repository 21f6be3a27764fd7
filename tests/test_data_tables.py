"""Tables: TableEncoder round trips, scikit-learn tables, CSV files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import datasets

import genlab.data as gd
from genlab.data import TableEncoder
from genlab.errors import DataError


def mixed_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.lognormal(10, 1, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "size": pd.Categorical(rng.choice(["S", "M", "L"], n), categories=["S", "M", "L"], ordered=True),
            "member": rng.random(n) < 0.3,
            "count": rng.integers(0, 5, n).astype(np.int32),
        }
    )


def test_encoder_round_trip_and_layout():
    frame = mixed_frame()
    enc = TableEncoder().fit(frame)
    assert [(c.name, c.kind, c.width) for c in enc.columns] == [
        ("age", "numeric", 1), ("income", "numeric", 1), ("colour", "categorical", 3),
        ("size", "categorical", 3), ("member", "categorical", 2), ("count", "numeric", 1),
    ]
    assert enc.dim == 11 and enc.column("colour").categories == ("blue", "green", "red")
    assert enc.column("size").categories == ("S", "M", "L")  # category dtype keeps its order

    z = enc.encode(frame, dtype=torch.float64)
    numeric = z[:, [0, 1, 10]]
    assert torch.allclose(numeric.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(numeric.std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    for c in enc.columns:
        if c.kind == "categorical":
            block = z[:, c.start : c.stop]
            assert torch.equal(block.sum(1), torch.ones(len(frame), dtype=torch.float64))
    pd.testing.assert_frame_equal(enc.decode(z), frame)
    # float32 storage: equal up to float32 rounding, integers and categories exactly
    decoded = enc.decode(enc.encode(frame))
    pd.testing.assert_frame_equal(decoded, frame, check_exact=False, rtol=1e-5, atol=1e-6)
    assert (decoded["age"] == frame["age"]).all()


def test_decode_takes_argmax_of_noisy_vectors_and_rounds_integers():
    frame = mixed_frame()
    enc = TableEncoder().fit(frame)
    z = enc.encode(frame, dtype=torch.float64)
    noisy = z + 0.2 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    decoded = enc.decode(noisy)
    assert decoded["colour"].isin(["red", "green", "blue"]).all()
    assert (decoded["colour"] == frame["colour"]).mean() > 0.9
    assert decoded["age"].dtype == frame["age"].dtype and decoded["count"].dtype == np.int32
    assert isinstance(decoded["size"].dtype, pd.CategoricalDtype) and decoded["size"].cat.ordered


def test_encoder_serialises_and_rejects_unseen_values():
    frame = mixed_frame()
    enc = TableEncoder().fit(frame)
    restored = TableEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert restored.columns == enc.columns
    assert torch.equal(restored.encode(frame), enc.encode(frame))
    other = frame.assign(colour="purple")
    with pytest.raises(DataError, match="colour.*purple"):
        enc.encode(other)
    with pytest.raises(DataError, match="lacks column"):
        enc.encode(frame.drop(columns="age"))
    with pytest.raises(DataError, match=r"decodes \(N, 11\)"):
        enc.decode(torch.zeros(2, 3))


@pytest.mark.parametrize("name, rows, classes", [("iris", 150, 3), ("wine", 178, 3), ("breast_cancer", 569, 2), ("diabetes", 442, None)])
def test_sklearn_tables(name, rows, classes):
    data = gd.load(name)
    loader = getattr(datasets, f"load_{name}")
    bunch = loader(as_frame=True, **({"scaled": False} if name == "diabetes" else {}))
    frame = data.frame
    assert frame.shape == (rows, bunch.data.shape[1] + 1) and list(frame.columns[:-1]) == list(bunch.data.columns)
    assert data.spec.kind == "table" and data.storage.shape == (rows, data.encoder.dim)
    lo, hi = data.spec.value_range
    assert lo <= -5 and hi >= 5 and (data.storage >= lo).all() and (data.storage <= hi).all()
    if classes is None:
        assert data.labels is None and data.encoder.column("target").kind == "numeric"
    else:
        assert data.spec.num_classes == classes and data.spec.class_names == tuple(bunch.target_names)
        assert torch.equal(data.labels, torch.tensor(bunch.target.to_numpy()).long())
        assert list(frame["target"].astype(str)) == list(np.asarray(bunch.target_names)[bunch.target])
    pd.testing.assert_frame_equal(data.encoder.decode(data.storage.double()), frame, check_exact=False, rtol=1e-5, atol=1e-6)
    again = gd.load(**data.source)  # the encoder is rebuilt from the source, no pickling
    assert again.encoder.columns == data.encoder.columns and torch.equal(again.storage, data.storage)
    test = data.test
    assert len(test) == round(0.1 * rows) and len(test.frame) == len(test)
    assert torch.equal(test.encoder.encode(test.frame), test.storage)


def test_csv_with_target_and_categorical_columns(tmp_path):
    frame = mixed_frame()
    frame["species"] = np.where(frame["age"] > 50, "old", "young")
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    data = gd.load(str(path), target="species", categorical="count")
    assert data.spec.kind == "table" and data.spec.name == "people"
    assert data.spec.class_names == ("old", "young")
    assert torch.equal(data.labels, torch.tensor((frame["species"] == "young").to_numpy()).long())
    assert data.encoder.column("colour").kind == "categorical"
    assert data.encoder.column("count").kind == "categorical" and data.encoder.column("age").kind == "numeric"
    assert data.source == {"name": str(path.resolve()), "seed": 0, "target": "species", "categorical": "count"}
    assert torch.equal(gd.load(**data.source).storage, data.storage)
    decoded = data.encoder.decode(data.storage.double())
    assert (decoded["colour"].astype(str) == frame["colour"]).all()
    assert np.allclose(decoded["income"], frame["income"]) and (decoded["age"] == frame["age"]).all()


def test_csv_errors(tmp_path):
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": ["x", "y", None, "x"], "c": [1.5, 2.5, 3.5, 4.5]})
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"holes.csv' has missing .* in 2 column\(s\) \(a, b\), 2 of 4 rows; drop .*fill"):
        gd.load(path)
    frame = frame.fillna({"a": 0.0, "b": "z"})
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="no column 'label'; its columns are a, b, c"):
        gd.load(path, target="label")
    with pytest.raises(DataError, match="non-integer numbers"):
        gd.load(path, target="c")
    with pytest.raises(DataError, match="options are target, categorical, sep"):
        gd.load(path, resize=3)


def test_decode_clips_out_of_range_vectors_to_the_fitted_range():
    frame = mixed_frame()
    enc = TableEncoder().fit(frame)
    age, income, count = enc.column("age"), enc.column("income"), enc.column("count")
    assert (age.minimum, age.maximum) == (frame["age"].min(), frame["age"].max())
    z = torch.zeros(4, enc.dim, dtype=torch.float64)
    z[:, age.start] = torch.tensor([-50.0, 50.0, 0.0, float("nan")])  # +-50 std: far outside the data
    z[:, income.start] = torch.tensor([-1e6, 1e6, 0.0, 0.0])
    z[:, count.start] = torch.tensor([-9.0, 9.0, 0.0, 0.0])
    z[:, enc.column("colour").start : enc.column("colour").stop] = torch.tensor([[-3.0, 5.0, 1.0]] * 4)  # argmax: green
    rows = enc.decode(z)
    assert rows["age"].tolist()[:2] == [frame["age"].min(), frame["age"].max()] and rows["age"].dtype == np.int64
    assert rows["age"][3] == round(frame["age"].mean())  # NaN decodes to the mean, rounded for an integer column
    assert rows["income"].tolist()[:2] == [frame["income"].min(), frame["income"].max()]
    assert rows["count"].tolist()[:2] == [0, 4] and rows["count"].dtype == np.int32
    assert rows["colour"].tolist() == ["green"] * 4  # categories come back as their labels
    assert set(rows["size"]) <= {"S", "M", "L"} and set(rows["member"]) <= {False, True}


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"name": "a"}],
        [{"name": "a", "kind": "numeric", "start": 0, "stop": 1, "dtype": "float64", "mean": "0", "std": 1.0}],
        [{"name": "a", "kind": "numeric", "start": 0, "stop": 1, "dtype": "no-such-dtype", "mean": 0.0, "std": 1.0}],
        [{"name": "a", "kind": "categorical", "start": 0, "stop": 2, "dtype": "object", "categories": ["x"]}],
        [{"name": "a", "kind": "numeric", "start": 1, "stop": 2, "dtype": "float64", "mean": 0.0, "std": 1.0}],
        [{"name": "a", "kind": "script", "start": 0, "stop": 1, "dtype": "float64", "evil": "os.system"}],
    ],
)
def test_encoder_from_untrusted_json_is_checked(bad):
    with pytest.raises(DataError, match="table encoder"):
        TableEncoder.from_dict({"columns": bad})


def test_a_table_dataset_decodes_rows_and_other_data_refuses():
    data = gd.load("iris")
    pd.testing.assert_frame_equal(data.decode_rows(data.storage.double()), data.frame, check_exact=False, rtol=1e-5)
    with pytest.raises(DataError, match="'digits' holds image data, not a table"):
        gd.load("digits").decode_rows(torch.zeros(1, 64))
