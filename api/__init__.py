"""HTTP face of the query library: ``api.app.create_app`` (FastAPI), ``api.serve.run`` (uvicorn)."""
