// nasbench-ptb explorer: a leaderboard per table, a page per architecture, weight sharing vs standalone.
// Plain script over the JSON API (/spaces, /archs, /arch/{hash}, /ws/{space}, /proxies/{space}); charts are hand-drawn SVG.
"use strict";

const app = document.getElementById("app");
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const OPS = ["tanh", "relu", "sigmoid", "identity"];
let SPACES = null;

function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "path", "line", "circle", "text", "g", "rect", "polyline"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick" || k === "onchange") node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { const e = new Error(body.detail || r.statusText); e.status = r.status; throw e; }
  return body;
}

const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

// ---- charts ---------------------------------------------------------------------------------------------------
// an axis label: two decimals below 10, none above; exponent form where that would hide the values (proxies)
const tick = (v, span) => (span < 0.05 || Math.abs(v) >= 1e5 ? Number(v).toExponential(1) : fmt(v, Math.abs(v) < 10 ? 2 : 0));
function chart(series, { xlabel = "", ylabel = "", width = 440, height = 260, points = false, diagonal = false } = {}) {
  const pad = { l: 56, r: 12, t: 10, b: 40 };
  const xs = series.flatMap(s => s.xs).filter(Number.isFinite);
  const ys = series.flatMap(s => s.ys).filter(Number.isFinite);
  const svg = el("svg", { width, height, class: points ? "scatter" : "lines" });
  if (!xs.length || !ys.length) { svg.append(el("text", { x: 20, y: 30 }, "no values")); return svg; }
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (diagonal) { x0 = y0 = Math.min(x0, y0); x1 = y1 = Math.max(x1, y1); }
  if (x1 === x0) x1 = x0 + 1; if (y1 === y0) y1 = y0 + 1;
  const X = v => pad.l + (v - x0) / (x1 - x0) * (width - pad.l - pad.r);
  const Y = v => height - pad.b - (v - y0) / (y1 - y0) * (height - pad.t - pad.b);
  svg.append(el("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, stroke: "#444" }),
             el("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, stroke: "#444" }));
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    svg.append(el("text", { x: X(xv), y: height - pad.b + 14, "text-anchor": "middle" }, fmt(xv, xv < 10 ? 2 : 0)),
               el("text", { x: pad.l - 4, y: Y(yv) + 4, "text-anchor": "end" }, tick(yv, y1 - y0)));
  }
  svg.append(el("text", { x: (width + pad.l) / 2, y: height - 6, "text-anchor": "middle" }, xlabel),
             el("text", { x: 12, y: height / 2, transform: `rotate(-90 12 ${height / 2})`, "text-anchor": "middle" }, ylabel));
  if (diagonal) svg.append(el("line", { x1: X(x0), y1: Y(y0), x2: X(x1), y2: Y(y1), stroke: "#bbb", "stroke-dasharray": "4 3" }));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.xs.map((x, j) => [x, s.ys[j]]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (points) pts.forEach(([x, y]) => svg.append(el("circle", { cx: X(x), cy: Y(y), r: 3, fill: color, "fill-opacity": 0.7 })));
    else if (pts.length) svg.append(el("path", { d: pts.map(([x, y], j) => `${j ? "L" : "M"}${X(x)},${Y(y)}`).join(""),
                                                 fill: "none", stroke: color, "stroke-width": 2, class: "curve" }));
  });
  return svg;
}

function legend(names) {
  return el("div", { class: "legend" }, names.map((n, i) => el("span", { style: `color:${COLORS[i % COLORS.length]}` }, `■ ${n}`)));
}

function cellGraph(genotype) {
  const nodes = genotype.split("|").map(s => { const [op, p] = s.split(":"); return { op, pred: Number(p) }; });
  const n = nodes.length, w = 110 + 120 * n, h = 120, X = k => 50 + 120 * k, Y = 70;
  const svg = el("svg", { width: w, height: h, class: "cell" });
  nodes.forEach((node, i) => {
    const k = i + 1, bend = (k - node.pred) > 1 ? -45 : 0;
    const mid = (X(node.pred) + X(k)) / 2;
    svg.append(el("path", { d: `M${X(node.pred)},${Y} Q${mid},${Y + bend * 1.6} ${X(k)},${Y}`, fill: "none", stroke: "#555" }),
               el("text", { x: mid, y: Y + bend * 0.8 - 6, "text-anchor": "middle", class: "edge" }, node.op));
  });
  for (let k = 0; k <= n; k++) {
    svg.append(el("circle", { cx: X(k), cy: Y, r: 16, fill: k ? "#a8dadc" : "#f1faee", stroke: "#1d3557" }),
               el("text", { x: X(k), y: Y + 4, "text-anchor": "middle" }, k ? `s${k}` : "s0"));
  }
  svg.append(el("text", { x: 8, y: 14 }, `h_t = mean(s1…s${n})`));
  return svg;
}

// ---- pages ----------------------------------------------------------------------------------------------------
function params() {
  const q = location.hash.split("?")[1] || "";
  return Object.fromEntries(new URLSearchParams(q));
}

function go(path, p) {
  const q = new URLSearchParams(Object.entries(p).filter(([, v]) => v !== "" && v !== undefined && v !== null));
  location.hash = `${path}?${q}`;
}

async function leaderboard() {
  const p = { space: SPACES[0].space, sort: "valid_ppl", order: "asc", offset: "0", limit: "25", ...params() };
  const space = SPACES.find(s => s.space === p.space) || SPACES[0];
  const url = `/archs?${new URLSearchParams(Object.entries(p).filter(([, v]) => v !== ""))}`;
  const data = await getJSON(url);
  const off = Number(p.offset), lim = Number(p.limit);
  const sortKey = p.sort === "ws_valid_ppl" ? `ws:${data.ws_seed ?? space.ws_seeds[0]}` : p.sort;
  const select = (name, options, value) => el("select", { id: `f-${name}`, onchange: e => go("#/", { ...p, [name]: e.target.value, offset: 0 }) },
    options.map(([v, label]) => { const o = el("option", { value: v }, label); if (String(v) === String(value ?? "")) o.selected = true; return o; }));
  const head = (label, key) => {
    const th = el("th", { "data-sort": key, class: key === sortKey ? "sorted" : null }, label + (key === sortKey ? (p.order === "asc" ? " ▲" : " ▼") : ""));
    th.addEventListener("click", () => {
      const [sort, ws] = key.startsWith("ws:") ? ["ws_valid_ppl", key.slice(3)] : [key, ""];
      const order = key === sortKey && p.order === "asc" ? "desc" : "asc";
      go("#/", { ...p, sort, ws_seed: ws, order, offset: 0 });
    });
    return th;
  };
  const wsSeeds = space.ws_seeds || [];
  app.replaceChildren(
    el("h2", {}, `Leaderboard: ${space.space} (${space.preset} preset)`),
    el("div", { class: "controls" },
      el("label", {}, "space ", select("space", SPACES.map(s => [s.space, s.space]), p.space)),
      el("label", {}, "status ", select("status", [["", "any"], ["ok", "ok"], ["diverged", "diverged"], ["missing", "missing"]], p.status)),
      el("label", {}, "op ", select("op", [["", "any"], ...OPS.map(o => [o, o])], p.op)),
      p.iso ? el("span", {}, `iso class ${p.iso} `, el("a", { href: "#", onclick: e => { e.preventDefault(); go("#/", { ...p, iso: "", offset: 0 }); } }, "(clear)")) : "",
      el("a", { href: `#/ws/${space.space}` }, "weight sharing vs standalone →"),
      (space.proxy_seeds || []).length ? el("a", { href: `#/proxies/${space.space}` }, " zero-cost proxies vs standalone →") : ""),
    el("table", { id: "leaderboard" },
      el("thead", {}, el("tr", {}, head("id", "id"), el("th", {}, "genotype"), el("th", {}, "status"),
        head("valid ppl", "valid_ppl"), head("test ppl", "test_ppl"), el("th", {}, "seeds"),
        wsSeeds.map(s => head(`WS ${s} rank`, `ws:${s}`)))),
      el("tbody", {}, data.items.map(r => el("tr", { "data-id": r.id },
        el("td", { class: "num" }, r.id), el("td", {}, el("a", { href: `#/arch/${r.hash}` }, r.genotype), " ",
          el("a", { href: "#", class: "iso", title: "only this iso class", onclick: e => { e.preventDefault(); go("#/", { ...p, iso: r.iso_hash, offset: 0 }); } }, "≅")),
        el("td", {}, r.status),
        el("td", { class: "num" }, fmt(r.valid_ppl)), el("td", { class: "num" }, fmt(r.test_ppl)), el("td", { class: "num" }, r.n_seeds),
        wsSeeds.map((s, k) => el("td", { class: "num" }, r.ws_rank[k] ?? "–")))))),
    el("div", { class: "controls" },
      el("button", { id: "prev", disabled: off === 0 ? "" : null, onclick: () => go("#/", { ...p, offset: Math.max(0, off - lim) }) }, "← previous"),
      el("span", { id: "page-info" }, data.total ? `${off + 1}–${Math.min(off + lim, data.total)} of ${data.total}` : "no architectures"),
      el("button", { id: "next", disabled: off + lim >= data.total ? "" : null, onclick: () => go("#/", { ...p, offset: off + lim }) }, "next →"),
      el("a", { href: url }, "JSON")));
}

async function archPage(hash) {
  let r;
  try { r = await getJSON(`/arch/${hash}`); } catch (e) {
    app.replaceChildren(el("h2", {}, "Architecture"),
      el("p", { id: "not-found", class: "error" }, e.status === 404 || e.status === 422 ? `Not found: no architecture with hash ${hash} in the loaded tables.` : `Error: ${e.message}`),
      el("p", {}, el("a", { href: "#/" }, "← leaderboard")));
    return;
  }
  const sa = r.standalone;
  const seeds = sa ? sa.seeds.filter(s => s.curve) : [];
  const twins = await getJSON(`/archs?space=${r.space}&iso=${r.iso_hash}&limit=1000&sort=id`);
  app.replaceChildren(
    el("h2", {}, r.genotype),
    el("p", {}, `space ${r.space} · id ${r.id} · hash `, el("code", {}, r.hash), " · iso ", el("code", {}, r.iso_hash),
      ` · ${r.params.toLocaleString()} parameters · `, el("a", { href: `/arch/${r.hash}` }, "JSON"), " · ", el("a", { href: `#/?space=${r.space}` }, "leaderboard")),
    cellGraph(r.genotype),
    el("h3", {}, "Standalone"),
    sa ? el("p", { id: "standalone-summary" }, `${sa.status}: valid ppl ${fmt(sa.valid_ppl)} ± ${fmt(sa.valid_ppl_std)}, test ppl ${fmt(sa.test_ppl)} ± ${fmt(sa.test_ppl_std)} over ${sa.n_seeds} seed(s); rank ${sa.rank ?? "–"}`)
       : el("p", { class: "muted" }, "no standalone runs in this table"),
    el("div", { class: "charts" },
      el("figure", { id: "standalone-curves" }, el("figcaption", {}, "validation ppl per seed"),
        chart(seeds.map(s => ({ xs: s.curve.epochs, ys: s.curve.valid_ppl })), { xlabel: "epoch", ylabel: "valid ppl" }),
        legend(seeds.map(s => `seed ${s.seed} (${s.status})`))),
      el("figure", { id: "ws-curves" }, el("figcaption", {}, "validation ppl under each super-net"),
        chart(r.ws.map(w => ({ xs: w.epochs, ys: w.valid_ppl })), { xlabel: "super-net epoch", ylabel: "valid ppl" }),
        legend(r.ws.map(w => `WS seed ${w.seed} (${w.status}), rank ${w.rank ?? "–"}`)))),
    (r.proxies || []).length ? el("div", {},
      el("h3", {}, "Zero-cost proxies at initialisation"),
      el("table", { id: "proxies" }, el("thead", {}, el("tr", {}, ["proxy", "mean", "seeds", "rank (1 = highest)"].map(h => el("th", {}, h)))),
        el("tbody", {}, r.proxies.map(z => el("tr", {}, el("td", {}, z.name), el("td", { class: "num" }, z.mean === null ? "–" : z.mean.toPrecision(4)),
          el("td", { class: "num" }, z.n), el("td", { class: "num" }, z.rank ?? "–")))))) : "",
    el("h3", {}, "Iso twins (the same cell up to node renumbering)"),
    el("ul", { id: "twins" }, twins.items.filter(t => t.hash !== r.hash).map(t => el("li", {}, el("a", { href: `#/arch/${t.hash}` }, t.genotype), ` valid ${fmt(t.valid_ppl)}`)).concat(twins.total > 1 ? [] : [el("li", { class: "muted" }, "none")])));
}

async function wsPage(space) {
  let v;
  try { v = await getJSON(`/ws/${space}`); } catch (e) {
    app.replaceChildren(el("p", { id: "not-found", class: "error" }, e.message)); return;
  }
  app.replaceChildren(
    el("h2", {}, `Weight sharing vs standalone: ${v.space}`),
    el("p", {}, "Each point is an architecture: its mean standalone validation ppl against its validation ppl under one super-net's shared weights."),
    el("div", { class: "charts" },
      v.seeds.map((s, k) => el("figure", { class: "ws-scatter" },
        el("figcaption", {}, `super-net seed ${s} (${v.status[k]}): Kendall tau-b ${fmt(v.tau_final[k], 3)}`),
        chart([{ xs: v.standalone_valid_ppl, ys: v.final_valid_ppl[k] }], { points: true, xlabel: "standalone valid ppl", ylabel: "WS valid ppl", width: 340 }))),
      el("figure", { id: "tau-over-training" }, el("figcaption", {}, "tau-b vs standalone per super-net checkpoint"),
        chart(v.seeds.map((s, k) => ({ xs: v.epochs, ys: v.tau_over_training[k] })), { xlabel: "super-net epoch", ylabel: "Kendall tau-b" }),
        legend(v.seeds.map(s => `seed ${s}`)))));
}

async function proxiesPage(space) {
  let v;
  try { v = await getJSON(`/proxies/${space}`); } catch (e) {
    app.replaceChildren(el("p", { id: "not-found", class: "error" }, e.message)); return;
  }
  const agree = Object.fromEntries(v.agreement.map(r => [r.proxy, r]));
  const names = Object.keys(v.proxies);
  app.replaceChildren(
    el("h2", {}, `Zero-cost proxies vs standalone: ${v.space}`),
    el("p", {}, `Each point is an architecture: its mean standalone validation ppl against a proxy's mean over seeds ${v.seeds.join(", ")} at initialisation (higher predicts better, so agreement slopes down; tau-b compares the proxy's ranking, highest first, with training's).`),
    el("table", { id: "proxy-agreement" }, el("thead", {}, el("tr", {}, ["proxy", "tau-b", "Spearman", "top-10 %", "seed tau-b", "n", "seconds"].map(h => el("th", {}, h)))),
      el("tbody", {}, v.agreement.map(r => el("tr", { "data-proxy": r.proxy }, el("td", {}, r.proxy), el("td", { class: "num" }, fmt(r.tau_b, 3)),
        el("td", { class: "num" }, fmt(r.spearman, 3)), el("td", { class: "num" }, fmt(r.top_overlap, 2)), el("td", { class: "num" }, fmt(r.seed_tau, 3)),
        el("td", { class: "num" }, r.n), el("td", { class: "num" }, fmt(r.seconds, 1)))))),
    el("div", { class: "charts" },
      names.map(n => el("figure", { class: "proxy-scatter", "data-proxy": n },
        el("figcaption", {}, `${n}: Kendall tau-b ${fmt(agree[n] ? agree[n].tau_b : null, 3)}`),
        chart([{ xs: v.standalone_valid_ppl, ys: v.proxies[n] }], { points: true, xlabel: "standalone valid ppl", ylabel: n, width: 300 }))),
      el("figure", { id: "proxy-tau-by-epoch" }, el("figcaption", {}, "tau-b vs standalone at each standalone checkpoint"),
        chart(names.map(n => ({ xs: v.epochs, ys: v.tau_by_epoch[n] })), { xlabel: "standalone epoch", ylabel: "Kendall tau-b" }),
        legend(names))));
}

async function route() {
  try {
    if (!SPACES) {
      SPACES = await getJSON("/spaces");
      document.getElementById("ws-links").replaceChildren(...SPACES.filter(s => s.ws_seeds.length).map(s => el("a", { href: `#/ws/${s.space}` }, `WS ${s.space} `)),
        ...SPACES.filter(s => (s.proxy_seeds || []).length).map(s => el("a", { href: `#/proxies/${s.space}` }, `proxies ${s.space} `)));
    }
    const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
    const m = path.match(/^\/arch\/(.+)$/), w = path.match(/^\/ws\/(.+)$/), z = path.match(/^\/proxies\/(.+)$/);
    if (m) await archPage(decodeURIComponent(m[1]));
    else if (w) await wsPage(decodeURIComponent(w[1]));
    else if (z) await proxiesPage(decodeURIComponent(z[1]));
    else await leaderboard();
    document.body.dataset.ready = location.hash || "#/";
  } catch (e) {
    app.replaceChildren(el("p", { class: "error", id: "error" }, `Error: ${e.message}`));
    document.body.dataset.ready = "error";
  }
}

window.addEventListener("hashchange", route);
route();
