"""Where the data comes from: each download's source is an external asset upstream of the
inbox, so a project's lineage reads source -> inbox -> collection; and every description
the framework writes renders as written in the UI, which reads descriptions as Markdown."""

from __future__ import annotations

import importlib
import textwrap
import uuid
from pathlib import Path

import dagster as dg
import pytest
from markdown_it import MarkdownIt

from core4_pipelines.download.job import download_job
from core4_pipelines.errors import JobSettingsError
from core4_pipelines.ingest.assets import md_code, md_text
from core4_pipelines.ingest.job import import_job
from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.ingest.readers import read_csv

REPO = Path(__file__).resolve().parent.parent
# CommonMark as the UI's renderer reads it (react-markdown with GitHub's tables and strike-through).
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def rendered(text: str) -> tuple[str, list[str]]:
    """What the UI shows of Markdown ``text`` (its visible characters), and what it took for markup."""
    shown, markup = [], []
    for block in MARKDOWN.parse(text):
        if block.type in ("html_block",):
            markup.append(block.content)
        if block.type in ("heading_open", "bullet_list_open", "ordered_list_open", "blockquote_open", "hr", "table_open"):
            markup.append(block.type)
        for token in block.children or []:
            if token.type in ("text", "code_inline"):
                shown.append(token.content)
            elif token.type in ("softbreak", "hardbreak"):
                shown.append("\n")
            elif token.type in ("html_inline", "em_open", "strong_open", "s_open", "link_open", "image"):
                markup.append(token.content or token.type)
    return "".join(shown), markup


def no_raw_angle_bracket(text: str) -> bool:
    """Every "<" outside a code span is escaped (a code span shows its text as written)."""
    outside = "".join(part for i, part in enumerate(text.split("`")) if i % 2 == 0)
    return all(outside[i - 1] == "\\" for i, char in enumerate(outside) if char == "<")


def descriptions(defs: dg.Definitions) -> dict[str, str]:
    """Every description a project's definitions carry: assets, checks, jobs, sensors, schedules."""
    found = {}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        found[f"asset {key.to_user_string()}"] = graph.get(key).description
    for spec in defs.resolve_all_asset_specs():
        found[f"asset {spec.key.to_user_string()}"] = spec.description
    repository = defs.get_repository_def()
    for check in graph.asset_check_keys:
        found[f"check {check.to_user_string()}"] = graph.get_check_spec(check).description
    for job in repository.get_all_jobs():
        found[f"job {job.name}"] = job.description
        for op in job.all_node_defs:
            found[f"op {op.name}"] = op.description
    for sensor in repository.sensor_defs:
        found[f"sensor {sensor.name}"] = sensor.description
    for schedule in repository.schedule_defs:
        found[f"schedule {schedule.name}"] = schedule.description
    return {name: text for name, text in found.items() if text}


@pytest.fixture
def demo_defs(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    monkeypatch.syspath_prepend(str(REPO / "projects" / "demo"))
    return importlib.import_module("demo.definitions").defs


@pytest.fixture
def yaml_project(tmp_path, monkeypatch):
    """yaml_project({folder: defs.yaml}) -> (name, Definitions) of a new project package."""
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))

    def make(components: dict[str, str]):
        name = f"p{uuid.uuid4().hex[:10]}"
        package = tmp_path / "home" / name / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text('__project__ = "core4"\n')
        (package / f"{name}.yaml").write_text("")
        (package / "definitions.py").write_text(
            f"from core4_pipelines import project_definitions\n\ndefs = project_definitions({name!r})\n")
        for folder, text in components.items():
            (package / "defs" / folder).mkdir(parents=True)
            (package / "defs" / folder / "defs.yaml").write_text(textwrap.dedent(text))
        monkeypatch.syspath_prepend(str(package.parent))
        return name, importlib.import_module(f"{name}.definitions").defs

    return make


HTTP_PROJECT = {
    "readings": """
        type: core4_pipelines.FileImport
        attributes:
          collection: readings
          pattern: 'readings-.*\\.csv$'
    """,
    "fetch": """
        type: core4_pipelines.HttpDownload
        attributes:
          collection: readings
          url: "https://reader:s3cret@example.org/readings/{date:%Y-%m-%d}.csv"
          file_name: "readings-{date:%Y%m%d}.csv"
          headers: {Authorization: READINGS_TOKEN}
    """,
}


def lineage(defs: dg.Definitions, project: str, collection: str):
    graph = defs.resolve_asset_graph()
    source, inbox = dg.AssetKey([project, f"{collection}_source"]), dg.AssetKey([project, f"{collection}_inbox"])
    return graph, source, inbox, dg.AssetKey([project, collection])


def test_the_demos_lineage_is_source_inbox_collection(demo_defs):
    graph, source, inbox, collection = lineage(demo_defs, "demo", "readings")
    assert graph.get(collection).parent_keys == {inbox}
    assert graph.get(inbox).parent_keys == {source}
    node = graph.get(source)
    assert node.parent_keys == set() and not node.is_materializable  # external: nothing here makes it
    assert node.group_name == "demo" and node.kinds == {"python"}
    # A Python download: its source is named by the fetch function, described by its docstring.
    assert node.metadata["fetch"] == "demo.definitions.fetch_samples"
    assert node.metadata["download"] == "download_samples"
    assert "Fetch the bundled sample files" in rendered(node.description)[0]
    # The download still materializes the inbox, and only the inbox.
    assert demo_defs.resolve_job_def("download_samples").asset_layer.selected_asset_keys == {inbox}


