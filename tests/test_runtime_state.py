"""What a process remembers of the runs it executed stays bounded and per run."""

from core4_pipelines.supervise.runtime import RecentRuns


def test_a_process_that_executed_many_runs_remembers_the_latest_only():
    runs = RecentRuns(keep=3)
    for number in range(10):
        runs.of(f"run-{number}").current_source = f"file-{number}.csv"
    assert [runs.get(f"run-{n}") for n in range(7)] == [None] * 7
    assert [runs.get(f"run-{n}").current_source for n in range(7, 10)] == ["file-7.csv", "file-8.csv", "file-9.csv"]


def test_the_run_in_use_is_not_forgotten_while_others_come_and_go():
    runs = RecentRuns(keep=2)
    busy = runs.of("busy")
    busy.sources = ["a.csv"]
    for number in range(5):
        runs.of(f"other-{number}")
        assert runs.of("busy") is busy  # each use keeps it among the latest
    assert runs.get("busy").sources == ["a.csv"]
