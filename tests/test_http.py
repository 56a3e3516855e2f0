"""Every endpoint and its error paths through TestClient (the protocol-level checks: test_http_protocol.py)."""
import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from nasbench_ptb.server.app import create_app  # noqa: E402
from nasbench_ptb.space import parse, space as parse_space  # noqa: E402

from helpers import key_test, key_valid, synthetic_table  # noqa: E402


def test_health_and_spaces(http_client):
    assert http_client.get("/health").json() == {"status": "ok", "tables": 2}
    spaces = http_client.get("/spaces").json()
    assert [s["space"] for s in spaces] == ["2node", "3node"] and spaces[0]["size"] == 32
    assert spaces[0]["coverage"]["missing"] == 2 and spaces[0]["config"]["hidden"] == 4
    assert spaces[0]["ws_seeds"] == [0, 1, 2]


def test_arch_by_hash_and_by_genotype(http_client):
    g = parse("tanh:0|relu:1")
    r = http_client.get(f"/arch/{g.hash}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["genotype"] == "tanh:0|relu:1" and body["id"] == 5 and body["standalone"]["rank"] == 7
    assert len(body["standalone"]["seeds"][0]["curve"]["valid_ppl"]) == 5 and len(body["ws"]) == 3
    assert body["ws"][2]["final_valid_ppl"] is None  # NaN -> null
    lean = http_client.get(f"/arch/{g.hash}", params={"curves": "false"}).json()
    assert "curve" not in lean["standalone"]["seeds"][0] and lean["standalone"] == {
        **body["standalone"], "seeds": [{k: v for k, v in s.items() if k != "curve"} for s in body["standalone"]["seeds"]]}
    from api.models import ArchModel

    ArchModel.model_validate(lean)  # the lean answer is what the OpenAPI schema declares (curve may be absent)
    assert http_client.get("/arch", params={"genotype": "tanh:0|relu:1"}).json() == body
    assert http_client.get("/arch", params={"genotype": g.darts_repr()}).json() == body
    three = parse("tanh:0|relu:1|sigmoid:2")
    assert http_client.get(f"/arch/{three.hash}").json()["space"] == "3node"


def test_arch_at_an_epoch_is_the_python_record_at_that_epoch(http_client, served_tables):
    from nasbench_ptb import api

    g = parse("tanh:0|relu:1")
    bench = api.load(served_tables[0])
    r = http_client.get(f"/arch/{g.hash}", params={"epoch": "0.45"})
    assert r.status_code == 200
    body = r.json()
    assert body == json.loads(json.dumps(bench.query(g.id, epoch=0.45).to_dict()))
    assert body["standalone"]["seeds"][0]["curve"]["epochs"] == [0.2, 0.4] and body["standalone"]["test_ppl"] is None
    assert http_client.get("/arch", params={"genotype": "tanh:0|relu:1", "epoch": "0.45"}).json() == body
    assert http_client.get(f"/arch/{g.hash}", params={"epoch": "7"}).json() == http_client.get(f"/arch/{g.hash}").json()
    for bad, status, msg in (("0.05", 404, "before the table's first checkpoint"), ("nan", 422, "finite number"),
                             ("-1", 422, "greater than or equal to 0"), ("x", 422, "valid number")):
        for url, params in ((f"/arch/{g.hash}", {}), ("/arch", {"genotype": "tanh:0|relu:1"})):
            r = http_client.get(url, params={**params, "epoch": bad})
            assert r.status_code == status and msg in r.json()["detail"], (url, bad, r.json())


def test_cached_arch_path_answers_exactly_as_the_route(http_client, served_tables):
    """The raw hot path (api.asgi.CachedArchs) and the FastAPI route give the same status, headers and bytes;
    ``curves=True``/``curves=yes`` are not recognised by the hot path, so they go through the route."""
    hashes = [g.hash for g in parse_space("2node")] + [g.hash for g in list(parse_space("3node"))[:40]]
    for h in hashes:
        for fast, routed in (("", "?curves=yes"), ("?curves=true", "?curves=True"), ("?curves=1", "?curves=on"),
                             ("?curves=false", "?curves=False"), ("?curves=0", "?curves=off")):
            a, b = http_client.get(f"/arch/{h}{fast}"), http_client.get(f"/arch/{h}{routed}")
            assert (a.status_code, a.content, a.headers["content-type"], a.headers["content-length"]) == (
                b.status_code, b.content, b.headers["content-type"], b.headers["content-length"]), (h, fast)
        head, full = http_client.head(f"/arch/{h}"), http_client.get(f"/arch/{h}").content
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(full))
    # what the hot path must leave to FastAPI: unknown or malformed hashes, unknown parameters
    assert http_client.get("/arch/0123456789abcdef").status_code == 404
    assert http_client.get(f"/arch/{hashes[0].upper()}").status_code == 422
    assert http_client.get(f"/arch/{hashes[0]}?curves=maybe").status_code == 422


