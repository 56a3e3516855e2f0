"""The HTTP face of ``nasbench_ptb.api``: read-only, tables loaded once at startup.

    GET /arch/{hash}            one architecture (``?curves=false`` omits the curves; ``?epoch=E``: as after E epochs)
    GET /arch?genotype=…        the same by genotype (canonical string or DARTS repr)
    GET /archs                  leaderboard: ?space=&sort=valid_ppl|test_ppl|id|ws_valid_ppl|<proxy>&ws_seed=&order=asc|desc
                                &limit=&offset=, filters &status=ok|diverged|missing &op=<activation> &iso=<iso hash> &min_n=
    GET /ws/{space}             weight sharing vs standalone: final values per super-net, tau-b per checkpoint
    GET /proxies/{space}        zero-cost proxies vs standalone: each proxy per cell, its agreement, tau-b per checkpoint
    GET /                       the explorer page (static HTML + script from the package, no CDN)
    GET /spaces                 every loaded table: space, preset, every training value, coverage, device
    GET /health
    GET /docs, /redoc           the OpenAPI documentation, its scripts served from the package (works offline)

Routes are ``async def``: they only read tables held in memory and cached serialised bodies (records, /archs
pages), so they never block the event loop. ``GET /arch/<known hash>`` is answered from that cache by a raw ASGI
layer in front of the framework (``api/asgi.py``, byte for byte the route's answer). Every GET route answers HEAD.
Every error body is ``{"detail": "<one line>"}``, as the OpenAPI document declares. The parameter schemas say
what is well formed (a genotype's syntax, a space name, a WS seed, an epoch ≥ 0), and FastAPI answers anything
else 422; a well-formed request for what the tables do not hold (an unknown hash, a genotype whose wiring is no
cell of a loaded space, a space without a table, a WS seed without a super-net, an epoch before the first
checkpoint) is a 404 naming it. So every request the schema allows is answered 200 or 404.
"""
from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Literal, Optional, Sequence

import numpy as np
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

import nasbench_ptb
from nasbench_ptb import api as nb
from nasbench_ptb.errors import NasbenchError, http_status
from nasbench_ptb.space import OPS, parse

from .asgi import CachedArchs, HeadAsGet
from .models import (ArchModel, ErrorModel, Health, Leaderboard, LeaderboardRow, ProxyAgreement, ProxyView, SpaceModel,
                     WsView)

HASH_PATTERN = r"^[0-9a-f]{16}$"
HASH_RE = re.compile(HASH_PATTERN)
SPACE_PATTERN = r"^[0-9]{1,6}node$"
_OP = f"({'|'.join(OPS)})"
_NODE = rf" *{_OP} *: *[0-9]{{1,9}} *"
_PAIR = rf"\( *['\"]{_OP}['\"] *, *[0-9]{{1,9}} *\)"
# a genotype's syntax: the canonical string, or DARTS's repr with an optional concat=range(a, b)
GENOTYPE_PATTERN = (rf"^({_NODE}(\|{_NODE})*| *Genotype *\( *recurrent *= *\[ *({_PAIR}( *, *{_PAIR})* *,? *)?\] *"
                    rf"(, *concat *= *range\( *[0-9]{{1,9}} *, *[0-9]{{1,9}} *\) *)?\) *)$")
INVALID = {422: {"model": ErrorModel, "description": "a parameter is malformed (outside its schema)"}}
NOT_FOUND = {404: {"model": ErrorModel, "description": "the loaded tables hold no such architecture, space, "
                                                       "super-net or checkpoint"}, **INVALID}
STATIC = os.path.join(os.path.dirname(__file__), "static")
PROXIES = nb.schema.columns("proxies", "NS")  # the zero-cost proxies a table may hold (sortable, viewable)
SORTS = ("valid_ppl", "test_ppl", "id", "ws_valid_ppl", *PROXIES)
PAGE_CACHE = 512  # serialised /archs pages kept (least recently used dropped first)


