"""Every config key is read somewhere: a key that is accepted and silently ignored is a bug (DESIGN.md).

The check walks every config model (pydantic fields, nested sections included) and looks for each
field's name as an attribute read (`x.name`), a `getattr(x, "name")`, a keyword argument or a dict
key in the package's code outside config.py. A field whose name appears nowhere else cannot be read
(messages and docstrings do not count)."""
import ast
from pathlib import Path

import pydantic

from alignlab import config

PKG = Path(config.__file__).parent


def _models() -> list[type[pydantic.BaseModel]]:
    return [v for v in vars(config).values()
            if isinstance(v, type) and issubclass(v, pydantic.BaseModel) and v is not pydantic.BaseModel
            and v.__module__ == config.__name__]


def _names_read() -> set[str]:
    names: set[str] = set()
    for path in PKG.rglob("*.py"):
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) > 1:
                if isinstance(node.args[1], ast.Constant):
                    names.add(str(node.args[1].value))
            elif isinstance(node, ast.keyword) and node.arg:  # Model(key=...)
                names.add(node.arg)
            elif isinstance(node, ast.Dict):  # model_copy(update={"key": ...})
                names.update(k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return names


def test_every_config_field_is_read_by_some_code():
    read = _names_read()
    unread = sorted(f"{m.__name__}.{f}" for m in _models() for f in m.model_fields if f not in read)
    assert not unread, f"accepted but never read outside config.py: {unread}; read them or remove them"


def test_the_check_can_fail():
    """The walker sees a field that nothing reads."""

    class Probe(config.Strict):
        a_setting_nobody_reads_xyz: int = 0

    read = _names_read()
    assert "a_setting_nobody_reads_xyz" not in read and "micro_batch" in read
