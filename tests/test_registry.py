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


def _distribution(site, group: str, entries: dict[str, str]) -> None:
    info = site / "some_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: some-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path that holds installed distributions; the entry-point scan is redone around it."""
    from ffr import registry

    monkeypatch.syspath_prepend(str(tmp_path))
    registry._all_entry_points.cache_clear()
    yield tmp_path
    registry._all_entry_points.cache_clear()


def test_entry_points_join_the_registry_and_load_only_when_used(site):
    (site / "some_widgets.py").write_text("import sys\nclass Sprocket:\n    pass\nsys.modules[__name__].loaded = 1\n")
    _distribution(site, "ffr.widgets", {"sprocket": "some_widgets:Sprocket", "broken": "no_such_module:Thing"})
    r = Registry("widget", plugins="ffr.widgets")
    r.register("cog")(int)
    assert r.names() == ["broken", "cog", "sprocket"] and "sprocket" in r
    assert "some_widgets" not in sys.modules  # listed, not imported
    assert r.get("sprocket").__name__ == "Sprocket" and r.get("sprocket") is r.get("sprocket")
    with pytest.raises(FFRError, match=r"widget 'broken': plugin 'no_such_module:Thing' \(ffr.widgets\) failed to "
                                       r"load: ModuleNotFoundError"):
        r.get("broken")
    assert "sprocket" not in Registry("widget").names()  # a registry without a group sees no plugins


def test_a_plugin_may_not_shadow_a_built_in_entry(site):
    _distribution(site, "ffr.widgets", {"cog": "some_widgets:Cog"})
    r = Registry("widget", plugins="ffr.widgets")
    r.register("cog")(int)
    with pytest.raises(FFRError, match=r"plugin 'some_widgets:Cog' \(ffr.widgets\) registers widget 'cog', which "
                                       r"ffr already has; expected a new name"):
        r.get("cog-x")
