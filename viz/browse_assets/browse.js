// Results browser (viz/browse.py): reads window.BROWSE_DATA (the side-car data script, so the page opens from
// file:// without a server), renders the summary, and shows the filtered items a page at a time.
"use strict";
(function () {
  const data = window.BROWSE_DATA;
  const PAGE = data.page_size;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const state = { outcome: "all", type: "all", search: "", page: 0 };

  function outcome(item) {
    if (item.correct === null || item.correct === undefined) return "unlabelled";
    if (item.correct) return "correct";
    return item.score !== null && item.score !== undefined && item.score > 0 ? "partial" : "wrong";
  }

  function renderSummary() {
    const s = data.summary;
    const rows = s.groups.map((g) => `<tr><td>${escape(g.name)}</td><td>${g.count}</td>` +
      `<td>${fmt(g.accuracy)}</td>${s.has_score ? `<td>${fmt(g.score)}</td>` : ""}</tr>`).join("");
    $("summary").innerHTML = `<div>${s.count} items, ${s.labelled} with labels: accuracy ` +
      `<b id="accuracy">${fmt(s.accuracy)}</b>${s.has_score ? `, official score <b>${fmt(s.score)}</b>` : ""}</div>` +
      `<table><tr><th>${escape(s.group_by)}</th><th>items</th><th>accuracy</th>` +
      `${s.has_score ? "<th>score</th>" : ""}</tr>${rows}</table>`;
  }

  function fmt(value) { return value === null || value === undefined ? "–" : value.toFixed(2); }
  function escape(text) {
    return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  }

  function filtered() {
    const words = state.search.toLowerCase();
    return data.items.filter((item) =>
      (state.outcome === "all" || outcome(item) === state.outcome) &&
      (state.type === "all" || item.type === state.type) &&
      (!words || item.text.toLowerCase().includes(words)));
  }

  function box(svg, coords, cls, fill) {
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", coords[0]); r.setAttribute("y", coords[1]);
    r.setAttribute("width", Math.max(coords[2] - coords[0], 1)); r.setAttribute("height", Math.max(coords[3] - coords[1], 1));
    r.setAttribute("class", cls);
    if (fill) r.setAttribute("fill", fill);
    svg.appendChild(r);
    return r;
  }

  function figure(item) {
    const fig = document.createElement("figure");
    const svg = document.createElementNS(SVG, "svg");
    const [w, h] = item.image_size;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const img = document.createElementNS(SVG, "image");
    img.setAttribute("href", item.src); img.setAttribute("width", w); img.setAttribute("height", h);
    svg.appendChild(img);
    const layer = document.createElementNS(SVG, "g");
    svg.appendChild(layer);
    const skip = item.whole_image_box ? 1 : 0;
    item.boxes.forEach((b, i) => {
      if (i < skip) return;
      box(svg, b, "box");
      if (item.box_labels) {
        const t = document.createElementNS(SVG, "text");
        t.setAttribute("x", b[0] + 2); t.setAttribute("y", b[1] + 10); t.setAttribute("class", "label");
        t.textContent = item.box_labels[i];
        svg.appendChild(t);
      }
    });
    if (item.pred_box) box(svg, item.pred_box, "box pred");
    if (item.truth_box) box(svg, item.truth_box, "box truth");
    fig.appendChild(svg);
    const caption = document.createElement("figcaption");
    caption.textContent = item.attention ? "click: attention of the text on the boxes" : "no attention map";
    fig.appendChild(caption);
    if (item.attention) {
      fig.addEventListener("click", () => {
        if (layer.childNodes.length) { layer.replaceChildren(); fig.classList.remove("attending"); return; }
        const top = Math.max(...item.attention, 1e-9);
        item.boxes.forEach((b, i) => box(layer, b, "attention", `rgba(255,60,0,${(0.7 * item.attention[i] / top).toFixed(3)})`));
        fig.classList.add("attending");
      });
    }
    return fig;
  }

  function bars(list, prediction) {
    const top = Math.max(...list.map((e) => e[1]), 1e-9);
    return list.map(([label, score]) => `<div class="bar${label === prediction ? " pred" : ""}">` +
      `<span class="fill" style="width:${Math.round(80 * score / top)}px"></span>` +
      `<span>${escape(label)} ${score.toFixed(3)}</span></div>`).join("");
  }

  function card(item) {
    const kind = outcome(item);
    const div = document.createElement("div");
    div.className = `item ${kind}`;
    div.dataset.index = item.index;
    div.appendChild(figure(item));
    const body = document.createElement("div");
    const truth = item.truth === null ? "" : `<div>truth: <b>${escape(item.truth)}</b></div>`;
    const score = item.score === null || item.score === undefined ? "" : ` score ${item.score.toFixed(2)}`;
    const rationales = item.rationales ? `<div class="meta">rationales (QA&rarr;R)</div>${bars(item.rationales, "")}` : "";
    body.innerHTML = `<div class="text">${escape(item.text)}</div>` +
      `<div class="meta">#${item.index} · id ${escape(item.id)} · ${escape(item.type || "")}` +
      `${item.answer_type ? " · " + escape(item.answer_type) : ""}</div>` +
      `${bars(item.top, item.prediction)}${truth}${rationales}` +
      `<span class="badge ${kind}">${kind}${score}</span>`;
    div.appendChild(body);
    return div;
  }

  function render() {
    const shown = filtered();
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const slice = shown.slice(state.page * PAGE, (state.page + 1) * PAGE);
    $("items").replaceChildren(...slice.map(card));
    $("count-shown").textContent = shown.length;
    $("count-total").textContent = data.items.length;
    $("page-info").textContent = ` page ${state.page + 1} / ${pages} `;
    const hash = new URLSearchParams({ outcome: state.outcome, type: state.type, search: state.search,
                                       page: state.page + 1 });
    history.replaceState(null, "", "#" + hash.toString());
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.outcome = params.get("outcome") || "all";
    state.type = params.get("type") || "all";
    state.search = params.get("search") || "";
    state.page = Math.max(0, (parseInt(params.get("page"), 10) || 1) - 1);
    $("outcome").value = state.outcome; $("type").value = state.type; $("search").value = state.search;
  }

  function setUp() {
    document.title = data.title;
    renderSummary();
    const typeSelect = $("type");
    data.types.forEach(([name, count]) => {
      const option = document.createElement("option");
      option.value = name; option.textContent = `${name} (${count})`;
      typeSelect.appendChild(option);
    });
    readHash();
    $("outcome").addEventListener("change", (e) => { state.outcome = e.target.value; state.page = 0; render(); });
    $("type").addEventListener("change", (e) => { state.type = e.target.value; state.page = 0; render(); });
    $("search").addEventListener("input", (e) => { state.search = e.target.value; state.page = 0; render(); });
    $("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); render(); });
    $("next").addEventListener("click", () => { state.page += 1; render(); });
    window.addEventListener("hashchange", () => { readHash(); render(); });  // an edited or bookmarked URL
    render();
  }

  setUp();
})();
