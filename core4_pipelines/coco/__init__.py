"""`coco`, the operator tool: the command line, `coco serve`, operating runs, scaffolding.

It imports the library (``core4_pipelines``); the library, and every code location,
never imports it (``tests/test_layers.py``).
"""
