"""Tables: TableEncoder round trips, scikit-learn tables, CSV files."""

from __future__ import annotations

import json
from pathlib import Path

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
    enc = TableEncoder(numeric="standard").fit(frame)
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
    assert data.source == {"name": str(path.resolve()), "seed": 0, "target": "species", "categorical": "count", "numeric": "quantile"}
    assert torch.equal(gd.load(**data.source).storage, data.storage)
    decoded = data.encoder.decode(data.storage.double())
    assert (decoded["colour"].astype(str) == frame["colour"]).all()
    assert np.allclose(decoded["income"], frame["income"]) and (decoded["age"] == frame["age"]).all()


def test_csv_errors(tmp_path):
    frame = pd.DataFrame({"a": [1.0, np.inf, 3.0, 4.0], "b": ["x", "y", None, "x"], "c": [1.5, 2.5, 3.5, 4.5]})
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"holes.csv' has infinite values in column\(s\) a; replace them"):
        gd.load(path)
    frame = frame.replace(np.inf, 2.0)
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="target column 'b' of .* has 1 missing labels; drop those rows"):
        gd.load(path, target="b")
    with pytest.raises(DataError, match="unknown kind 'colour'; choose one of continuous, integer"):
        gd.load(path, kinds="a=colour")
    with pytest.raises(DataError, match="column 'b' holds .* values, not numbers; it cannot be continuous"):
        gd.load(path, kinds="b=continuous")
    with pytest.raises(DataError, match="no column 'label'; its columns are a, b, c"):
        gd.load(path, target="label")
    with pytest.raises(DataError, match="non-integer numbers"):
        gd.load(path, target="c")
    with pytest.raises(DataError, match="options are target, categorical, sep, numeric, kinds"):
        gd.load(path, resize=3)


def test_decode_clips_out_of_range_vectors_to_the_fitted_range():
    frame = mixed_frame()
    enc = TableEncoder(numeric="standard").fit(frame)
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


