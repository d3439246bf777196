"""The Estimator spec without HTTP."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainhub.spec import NotSupportedYet, SpecError, flatten_script_params, parse_estimator


def test_flatten_follows_azure_ml() -> None:
    assert flatten_script_params(
        {"--lr": 0.1, "--verbose": "", "--n": 3, "--flag": True, "--x": None}
    ) == [
        "--lr",
        "0.1",
        "--verbose",
        "--n",
        "3",
        "--flag",
        "True",
        "--x",
    ]


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.integers(), st.text(min_size=1))))
def test_flatten_pairs_every_key_with_its_value(params: dict[str, int | str]) -> None:
    args = flatten_script_params(dict(params))
    assert args[0::2] == list(params)
    assert args[1::2] == [str(v) for v in params.values()]


def test_defaults_match_the_azure_estimator() -> None:
    spec = parse_estimator(json.dumps({"entry_script": "train.py"}))
    assert (spec.compute_target, spec.node_count, spec.process_count_per_node) == ("local", 1, 1)
    assert spec.use_docker and not spec.use_gpu and spec.framework == "Python"


def test_older_image_name_is_accepted() -> None:
    spec = parse_estimator(
        json.dumps({"entry_script": "a.py", "custom_docker_base_image": "img:1"})
    )
    assert spec.image == "img:1"


def test_not_supported_yet_is_a_spec_error_naming_the_field() -> None:
    with pytest.raises(NotSupportedYet) as caught:
        parse_estimator(json.dumps({"entry_script": "a.py", "inputs": [{"datastore": "d"}]}))
    assert isinstance(caught.value, SpecError)
    assert caught.value.field == "inputs"


def test_nested_unknown_field_is_named_with_its_path() -> None:
    with pytest.raises(SpecError) as caught:
        parse_estimator(
            json.dumps({"entry_script": "a.py", "distributed_training": {"type": "mpi", "x": 1}})
        )
    assert caught.value.field == "distributed_training.x"


def test_public_spec_hides_registry_password() -> None:
    from trainhub.spec import EstimatorSpec, RegistryDetails

    spec = EstimatorSpec(
        entry_script="a.py",
        custom_docker_image="r/x:1",
        image_registry_details=RegistryDetails(address="r", username="u", password="hunter2"),
    )
    assert "hunter2" not in json.dumps(spec.to_public())
