"""The one option mechanism (ffr.options) and the one group-key parser."""

from __future__ import annotations

import pytest

from ffr import options
from ffr.errors import FFRError
from ffr.options import Field, Options
from ffr.registry import Registry


class Example(Options):
    width: int = Field(32, ge=1, description="channels")
    lr: float = 0.1
    names: tuple[str, ...] = ("a",)


REGISTRY: Registry = Registry("backbone")
REGISTRY.register("example")(type("Entry", (), {"Options": Example}))
REGISTRY.register("bare")(lambda: None)


def test_typed_fields_and_defaults():
    got = REGISTRY.options("example", {"width": 3, "lr": 1})
    assert (got.width, got.lr, got.names) == (3, 1.0, ("a",)) and isinstance(got.lr, float)
    assert options.defaults(Example) == {"width": 32, "lr": 0.1, "names": ["a"]}
    assert options.rows(Example, got, "backbone_options.")[0] == ("backbone_options.width", 32, 3, "channels")


@pytest.mark.parametrize("values, message", [
    ({"widht": 3}, "unknown option 'backbone_options.widht' of backbone 'example'; did you mean 'width'?"),
    ({"momentum": 3},
     "unknown option 'backbone_options.momentum' of backbone 'example'; expected one of: lr, names, width"),
    ({"width": 0}, "option 'backbone_options.width' of backbone 'example' = 0: input should be greater than or equal"),
    ({"width": "a"}, "option 'backbone_options.width' of backbone 'example' = 'a': input should be a valid integer"),
])
def test_bad_options_are_one_line_naming_the_key(values, message):
    with pytest.raises(FFRError) as e:
        REGISTRY.options("example", values, "backbone_options")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_entries_without_options_refuse_any_key():
    assert REGISTRY.options("bare", {}).to_dict() == {}
    with pytest.raises(FFRError, match="unknown option 'x' of backbone 'bare'"):
        REGISTRY.options("bare", {"x": 1})


@pytest.mark.parametrize("key", ["1,0", "1_0", "1/0", (1, 0), [1, 0], " 1, 0"])
def test_group_key_spellings(key):
    assert options.group_key(key) == (1, 0)


@pytest.mark.parametrize("key, message", [("a", "is not a group 'y,b'"), ("0,1,2", "is not a group"),
                                          ("2,0", "is outside 2 classes × 2 biases"), ((True, 0), "is not a group")])
def test_bad_group_keys(key, message):
    with pytest.raises(FFRError, match=message):
        options.group_key(key, "budget key", n_classes=2, n_bias=2)
