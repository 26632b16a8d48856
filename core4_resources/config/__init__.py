"""The configuration: settings (the cascade into pydantic models), sources (its files and
CORE4_OPTION_ variables), job_properties (core4's job properties) and core4.yaml.
"""