class Store:
    """Loaded benchmarks by space, a hash index over all of them, and a cache of serialised records."""

    def __init__(self, benches: Sequence[nb.Benchmark]):
        self.tables = nb.Tables(benches)  # what a key names: the same rules as api.query and the CLI
        self._json: dict[tuple, bytes] = {}
        self._by_hash: dict[tuple[str, bool], bytes] = {}  # the same bodies keyed by (hash, curves)
        self._orders: dict[tuple, list[LeaderboardRow]] = {}
        self._pages: OrderedDict[tuple, bytes] = OrderedDict()  # least recently used first

    def leaderboard_json(self, bench: nb.Benchmark, sort: str, order: str, limit: int, offset: int,
                         ws_seed: int | None = None, filters: tuple = ()) -> bytes:
        """A leaderboard page, serialised once; rows are sorted once per (space, sort, order, WS seed) and
        filtered by ``filters`` ((name, value) pairs: status, op, iso, min_n)."""
        key = (bench.space.name, sort, order, ws_seed, filters, limit, offset)
        body = self._pages.get(key)
        if body is not None:
            self._pages.move_to_end(key)
            return body
        rows = self._orders.get(key[:4])
        if rows is None:
            rows = self._orders[key[:4]] = _leaderboard_rows(bench, sort, order, ws_seed)
        rows = [r for r in rows if all(_keep(r, name, value) for name, value in filters)]
        page = Leaderboard(space=bench.space.name, sort=sort, order=order, ws_seed=ws_seed, filters=dict(filters),
                           total=len(rows), limit=limit, offset=offset, items=rows[offset : offset + limit])
        body = self._pages[key] = page.model_dump_json().encode()
        if len(self._pages) > PAGE_CACHE:
            self._pages.popitem(last=False)
        return body

    def cached_record(self, arch_hash: str, curves: bool) -> bytes | None:
        """The serialised record of a hash in a loaded table, or None when no table has it (lowercase hex only)."""
        body = self._by_hash.get((arch_hash, curves))
        if body is None and HASH_RE.fullmatch(arch_hash):
            try:
                bench, arch = self.tables.resolve(arch_hash)
            except nb.ArchNotFoundError:
                return None
            body = self._by_hash[arch_hash, curves] = self.record_json(bench, arch, curves)
        return body

    def view_json(self, name: str, bench: nb.Benchmark, make) -> bytes:
        """A whole-table view (``make(bench)``: a model) as JSON bytes, computed once per (view, table)."""
        key = (name, bench.space.name)
        body = self._json.get(key)
        if body is None:
            body = self._json[key] = make(bench).model_dump_json().encode()
        return body

    def record_json(self, bench: nb.Benchmark, arch: int, curves: bool, epoch: float | None = None) -> bytes:
        """The record's JSON, serialised once per (space, architecture, curves, checkpoint of ``epoch``).

        Raises:
            nasbench_ptb.fidelity.FidelityError: an epoch the table cannot answer.
        """
        view = bench.at_epoch(epoch)
        key = (bench.space.name, arch, curves, None if view is bench else len(view.table.standalone.epochs))
        body = self._json.get(key)
        if body is None:
            rec = view.query(arch)
            body = self._json[key] = json.dumps(rec.to_dict(curves=curves), separators=(",", ":")).encode()
        return body


EPOCH = Query(None, ge=0, allow_inf_nan=False, description="the record as the table stood after this many epochs (its last checkpoint at or "
                                "before it: curves cut there, finals, ranks and status at it; test ppl only where "
                                "that is the checkpoint the run was tested at)")


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


