"""The run tags core4 sets and reads, and the run statuses it asks for: one vocabulary.

Plain names, no Dagster: the operator tool (``coco``) writes and reads them too. The Dagster
tags here are read by Dagster itself; ``tests/test_dagster_private.py`` keeps them equal to
Dagster's own constants.
"""

# -- what a run is: set at definition or launch ----------------------------------------------
JOB_TAG = "core4/job"                  # <project>.<job>: tag concurrency limits, overlap checks
CHAIN_TAG = "core4/chain"              # comma-separated qualified names requested on success
TAG_PREFIX = "core4/tag."              # one key-only tag per declared `tag`
LAUNCH_TAG_PREFIX = "core4/"           # core4/attempts=5 at launch overrides the job's value
ARGS_TAG = "core4/args"                # hash of job and run config: what "the same arguments" means
CHAINED_FROM_TAG = "core4/chained_from"  # the run whose success requested this one

# -- the import of a batch -------------------------------------------------------------------
BATCH_TAG = "core4/batch"              # the batch id the run imports
ATTEMPT_TAG = "core4/batch_attempt"    # which run of that batch this is
RETRY_TAG = "core4/retry"              # on a rejected run: the command that puts its fixed files back
REJECTED_STATE = "rejected"            # core4/state of a run that moved files to the error folder

# -- what a run reports about itself ---------------------------------------------------------
STATE_TAG = "core4/state"                 # deferred, relaunched, inactive (past defer_max), zombie, rejected
MESSAGE_TAG = "core4/message"             # what that state is about (the defer's message ...)
HEARTBEAT_TAG = "core4/heartbeat"         # UTC epoch seconds of the run's last sign of life
DEFER_AT_TAG = "core4/defer_at"           # UTC epoch seconds when a deferred run is launched again
DEFER_SINCE_TAG = "core4/defer_since"     # first start of the run that deferred first (for defer_max)
DEFER_COUNT_TAG = "core4/defer_count"     # how often the job deferred before this run
DEFERRED_FROM_TAG = "core4/deferred_from" # the deferred run this one launches again
DEFER_ROOT_TAG = "core4/defer_root"       # the first run of the chain of defers
RELAUNCHED_AS_TAG = "core4/relaunched_as" # on a deferred run: the run that took over
PROGRESS_TAG = "core4/progress"           # e.g. "45%"
PROGRESS_MESSAGE_TAG = "core4/progress_message"
PROGRESS_AT_TAG = "core4/progress_at"     # UTC time of the stored update
SOURCE_TAG = "core4/source"               # the current source (basename)
SOURCES_TAG = "core4/sources"             # JSON list of every source the run touched
SOURCE_COUNT_TAG = "core4/source_count"
RECOVERED_TAG = "core4/recovered"         # "worker_gone": failed by recovery, not by its own code
FAILURE_KIND_TAG = "core4/failure"        # infrastructure (database, disk: uses no attempt) or error

# -- Dagster's own ---------------------------------------------------------------------------
PRIORITY_TAG = "dagster/priority"
MAX_RUNTIME_TAG = "dagster/max_runtime"
RUN_KEY_TAG = "dagster/run_key"
SCHEDULED_TIME_TAG = ".dagster/scheduled_execution_time"  # set by the daemon on a scheduled run (hidden)
DAGSTER_TAG_PREFIX = "dagster/"        # Dagster's system tags
DAGSTER_HIDDEN_TAG_PREFIX = ".dagster/"  # Dagster's tags the UI does not show

# -- run statuses (DagsterRunStatus values) --------------------------------------------------
# Queued or running: the run will still do its work. Dagster's own IN_PROGRESS_RUN_STATUSES
# leaves QUEUED and NOT_STARTED out, and an overlap check must not.
IN_PROGRESS_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
# A worker process may be executing it (what recovery and the zombie monitor look at).
EXECUTING_STATUSES = ("STARTING", "STARTED", "CANCELING")
FINISHED_STATUSES = ("SUCCESS", "FAILURE", "CANCELED")
