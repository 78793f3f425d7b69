"""The field rules of gem_app.io.records that no corpus test reaches directly."""

import pytest

from gem_app.io.records import check_texts


def test_check_texts_names_the_row_and_refuses_a_single_string():
    assert check_texts(("a", "b")) == ["a", "b"]
    with pytest.raises(ValueError, match="text at row 1 is int, not str"):
        check_texts(["a", 3])
    with pytest.raises(ValueError, match="got a single str"):
        check_texts("abc")
