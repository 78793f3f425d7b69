"""Session keys: one name each, unique, and the pages use no other (gem_app.app.session_keys)."""

import ast

from gem_app.app import session_keys as keys
from gem_app.app.bundle import PAGES_DIR


def test_keys_are_unique_and_prefixed_by_their_page():
    names = [n for n in keys.__all__ if n.isupper()]
    values = [getattr(keys, n) for n in names]
    assert len(set(values)) == len(values)
    assert sorted(keys.__all__) == sorted(
        n for n in vars(keys) if not n.startswith("_") and n != "annotations"
    )
    prefixes = {
        "DATA": "data_",
        "FIT": "fit_",
        "MAP": "map_",
        "TAX": "tax_",
        "CMP": "cmp_",
        "EVAL": "eval_",
        "MIX": "mix_",
    }
    for name, value in zip(names, values, strict=True):
        if name != "DATASET":
            assert value.startswith(prefixes[name.split("_")[0]]), (name, value)
    assert keys.tax_exclude_flag("3.1") == "tax_exclude_flag_3.1"
    assert keys.mix_editor("fit", "0123456789abcdef") == "mix_editor_fit_01234567"


def test_pages_use_no_literal_session_keys():
    literal = []
    for path in sorted(PAGES_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "key":
                if isinstance(node.value, (ast.Constant, ast.JoinedStr)):
                    literal.append(f"{path.name}:{node.lineno} key={ast.unparse(node.value)}")
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith(
                "session_state"
            ):
                if isinstance(node.slice, (ast.Constant, ast.JoinedStr)):
                    literal.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith(
                "session_state.get"
            ):
                if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                    literal.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert literal == [], "use gem_app.app.session_keys: " + "; ".join(literal)
    assert len(list(PAGES_DIR.glob("*.py"))) == 9  # the entry, shared.py and seven pages
