"""Beside the data's way: recovery of runs whose worker is gone, the monitor (zombies,
defer), triggers (schedules, chains), runtime (heartbeat, progress, defer) and sweep
(stale hidden leftovers).
"""
