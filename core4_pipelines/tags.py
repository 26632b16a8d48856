"""The run tags core4 sets and reads (the Dagster ones are read by Dagster itself).

Plain names, no Dagster: the operator tool (``coco``) writes and reads them too.
"""

JOB_TAG = "core4/job"                  # <project>.<job>: tag concurrency limits, overlap checks
CHAIN_TAG = "core4/chain"              # comma-separated qualified names requested on success
TAG_PREFIX = "core4/tag."              # one key-only tag per declared `tag`
PRIORITY_TAG = "dagster/priority"
MAX_RUNTIME_TAG = "dagster/max_runtime"
