"""What a project's bound resources show and reach."""

import dagster as dg

from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.settings import mongo_url_env_name
from core4_resources.mongo.resource import MongoResource


@dg.op
def count_things(mongo: MongoResource) -> int:
    return mongo.collection("things").count_documents({})


@dg.job
def count_job():
    count_things()


def test_mongo_url_is_bound_through_an_env_var_and_still_reaches_the_server(tmp_path, monkeypatch, mongo_server):
    url = f"{mongo_server.url}/?appname=marker-in-url"
    (tmp_path / "demo.yaml").write_text(f"DEFAULT:\n  mongo_url: {url}\n  mongo_database: resources_test\n")
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    monkeypatch.delenv(mongo_url_env_name("demo"), raising=False)

    defs = project_definitions("demo", project_yaml=str(tmp_path / "demo.yaml"))
    mongo = defs.resources["mongo"]
    # The UI shows a resource's configured field values: the variable's name, not the URL.
    assert mongo.mongo_url == dg.EnvVar(mongo_url_env_name("demo"))
    assert "marker-in-url" not in repr(mongo)
    mongo_server_client = MongoResource(mongo_url=mongo_server.url, database="resources_test")
    mongo_server_client.collection("things").insert_many([{"n": 1}, {"n": 2}])

    result = count_job.execute_in_process(resources={"mongo": mongo})
    assert result.success
    assert result.output_for_node("count_things") == 2
    mongo_server_client.client().drop_database("resources_test")
