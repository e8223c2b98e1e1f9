"""The list-of-patterned-strings checks of matrix rows (arch lists, torch:python excludes, head-dim
pairs): every element checked, the first bad one named."""

from __future__ import annotations

import pytest

from attn_installer import checks as c
from attn_installer.matrix import fields


@pytest.mark.parametrize(("check", "good", "bad", "message"), [
    (fields._sm_list, ["sm_90", "sm_100"], "sm9", "'sm9' is not an arch like sm_90"),
    (fields._torch_python_pairs, ["2.4:3.13"], "2.4", "'2.4' is not a torch:python pair like 2.4:3.13"),
    (fields._head_dim_pairs, ["192/128"], "0/1", "'0/1' is not a Q/K / V head-dim pair like '192/128'"),
])
def test_patterned_string_lists(check, good, bad, message):
    assert check(good) == tuple(good)
    with pytest.raises(c.Bad, match="^" + message.replace("(", r"\(") + "$"):
        check([*good, bad])
    with pytest.raises(c.Bad, match="expected a list of strings"):
        check("sm_90")
