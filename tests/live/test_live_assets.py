"""The asset model as a user meets it under `coco serve`: GraphQL and the UI in a real browser.

One import of the demo with a bad file: the collection's lineage (inbox -> readings), its
latest materialization's file table, and the failed check no_rejected_files naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pymongo
import pytest
from livestack import REPO, SAMPLES, drop_into_proc, visible_entries, wait_for
from test_live_browser import wait_for_text

SCREENSHOTS = REPO / "docs" / "screenshots"
COLLECTION = {"path": ["demo", "readings"]}
INBOX = {"path": ["demo", "readings_inbox"]}

ASSET_NODES = """
query Nodes($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path } dependencyKeys { path } kinds groupName isMaterializable isObservable
    jobNames
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 20) {
        runId
        metadataEntries {
          label __typename
          ... on TableMetadataEntry { table { records } }
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""

OBSERVATIONS = """
query Observations($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetObservations(limit: 50) { metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  }
}
"""

CHECK_EXECUTIONS = """
query Checks($key: AssetKeyInput!) {
  assetCheckExecutions(assetKey: $key, checkName: "no_rejected_files", limit: 20) {
    runId status
    evaluation {
      success severity description
      metadataEntries { label __typename ... on TableMetadataEntry { table { records } } }
    }
  }
}
"""


def _entries(entries: list[dict]) -> dict[str, dict]:
    return {entry["label"]: entry for entry in entries}


def _table(entry: dict) -> list[dict]:
    return [json.loads(record) for record in entry["table"]["records"]]


@pytest.fixture(scope="module")
def imported_with_a_bad_file(live):
    """Two good readings files and one bad one dropped into demo's proc; the import's run id."""
    tag = uuid.uuid4().hex[:8]
    proc = live.root / "proc" / "demo"
    good = {}
    for sample in sorted(SAMPLES.glob("readings-*.csv"))[:2]:
        name = f"readings-{tag}-{sample.name[len('readings-'):]}"
        good[name] = sample.read_bytes()
    bad = f"readings-{tag}-broken.csv"
    for name, data in good.items():
        drop_into_proc(proc, name, data)
    drop_into_proc(proc, bad, b"station,value\nA,1.0\nB\n")
    client = pymongo.MongoClient(live.mongo_url, serverSelectionTimeoutMS=5000)
    readings = client["demo"]["readings"]
    error = live.root / "error" / "demo"

    def done():
        imported = all(readings.count_documents({"_src": name}) for name in good)
        rejected = [n for n in visible_entries(error) if n.startswith(bad) and not n.endswith(".reason.txt")]
        return imported and rejected and readings.distinct("_job_id", {"_src": {"$in": list(good)}})

    run_ids = wait_for(done, 180, "the daemon to import the good files and reject the bad one",
                       lambda: f"proc: {visible_entries(proc)}\n" + live.log_tail())
    client.close()
    assert len(run_ids) == 1, run_ids  # one batch
    return {"tag": tag, "good": sorted(good), "bad": bad, "run_id": run_ids[0]}


def test_graphql_shows_the_graph_the_batch_materialization_and_the_failed_check(live, imported_with_a_bad_file):
    flow = imported_with_a_bad_file
    nodes = {tuple(n["assetKey"]["path"]): n for n in
             live.graphql(ASSET_NODES, {"keys": [COLLECTION, INBOX]})["assetNodes"]}
    collection, inbox = nodes[("demo", "readings")], nodes[("demo", "readings_inbox")]
    assert collection["dependencyKeys"] == [INBOX]
    assert collection["kinds"] == ["mongodb"] and collection["groupName"] == "demo"
    assert collection["jobNames"] == ["import_readings"] or "import_readings" in collection["jobNames"]
    assert "download_samples" in inbox["jobNames"] and inbox["isMaterializable"]
    assert collection["assetChecksOrError"]["checks"] == [{"name": "no_rejected_files", "blocking": True}]

    found = live.graphql(MATERIALIZATIONS, {"key": COLLECTION})["assetOrError"]
    assert found["__typename"] == "Asset"
    (ours,) = [m for m in found["assetMaterializations"] if m["runId"] == flow["run_id"]]  # one per batch
    entries = _entries(ours["metadataEntries"])
    rows = {row["file"]: row for row in _table(entries["file_table"])}
    assert set(rows) == {*flow["good"], flow["bad"]}
    assert all(rows[name]["outcome"] == "imported" and rows[name]["records"] > 0 for name in flow["good"])
    assert rows[flow["bad"]]["outcome"] == "rejected" and "expected 2 fields, got 1" in rows[flow["bad"]]["reason"]
    assert entries["files"]["intValue"] == 3 and entries["files_rejected"]["intValue"] == 1

    # The sensor's backlog observations of the inbox: at least one saw our three files waiting.
    observed = live.graphql(OBSERVATIONS, {"key": INBOX})["assetOrError"]["assetObservations"]
    waiting = [_entries(o["metadataEntries"])["files_waiting"]["intValue"] for o in observed]
    assert any(n >= 3 for n in waiting), waiting

    executions = live.graphql(CHECK_EXECUTIONS, {"key": COLLECTION})["assetCheckExecutions"]
    (check,) = [e for e in executions if e["runId"] == flow["run_id"]]
    assert check["status"] == "FAILED" and check["evaluation"]["success"] is False
    rejected = _table(_entries(check["evaluation"]["metadataEntries"])["rejected_files"])
    assert [row["file"] for row in rejected] == [flow["bad"]]


def _save(browser, tmp_path, name: str) -> None:
    png = tmp_path / name
    assert browser.save_screenshot(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png
    # The README's pictures: written when missing, refreshed with CORE4_UPDATE_SCREENSHOTS=1.
    target = SCREENSHOTS / name
    if not target.exists() or os.environ.get("CORE4_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)


def test_the_ui_shows_lineage_file_table_and_failed_check(live, imported_with_a_bad_file, browser, tmp_path):
    from selenium.webdriver.common.by import By

    flow = imported_with_a_bad_file
    browser.get(f"{live.url}/assets/demo/readings?view=lineage&lineageScope=neighbors&lineageDepth=1")
    wait_for_text(browser, ["readings_inbox", "readings"])
    # The edge inbox -> readings: the graph's one lineage path with an arrow head.
    edge = 'svg path[marker-end][stroke="var(--color-lineage-edge)"]'
    edges = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, edge), 30, "the lineage graph's edge")
    assert len(edges) == 1
    _save(browser, tmp_path, "asset-lineage.png")

    browser.get(f"{live.url}/assets/demo/readings?view=checks")
    body = wait_for_text(browser, ["no_rejected_files", "Failed", flow["bad"]])
    assert "1 of 3 files of batch" in body and "expected 2 fields, got 1" in body
    _save(browser, tmp_path, "asset-checks.png")

    browser.get(f"{live.url}/assets/demo/readings?view=events")
    body = wait_for_text(browser, ["file_table", *flow["good"], flow["bad"]])
    _save(browser, tmp_path, "asset-events.png")
    assert flow["run_id"] in body  # the archive paths of the good files name the run