def test_cached_arch_path_skips_the_framework(served_tables):
    """A known hash never reaches the app behind CachedArchs; anything else always does."""
    import asyncio

    from nasbench_ptb.server.app import Store
    from nasbench_ptb.server.asgi import CachedArchs
    from nasbench_ptb import api as nb

    reached, sent = [], []

    async def inner(scope, receive, send):
        reached.append(scope["path"])

    class App:
        class state:
            store = Store([nb.load(p) for p in served_tables])

    async def send(message):
        sent.append(message)

    layer = CachedArchs(inner)
    h = parse("tanh:0|relu:1").hash
    for path, query in ((f"/arch/{h}", b""), (f"/arch/{h}", b"curves=false"), ("/arch/0123456789abcdef", b""),
                        (f"/arch/{h}", b"curves=yes"), (f"/arch/{h}/", b""), ("/archs", b"")):
        scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "app": App}
        asyncio.run(layer(scope, None, send))
    assert reached == ["/arch/0123456789abcdef", f"/arch/{h}", f"/arch/{h}/", "/archs"]
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert [json.loads(b)["genotype"] for b in bodies] == ["tanh:0|relu:1"] * 2 and len(bodies[0]) > len(bodies[1])


def test_errors_are_json_404_or_422_never_500(http_client):
    r = http_client.get("/arch/0123456789abcdef")
    assert r.status_code == 404 and "0123456789abcdef" in r.json()["detail"]
    for path in ("/arch/xyz", "/arch/0123456789ABCDEF", "/arch/0123456789abcdef0"):
        assert http_client.get(path).status_code == 422
    for genotype in ("", "tanh:0|gelu:0", "garbage", "relu:-0", "0", "tanh:0|tanh:0|", "x" * 3000):
        r = http_client.get("/arch", params={"genotype": genotype})  # outside the schema's syntax
        assert r.status_code == 422 and "query.genotype" in r.json()["detail"], genotype
    # well formed, but no cell of a loaded table: 404 naming why (issue 25.10: these were 422s the schema allowed)
    for genotype, why in (("tanh:0|tanh:3", "predecessor"), ("tanh:0|tanh:0|tanh:0|tanh:0", "4node"),
                          ("Genotype(recurrent=[])", "non-empty list"),
                          ("Genotype(recurrent=[('tanh', 0), ('relu', 1)], concat=range(1, 9))", "concat")):
        r = http_client.get("/arch", params={"genotype": genotype})
        assert r.status_code == 404 and why in r.json()["detail"], (genotype, r.json())
    dart = http_client.get("/arch", params={"genotype": "Genotype(recurrent=[('tanh', 0), ('relu', 1)], concat=range(1, 3))"})
    assert dart.status_code == 200 and dart.json()["genotype"] == "tanh:0|relu:1"
    assert http_client.get("/arch").status_code == 422
    for params in ({"limit": 0}, {"limit": 5000}, {"offset": -1}, {"sort": "accuracy"}, {"order": "up"},
                   {"space": "banana"}, {"limit": "ten"}, {"ws_seed": -1}):
        assert http_client.get("/archs", params=params).status_code == 422, params
    for space in ("5node", "0node"):
        assert http_client.get("/archs", params={"space": space}).status_code == 404
        assert http_client.get(f"/ws/{space}").status_code == 404
    assert http_client.get("/ws/x2node").status_code == 422
    assert http_client.get("/nope").status_code == 404


