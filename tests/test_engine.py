"""dagster.engine: local (runs on this machine) or celery (runs on `coco worker`s): what the
configuration must hold, the dagster.yaml coco writes, and `coco worker` refusing what cannot work.
The live run of it all is tests/live/test_live_celery.py."""

from __future__ import annotations

import os

import dagster as dg
import pytest
import yaml
from support import coco

from core4_pipelines.coco.instance import instance_environment, write_instance
from core4_pipelines.engine import BROKER_URL_ENV, engine_problems
from core4_resources.config.settings import load_config
from core4_resources.errors import ConfigError


def _config(isolated_config, tmp_path, **dagster) -> None:
    isolated_config.write_text(yaml.safe_dump({"folder": {"root": str(tmp_path / "root"), "home": str(tmp_path)},
                                               "dagster": dagster}))


def test_celery_needs_a_broker_postgres_and_a_mongodb_every_machine_reaches(isolated_config, tmp_path):
    _config(isolated_config, tmp_path, engine="celery")
    problems = " | ".join(engine_problems(load_config()))
    assert "dagster.broker_url is not set" in problems
    assert "dagster.postgres_url is not set" in problems
    assert "mongo_url is not set: the embedded MongoDB is for one machine" in problems
    done = coco("serve", env=dict(os.environ))
    assert done.returncode != 0 and "dagster.engine is celery, but dagster.broker_url is not set" in done.stderr


def test_an_unknown_engine_names_the_key_and_the_choices(isolated_config, tmp_path):
    _config(isolated_config, tmp_path, engine="kubernetes")
    with pytest.raises(ConfigError, match="dagster.engine in .*local.yaml: expected local or celery, got 'kubernetes'"):
        load_config()


def test_on_celery_dagster_yaml_names_the_supervised_launcher_and_the_broker_only_by_variable(
        isolated_config, tmp_path, monkeypatch):
    broker = "redis://:s3cret@127.0.0.1:6390/0"
    _config(isolated_config, tmp_path, engine="celery", broker_url=broker,
            postgres_url="postgresql://core4:pw@127.0.0.1:5432/dagster")
    settings = load_config()
    home = write_instance(settings)
    text = open(os.path.join(home, "dagster.yaml")).read()
    assert "s3cret" not in text and "pw@" not in text  # secrets stay in the environment
    launcher = yaml.safe_load(text)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("core4_pipelines.engine.launcher", "SupervisedCeleryRunLauncher")
    assert instance_environment(settings)[BROKER_URL_ENV] == broker
    # Dagster builds the launcher from that file (storage on SQLite here: no server needed to load it).
    config = yaml.safe_load(text)
    config.pop("storage")
    with open(os.path.join(home, "dagster.yaml"), "w") as out:
        yaml.safe_dump(config, out)
    monkeypatch.setenv(BROKER_URL_ENV, broker)
    with dg.DagsterInstance.from_config(home) as instance:
        from core4_pipelines.engine.launcher import SupervisedCeleryRunLauncher

        assert isinstance(instance.run_launcher, SupervisedCeleryRunLauncher)
        assert instance.run_launcher.broker == broker


def test_local_writes_no_launcher_and_coco_worker_says_how_to_get_one(isolated_config, tmp_path):
    _config(isolated_config, tmp_path)
    home = write_instance(load_config())
    assert "run_launcher" not in yaml.safe_load(open(os.path.join(home, "dagster.yaml")))
    done = coco("worker", env=dict(os.environ))
    assert done.returncode != 0
    assert "dagster.engine is local: runs execute on the machine of `coco serve`" in done.stderr
