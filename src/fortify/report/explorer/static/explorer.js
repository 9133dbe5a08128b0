/* fortify explorer: one row per test image, drawn only while on screen (a virtual list), so thousands
   of rows stay responsive. Reads window.FORTIFY_EXPLORER (data.js); requests nothing but thumbs/*.png. */
(function () {
  "use strict";
  const D = window.FORTIFY_EXPLORER;
  const $ = (id) => document.getElementById(id);
  const ROW = 104, OVERSCAN = 6;
  const CLINICAL = ["benign", "malignant", "normal"];
  const S = { cls: -1, outcome: "all", model: D.models[0].name, side: false, patient: "", pout: "all",
              fold: -1, sort: "index", view: [], sel: 0, open: false };
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const modelOf = (name) => D.models.find((m) => m.name === name);
  const pct = (v) => (v == null ? "—" : (100 * v).toFixed(1) + "%");
  const num = (v, d) => (v == null ? "—" : v.toFixed(d));

  function chip(k) {
    const name = D.classes[k] ?? "?";
    const kind = CLINICAL.includes(name) ? name : "";
    return `<span class="chip ${kind}">${esc(name)}</span>`;
  }
  function outcome(row, model) {
    const m = row.m[model];
    if (!m) return null;
    if (m.cp !== row.y) return "cleanwrong";
    return m.ff >= 0 ? "fooled:" + m.ff : "robust";
  }
  function outcomeText(row, model) {
    const o = outcome(row, model), mod = modelOf(model);
    if (o === null) return '<span class="cell">not evaluated</span>';
    if (o === "robust") return '<span class="robust">robust</span>';
    if (o === "cleanwrong") return '<span class="wrong">wrong on the clean image</span>';
    return `<span class="fooledby">fooled by ${esc(mod.attacks[+o.split(":")[1]])}</span>`;
  }
  /* the image's patient under a model (results.json's patient.per_patient, keyed "<fold>|<id>") */
  function patientOf(row, model) {
    const P = (D.patients || {})[model];
    return P && row.g != null ? P[(row.f ?? "") + "|" + row.g] || null : null;
  }
  function patientOutcome(p) {
    if (!p) return null;
    if (!p.ok) return "wrong";
    return p.w ? "robust" : "fooled";
  }
  const flag = (v) => (v == null ? "not run" : v ? '<span class="robust">robust</span>' : '<span class="wrong">fooled</span>');
  function patientText(p) {
    const joint = p.j == null ? "not run" : flag(p.j) + (p.jp != null ? ` (decides ${chip(p.jp)})` : "");
    const changed = p.sc == null ? "" : ` · slices changed by the joint attack: ${p.sc} of ${p.n}`;
    return `clean ${p.cp != null ? chip(p.cp) : "—"} (${p.ok ? "right" : '<span class="wrong">wrong</span>'})` +
      ` · per-slice attacks: ${flag(p.sa)} · joint attack: ${joint} · worst case: ${flag(p.w)}${changed}`;
  }
  const thumb = (row, model, kind) => `thumbs/${row.i}.${model}.${kind}.png`;
  const img = (src, alt) => `<img decoding="async" src="${src}" alt="${esc(alt)}">`;

  /* ---- filters and sorting ---- */
  function option(sel, value, text) {
    const o = document.createElement("option");
    o.value = value; o.textContent = text; sel.appendChild(o);
  }
  function fillOutcomes() {
    const sel = $("f-outcome"), mod = modelOf(S.model), keep = sel.value;
    sel.innerHTML = "";
    option(sel, "all", "all");
    option(sel, "robust", "robust (no attack fooled it)");
    option(sel, "fooled", "fooled by any attack");
    mod.attacks.forEach((a, k) => option(sel, "fooled:" + k, "fooled first by " + a));
    option(sel, "cleanwrong", "misclassified clean");
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "all";
    S.outcome = sel.value;
  }
  function setupControls() {
    const cls = $("f-class");
    option(cls, -1, "all");
    D.classes.forEach((c, k) => option(cls, k, c));
    D.models.forEach((m) => option($("f-model"), m.name, m.name + (m.mode ? ` (${m.mode})` : "")));
    $("l-side").hidden = D.models.length < 2;
    const fold = $("f-fold");
    $("l-fold").hidden = !D.folds.length;
    option(fold, -1, "all");
    D.folds.forEach((f) => option(fold, f, "fold " + f));
    $("l-patient").hidden = !D.has.groups;
    $("l-poutcome").hidden = !D.has.patients;
    const pout = $("f-poutcome");
    [["all", "all"], ["robust", "robust (no attack flips the patient, joint included)"],
     ["fooled", "fooled (joint or any attack)"], ["joint", "fooled by the joint attack"],
     ["wrong", "wrong on the clean scan"]].forEach(([v, t]) => option(pout, v, t));
    const ids = [...new Set(D.rows.map((r) => r.g).filter((g) => g != null))].sort();
    $("patients").innerHTML = ids.slice(0, 5000).map((g) => `<option value="${esc(g)}">`).join("");
    const sort = $("f-sort");
    option(sort, "index", "test-set order");
    if (D.has.cw) option(sort, "cw", "minimal CW-L2 (smallest first)");
    option(sort, "conf-asc", "clean confidence (lowest first)");
    option(sort, "conf-desc", "clean confidence (highest first)");
    fillOutcomes();
    const read = () => {
      S.cls = +cls.value; S.model = $("f-model").value; S.side = $("f-side").checked;
      S.patient = $("f-patient").value.trim(); S.fold = +fold.value; S.sort = sort.value;
      S.pout = pout.value;
      fillOutcomes(); S.outcome = $("f-outcome").value;
      applyFilters();
    };
    ["f-class", "f-outcome", "f-model", "f-side", "f-fold", "f-sort", "f-poutcome"].forEach((id) => $(id).addEventListener("change", read));
    $("f-patient").addEventListener("input", read);
  }
  function keep(row) {
    if (S.cls >= 0 && row.y !== S.cls) return false;
    if (S.fold >= 0 && row.f !== S.fold) return false;
    if (S.patient && String(row.g ?? "") !== S.patient) return false;
    if (S.pout !== "all") {  // the patient's outcome under the selected model
      const p = patientOf(row, S.model);
      if (!p) return false;
      if (S.pout === "joint") { if (!(p.ok && p.j === false)) return false; }
      else if (patientOutcome(p) !== S.pout) return false;
    }
    if (S.outcome === "all") return true;
    const o = outcome(row, S.model);
    if (S.outcome === "fooled") return o !== null && o.startsWith("fooled:");
    return o === S.outcome;
  }
  function sortKey(row) {
    const m = row.m[S.model];
    if (!m) return Infinity;
    if (S.sort === "cw") return m.l2 == null ? Infinity : m.l2;
    if (S.sort === "conf-asc") return m.cc ?? 0;
    if (S.sort === "conf-desc") return -(m.cc ?? 0);
    return row.i;
  }
  function applyFilters() {
    S.view = D.rows.filter(keep);
    if (S.sort !== "index") S.view.sort((a, b) => sortKey(a) - sortKey(b) || a.i - b.i);
    S.sel = 0;
    $("count").textContent = `${S.view.length} of ${D.rows.length} images`;
    $("spacer").style.height = S.view.length * ROW + "px";
    $("list").scrollTop = 0;
    layout();
    render(true);
  }

  /* ---- the virtual list ---- */
  function columns() {
    const cols = [["#", "40px"], ["clean", "var(--thumb)"]];
    const mods = S.side ? D.models.map((m) => m.name) : [S.model];
    if (S.side) mods.forEach((m) => cols.push([`${m}: adversarial · perturbation ×${modelOf(m).scale} · outcome`, "minmax(330px, 1fr)"]));
    else cols.push(["adversarial", "var(--thumb)"], [`perturbation ×${modelOf(S.model).scale}`, "var(--thumb)"]);
    cols.push(["true class", "90px"]);
    if (!S.side) cols.push(["clean prediction", "150px"], ["fooled first by", "180px"]);
    if (D.has.cw && !S.side) cols.push(["min CW-L2", "80px"]);
    if (D.has.cam && !S.side) cols.push(["CAM clean", "var(--thumb)"], ["CAM attacked", "var(--thumb)"]);
    if (D.has.certify) cols.push(["certified radius", "90px"]);
    if (D.has.groups) cols.push(["patient", "110px"]);
    if (D.folds.length) cols.push(["fold", "40px"]);
    return cols;
  }
  function layout() {
    const cols = columns(), tmpl = cols.map((c) => c[1]).join(" ");
    S.template = tmpl;
    $("head").style.gridTemplateColumns = tmpl;
    $("head").innerHTML = cols.map((c) => `<div class="cell">${esc(c[0])}</div>`).join("");
  }
  function modelCells(row, name, side) {
    const m = row.m[name];
    if (!m && side) return '<div class="model-block">not evaluated</div>';
    if (!m) return `<div></div><div></div><div class="cell">${chip(row.y)}</div><div class="cell">not evaluated</div><div></div>` +
      (D.has.cw ? "<div></div>" : "") + camCells(row, name, m);
    const pred = `<span class="${m.cp === row.y ? "" : "wrong"}">${esc(D.classes[m.cp])}</span> <small>${pct(m.cc)}</small>`;
    const pics = img(thumb(row, name, "a"), "adversarial") + img(thumb(row, name, "p"), "perturbation");
    if (side) {
      const cw = D.has.cw ? `<small>min CW-L2 ${num(m.l2, 3)}</small>` : "";
      return `<div class="model-block">${pics}<div class="cell">${pred}<br>${outcomeText(row, name)}${cw}</div></div>`;
    }
    return `<div>${img(thumb(row, name, "a"), "adversarial")}</div><div>${img(thumb(row, name, "p"), "perturbation")}</div>` +
      `<div class="cell">${chip(row.y)}</div><div class="cell">${pred}</div><div class="cell">${outcomeText(row, name)}</div>` +
      (D.has.cw ? `<div class="cell">${num(m.l2, 3)}</div>` : "") + camCells(row, name, m);
  }
  function camCells(row, name, m) {
    if (!D.has.cam) return "";
    if (!m || !m.cam) return "<div></div><div></div>";
    return `<div>${img(thumb(row, name, "cc"), "CAM clean")}</div><div>${img(thumb(row, name, "ca"), "CAM attacked")}</div>`;
  }
  function certText(c, y) {
    if (!c) return "—";
    if (c.p < 0) return "abstained";
    if (c.p !== y) return `<span class="wrong" title="the smoothed model predicts ${esc(D.classes[c.p])}">${num(c.r, 3)} (wrong)</span>`;
    return c.r == null ? "—" : num(c.r, 3);
  }
  function rowHtml(row, k) {
    const fooled = ["fooled", "cleanwrong"].some((s) => (outcome(row, S.model) || "").startsWith(s));
    let h = `<div class="row item${fooled ? " fooled" : ""}${k === S.sel ? " sel" : ""}" data-i="${row.i}" data-k="${k}"` +
      ` style="top:${k * ROW}px;grid-template-columns:${S.template}" title="${esc(row.p)}">` +
      `<div class="cell">${row.i + 1}</div><div>${img(`thumbs/${row.i}.c.png`, "clean")}</div>`;
    if (S.side) {
      h += D.models.map((m) => modelCells(row, m.name, true)).join("") + `<div class="cell">${chip(row.y)}</div>`;
    } else h += modelCells(row, S.model, false);
    if (D.has.certify) h += `<div class="cell">${certText(row.c, row.y)}</div>`;
    if (D.has.groups) {
      const po = patientOutcome(patientOf(row, S.model));
      const cls = po === "robust" ? "robust" : po ? "wrong" : "";
      h += `<div class="cell"><span class="${cls}" title="${po ? "patient " + po : ""}">${esc(row.g ?? "—")}</span></div>`;
    }
    if (D.folds.length) h += `<div class="cell">${row.f ?? "—"}</div>`;
    return h + "</div>";
  }
  let lastRange = "";
  function render(force) {
    const list = $("list");
    const first = Math.max(0, Math.floor(list.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(S.view.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + OVERSCAN);
    const range = `${first}:${last}:${S.sel}`;
    if (!force && range === lastRange) return;
    lastRange = range;
    let h = "";
    for (let k = first; k < last; k++) h += rowHtml(S.view[k], k);
    $("spacer").innerHTML = h;
  }
  let pending = false;
  function onScroll() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(false); });
  }

  /* ---- selection, detail view and keys ---- */
  function select(k) {
    if (!S.view.length) return;
    S.sel = Math.max(0, Math.min(S.view.length - 1, k));
    const list = $("list"), top = S.sel * ROW;
    if (top < list.scrollTop) list.scrollTop = top;
    else if (top + ROW > list.scrollTop + list.clientHeight) list.scrollTop = top + ROW - list.clientHeight;
    render(true);
    if (S.open) showDetail();
  }
  function predCell(row, m, k) {
    const p = k < 0 ? m.cp : m.ap[k], c = k < 0 ? m.cc : m.ac[k], pr = m.pr ? m.pr[k + 1] : null;
    const bars = pr ? "<br>" + pr.map((v, j) => `<small><span class="bar" style="width:${Math.round(60 * v)}px"></span>` +
      `${esc(D.classes[j])} ${pct(v)}</small>`).join("") : "";
    return `<td class="${p === row.y ? "" : "wrong"}">${chip(p)} ${pct(c)}${bars}</td>`;
  }
  function showDetail() {
    const row = S.view[S.sel];
    const mods = D.models.filter((m) => row.m[m.name]);
    $("d-title").textContent = `#${row.i + 1}  ${row.p}`;
    const fig = (src, caption) => `<figure>${img(src, caption)}<figcaption>${esc(caption)}</figcaption></figure>`;
    let pics = "";
    for (const m of mods) {  // one line per model, each starting from the same clean scan
      const who = m.name === "model" ? "" : m.name + ": ";
      let line = fig(`thumbs/${row.i}.c.png`, "clean");
      line += fig(thumb(row, m.name, "a"), who + "worst-case adversarial");
      line += fig(thumb(row, m.name, "p"), `${who}perturbation ×${m.scale}`);
      if (row.m[m.name].cam) {
        line += fig(thumb(row, m.name, "cc"), who + "CAM, clean");
        line += fig(thumb(row, m.name, "ca"), `${who}CAM under explain's ${(m.cam_attack || "attack").split(",")[0]}`);
      }
      pics += `<div class="pics">${line}</div>`;
    }
    let facts = `<dt>true class</dt><dd>${chip(row.y)}</dd>`;
    if (row.g != null) facts += `<dt>patient / scan</dt><dd>${esc(row.g)}</dd>`;
    if (row.f != null) facts += `<dt>fold</dt><dd>${row.f} (models trained without this fold)</dd>`;
    if (row.c) facts += `<dt>certified L2 radius</dt><dd>${certText(row.c, row.y)} (${esc(row.c.m)}; smoothed prediction ${row.c.p < 0 ? "abstained" : esc(D.classes[row.c.p])})</dd>`;
    for (const m of mods) {  // the patient's decisions under each model (the rule: D.patient_rule)
      const p = patientOf(row, m.name);
      if (p) facts += `<dt title="${esc(D.patient_rule || "")}">${esc(m.name)}: patient (${p.n} slice${p.n === 1 ? "" : "s"})</dt><dd class="patient">${patientText(p)}</dd>`;
    }
    for (const m of mods) {
      const e = row.m[m.name];
      facts += `<dt>${esc(m.name)}</dt><dd>${outcomeText(row, m.name)}` +
        (D.has.cw ? ` · minimal CW-L2 ${num(e.l2, 3)}` : "") + (e.rho != null ? ` · explain: attention shift ρ ${num(e.rho, 2)} (clean vs attacked CAM)` : "") + "</dd>";
    }
    const attacks = mods.length ? mods[0].attacks : [];
    let table = `<table class="preds"><tr><th>input</th>${mods.map((m) => `<th>${m.name === "model" ? "prediction" : esc(m.name) + " model"}</th>`).join("")}</tr>`;
    table += `<tr><td>clean</td>${mods.map((m) => predCell(row, row.m[m.name], -1)).join("")}</tr>`;
    attacks.forEach((a, k) => {
      table += `<tr><td title="${esc(mods[0].specs[k])}">${esc(a)}</td>${mods.map((m) => predCell(row, row.m[m.name], k)).join("")}</tr>`;
    });
    $("d-body").innerHTML = `<dl class="facts">${facts}</dl>${pics}${table}</table>`;
    $("detail").hidden = false;
    S.open = true;
  }
  function closeDetail() { $("detail").hidden = true; S.open = false; $("list").focus(); }
  function onKey(e) {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName);
    if (e.key === "Escape") { if (S.open) closeDetail(); else if (typing) e.target.blur(); return; }
    if (typing) return;
    const next = ["j", "ArrowDown"].includes(e.key) || (S.open && e.key === "ArrowRight");
    const prev = ["k", "ArrowUp"].includes(e.key) || (S.open && e.key === "ArrowLeft");
    if (next || prev) { select(S.sel + (next ? 1 : -1)); e.preventDefault(); }
    else if (e.key === "Enter" && !S.open && S.view.length) { showDetail(); e.preventDefault(); }
  }

  function header() {
    $("title").textContent = "fortify explorer: " + D.title;
    const mods = D.models.map((m) => `${m.name}${m.arch ? ` (${m.arch}, ${m.mode})` : ""}`);
    $("subtitle").textContent = `${D.kind} · ${D.image_size} px · built ${D.created} · models: ${mods.join(", ")}` +
      ` · attacks in order: ${D.models[0].attacks.join(", ")}`;
    $("subtitle").title = D.models.map((m) => `${m.name}: ${m.specs.join("; ")}`).join("\n");
    const eps = D.models[0].eps;
    $("legend").textContent = "Adversarial: the first attack in order that fooled the image, else the last attack's output. " +
      `Perturbation: adversarial minus clean, amplified ×${D.models[0].scale} (gray = unchanged` +
      (eps ? `; a change of ${(eps * 255).toFixed(2)}/255, the L-inf budget, is black or white)` : ")") +
      ". Red rows: fooled (or wrong already on the clean image) under the selected model. Keys: j/k or ↓/↑ move, Enter opens, Esc closes.";
    const notes = [...(D.synthetic ? ["SYNTHETIC DATA (phantom): not real CT scans"] : []), ...D.notes];
    if (notes.length) { $("banner").hidden = false; $("banner").textContent = notes.join(" · "); }
  }

  header();
  setupControls();
  $("list").addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", () => render(true));
  $("list").addEventListener("click", (e) => {
    const item = e.target.closest(".row.item");
    if (item) { S.sel = +item.dataset.k; render(true); showDetail(); }
  });
  $("d-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("click", (e) => { if (e.target.id === "detail") closeDetail(); });
  document.addEventListener("keydown", onKey);
  applyFilters();
  $("list").focus();
})();