# -- kinds, transforms, missing values ---------------------------------------------------------------
def typed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Every column kind, with missing values in some."""
    rng = np.random.default_rng(seed)
    bimodal = np.where(rng.random(n) < 0.3, rng.normal(-5, 0.5, n), rng.normal(10, 2, n)).round(3)
    frame = pd.DataFrame({
        "price": bimodal,
        "rooms": rng.integers(1, 6, n),
        "floor": rng.integers(0, 30, n).astype(float),  # an integer column with holes reads as float
        "city": rng.choice(["Oslo", "Lima", "Pune"], n).astype(object),
        "grade": pd.Categorical(rng.choice(["low", "mid", "high"], n), categories=["low", "mid", "high"], ordered=True),
        "garden": rng.random(n) < 0.4,
        "built": pd.to_datetime("2001-01-01") + pd.to_timedelta(rng.integers(0, 7000, n), unit="D"),
    })
    frame.loc[rng.random(n) < 0.1, "floor"] = np.nan
    frame.loc[rng.random(n) < 0.2, "city"] = None
    frame.loc[rng.random(n) < 0.05, "price"] = np.nan
    return frame


def test_column_kinds_are_inferred_and_overridable():
    frame = typed_frame()
    assert gd.tables.column_kinds(frame) == {"price": "continuous", "rooms": "integer", "floor": "integer", "city": "categorical",
                                             "grade": "ordinal", "garden": "boolean", "built": "datetime"}
    text = frame.assign(built=frame.built.dt.strftime("%Y-%m-%d"))  # as read from a CSV
    assert gd.tables.column_kinds(text, {"rooms": "categorical"})["rooms"] == "categorical"
    assert gd.tables.column_kinds(text)["built"] == "datetime"


@pytest.mark.parametrize("numeric", ["quantile", "standard", "mode"])
def test_every_kind_round_trips_exactly_with_missing_values(numeric):
    frame = typed_frame()
    enc = TableEncoder(numeric=numeric).fit(frame)
    z = enc.encode(frame, dtype=torch.float64)
    back = enc.decode(z)
    assert back["floor"].dtype == "Int64" and back["city"].isna().sum() == frame["city"].isna().sum()
    expected = frame.assign(floor=frame["floor"].astype("Int64"))
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    # float32 storage as models see it: the same rows (numbers come back at the column's decimals)
    pd.testing.assert_frame_equal(enc.decode(enc.encode(frame)), expected, check_exact=False, rtol=1e-6)
    restored = TableEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert restored.columns == enc.columns and torch.equal(restored.encode(frame, dtype=torch.float64), z)


def test_quantile_codes_are_standard_normal_and_mode_codes_find_the_modes():
    frame = typed_frame(2000)
    z = TableEncoder().fit(frame).encode(frame, dtype=torch.float64)
    price = z[torch.tensor(frame["price"].notna().to_numpy()), 0]  # a bimodal column becomes one N(0, 1) coordinate
    assert abs(price.mean()) < 0.01 and abs(price.std() - 1) < 0.02
    enc = TableEncoder(numeric="mode").fit(frame)
    modes = sorted(enc.column("price").modes, key=lambda m: m[1])
    assert len(modes) >= 2 and abs(modes[0][1] + 5) < 0.2 and abs(modes[-1][1] - 10) < 0.5 and abs(modes[0][0] - 0.3) < 0.05
    c = enc.column("price")
    codes = enc.encode(frame, dtype=torch.float64)[:, c.start : c.start + c.value_width]
    assert torch.equal(codes[:, 1:].sum(1), torch.ones(len(frame), dtype=torch.float64))  # one mode each
    assert codes[:, 0].abs().max() < 1  # within 4 sigma of its mode


def test_blocks_and_missing_slots_layout():
    frame = typed_frame()
    enc = TableEncoder(numeric="mode").fit(frame)
    price, city, floor = enc.column("price"), enc.column("city"), enc.column("floor")
    assert price.missing and floor.missing and not enc.column("rooms").missing
    assert city.width == 4 and city.categories == ("Lima", "Oslo", "Pune")  # three cities and "missing"
    blocks = enc.blocks
    assert ("price", "continuous", price.start, price.start + 1) in blocks
    assert ("price", "categorical", price.start + 1, price.start + 1 + len(price.modes)) in blocks
    assert ("price", "categorical", price.stop - 2, price.stop) in blocks and ("city", "categorical", city.start, city.stop) in blocks
    covered = sorted(i for _, _, a, b in blocks for i in range(a, b))
    assert covered == list(range(enc.dim))  # every coordinate in exactly one block
    # a model that puts the missing slot first generates missing values at its rate; never new categories
    z = torch.zeros(50, enc.dim, dtype=torch.float64)
    z[:25, floor.stop - 1] = 1.0
    z[:, city.stop - 1] = torch.linspace(-1, 1, 50)
    rows = enc.decode(z)
    assert rows["floor"].isna().sum() == 25 and rows["city"].isna().sum() == 25
    assert set(rows["city"].dropna()) <= set(city.categories)


def test_encoders_saved_before_transforms_decode_as_they_did():
    """table_encoder.json of older runs: no numeric, transform, missing or kinds fields."""
    old = {"columns": [
        {"name": "age", "kind": "numeric", "start": 0, "stop": 1, "dtype": "int64", "mean": 40.0, "std": 10.0,
         "integer": True, "categories": None, "ordered": False, "minimum": 20.0, "maximum": 60.0},
        {"name": "pet", "kind": "categorical", "start": 1, "stop": 3, "dtype": "object", "mean": None, "std": None,
         "integer": False, "categories": ["cat", "dog"], "ordered": False, "minimum": None, "maximum": None},
    ]}
    enc = TableEncoder.from_dict(old)
    assert enc.numeric == "standard" and enc.kinds == {"age": "integer", "pet": "categorical"}
    rows = enc.decode(torch.tensor([[0.5, 0.1, 0.9], [-9.0, 1.0, 0.0]]))
    assert rows["age"].tolist() == [45, 20] and rows["pet"].tolist() == ["dog", "cat"]


def test_penguins_with_missing_values_load_and_decode(tmp_path):
    path = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tables" / "penguins.csv"
    if not path.is_file():
        pytest.skip("../shared/datasets/tables/penguins.csv is not here")
    data = gd.load(path, target="species")
    original = pd.read_csv(path)
    assert data.encoder.column("sex").missing and data.spec.class_names == ("Adelie", "Chinstrap", "Gentoo")
    rows = data.decode_rows(data.storage)
    assert rows.isna().sum().to_dict() == original.isna().sum().to_dict()
    rows.to_csv(tmp_path / "back.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "back.csv"), original)  # the same table, integers as integers
    assert "195,3250,female" in (tmp_path / "back.csv").read_text()
