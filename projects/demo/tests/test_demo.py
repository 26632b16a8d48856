from demo.definitions import defs


def test_demo_defines_its_jobs_and_sensor():
    names = {job.name for job in defs.resolve_all_job_defs()}
    assert {"download_samples", "import_readings"} <= names
    assert defs.resolve_sensor_def("import_readings_proc_sensor") is not None
