// The feature explorer: pages, sorts and filters the features of #feature-data, and shows one
// feature in #detail. Only one page of rows is ever in the DOM (fast with 10,000 features).
// Stable hooks for tests and users' scripts: #explorer, #detail, th[data-sort="<column>"],
// tr[data-feature="<id>"], #page-info, svg#ivcurve, img#evidence-img.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("feature-data").textContent);
  const EV = JSON.parse(document.getElementById("evidence-data").textContent);
  const C = DATA.columns, N = DATA.n, PAGE = DATA.page, META = DATA.meta;
  const has = k => Object.prototype.hasOwnProperty.call(C, k);
  const $ = id => document.getElementById(id);
  const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c]));
  const byFeature = new Map(C.feature.map((f, i) => [f, i]));
  let order = C.feature.map((_, i) => i), view = order, page = 0, sortKey = null, sortDir = 1, selected = null;

  // ---------------------------------------------------------------- formatting
  function fmt(col, v) {
    if (v === null || v === undefined) return "—";
    if (col === "teleport_depth" && DATA.teleport_never !== null && v >= DATA.teleport_never) return "never";
    const kind = META[col] ? META[col].kind : typeof v;
    if (kind === "bool" || typeof v === "boolean") return v ? "yes" : "no";
    if (kind === "int" || (typeof v === "number" && Number.isInteger(v) && kind !== "number")) return String(v);
    if (typeof v === "number") return Math.abs(v) >= 1000 ? v.toFixed(0) : v.toFixed(3);
    return String(v);
  }
  const className = i => has("class_name") ? C.class_name[i] : (has("class") ? String(C["class"][i]) : "");
  const label = col => META[col] ? META[col].label : col;
  const tip = col => META[col] ? META[col].tip : "";

  // ---------------------------------------------------------------- header and filters
  const head = $("explorer-head");
  head.innerHTML = DATA.table.map(c => `<th data-sort="${esc(c)}" title="${esc(tip(c))}">${esc(label(c))}</th>`).join("") +
    '<th title="thumbnails embedded in this page">▣</th>';
  const classSel = $("f-class"), clusterSel = $("f-cluster");
  const classKey = has("class") ? "class" : (has("class_name") ? "class_name" : null);
  if (classKey) {
    const seen = new Map();
    for (let i = 0; i < N; i++) if (!seen.has(C[classKey][i])) seen.set(C[classKey][i], className(i));
    const opts = [...seen.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    classSel.insertAdjacentHTML("beforeend", opts.map(([v, n]) =>
      `<option value="${esc(v)}">${classKey === "class" ? esc(v) + " · " : ""}${esc(n)}</option>`).join(""));
  } else classSel.parentElement.hidden = true;
  if (has("cluster")) {
    const ids = [...new Set(C.cluster.filter(v => v !== null))].sort((a, b) => a - b);
    clusterSel.insertAdjacentHTML("beforeend", ids.map(v => `<option value="${v}">${v}</option>`).join(""));
  } else $("f-cluster-label").hidden = true;
  if (!has("importance")) { $("f-gamma-label").hidden = true; $("f-gamma-label2").hidden = true; }
  const num = id => { const el = $(id); if (!el || el.value === "") return null; const v = parseFloat(el.value); return isNaN(v) ? null : v; };

  function applyFilters() {
    const cls = classSel.value, clu = clusterSel.value, ev = $("f-evidence").checked;
    const kmin = num("f-kmin"), kmax = num("f-kmax"), gmin = num("f-gmin"), gmax = num("f-gmax");
    const K = C.complexity, G = C.importance;
    view = order.filter(i =>
      (cls === "" || String(C[classKey][i]) === cls) &&
      (clu === "" || String(C.cluster[i]) === clu) &&
      (kmin === null || K[i] >= kmin) && (kmax === null || K[i] <= kmax) &&
      (gmin === null || G[i] >= gmin) && (gmax === null || G[i] <= gmax) &&
      (!ev || EV.images[C.feature[i]] !== undefined));
    page = 0;
    render();
  }

  function sortBy(key) {
    if (sortKey === key) sortDir = -sortDir; else { sortKey = key; sortDir = 1; }
    const col = C[key], F = C.feature;
    order = F.map((_, i) => i).sort((a, b) => {
      const x = col[a], y = col[b];
      if (x === y) return F[a] - F[b];
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    head.querySelectorAll("th[data-sort]").forEach(th => {
      th.classList.remove("asc", "desc");
      if (th.dataset.sort === key) th.classList.add(sortDir > 0 ? "asc" : "desc");
    });
    applyFilters();
  }

  // ---------------------------------------------------------------- the table
  // bars span the observed range of K (features often sit in a narrow band of [0, 1])
  const kVals = C.complexity.filter(v => v !== null);
  const kLo = kVals.reduce((a, b) => Math.min(a, b), Infinity);
  const kSpan = Math.max(1e-9, kVals.reduce((a, b) => Math.max(a, b), -Infinity) - kLo);
  function cell(col, i) {
    const v = C[col][i];
    if (col === "complexity") return `<td>${fmt(col, v)}<span class="bar" style="width:${v === null ? 0 : 2 + Math.round(44 * (v - kLo) / kSpan)}px"></span></td>`;
    if (col === "importance") return `<td class="${v < 0 ? "neg" : ""}">${fmt(col, v)}</td>`;
    return `<td>${esc(fmt(col, v))}</td>`;
  }
  function render() {
    const pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    const rows = view.slice(page * PAGE, page * PAGE + PAGE).map(i => {
      const f = C.feature[i];
      return `<tr data-feature="${f}"${f === selected ? ' class="selected"' : ""}>` +
        DATA.table.map(c => cell(c, i)).join("") + `<td>${EV.images[f] !== undefined ? "▣" : ""}</td></tr>`;
    });
    $("explorer-body").innerHTML = rows.join("");
    $("page-info").textContent = `${view.length.toLocaleString("en")} of ${N.toLocaleString("en")} features · page ${page + 1} / ${pages}`;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
  }

  // ---------------------------------------------------------------- the detail view
  function curve(i) {
    const L = DATA.layers.length;
    if (!L) return '<p class="muted">No per-block I_V in features.parquet.</p>';
    const iv = DATA.iv.slice(i * L, i * L + L);
    const longest = Math.max(...DATA.layers.map(n => n.length));
    const W = 440, l = 48, r = 16, t = 12, b = 34 + Math.min(90, 6.2 * longest), H = 150 + b;
    const x = j => l + (L === 1 ? (W - l - r) / 2 : j * (W - l - r) / (L - 1));
    const y = v => t + (1 - v) * (H - t - b);
    let s = `<svg id="ivcurve" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="decodability curve">`;
    for (const v of [0, 0.5, 1]) s += `<line x1="${l}" x2="${W - r}" y1="${y(v)}" y2="${y(v)}" stroke="#e3e6ea"/><text x="${l - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`;
    const pts = iv.map((v, j) => `${x(j)},${y(v === null ? 0 : v)}`).join(" ");
    s += `<polygon points="${x(0)},${y(0)} ${pts} ${x(L - 1)},${y(0)}" fill="#1f5fa8" opacity="0.12"/>`;
    s += `<polyline points="${pts}" fill="none" stroke="#1f5fa8" stroke-width="2"/>`;
    iv.forEach((v, j) => { s += `<circle cx="${x(j)}" cy="${y(v === null ? 0 : v)}" r="3.5" fill="#1f5fa8"><title>${esc(DATA.layers[j])}: I_V = ${v === null ? "—" : v.toFixed(3)}</title></circle>`; });
    // labels are rotated so that neighbours never run into each other; at most ~16 are written
    const step = Math.max(1, Math.ceil(L / 16));
    DATA.layers.forEach((n, j) => {
      if (j % step === 0 || j === L - 1) s += `<text transform="translate(${x(j) + 4},${H - b + 14}) rotate(-40)" text-anchor="end">${esc(n)}</text>`;
    });
    s += `<text x="${(l + W - r) / 2}" y="${H - 4}" text-anchor="middle">block (forward order)</text>`;
    s += `<text transform="translate(13,${(t + H - b) / 2}) rotate(-90)" text-anchor="middle">I_V(block → z)</text>`;
    return s + "</svg>";
  }
  function kvRow(col, value) {
    return `<tr><th><span class="help" title="${esc(tip(col))}">${esc(label(col))}</span></th><td>${value}</td></tr>`;
  }
  function evidenceHtml(f) {
    let h = "";
    if (EV.images[f] !== undefined) h += `<h4>Top images · concept heatmaps</h4><img id="evidence-img" src="${EV.images[f]}" alt="top images of feature ${f}">` +
      '<p class="muted small">Top: the images where the feature is strongest. Bottom: where in them (its code at every position of the last block).</p>';
    else if (EV.left_out[f] !== undefined) h += `<p class="muted">Thumbnails rendered but not embedded (the page's size budget is spent): see <code>${esc(EV.left_out[f])}</code> in the run folder.</p>`;
    else h += '<p class="muted">No thumbnails for this feature: they are rendered for a bounded set (tick “with thumbnails” to list those).</p>';
    if (EV.vis[f] !== undefined) h += `<h4>Feature visualisation</h4><img id="vis-img" src="${EV.vis[f]}" alt="visualisation of feature ${f}" style="width:180px">`;
    return h;
  }
  function showDetail(f) {
    const i = byFeature.get(f);
    if (i === undefined) return;
    selected = f;
    document.querySelectorAll("#explorer tr.selected").forEach(tr => tr.classList.remove("selected"));
    const tr = document.querySelector(`#explorer tr[data-feature="${f}"]`);
    if (tr) tr.classList.add("selected");
    let K = fmt("complexity", C.complexity[i]);
    if (DATA.interval && C.complexity_lo[i] !== null) K += ` <span class="muted">[${fmt("complexity", C.complexity_lo[i])}, ${fmt("complexity", C.complexity_hi[i])}]</span>`;
    let h = `<h3>Feature ${f} <span class="muted">· class ${esc(className(i))}</span></h3><table class="kv">` + kvRow("complexity", K);
    for (const col of DATA.detail) {
      if (col === "complexity") continue;
      let v = esc(fmt(col, C[col][i]));
      if (col === "importance" && C[col][i] < 0) v += " (inhibits its class)";
      if (col === "teleport_depth" && v === "never") v += ` (depth ${C[col][i]} = the number of blocks)`;
      h += kvRow(col, v);
    }
    h += "</table><h4>Decodability across blocks</h4>" + curve(i) + evidenceHtml(f);
    const d = $("detail");
    d.innerHTML = h;
    d.hidden = false;
  }

  // ---------------------------------------------------------------- wiring
  head.addEventListener("click", e => { const th = e.target.closest("th[data-sort]"); if (th) sortBy(th.dataset.sort); });
  $("explorer-body").addEventListener("click", e => { const tr = e.target.closest("tr[data-feature]"); if (tr) showDetail(parseInt(tr.dataset.feature, 10)); });
  ["f-class", "f-cluster", "f-kmin", "f-kmax", "f-gmin", "f-gmax", "f-evidence"].forEach(id => {
    const el = $(id);
    el.addEventListener("input", applyFilters);
    el.addEventListener("change", applyFilters);
  });
  $("prev").addEventListener("click", () => { page--; render(); });
  $("next").addEventListener("click", () => { page++; render(); });
  render();
})();
