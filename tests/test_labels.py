"""Class labels across the registry: every model checks `cond` the same way (GenerativeModel.check_labels).

An unconditional model refuses labels instead of ignoring them; a class-conditional one refuses
labels outside [0, num_classes) and takes one label for all samples. Models are built untrained
(labels are checked before any network runs).
"""

import dataclasses

import pytest
import torch

import genlab
from genlab.errors import ConfigError
from genlab.registry import entries

pytestmark = pytest.mark.usefixtures("one_thread")


def image_models():
    return [e for e in entries() if e.model_class.__module__.startswith("genlab.") and "image" in e.model_class.data_kinds]


def conditional(entry) -> bool:
    return "class_conditional" in {f.name for f in dataclasses.fields(entry.config_class)}


@pytest.fixture(scope="module")
def digits():
    return genlab.data.load("digits")


def _create(entry, digits, **fields):
    if entry.name == "latent-diffusion":
        pytest.skip("needs a trained autoencoder run; its labels go through DiffusionModel, tested as ddpm")
    return genlab.create(entry.name, data=digits, **fields)


@pytest.mark.parametrize("name", [e.name for e in image_models()])
def test_unconditional_models_refuse_labels(name, digits):
    entry = next(e for e in image_models() if e.name == name)
    model = _create(entry, digits)
    if getattr(model.config, "class_conditional", False):
        pytest.skip("conditional by default")
    assert model.num_classes is None  # what `genlab sample --class` asks (genlab.apps.sampling)
    with pytest.raises(ConfigError, match="unconditional; pass cond=None"):
        model.sample(2, cond=torch.tensor([1, 2]), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", [e.name for e in image_models() if conditional(e)])
def test_conditional_models_check_the_range_of_labels(name, digits):
    entry = next(e for e in image_models() if e.name == name)
    try:
        model = _create(entry, digits, class_conditional=True)
    except ConfigError as error:  # a config that has the field but cannot condition says so
        assert "not supported" in str(error)
        pytest.skip(str(error))
    assert model.num_classes == 10
    for bad in (torch.tensor([0, 10]), torch.tensor([-1, 0]), torch.tensor([1, 2, 3])):
        with pytest.raises(ConfigError, match=r"labels in \[0, 9\]"):
            model.sample(2, cond=bad, generator=torch.Generator().manual_seed(0))


def test_one_label_stands_for_all(digits):
    model = genlab.create("ddpm", data=digits, class_conditional=True)
    assert model.check_labels(7, 3, 10).tolist() == [7, 7, 7]
    assert model.check_labels(None, 3, 10) is None
