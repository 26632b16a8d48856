"""Alerts: real SMTP (aiosmtpd) and HTTP servers on 127.0.0.1, real runs in a Dagster instance,
the project's alerts sensor evaluated against it."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from support import claim_all, coco, put

from core4_pipelines.alerts import sensor as alerts_module
from core4_pipelines.ingest.job import import_job, import_run_config
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.supervise.monitor import flag_zombie
from core4_pipelines.tags import BATCH_TAG
from core4_resources.config.settings import load_config
from core4_resources.errors import ConfigError

USER, PASSWORD = "alerts", "pw-never-shown-7x"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that takes USER/PASSWORD without TLS."""

    def __init__(self, port: int | None = None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.port = port or free_port()
        self.messages: list[email.message.EmailMessage] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            return AuthResult(success=auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode())

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, auth_require_tls=False,
                                     authenticator=authenticator)

    @property
    def url(self) -> str:
        return f"smtp://{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        try:
            self.controller.stop()
        except AssertionError:  # stopped by the test already
            pass


class Hook:
    """A real HTTP server on 127.0.0.1 keeping every JSON body posted to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.status == 200:
                    hook.bodies.append(json.loads(body))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mailbox():
    with Mailbox() as box:
        yield box


@pytest.fixture
def hook():
    with Hook() as server:
        yield server


RULES = """
alerts:
  - events: [file_rejected, batch_failed, zombie, freshness]
    email: {to: [ops@example.org], smtp: ALERTS_SMTP_URL, from: core4@example.org}
  - events: [file_rejected, batch_failed]
    webhook: {url: ALERTS_HOOK_URL, format: json}