def test_leaderboard(http_client):
    r = http_client.get("/archs").json()
    assert r["space"] == "2node" and r["total"] == 32 and r["limit"] == 50
    ids = [row["id"] for row in r["items"]]
    # every sort key and order against the table's construction: the valid, test and id orders all differ
    valid = {a: 100.5 + int(key_valid(a)) for a in range(32)}
    test = {a: 90.5 + int(key_test(a)) for a in range(32)}
    valid[2], test[2] = 101 + int(key_valid(2)), 91 + int(key_test(2))  # seed 1 only
    for table in (valid, test):
        del table[1], table[3]  # 1 missing, 3 diverged: no value, always last
    by = {"valid_ppl": valid, "test_ppl": test}
    assert ids[:-2] == sorted(valid, key=valid.get) and ids[:3] == [27, 18, 9] and set(ids[-2:]) == {1, 3}
    assert [row["valid_ppl"] for row in r["items"][:-2]] == sorted(valid.values())
    for sort in ("valid_ppl", "test_ppl"):
        for order in ("asc", "desc"):
            items = http_client.get("/archs", params={"sort": sort, "order": order, "limit": 40}).json()["items"]
            want = sorted(by[sort], key=by[sort].get, reverse=order == "desc")
            assert [row["id"] for row in items][:-2] == want and {row["id"] for row in items[-2:]} == {1, 3}, sort
    page = http_client.get("/archs", params={"sort": "test_ppl", "limit": 5, "offset": 3}).json()
    assert [row["id"] for row in page["items"]] == sorted(test, key=test.get)[3:8] and page["total"] == 32
    page = http_client.get("/archs", params={"sort": "id", "limit": 5, "offset": 10}).json()
    assert [row["id"] for row in page["items"]] == [10, 11, 12, 13, 14]
    desc = http_client.get("/archs", params={"sort": "id", "order": "desc", "limit": 3}).json()["items"]
    assert [row["id"] for row in desc] == [31, 30, 29]
    assert http_client.get("/archs", params={"space": "3node", "limit": 1}).json()["total"] == 384
    assert http_client.get("/archs", params={"sort": "test_ppl", "limit": 1}).json()["items"][0]["test_ppl"] == 90.5



def test_leaderboard_of_a_table_without_standalone_runs(tmp_path):
    from nasbench_ptb import schema
    t = synthetic_table(tmp_path / "s.h5")
    schema.write(schema.Table(t.space, t.preset, t.config, None, t.ws, t.attrs), tmp_path / "ws-only.h5")
    with TestClient(create_app([tmp_path / "ws-only.h5"]), raise_server_exceptions=False) as c:
        r = c.get("/archs", params={"limit": 3})
        assert r.status_code == 200 and [row["id"] for row in r.json()["items"]] == [0, 1, 2]
        assert all(row["valid_ppl"] is None and row["status"] == "missing" for row in r.json()["items"])


