"""Install fixture configuration trees into a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

LAYOUTS = Path(__file__).parent.parent / "fixtures" / "fpm_layouts"
CASES = Path(__file__).parent.parent / "fixtures" / "cases"
ROOT_MARK = "@ROOT@"


def install_tree(source: Path, root: Path) -> Path:
    """Copy ``source`` to ``root``, replace @ROOT@ in every file, and create run/ and log/."""
    shutil.copytree(source, root, dirs_exist_ok=True)
    for path in root.rglob("*"):
        if path.is_file():
            path.write_text(path.read_text().replace(ROOT_MARK, str(root)))
    (root / "run").mkdir(exist_ok=True)
    (root / "log").mkdir(exist_ok=True)
    return root


def install_layout(name: str, root: Path) -> Path:
    return install_tree(LAYOUTS / name, root)