def test_an_http_download_components_source_is_its_url_pattern_without_secrets(yaml_project, monkeypatch):
    monkeypatch.setenv("READINGS_TOKEN", "Bearer token-never-shown")
    name, defs = yaml_project(HTTP_PROJECT)
    graph, source, inbox, collection = lineage(defs, name, "readings")
    assert graph.get(collection).parent_keys == {inbox} and graph.get(inbox).parent_keys == {source}
    node = graph.get(source)
    assert not node.is_materializable and node.kinds == {"http"}
    assert node.metadata["source"] == "https://reader:***@example.org/readings/{date:%Y-%m-%d}.csv"
    shown = rendered(node.description)[0]
    assert "https://reader:***@example.org/readings/{date:%Y-%m-%d}.csv" in shown, shown
    # Neither the header's value nor the URL's password is in any metadata or description.
    texts = [str(dict(graph.get(key).metadata)) + str(graph.get(key).description) for key in graph.get_all_asset_keys()]
    texts += list(descriptions(defs).values())
    assert not [t for t in texts if "token-never-shown" in t or "s3cret" in t]


def test_a_python_download_declares_its_remote_with_source(project):
    name = project("shop")
    imports = import_job("import_sales", read=read_csv, collection="sales")
    download = download_job("fetch_sales", lambda: [], produces=imports,
                            source=["sftp://feed:pw@files.example.org/out/sales-*.csv",
                                    "https://example.org/sales/{date:%Y%m%d}.csv"])
    # Built for the project its module guessed, rebuilt for "shop": the source moves with it.
    graph, source, inbox, _ = lineage(project_definitions(name, jobs=[download, imports]), "shop", "sales")
    assert graph.get(inbox).parent_keys == {source}
    node = graph.get(source)
    assert node.kinds == {"sftp", "http"}
    assert node.metadata["sources"].value == ["sftp://feed:***@files.example.org/out/sales-*.csv",
                                              "https://example.org/sales/{date:%Y%m%d}.csv"]
    assert "files.example.org/out/sales-*.csv" in rendered(node.description)[0]


def test_a_source_of_ones_own_may_be_shared_and_a_different_one_under_its_key_is_refused(project):
    name = project("shop")
    feed = dg.AssetSpec(["shop", "partner_feed"], description="The partner's nightly export")
    imports = [import_job(f"import_{c}", read=read_csv, collection=c) for c in ("sales", "stock")]
    downloads = [download_job(f"fetch_{c}", lambda: [], produces=i, source=feed)
                 for c, i in zip(("sales", "stock"), imports)]
    graph = project_definitions(name, jobs=[*downloads, *imports]).resolve_asset_graph()
    assert graph.get(dg.AssetKey(["shop", "sales_inbox"])).parent_keys == {feed.key}
    assert graph.get(dg.AssetKey(["shop", "stock_inbox"])).parent_keys == {feed.key}
    assert graph.get(feed.key).description == "The partner's nightly export"

    other = download_job("fetch_stock", lambda: [], produces=imports[1],
                         source=dg.AssetSpec(feed.key, description="another feed"))
    with pytest.raises(JobSettingsError, match="fetch_sales and fetch_stock declare different assets shop/partner_feed"):
        project_definitions(name, jobs=[downloads[0], other, *imports])


def test_descriptions_render_as_written(demo_defs, yaml_project):
    name, http_defs = yaml_project(HTTP_PROJECT)
    every = {**{f"demo {k}": v for k, v in descriptions(demo_defs).items()},
             **{f"http {k}": v for k, v in descriptions(http_defs).items()}}
    assert len(every) > 12, every
    for what, text in every.items():
        assert no_raw_angle_bracket(text), f"{what}: {text!r}"
        assert rendered(text)[1] == [], f"{what}: {text!r} is rendered with markup {rendered(text)[1]}"
    shown = {what: rendered(text)[0] for what, text in every.items()}
    assert "Files waiting in <proc>/demo/ for their import, delivered by download_samples" in shown[
        "demo asset demo/readings_inbox"]
    assert r"matching readings-.*\.csv$ in the project's proc folder" in shown[
        "demo sensor import_readings_proc_sensor"]
    # An import's own inbox, with no download: the pattern keeps its backslash.
    external = project_definitions("demo", jobs=[import_job("import_x", read=read_csv, collection="x",
                                                            pattern=r"x_.*\.csv$", project="demo")])
    inbox = external.resolve_asset_graph().get(dg.AssetKey(["demo", "x_inbox"])).description
    assert r"Files waiting in <proc>/demo/ for import_x (names matching x_.*\.csv$)" in rendered(inbox)[0]


@pytest.mark.parametrize("text", [
    r"Files in <proc>/demo/ matching readings-.*\.csv$ or *_x_* ~y~ [a](b) &amp; `c` | d",
    "# not a heading\n- not a list\n+ nor this\n1. nor this\n> no quote\n=== no rule",
    r"C:\path\_x __init__ a_b_c",
])
def test_md_text_is_shown_as_written(text):
    shown, markup = rendered(md_text(text))
    assert markup == [] and shown == text


def test_md_code_shows_backticks_and_brackets_as_written():
    for text in ("<proc>/x", "a `b` c", "`edge`", r"readings-.*\.csv$"):
        shown, markup = rendered(md_code(text))
        assert markup == [] and shown == text
