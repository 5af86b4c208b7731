"""Prefect flows of the pipeline (scrape, merge, sweep, delete, clean) and how they are served."""
