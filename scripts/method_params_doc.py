"""Write the parameter tables of docs/methods.md from the methods' declared parameters.

A table sits between ``<!-- params: NAME -->`` and ``<!-- /params -->``; ``<!-- params: NAME except
OTHER -->`` lists only the parameters NAME adds to OTHER's. Run it after changing a method's ``Param``
declarations; ``--check`` only reports whether the file is up to date (tests/test_params.py runs it).

    python scripts/method_params_doc.py [--check] [docs/methods.md]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- params: (?P<name>[\w+-]+)(?: except (?P<other>[\w+-]+))? -->\n)(?P<body>.*?)(<!-- /params -->)",
                   re.S)
DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def table(name: str, other: str | None = None) -> str:
    """The Markdown table of ``name``'s parameters (without those of ``other``)."""
    from napari_labelfx.core.params import ParamSpec
    from napari_labelfx.engine.factory import method_spec

    spec, _ = method_spec(name)
    if other:
        skip = set(method_spec(other)[0].names())
        spec = ParamSpec(tuple(p for p in spec if p.name not in skip))
    return spec.markdown_table() + "\n"


def render(text: str) -> str:
    """``text`` with every marked table regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group("name"), m.group("other")) + m.group(5), text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if not a.startswith("--")]
    path = Path(paths[0]) if paths else DOC
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if check:
        if new != text:
            print(f"{path}: parameter tables are out of date; run python scripts/method_params_doc.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
