"""Rewrite the code deps (src/ and assets/ entries) of every stage in dvc.yaml from its import closure.

tests/test_dvc_deps.py defines the closure and fails when dvc.yaml diverges from it; run this after changing imports:
    .venv/bin/python scripts/sync_dvc_deps.py
Data deps, params and outs are left as they are. The file is rewritten line by line, so comments survive.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_dvc_deps import ASSETS_READ_BY, ROOT, import_closure, stage_module, stages  # noqa: E402

CODE_DEP = re.compile(r"^\s*- (src|assets)/")


def synced_lines(lines: list[str], stage_table: dict[str, dict]) -> list[str]:
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        name = re.match(r"^  (\w+):\s*$", line)
        if name and name.group(1) in stage_table:
            stage = name.group(1)
        if stage and re.match(r"^\s*deps:\s*$", line):
            out.append(line)
            i += 1
            items, indent = [], None
            while i < len(lines) and re.match(r"^\s*- ", lines[i]) and (indent is None or lines[i].startswith(indent + "- ")):
                indent = indent or re.match(r"^(\s*)- ", lines[i]).group(1)
                items.append(lines[i])
                i += 1
            closure = sorted(str(p.relative_to(ROOT)) for p in import_closure(stage_module(stage_table[stage])))
            assets = sorted({a for f in closure for a in ASSETS_READ_BY.get(f, [])})
            out.extend([x for x in items if not CODE_DEP.match(x)] + [f"{indent}- {p}" for p in closure + assets])
            continue
        out.append(line)
        i += 1
    return out


def main() -> None:
    path = ROOT / "dvc.yaml"
    path.write_text("\n".join(synced_lines(path.read_text().splitlines(), stages())) + "\n")


if __name__ == "__main__":
    main()