def create_app(tables: Sequence[str | os.PathLike] | None = None) -> FastAPI:
    """An app serving ``tables`` (paths), or the default tables when None; they are loaded at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        paths = list(tables) if tables else list(nb.default_tables().values())
        app.state.store = Store([nb.load(p) for p in paths])
        yield

    app = FastAPI(title="nasbench-ptb", version=nasbench_ptb.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Tabular NAS benchmark of DARTS recurrent cells on Penn Treebank (read-only).")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(HeadAsGet)
    app.add_middleware(CachedArchs)  # added last = outermost: the hot path skips the other layers

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(422, validation_detail(exc))

    @app.exception_handler(NasbenchError)
    async def domain(request: Request, exc: NasbenchError):  # the one mapping of error kind to status
        return _error(http_status(exc), str(exc))

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="nasbench-ptb API",
                                   swagger_js_url="/static/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui.css", swagger_favicon_url="data:,")

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title="nasbench-ptb API",
                              redoc_js_url="/static/redoc.standalone.js", redoc_favicon_url="data:,",
                              with_google_fonts=False)

    def store(request: Request) -> Store:
        return request.app.state.store

    @app.get("/health", response_model=Health)
    async def health(request: Request):
        return Health(status="ok", tables=len(store(request).tables.spaces))

    @app.get("/spaces", response_model=list[SpaceModel])
    async def spaces(request: Request):
        out, tables = [], store(request).tables
        for name in tables.spaces:
            meta = tables.bench(name).metadata
            out.append(SpaceModel(**{k: meta.get(k) for k in SpaceModel.model_fields}))
        return out

    @app.get("/arch/{arch_hash}", response_model=ArchModel, responses=NOT_FOUND)
    async def arch_by_hash(request: Request, arch_hash: str = Path(pattern=HASH_PATTERN, description="16 hex digits"),
                     curves: bool = True, epoch: Optional[float] = EPOCH):
        st = store(request)
        try:
            bench, arch = st.tables.resolve(arch_hash)
        except nb.ArchNotFoundError:
            return _error(404, f"no architecture with hash {arch_hash} in the loaded tables "
                               f"({', '.join(st.tables.spaces)})")
        return _json(st.record_json(bench, arch, curves, epoch))  # an epoch before the first checkpoint: 404

    @app.get("/arch", response_model=ArchModel, responses=NOT_FOUND)
    async def arch_by_genotype(request: Request,
                         genotype: str = Query(max_length=2000, pattern=GENOTYPE_PATTERN,
                                               description="canonical string (tanh:0|sigmoid:0) or DARTS repr"),
                         curves: bool = True, epoch: Optional[float] = EPOCH):
        st = store(request)
        bench, arch = st.tables.resolve(parse(genotype))  # by genotype only: a hash here is malformed
        return _json(st.record_json(bench, arch, curves, epoch))

    @app.get("/archs", response_model=Leaderboard, responses=NOT_FOUND)
    async def leaderboard(request: Request, space: Optional[str] = Query(None, pattern=SPACE_PATTERN),
                    sort: Literal[SORTS] = Query("valid_ppl", description="a metric, the id, or a zero-cost proxy "
                                                 "(asc: best first, the highest proxy)"),
                    order: Literal["asc", "desc"] = "asc",
                    limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0),
                    ws_seed: Optional[int] = Query(None, ge=0, description="the super-net sort=ws_valid_ppl ranks by "
                                                                      "(default: the first)"),
                    status: Optional[Literal["ok", "diverged", "missing"]] = None,
                    op: Optional[Literal["tanh", "relu", "sigmoid", "identity"]] = Query(
                        None, description="only cells with a node of this activation"),
                    iso: Optional[str] = Query(None, pattern=HASH_PATTERN, description="only this iso class"),
                    min_n: Optional[int] = Query(None, ge=1, le=1000, description="only cells with at least this many "
                                                 "ok standalone seeds (one-seed means crowd an unfiltered top)")):
        st = store(request)
        bench = st.tables.bench(space or st.tables.spaces[0])  # default: the smallest space
        if sort == "ws_valid_ppl":
            bench.values(sort, ws_seed)  # an unknown WS seed, or no super-nets: 404 naming it
        elif sort in PROXIES:
            bench.proxy(sort)  # a table without proxies: 404 naming it
        filters = tuple((k, v) for k, v in (("status", status), ("op", op), ("iso", iso), ("min_n", min_n))
                        if v is not None)
        return _json(st.leaderboard_json(bench, sort, order, limit, offset,
                                         ws_seed if sort == "ws_valid_ppl" else None, filters))

    @app.get("/ws/{space}", response_model=WsView, responses=NOT_FOUND)
    async def ws_view(request: Request, space: str = Path(pattern=SPACE_PATTERN, description="e.g. 2node")):
        bench = store(request).tables.bench(space)  # no such space (0node), or no table for it: 404
        if bench.table.ws is None or bench.table.standalone is None:
            return _error(404, f"the {bench.space.name} table has no weight-sharing and standalone results to compare")
        return _json(store(request).view_json("ws", bench, _ws_view))

    @app.get("/proxies/{space}", response_model=ProxyView, responses=NOT_FOUND)
    async def proxy_view(request: Request, space: str = Path(pattern=SPACE_PATTERN, description="e.g. 2node")):
        bench = store(request).tables.bench(space)
        if bench.table.proxies is None or bench.table.standalone is None:
            return _error(404, f"the {bench.space.name} table has no zero-cost proxies and standalone results to "
                               "compare (add proxies with: nasbench_ptb proxies TABLE)")
        return _json(store(request).view_json("proxies", bench, _proxy_view))

    @app.get("/", include_in_schema=False)
    async def explorer():
        return FileResponse(os.path.join(STATIC, "explorer", "index.html"))

    return app


def _leaderboard_rows(bench: nb.Benchmark, sort: str, order: str, ws_seed: int | None) -> list[LeaderboardRow]:
    ids, _ = bench.order(sort, order == "desc", ws_seed)  # the same ordering as Benchmark.best(); no value last
    rows = [bench.query(i, curves=False) for i in ids]
    proxy = bench.proxy(sort) if sort in PROXIES else None
    return [
        LeaderboardRow(rank=r.standalone.rank if r.standalone else None, id=r.id, genotype=r.genotype,
                       hash=r.hash, iso_hash=r.iso_hash, status=r.standalone.status if r.standalone else "missing",
                       n_seeds=r.standalone.n_seeds if r.standalone else 0,
                       valid_ppl=_finite(r.standalone.valid_ppl) if r.standalone else None,
                       test_ppl=_finite(r.standalone.test_ppl) if r.standalone else None,
                       ws_valid_ppl=[_finite(w.final_valid_ppl) for w in r.ws], ws_rank=[w.rank for w in r.ws],
                       proxy=_finite(proxy[r.id]) if proxy is not None else None)
        for r in rows
    ]


def _keep(row: LeaderboardRow, name: str, value: str) -> bool:
    if name == "status":
        return row.status == value
    if name == "op":
        return value in [node.split(":")[0] for node in row.genotype.split("|")]
    if name == "min_n":
        return row.n_seeds >= value
    return row.iso_hash == value


def _ws_view(bench: nb.Benchmark) -> WsView:
    from nasbench_ptb import analyses

    table = bench.table
    sa = bench.values("valid_ppl")
    ids = np.flatnonzero(np.isfinite(sa))
    t = analyses.ws_tau_over_training(table)
    ws = table.ws
    return WsView(space=bench.space.name, ids=ids.tolist(), standalone_valid_ppl=[_finite(v) for v in sa[ids]],
                  seeds=[int(s) for s in ws.seeds], status=[nb.schema.Status(int(x)).name.lower() for x in ws.status],
                  final_valid_ppl=[[_finite(v) for v in ws.valid_ppl[k, -1, ids]] for k in range(len(ws.seeds))],
                  tau_final=[_finite(v) for v in t.tau[:, -1]], epochs=[float(e) for e in t.epochs],
                  tau_over_training=[[_finite(v) for v in row] for row in t.tau])


def _proxy_view(bench: nb.Benchmark) -> ProxyView:
    from nasbench_ptb.proxy_analyses import proxy_summary

    zc = proxy_summary(bench.table)
    sa = bench.values("valid_ppl")
    ids = np.flatnonzero(np.isfinite(sa))
    return ProxyView(space=bench.space.name, ids=ids.tolist(), standalone_valid_ppl=[_finite(v) for v in sa[ids]],
                     seeds=zc.seeds, proxies={n: [_finite(v) for v in bench.proxy(n)[ids]] for n in PROXIES},
                     agreement=[ProxyAgreement(proxy=r.proxy, tau_b=_finite(r.tau_b), spearman=_finite(r.spearman),
                                               top_overlap=_finite(r.top_overlap), seed_tau=_finite(r.seed_tau),
                                               n=r.n, seconds=zc.seconds.get(r.proxy)) for r in zc.final],
                     epochs=zc.epochs, tau_by_epoch={n: [_finite(v) for v in taus] for n, taus in zc.by_epoch.items()},
                     device=zc.device)


def _finite(v: float) -> Optional[float]:
    return float(v) if np.isfinite(v) else None


def validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: ``query.limit: Input should be less than or equal to 1000``."""
    return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in exc.errors())
