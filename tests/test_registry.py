import subprocess
import sys

import pytest

from ffr.errors import FFRError
from ffr.registry import Registry


def test_register_get_and_unknown_name_lists_choices():
    r = Registry("widget")
    r.register("a")(int)
    assert r.get("a") is int and "a" in r and r.names() == ["a"]
    with pytest.raises(FFRError, match="unknown widget 'b'; expected one of: a"):
        r.get("b")
    with pytest.raises(RuntimeError, match="twice"):
        r.register("a")(float)


def test_lazy_entries_import_only_when_used():
    code = ("import sys, pipelines.backends as b; assert 'diffusers' in b.BACKENDS.names(); "
            "assert 'diffusers' not in sys.modules and 'torch' not in sys.modules; "
            "b.BACKENDS.get('diffusers'); assert 'pipelines.backends.diffusers_backend' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
