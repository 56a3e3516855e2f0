"""HTTP protocol conformance: the OpenAPI document and every route against it (schemathesis), one-line error
bodies, HEAD, offline docs, uvicorn's own 400s, and one real `nasbench_ptb serve` process."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from nasbench_ptb.server.app import create_app  # noqa: E402
from nasbench_ptb.space import parse  # noqa: E402


def test_openapi_documents_every_endpoint(http_client):
    spec = http_client.get("/openapi.json").json()
    assert {"/arch/{arch_hash}", "/arch", "/archs", "/spaces", "/health"} <= set(spec["paths"])
    ok = spec["paths"]["/arch/{arch_hash}"]["get"]["responses"]
    assert "404" in ok and ok["200"]["content"]["application/json"]["schema"]["$ref"].endswith("ArchModel")


def test_every_error_body_is_one_line_as_documented(http_client):
    spec = http_client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # never sent, so never declared
    for path in ("/arch/{arch_hash}", "/arch", "/archs"):
        declared = spec["paths"][path]["get"]["responses"]["422"]["content"]["application/json"]["schema"]
        assert declared["$ref"].endswith("ErrorModel")
    for url in ("/arch/XYZ", "/archs?limit=0", "/archs?sort=nope", "/arch?genotype=", "/arch?genotype=tanh:-7"):
        r = http_client.get(url)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str) and list(r.json()) == ["detail"]
    assert http_client.get("/archs?limit=5000").json()["detail"] == "query.limit: Input should be less than or equal to 1000"


def test_head_answers_every_get_route_without_a_body(http_client):
    g = parse("tanh:0|relu:1")
    for url in ("/health", "/spaces", f"/arch/{g.hash}", "/archs?limit=3", "/docs"):
        get, head = http_client.get(url), http_client.head(url)
        assert head.status_code == 200 and head.content == b"", url
        assert head.headers["content-type"] == get.headers["content-type"]
        assert int(head.headers["content-length"]) == len(get.content)
    assert http_client.head("/arch/ffffffffffffffff").status_code == 404


def test_spaces_do_not_reveal_filesystem_paths(http_client, served_tables):
    body = http_client.get("/spaces").text
    assert "path" not in http_client.get("/spaces").json()[0] and str(served_tables[0].parent) not in body


def test_docs_work_offline_from_packaged_assets(http_client):
    for page, assets in (("/docs", ["/static/swagger-ui-bundle.js", "/static/swagger-ui.css"]),
                         ("/redoc", ["/static/redoc.standalone.js"])):
        html = http_client.get(page).text
        assert "cdn" not in html.lower() and "googleapis" not in html
        for asset in assets:
            assert asset in html
            r = http_client.get(asset)
            assert r.status_code == 200 and len(r.content) > 100_000


def test_openapi_conformance_of_every_route(served_tables):
    """Generated requests against every route (schemathesis): each response's status code and body conform to
    what the OpenAPI document declares."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    app = create_app(served_tables)
    with TestClient(app):  # runs the lifespan: tables loaded
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [operation.ok() for operation in schema.get_all_operations()]
        assert len(operations) == 7
        for op in operations:
            for mode in schemathesis.GenerationMode:  # valid requests, and requests that break the schema
                if mode == schemathesis.GenerationMode.NEGATIVE and not op.path_parameters and not op.query:
                    continue  # /health and /spaces take no parameters to break

                @settings(max_examples=25, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), derandomize=True)
                @given(case=op.as_strategy(generation_mode=mode))
                def check(case):  # positive_data_acceptance included: what the schema allows is 2xx or 404
                    case.call_and_validate()

                check()


def _raw(port: int, request: bytes) -> tuple[int, str, bytes]:
    """Send raw bytes; the status, the header block and the body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode().lower(), body


@pytest.mark.parametrize("name", ["JsonH11Protocol", "JsonHttpToolsProtocol"])
def test_uvicorns_own_400s_are_json_like_every_error(name):
    """Issue 25.10: a request too malformed to reach the app got uvicorn's plain-text 400."""
    import threading

    import uvicorn

    from nasbench_ptb.server import protocols

    cls = getattr(protocols, name)
    if cls is None:
        pytest.skip("httptools is not installed")

    async def app(scope, receive, send):  # never reached by a malformed request
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=cls, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started:
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.05)
        for bad in (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", b"\x16\x03\x01 not http\r\n\r\n"):
            status, headers, body = _raw(port, bad)
            assert status == 400 and "content-type: application/json" in headers
            assert f"content-length: {len(body)}" in headers
            assert json.loads(body)["detail"].startswith("malformed HTTP request: ")
        assert _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[::2] == (200, b"ok")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_serve_process(served_tables):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nasbench_ptb.cli", "serve", "--port", str(port), "--tables",
                             *map(str, served_tables)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    assert json.load(r)["tables"] == 2
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < deadline, "server did not come up"
                time.sleep(0.1)
        g = parse("sigmoid:0|identity:1")
        with urllib.request.urlopen(f"{url}/arch/{g.hash}") as r:
            assert json.load(r)["genotype"] == g.canonical
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/arch/ffffffffffffffff")
        assert err.value.code == 404
        status, headers, body = _raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert status == 400 and "application/json" in headers  # uvicorn's own answer, before the app
        assert json.loads(body)["detail"].startswith("malformed HTTP request: ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_bad_tables_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "nasbench_ptb.cli", "serve", "--tables", str(tmp_path / "none.h5")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "none.h5" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "--tables" in res.stderr and "NASBENCH_PTB_TABLES" not in res.stderr  # the flag the user gave
