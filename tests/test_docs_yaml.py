"""Every FileImport example in docs/ loads with `dg check defs` in a new project; a wrong write setting
in one is reported with its file and key."""

from __future__ import annotations

import pathlib
import re

import pytest
from test_init_dg import dg, sales  # noqa: F401 - the `coco init` project fixture

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```yaml\n(type: core4_pipelines\.(?:FileImport|SftpDownload)\n.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        found += [(f"{page.name}#{n}", text) for n, text in enumerate(BLOCK.findall(page.read_text()), 1)]
    return found


def test_the_docs_show_an_example_per_write_mode_and_reader():
    texts = "\n".join(text for _, text in examples())
    for setting in ("mode: upsert", "mode: merge", "mode: replace", "duplicates: skip", "bad_rows: divert",
                    "reader: csv", "reader: json", "reader: xlsx", "reader: parquet", "skip_lines:", "header: none",
                    "type: core4_pipelines.SftpDownload"):
        assert setting in texts, setting


def test_every_file_import_example_in_the_docs_passes_dg_check_defs(sales):  # noqa: F811
    project, env = sales
    defs = project / "sales" / "defs"
    for number, (where, text) in enumerate(examples()):
        folder = defs / f"example_{number}"
        folder.mkdir()
        (folder / "defs.yaml").write_text(f"# docs/{where}\n{text}")  # dg names the file: this says the page
    done = dg(project, env, "check", "defs")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("attributes", "key", "expected"), [
    ("mode: upsert", "attributes.keys", "mode upsert needs keys"),
    ("mode: insert\n  keys: [sku]", "attributes.keys", "keys are for the modes upsert and merge"),
    ("bad_rows: skip\n  max_bad_rows: 2.5", "attributes.max_bad_rows", "max_bad_rows must be a count"),
    ("mode: sideways", "mode", "'sideways'"),
])
def test_a_wrong_write_setting_names_the_file_and_the_key(sales, attributes, key, expected):  # noqa: F811
    project, env = sales
    path = project / "sales" / "defs" / "records" / "defs.yaml"
    path.write_text(path.read_text().replace("  collection: records\n", f"  collection: records\n  {attributes}\n"))
    done = dg(project, env, "check", "defs")
    output = done.stdout + done.stderr
    assert done.returncode != 0 and str(path) in output and key in output and expected in output, output
