"""Downloads: download_job and download_to_proc (job), and the sources: http.
"""
