import numpy as np
import pytest

from ffr.errors import FFRError
from ffr.groups import GroupSpec, group_counts


def test_group_ids_are_stable_and_named():
    spec = GroupSpec(("landbird", "waterbird"), ("land", "water", "indoors"))
    assert spec.n_groups == 6 and spec.group_id(1, 2) == 5 and spec.decode(5) == (1, 2)
    assert spec.group_name(5) == "waterbird/indoors"
    np.testing.assert_array_equal(spec.group_id(np.array([0, 1]), np.array([1, 0])), [1, 3])


def test_source_groups():
    spec = GroupSpec(("a", "b"), ("x", "y")).with_sources()
    assert spec.n_groups == 8
    g = spec.group_id(1, 0, 1)
    assert g == (1 * 2 + 0) * 2 + 1 and spec.decode(g) == (1, 0, 1) and spec.group_name(g) == "b/x/synthetic"
    with pytest.raises(FFRError, match="source"):
        spec.group_id(0, 0)
    assert GroupSpec.from_dict(spec.to_dict()) == spec


def test_group_counts():
    assert group_counts(np.array([0, 0, 1]), np.array([1, 1, 0])) == {(0, 1): 2, (1, 0): 1}