def test_leaderboard_filters_ws_sort_and_the_ws_view(http_client):
    from nasbench_ptb import summary

    get = lambda **p: http_client.get("/archs", params={"space": "2node", "limit": 1000, **p})  # noqa: E731
    assert [r["id"] for r in get(status="missing").json()["items"]] == [1]
    assert [r["id"] for r in get(status="diverged").json()["items"]] == [3]
    ok = get(status="ok").json()
    assert ok["total"] == 30 and ok["filters"] == {"status": "ok"}
    two = get(min_n=2).json()  # arch 1 has no ok seed, 2 one (seed 0 diverged), 3 none
    assert two["total"] == 29 and {1, 2, 3}.isdisjoint(r["id"] for r in two["items"]) and two["filters"] == {"min_n": 2}
    assert [r["id"] for r in get(min_n=1).json()["items"]] == [r["id"] for r in get().json()["items"] if r["n_seeds"]]
    assert get(min_n=0).status_code == 422
    relu = get(op="relu").json()["items"]
    assert relu and all("relu" in r["genotype"] for r in relu) and len(relu) == 32 - 3 * 6  # 3 ops × (2 preds × 3 ops) lack relu
    g = parse("sigmoid:0|identity:0")
    assert [r["id"] for r in get(iso=g.iso_hash, sort="id").json()["items"]] == [19, 26]
    ws = get(sort="ws_valid_ppl", ws_seed=1).json()
    assert ws["ws_seed"] == 1 and ws["items"][0]["id"] == 4 and ws["items"][0]["ws_rank"][1] == 1
    assert ws["items"][0]["ws_valid_ppl"][1] == pytest.approx(1000 - 31)
    r = get(sort="ws_valid_ppl", ws_seed=7)
    assert r.status_code == 404 and "no super-net with WS seed 7" in r.json()["detail"]
    assert get(op="gelu").status_code == 422 and get(iso="XYZ").status_code == 422
    view = http_client.get("/ws/2node").json()
    assert view["seeds"] == [0, 1, 2] and view["status"] == ["ok", "ok", "diverged"] and len(view["ids"]) == 30
    assert view["tau_final"][2] is None and view["final_valid_ppl"][2] == [None] * 30
    table = http_client.app.state.store.tables.bench("2node").table
    want = summary.ws_vs_standalone_tau(table)[0].tau  # over the 31 attempted cells; the view's scatter has 30
    assert view["tau_final"][0] == pytest.approx(want)
    assert http_client.get("/ws/9node").status_code == 404 and http_client.get("/ws/two").status_code == 422


def test_leaderboard_by_a_proxy_and_the_proxy_view(http_client):
    get = lambda **p: http_client.get("/archs", params={"space": "2node", "limit": 1000, **p})  # noqa: E731
    items = get(sort="synflow").json()["items"]
    assert [r["id"] for r in items[:3]] == [27, 18, 9] and items[0]["proxy"] == 0.0  # asc: the highest proxy first
    assert items[-1]["id"] == 3 and items[-1]["proxy"] == -1000.0 and items[-2]["id"] == 4
    assert {r["id"]: r["proxy"] for r in items}[1] == -10.0  # never trained, yet scored: a proxy needs no training
    rev = get(sort="hidden_cov").json()["items"]
    assert rev[0]["id"] == 4 and rev[0]["proxy"] == 31.0  # key 31: the reverse of training
    assert get(sort="grasp").json()["items"][0]["proxy"] is None  # undefined everywhere: no value, none first
    r = get(sort="synflow", space="3node")
    assert r.status_code == 404 and "no zero-cost proxies" in r.json()["detail"]
    view = http_client.get("/proxies/2node").json()
    assert view["seeds"] == [0, 1] and len(view["ids"]) == 30 and 3 not in view["ids"]
    assert view["proxies"]["synflow"] == [-float(key_valid(i)) for i in view["ids"]]
    rows = {r["proxy"]: r for r in view["agreement"]}
    assert rows["synflow"]["tau_b"] == pytest.approx(1.0) and rows["synflow"]["seconds"] == 6.4
    assert rows["hidden_cov"]["tau_b"] < -0.9 and rows["grasp"]["tau_b"] is None and rows["params"]["tau_b"] is None
    assert len(view["tau_by_epoch"]["synflow"]) == len(view["epochs"]) == 5 and "params" not in view["tau_by_epoch"]
    assert view["tau_by_epoch"]["synflow"][-1] == pytest.approx(1.0)
    r = http_client.get("/proxies/3node")
    assert r.status_code == 404 and "no zero-cost proxies" in r.json()["detail"]
    assert http_client.get("/proxies/9node").status_code == 404 and http_client.get("/proxies/two").status_code == 422
    rec = http_client.get(f"/arch/{parse_space('2node').from_id(27).hash}").json()
    synflow = {z["name"]: z for z in rec["proxies"]}["synflow"]
    assert synflow["rank"] == 1 and synflow["values"] == [0.0, 0.0] and synflow["seeds"] == [0, 1]
