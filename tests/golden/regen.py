"""Regenerate the golden endpoint folders that tests/test_render.py compares against.

    python tests/golden/regen.py

writes tests/golden/<site>/{config.yaml, user_config_template.yaml.j2, user_config_schema.json}
for every site shipped in src/faasctl/sites/, each checked first with Globus Compute's
loader, and refreshes the file listings in docs/sites/*.md (the fenced block after each
``<!-- golden: SITE/FILE -->`` line). Review the diff (git diff tests/golden docs/sites)
before committing: it is exactly what changes in the endpoint folders admins install.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from faasctl.sites.render import render_endpoint, write_endpoint
from faasctl.sites import load_site, shipped_sites_dir

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parents[1]
DOCS = ROOT / "docs" / "sites"
#: ``<!-- golden: river/config.yaml -->`` then a fenced block, whose body is the golden file
DOC_BLOCK = re.compile(r"(<!-- golden: (?P<ref>[\w.-]+/[\w.-]+) -->\n```\w*\n)(?P<body>.*?)(```)", re.DOTALL)


def doc_blocks(text: str) -> list[tuple[str, str]]:
    """(golden reference, block body) for every marked block of a docs page."""
    return [(m.group("ref"), m.group("body")) for m in DOC_BLOCK.finditer(text)]


def refresh_docs() -> list[Path]:
    changed = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        new = DOC_BLOCK.sub(lambda m: m.group(1) + (GOLDEN / m.group("ref")).read_text() + m.group(4), text)
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed


def main() -> int:
    shipped = sorted(shipped_sites_dir().glob("*.yaml"))
    for folder in GOLDEN.iterdir():  # drop folders of sites that are gone
        if folder.is_dir() and folder.name[0] not in "_." and not (shipped_sites_dir() / f"{folder.name}.yaml").exists():
            shutil.rmtree(folder)
    for path in shipped:
        # the shipped file itself, never an admin's override in ~/.config/faasctl/sites
        files = render_endpoint(load_site(path.stem, site_file=path))
        for written in write_endpoint(files, GOLDEN / path.stem):
            written.chmod(0o644)
            print(written.relative_to(ROOT))
    for page in refresh_docs():
        print(page.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
