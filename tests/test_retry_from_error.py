"""Errors a user can act on: a refused file is named with its line and where it is now, the run
page shows one failure without a stack trace, the check stays red while the file waits in
error, and `coco retry` puts the fixed file back so that the next batch imports it."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from support import claim_all, coco, put, run_import, visible_files

RAGGED = b"a,b\n1,2\n3,4,5\n"
FIXED = b"a,b\n1,2\n3,4\n"
GOOD = b"a,b\n7,8\n"


def _events(instance, run_id, kind):
    return [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.event_type_value == kind]


def _check(instance, run_id):
    [evaluation] = [e.event_specific_data for e in _events(instance, run_id, "ASSET_CHECK_EVALUATION")]
    return evaluation


def _import_all(folders, mongo, instance):
    [batch] = claim_all(folders)
    return run_import(folders, mongo, batch, instance=instance)


def _retry_env(folders):
    return dict(os.environ, CORE4_OPTION_folder__root=str(folders.root))


@pytest.fixture
def rejected(folders, mongo, instance):
    """A batch of a good and a ragged file, imported: the ragged one is in error."""
    put(folders.proc_folder(), "good.csv", GOOD)
    put(folders.proc_folder(), "ragged.csv", RAGGED)
    return _import_all(folders, mongo, instance)


def test_the_failure_names_file_line_and_where_it_is_now_without_a_stack_trace(rejected, instance):
    assert not rejected.success
    [failure] = [e.event_specific_data for e in _events(instance, rejected.run_id, "STEP_FAILURE")]
    message = failure.error.message
    assert failure.error.stack == []  # the run page shows the message, no stack trace
    assert "ragged.csv: line 3: expected 2 fields, got 3 (now error/demo/ragged.csv)" in message
    assert "coco retry demo ragged.csv" in message
    assert ".batch" not in message
    run = instance.get_run_by_id(rejected.run_id)
    assert run.tags["core4/state"] == "rejected"
    assert "ragged.csv" in run.tags["core4/message"]


def test_the_reason_file_names_the_file_never_the_hidden_batch_path_and_ends_with_a_newline(rejected, folders):
    reason = open(os.path.join(folders.error_folder(), "ragged.csv.reason.txt"), encoding="utf-8").read()
    assert reason == "ragged.csv: line 3: expected 2 fields, got 3\n"


def test_the_check_stays_failed_while_the_file_waits_in_error_and_a_good_batch_still_succeeds(
        rejected, folders, mongo, instance):
    assert not _check(instance, rejected.run_id).passed
    put(folders.proc_folder(), "later.csv", GOOD)
    later = _import_all(folders, mongo, instance)
    assert later.success  # an old file in error does not fail a good batch ...
    check = _check(instance, later.run_id)
    assert not check.passed  # ... but the check does not turn green while it waits there
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "ragged.csv" in check.description and "error/demo" in check.description
    assert "line 3" in check.metadata["reasons"].md_str


def test_coco_retry_lists_then_puts_the_fixed_file_back_and_the_next_batch_imports_it(
        rejected, folders, mongo, instance):
    env = _retry_env(folders)
    listing = coco("retry", "demo", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "ragged.csv: ragged.csv: line 3: expected 2 fields, got 3" in listing.stdout
    error_copy = os.path.join(folders.error_folder(), "ragged.csv")
    with open(error_copy, "wb") as handle:  # the operator fixes the file where it is
        handle.write(FIXED)
    done = coco("retry", "demo", "ragged.csv", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error/demo/ragged.csv -> proc/demo/ragged.csv" in done.stdout
    assert visible_files(folders.error_folder()) == []  # the file and its reason file
    assert open(os.path.join(folders.proc_folder(), "ragged.csv"), "rb").read() == FIXED
    again = _import_all(folders, mongo, instance)
    assert again.success
    assert _check(instance, again.run_id).passed
    assert mongo.collection("things").count_documents({"_src": "ragged.csv"}) == 2


def test_coco_retry_of_a_name_not_in_error_says_what_is_there(rejected, folders):
    done = coco("retry", "demo", "nosuch.csv", env=_retry_env(folders))
    assert done.returncode == 1
    assert "nosuch.csv: not in error/demo (there: ragged.csv)" in done.stdout


def test_coco_retry_never_replaces_a_file_waiting_in_proc(rejected, folders):
    put(folders.proc_folder(), "ragged.csv", GOOD)
    done = coco("retry", "demo", "--all", env=_retry_env(folders))
    assert done.returncode == 1
    assert "already exists" in done.stdout
    assert open(os.path.join(folders.proc_folder(), "ragged.csv"), "rb").read() == GOOD
    assert os.path.exists(os.path.join(folders.error_folder(), "ragged.csv.reason.txt"))


def test_coco_retry_refuses_a_file_whose_records_are_written_unless_forced(folders):
    folders.move_error(put(folders.proc_folder(), "done.csv", GOOD),
                       "its 1 records were imported (_src 'done.csv'), but the file could not be archived: X")
    env = _retry_env(folders)
    refused = coco("retry", "demo", "done.csv", env=env)
    assert refused.returncode == 1 and "writes them twice" in refused.stdout
    assert coco("retry", "demo", "done.csv", "--force", env=env).returncode == 0
    assert os.path.exists(os.path.join(folders.proc_folder(), "done.csv"))


def test_a_batch_that_imported_nothing_does_not_materialize_the_collection(folders, mongo, instance):
    put(folders.proc_folder(), "ragged.csv", RAGGED)
    result = _import_all(folders, mongo, instance)
    assert not result.success
    assert _events(instance, result.run_id, "ASSET_MATERIALIZATION") == []


def test_coco_restart_of_a_content_failure_says_where_the_files_are_and_how_to_retry(rejected, instance):
    from core4_pipelines.coco.operate import rejected_files_advice

    run = instance.get_run_by_id(rejected.run_id)
    as_graphql = {"runId": run.run_id, "tags": [{"key": k, "value": v} for k, v in run.tags.items()]}
    advice = rejected_files_advice(as_graphql)
    assert advice is not None
    assert "ragged.csv" in advice and "error/demo" in advice
    assert "coco retry demo NAME" in advice
    assert rejected_files_advice({"runId": "x" * 36, "tags": []}) is None