"""


@pytest.fixture
def alerting(tmp_path, isolated_config, monkeypatch, mongo_server, mailbox, hook, project):
    """``make(name, yaml, mongo_url=...)`` -> (defs, folders): a project with RULES in the local
    file, its folders under tmp_path, the real SMTP and HTTP servers in the environment."""

    def make(name: str, yaml_text: str = "", mongo_url: str | None = None, **job_options):
        isolated_config.write_text(f"folder:\n  root: {tmp_path / 'root'}\nDEFAULT:\n"
                                   f"  mongo_url: {mongo_url or mongo_server.url}\n" + RULES)
        monkeypatch.setenv("ALERTS_SMTP_URL", mailbox.url)
        monkeypatch.setenv("ALERTS_HOOK_URL", hook.url)
        project(name, yaml_text)
        job = import_job("import_things", read=read_csv, collection="things", **job_options)
        defs = project_definitions(name, jobs=[job])
        return defs, defs.resources["folders"]

    return make


def tick(defs: dg.Definitions, instance, cursor: str | None) -> tuple[str, str | None]:
    """One evaluation of the alerts sensor: (what its tick said, the new cursor)."""
    context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
    result = defs.resolve_sensor_def("core4_alerts").evaluate_tick(context)
    return (result.skip_message or ""), result.cursor


def run_batch(defs, folders, instance, files: dict | None = None, batch_id: str | None = None):
    for name, content in (files or {}).items():
        put(folders.proc_folder(), name, content)
    if batch_id is None:
        (batch_id,) = claim_all(folders)
    job = defs.resolve_job_def("import_things")
    result = job.execute_in_process(run_config=import_run_config(job, batch_id), instance=instance,
                                    raise_on_error=False, tags={BATCH_TAG: batch_id})
    return result, batch_id


def test_a_burst_of_rejected_files_is_one_message_per_channel_listing_each_file_once(alerting, mailbox, hook,
                                                                                     instance):
    defs, folders = alerting("alerts_burst")
    said, cursor = tick(defs, instance, None)
    assert "watching alerts_burst" in said and not mailbox.messages
    bad = {f"bad-{i:02d}.csv": b"a,b\n1,2,3\n" for i in range(50)}  # a ragged row: each file rejected
    result, batch = run_batch(defs, folders, instance, {**bad, "good.csv": b"a,b\n1,2\n"})
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1 and len(hook.bodies) == 1, said
    mail, body = mailbox.messages[0], hook.bodies[0]
    text = mail.get_content()
    assert mail["Subject"] == f"[core4] alerts_burst: 50 file(s) of batch {batch} moved to the error folder"
    assert mail["To"] == "ops@example.org" and mail["From"] == "core4@example.org"
    assert all(text.count(f"- {name}: ") == 1 for name in bad) and "good.csv" not in text, text
    assert "expected 2 fields, got 3" in text and f"/runs/{result.run_id}" in text
    assert body["event"] == "file_rejected" and body["batch"] == batch and body["run_id"] == result.run_id
    assert sorted(f["name"] for f in body["files"]) == sorted(bad) and body["file_count"] == 50
    assert PASSWORD not in said + text + json.dumps(body)

    said, cursor = tick(defs, instance, cursor)  # never twice
    assert len(mailbox.messages) == 1 and len(hook.bodies) == 1 and "nothing new" in said


def test_a_batch_is_told_once_when_its_last_run_failed_not_while_runs_follow(alerting, mailbox, hook, instance,
                                                                             mongo_server):
    # The collection repeats the key the import upserts on: every run of the batch fails creating
    # its unique index (an error a human must fix, not an outage), and its files stay in the batch.
    import pymongo

    with pymongo.MongoClient(mongo_server.url) as client:
        client.alerts_failing.things.insert_many([{"id": 1}, {"id": 1}])
    defs, folders = alerting("alerts_failing", "DEFAULT:\n  mongo_database: alerts_failing\n",
                             mode="upsert", keys=["id"])
    _, cursor = tick(defs, instance, None)
    first, batch = run_batch(defs, folders, instance, {"a.csv": b"id,b\n1,2\n"})
    assert not first.success
    said, cursor = tick(defs, instance, cursor)
    assert not mailbox.messages and not hook.bodies, said  # the claim sensor runs it again: no alert yet
    runs = [first.run_id]
    for _ in range(2):  # the batch's MIN_BATCH_RUNS (3) runs
        again, _ = run_batch(defs, folders, instance, batch_id=batch)
        assert not again.success
        runs.append(again.run_id)
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1 and len(hook.bodies) == 1, said
    mail = mailbox.messages[0]
    assert mail["Subject"] == f"[core4] alerts_failing: batch {batch} of import_things failed for good"
    assert f"failed 3 time(s), its last run {runs[-1]}" in mail.get_content()
    assert "unique index" in mail.get_content()  # the run's error
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1 and len(hook.bodies) == 1


def test_a_zombie_flagged_by_the_monitor_is_told_once_by_email(alerting, mailbox, hook, instance):
    defs, folders = alerting("alerts_zombie")
    _, cursor = tick(defs, instance, None)
    result, _ = run_batch(defs, folders, instance, {"a.csv": b"a,b\n1,2\n"})
    flag_zombie(instance, instance.get_run_by_id(result.run_id), 2000.0, 1800.0, "flag")
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1 and not hook.bodies, said  # the webhook's rule does not ask for zombies
    mail = mailbox.messages[0]
    assert mail["Subject"] == "[core4] alerts_zombie: run of import_things has no heartbeat (zombie)"
    assert "no heartbeat for 2000s" in mail.get_content()
    tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1


def test_a_collection_past_its_freshness_is_told_once_per_quiet_spell(alerting, mailbox, hook, instance,
                                                                      monkeypatch):
    later = [0.0]  # seconds the sensor's clock is ahead (Dagster's freshness is a minute at least)
    monkeypatch.setattr(alerts_module, "_now", lambda: time.time() + later[0])
    defs, folders = alerting("alerts_fresh", "jobs:\n  import_things:\n    freshness: 60\n")
    _, cursor = tick(defs, instance, None)
    run_batch(defs, folders, instance, {"a.csv": b"a,b\n1,2\n"})
    said, cursor = tick(defs, instance, cursor)
    assert not mailbox.messages, said  # just imported
    later[0] = 61
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1, said
    mail = mailbox.messages[0]
    assert mail["Subject"].startswith("[core4] alerts_fresh: no new records in alerts_fresh/things for 6")
    assert "freshness: 60s" in mail.get_content() and not hook.bodies  # the webhook's rule does not ask
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1  # the same quiet spell
    later[0] = 0
    run_batch(defs, folders, instance, {"b.csv": b"a,b\n3,4\n"})
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 1, said
    later[0] = 61
    said, cursor = tick(defs, instance, cursor)
    assert len(mailbox.messages) == 2, said  # new records came, then stopped again


def test_the_smtp_server_down_is_retried_and_logged_and_the_webhook_still_told(alerting, mailbox, hook, instance,
                                                                                monkeypatch, caplog):
    monkeypatch.setattr(alerts_module, "FIRST_RETRY_SECONDS", 0.0)
    defs, folders = alerting("alerts_down")
    _, cursor = tick(defs, instance, None)
    mailbox.controller.stop()  # the SMTP server goes away
    run_batch(defs, folders, instance, {"bad.csv": b"a,b\n1,2,3\n"})
    said, cursor = tick(defs, instance, cursor)
    assert len(hook.bodies) == 1 and not mailbox.messages, said
    assert "1 failed, tried again later" in said and f"127.0.0.1:{mailbox.port}" in said
    assert PASSWORD not in said + caplog.text
    with Mailbox(port=mailbox.port) as back:  # the server is back
        said, cursor = tick(defs, instance, cursor)
        assert len(back.messages) == 1 and len(hook.bodies) == 1, said  # delivered late, once; the hook not again
        assert "bad.csv" in back.messages[0].get_content()
        said, cursor = tick(defs, instance, cursor)
        assert len(back.messages) == 1 and "waiting for delivery" not in said


def test_an_unknown_event_or_a_url_in_yaml_is_a_config_error_naming_file_and_key(isolated_config):
    isolated_config.write_text("alerts:\n  - events: [file_rejected, batch_failled]\n"
                               "    email: {to: [ops@example.org], smtp: 'smtp://u:hunter2@mail'}\n")
    with pytest.raises(ConfigError) as error:
        load_config()
    text = str(error.value)
    assert f"alerts[0].events in {isolated_config}" in text and "'batch_failled' is none of them" in text
    assert "alerts[0].email.smtp" in text and "not the SMTP URL itself" in text and "hunter2" not in text


def test_coco_alerts_test_says_which_channel_worked(tmp_path, isolated_config, mailbox, hook):
    isolated_config.write_text(RULES)
    hook.status = 500
    env = {"ALERTS_SMTP_URL": mailbox.url, "ALERTS_HOOK_URL": hook.url, "CORE4_CONFIG": str(isolated_config),
           "CORE4_OPTION_folder__root": str(tmp_path / "root")}
    import os

    done = coco("alerts", "test", "someproject", env={**os.environ, **env})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sent    email to ops@example.org" in done.stdout
    assert "FAILED  webhook json" in done.stdout and "answered 500" in done.stdout
    assert len(mailbox.messages) == 1 and mailbox.messages[0]["Subject"] == "[core4] someproject: a test of its alerts"
    assert PASSWORD not in done.stdout + done.stderr


def test_what_coco_serve_does_to_keep_the_stack_up_is_told_to_the_supervision_rules(isolated_config, mailbox, hook,
                                                                                   monkeypatch):
    from core4_pipelines.alerts.supervision import SupervisionAlerts

    isolated_config.write_text("alerts:\n  - events: [supervision]\n    email: {to: [ops@example.org], smtp: ALERTS_SMTP_URL}\n"
                               "  - events: [batch_failed]\n    webhook: {url: ALERTS_HOOK_URL}\n")
    monkeypatch.setenv("ALERTS_SMTP_URL", mailbox.url)
    monkeypatch.setenv("ALERTS_HOOK_URL", hook.url)
    said: list[str] = []
    told = SupervisionAlerts(load_config(), said.append, "http://127.0.0.1:3000")
    told("embedded MongoDB died (exit -9); restarted on the same port 27999 (pid 4242)")
    told.flush()
    assert said == ["embedded MongoDB died (exit -9); restarted on the same port 27999 (pid 4242)"]
    (mail,) = mailbox.messages
    assert mail["Subject"].endswith(": embedded MongoDB died (exit -9)") and "pid 4242" in mail.get_content()
    assert not hook.bodies  # its rule does not ask for supervision


def test_the_docs_alerts_yaml_and_the_scaffolds_commented_one_load(isolated_config, tmp_path):
    import pathlib
    import re

    from core4_pipelines.coco.scaffold import init_project

    page = (pathlib.Path(__file__).parent.parent / "docs" / "alerts.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", page, re.S)
    assert blocks
    for block in blocks:
        isolated_config.write_text(block)
        assert load_config().alerts, block
    home = tmp_path / "home"
    home.mkdir()
    init_project("watched", str(home))
    text = (home / "watched" / "watched" / "watched.yaml").read_text()
    commented = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# ") and line[2:3] in ("a", " "))
    section = commented[commented.index("alerts:"):]
    isolated_config.write_text(section)
    rules = load_config().alerts
    assert [rule.events for rule in rules] == [("file_rejected", "batch_failed", "zombie", "freshness"), ("batch_failed",)]


def test_a_projects_own_rules_add_to_the_local_files_and_coco_config_shows_both(isolated_config, project, tmp_path):
    isolated_config.write_text(RULES)
    name = project("ruled", "alerts:\n  - events: [freshness]\n    webhook: {url: RULED_HOOK, format: teams}\n")
    home = tmp_path / "pkgs"
    settings = load_config(name, project_yaml=home / name / f"{name}.yaml")
    assert [rule.events for rule in settings.alerts] == [
        ("file_rejected", "batch_failed", "zombie", "freshness"), ("file_rejected", "batch_failed"), ("freshness",)]
    flat = settings.flat()
    assert flat[f"{name}.alerts[0]"] == {"events": ["freshness"], "webhook": {"url": "RULED_HOOK", "format": "teams"}}
    assert settings.sources[f"{name}.alerts[0]"].endswith(f"{name}.yaml") and "alerts[1]" in flat
    assert settings.sources["alerts[1]"] == str(isolated_config)
