"""The reference for bench_api.py's HTTP figures: FastAPI's async hello world, served by the same uvicorn
settings as ``nasbench_ptb serve`` (one worker, uvloop/httptools when installed, warnings-only logging)."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello():
    return {"message": "Hello World"}
