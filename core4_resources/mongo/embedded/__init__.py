"""The embedded MongoDB server: server (the process), root (one per folder.root, on
demand), state (its lock and pid/port file), users and credentials.
"""
