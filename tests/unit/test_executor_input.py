"""FleetExecutor's checks at submit: a function named by import path, JSON arguments."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from orchestration.integrations.executor import import_path
from tests import integration_functions
from workers.evaluators.call import to_json


def test_module_level_functions_and_partials_are_named_by_import_path() -> None:
    assert import_path(integration_functions.square).path == "tests.integration_functions:square"
    assert import_path(math.sqrt).path == "math:sqrt"
    target = import_path(functools.partial(integration_functions.add, 1.0, b=2.0))
    assert (target.path, target.args, dict(target.kwargs)) == (
        "tests.integration_functions:add", (1.0,), {"b": 2.0},
    )


def test_a_lambda_is_refused() -> None:
    with pytest.raises(TypeError, match="lambda cannot be named by import path"):
        import_path(lambda x: x)


def test_a_nested_function_is_refused() -> None:
    def inner(x: float) -> float:
        return x

    with pytest.raises(TypeError, match="defined inside a function"):
        import_path(inner)


def test_a_function_whose_module_does_not_import_is_refused() -> None:
    def orphan(x: float) -> float:
        return x

    orphan.__qualname__ = "orphan"
    orphan.__module__ = "no_such_module_evofleet"
    with pytest.raises(ValueError, match="no_such_module_evofleet:orphan does not import"):
        import_path(orphan)


def test_a_rebound_name_or_a_callable_object_is_refused() -> None:
    def square(x: float) -> float:
        return x

    square.__qualname__ = "square"
    square.__module__ = "tests.integration_functions"
    with pytest.raises(ValueError, match="does not lead back"):
        import_path(square)
    with pytest.raises(TypeError, match="has no import path"):
        import_path(functools.partial(object.__new__(type("Callable", (), {"__call__": print}))))


def test_arguments_become_plain_json() -> None:
    value = {"a": (1, 2.5), "b": np.array([[1.0, 2.0]]), "c": np.float32(0.5), "d": np.int64(3)}
    assert to_json(value) == {"a": [1, 2.5], "b": [[1.0, 2.0]], "c": 0.5, "d": 3}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, r"args\[0\] is a set"),
        (float("nan"), r"args\[0\] is nan"),
        ({1: "x"}, r"args\[0\] has a key that is not a string"),
        (np.array([1.0, np.inf]), r"args\[0\]\[1\] is inf"),
    ],
)
def test_non_json_arguments_are_named(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        to_json([value], "args")
