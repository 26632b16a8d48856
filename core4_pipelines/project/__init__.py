"""A project's wiring: definitions (project_definitions), jobs (their properties), assets
(its asset graph) and components (FileImport, HttpDownload, the defs/ folder).
"""
