"""HTTP face of the query library (FastAPI); built in its own issue."""
