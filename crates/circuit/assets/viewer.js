// circuitry circuit viewer: hover a node for its details and top-activating contexts,
// click it to highlight every path through it, filter weak edges, search nodes.
// Data comes from three JSON blocks in the page (#circuit-data, #feature-data and
// #viewer-data: the first-screen edge cap, the edge-faithfulness sweep and the nodes'
// top tokens); the drawing is the inline SVG made by circuitry (g.node[data-id],
// path.edge[data-source][data-target]).
// The first screen shows at most viewer.first_screen_edges of the strongest edges (the
// slider opens at the smallest step that does so) with the drawing fitted to the window;
// #edge-note says what fraction of the behaviour the shown edges keep.
// Opening the page with #selftest exercises all of this and writes the outcome to
// <body data-selftest="pass|fail: …">, which the project's headless-Chromium test reads;
// #select=NODE_ID opens the page with that node clicked (for screenshots and links);
// #threshold=P opens it with the slider at P %. Parameters combine with "&".
// <body data-edges-shown> always holds the number of edges drawn.
"use strict";
(function () {
  var errors = [];
  function report(message) {
    errors.push(String(message));
    var list = document.getElementById("errors");
    if (list) {
      var item = document.createElement("li");
      item.textContent = String(message);
      list.appendChild(item);
      list.hidden = false;
    }
    document.body.setAttribute("data-errors", String(errors.length));
  }
  window.addEventListener("error", function (e) {
    report("script error: " + e.message + " (" + e.filename + ":" + e.lineno + ")");
  });
  window.addEventListener("unhandledrejection", function (e) {
    report("unhandled rejection: " + e.reason);
  });

  var circuit = JSON.parse(document.getElementById("circuit-data").textContent);
  var features = JSON.parse(document.getElementById("feature-data").textContent);
  var viewer = JSON.parse(document.getElementById("viewer-data").textContent);
  var annotations = viewer.annotations || {};
  var sweep = viewer.edge_sweep || [];
  // Edges below this |weight| were left out of the circuit itself.
  var drawnFrom = circuit.thresholds && circuit.thresholds.min_abs_weight || 0;
  var nodes = new Map();
  circuit.nodes.forEach(function (n) { nodes.set(n.id, n); });
  var incoming = new Map();
  var outgoing = new Map();
  function push(map, key, value) {
    if (!map.has(key)) map.set(key, []);
    map.get(key).push(value);
  }
  circuit.edges.forEach(function (e) {
    push(outgoing, e.source, e);
    push(incoming, e.target, e);
  });
  function edgeKey(source, target) { return source + "\u0000" + target; }
  var nodeEls = new Map();
  document.querySelectorAll("#graph g.node").forEach(function (g) {
    nodeEls.set(g.getAttribute("data-id"), g);
  });
  var edgeEls = new Map();
  document.querySelectorAll("#graph path.edge").forEach(function (p) {
    edgeEls.set(edgeKey(p.getAttribute("data-source"), p.getAttribute("data-target")), p);
  });
  var maxWeight = circuit.edges.reduce(function (m, e) { return Math.max(m, Math.abs(e.weight.all)); }, 0);

  var groupSelect = document.getElementById("group");
  var threshold = document.getElementById("threshold");
  var thresholdLabel = document.getElementById("threshold-value");
  var thresholdPercent = document.getElementById("threshold-percent");
  var edgesShownLabel = document.getElementById("edges-shown");
  var edgeNote = document.getElementById("edge-note");
  var graphBox = document.getElementById("graph");
  var svg = graphBox.querySelector("svg");
  var search = document.getElementById("search");
  var panel = document.getElementById("panel");
  var selected = null;

  function group() { return groupSelect && groupSelect.value ? groupSelect.value : null; }
  function stat(s) {
    if (!s) return null;
    var g = group();
    if (g === null) return s.all;
    return s.by_group && g in s.by_group ? s.by_group[g] : null;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0";
    var a = Math.abs(v);
    return a >= 1e-3 && a < 1e4 ? v.toPrecision(4) : v.toExponential(3);
  }
  function signClass(v) { return v < 0 ? "neg" : "pos"; }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  function row(name, value, cls) {
    return el("tr", {}, [el("th", {}, [name]), el("td", { "class": "num " + (cls || "") }, [value])]);
  }
  function featureInfo(n) {
    if (n.kind !== "feature" || n.index === undefined) return null;
    return features[n.hook + "/" + n.index] || null;
  }
  function edgeTable(title, list, other) {
    var sorted = list.slice().sort(function (a, b) {
      return Math.abs(stat(b.weight) || 0) - Math.abs(stat(a.weight) || 0);
    }).slice(0, 8);
    var rows = sorted.map(function (e) {
      var w = stat(e.weight);
      var peer = nodes.get(other(e));
      return el("tr", {}, [
        el("td", {}, [peer ? peer.label + " (" + peer.hook + (peer.position !== undefined ? "@" + peer.position : "") + ")" : other(e)]),
        el("td", { "class": "num " + signClass(w || 0) }, [fmt(w)])
      ]);
    });
    return [el("h3", {}, [title + " (" + list.length + ")"]), el("table", {}, rows)];
  }

  function show(id) {
    var n = nodes.get(id);
    if (!n) return;
    panel.textContent = "";
    panel.setAttribute("data-node", id);
    panel.appendChild(el("h2", { id: "panel-title" }, [n.label + (annotations[id] ? " " + annotations[id] : "") + " — " + n.kind]));
    var facts = el("table", {}, [row("hook", n.hook)]);
    if (n.position !== undefined) facts.appendChild(row("position", String(n.position)));
    if (n.index !== undefined) facts.appendChild(row("index", String(n.index)));
    [["activation", n.activation], ["bias", n.bias], ["effect", n.effect]].forEach(function (p) {
      var v = stat(p[1]);
      if (p[1]) facts.appendChild(row(p[0], fmt(v), p[0] === "effect" ? signClass(v || 0) : ""));
    });
    panel.appendChild(facts);
    var info = featureInfo(n);
    if (info) {
      panel.appendChild(el("h3", {}, ["feature statistics"]));
      panel.appendChild(el("table", {}, [
        row("density", fmt(info.density)),
        row("mean activation (active)", fmt(info.mean_activation)),
        row("max activation", fmt(info.max_activation))
      ]));
      var list = el("ol", { id: "contexts" }, []);
      info.contexts.forEach(function (c) {
        list.appendChild(el("li", { "class": "ctx" }, [
          c.left, el("mark", {}, [c.token]), c.right, " ", el("span", { "class": "hint" }, ["(" + fmt(c.activation) + ")"])
        ]));
      });
      panel.appendChild(el("h3", {}, ["top-activating contexts"]));
      panel.appendChild(info.contexts.length ? list : el("p", { "class": "hint" }, ["none recorded"]));
    } else if (n.kind === "feature") {
      panel.appendChild(el("p", { "class": "hint" }, ["no feature statistics for this SAE (feature_stats.parquet not found when the page was made)"]));
    }
    edgeTable("incoming", incoming.get(id) || [], function (e) { return e.source; }).forEach(function (x) { panel.appendChild(x); });
    edgeTable("outgoing", outgoing.get(id) || [], function (e) { return e.target; }).forEach(function (x) { panel.appendChild(x); });
  }

  // Every node upstream and downstream of `id`, and the edges between them.
  function pathsThrough(id) {
    var onPath = new Set([id]);
    var edges = new Set();
    function walk(start, next, far) {
      var stack = [start];
      var seen = new Set([start]);
      while (stack.length) {
        var cur = stack.pop();
        (next.get(cur) || []).forEach(function (e) {
          edges.add(edgeKey(e.source, e.target));
          var peer = far(e);
          onPath.add(peer);
          if (!seen.has(peer)) { seen.add(peer); stack.push(peer); }
        });
      }
    }
    walk(id, outgoing, function (e) { return e.target; });
    walk(id, incoming, function (e) { return e.source; });
    return { nodes: onPath, edges: edges };
  }

  function clearSelection() {
    selected = null;
    nodeEls.forEach(function (g) { g.classList.remove("dim", "selected"); });
    edgeEls.forEach(function (p) { p.classList.remove("dim", "on-path"); });
    document.body.removeAttribute("data-selected");
  }
  function select(id) {
    if (selected === id) { clearSelection(); return; }
    clearSelection();
    selected = id;
    var path = pathsThrough(id);
    nodeEls.forEach(function (g, nid) { if (!path.nodes.has(nid)) g.classList.add("dim"); });
    edgeEls.forEach(function (p, key) { p.classList.add(path.edges.has(key) ? "on-path" : "dim"); });
    var g = nodeEls.get(id);
    if (g) g.classList.add("selected");
    document.body.setAttribute("data-selected", id);
    show(id);
  }

  function thresholdAt(percent) { return percent / 100 * maxWeight; }
  function countShown(t) {
    return circuit.edges.reduce(function (k, e) { return k + (Math.abs(e.weight.all) >= t ? 1 : 0); }, 0);
  }
  // The smallest slider step that shows at most `cap` edges (0 when all fit).
  function firstScreenPercent(cap) {
    if (circuit.edges.length <= cap || maxWeight <= 0) return 0;
    var step = Number(threshold.step) || 1;
    var sorted = circuit.edges.map(function (e) { return Math.abs(e.weight.all); }).sort(function (a, b) { return b - a; });
    // Hiding the (cap+1)-th strongest edge needs a threshold above its |weight|; the
    // percentage goes through a string as the slider's value does.
    var k = Math.max(0, Math.floor(sorted[cap] / maxWeight * 100 / step) - 1);
    function at(k) { return Math.min(100, Number((k * step).toFixed(6))); }
    while (at(k) < 100 && countShown(thresholdAt(at(k))) > cap) k += 1;
    return at(k);
  }
  // The sweep row at the largest threshold at or below `t` (null when none).
  function sweepRow(t) {
    var row = null;
    sweep.forEach(function (r) { if (r.edge_threshold <= t * (1 + 1e-12)) row = r; });
    return row;
  }
  function percent(f) {
    var digits = Math.abs(f) < 0.1 ? 1 : 0;
    var text = (100 * f).toFixed(digits);
    return (Number(text) === 0 ? "0" : text) + "%"; // no "-0.0%"
  }
  function updateNote(t, shown) {
    var te = Math.max(t, drawnFrom);
    var text;
    var row = sweepRow(te);
    if (!sweep.length) {
      text = "Edge faithfulness: not measured for this circuit (no edge-faithfulness sweep).";
    } else if (row === null) {
      text = "Edge faithfulness: not measured at this threshold; the sweep's smallest threshold is |weight| ≥ " + fmt(sweep[0].edge_threshold) + ".";
    } else {
      var kept = "the " + row.edges + " edge" + (row.edges === 1 ? "" : "s") + " with |weight| ≥ " + fmt(row.edge_threshold) +
        (row.edges === 1 ? " keeps " : " keep ") + percent(row.faithfulness) + " of the behaviour (edge faithfulness " + fmt(row.faithfulness) + ")";
      if (row.edges === shown) {
        text = "Edge faithfulness: " + kept + ".";
      } else {
        var last = sweep[sweep.length - 1];
        var where = te > last.edge_threshold ?
          "above the sweep's largest threshold (" + fmt(last.edge_threshold) + ")" :
          "between two of the sweep's thresholds";
        text = "Edge faithfulness of the " + shown + " edges shown: not measured (this threshold is " + where + "); " + kept + ".";
      }
    }
    edgeNote.textContent = text;
    edgeNote.setAttribute("data-row", row ? String(row.edge_threshold) : "none");
  }
  function applyThreshold() {
    var t = thresholdAt(Number(threshold.value));
    thresholdLabel.textContent = fmt(t);
    if (thresholdPercent) thresholdPercent.textContent = String(Number(threshold.value));
    var shown = 0;
    var touched = new Set();
    circuit.edges.forEach(function (e) {
      var p = edgeEls.get(edgeKey(e.source, e.target));
      var weak = Math.abs(e.weight.all) < t;
      if (p) p.classList.toggle("weak", weak);
      if (!weak) { shown += 1; touched.add(e.source); touched.add(e.target); }
    });
    // Nodes none of whose edges are shown fade, so the strongest paths stand out.
    nodeEls.forEach(function (g, id) {
      g.classList.toggle("faint", circuit.edges.length > 0 && !touched.has(id));
    });
    edgesShownLabel.textContent = shown + " of " + circuit.edges.length + " edges shown";
    document.body.setAttribute("data-edges-shown", String(shown));
    updateNote(t, shown);
  }
  // Fit the drawing to the window (never enlarged), or show it at its own size.
  function zoom(fit) {
    if (!svg) return;
    var w = Number(svg.getAttribute("width"));
    var h = Number(svg.getAttribute("height"));
    var s = 1;
    if (fit) {
      var top = graphBox.getBoundingClientRect().top;
      var availW = Math.max(graphBox.clientWidth - 4, 100);
      // The drawing's box is at most the window's height less the controls (CSS); fit the
      // room below the header when there is enough of it, else the box (the page scrolls).
      var maxH = parseFloat(window.getComputedStyle(graphBox).maxHeight);
      var boxH = isFinite(maxH) ? maxH - 4 : window.innerHeight - 8;
      var below = window.innerHeight - Math.max(top, 0) - 8;
      var availH = Math.max(below >= 300 ? Math.min(below, boxH) : boxH, 50);
      s = Math.min(1, availW / w, availH / h);
    }
    svg.style.width = (w * s) + "px";
    svg.style.height = (h * s) + "px";
    document.body.setAttribute("data-zoom", fit ? "fit" : "full");
  }
  function applySearch() {
    var q = search.value.trim().toLowerCase();
    var hits = 0;
    nodeEls.forEach(function (g, id) {
      var n = nodes.get(id);
      var hit = q.length > 0 && n && (n.label.toLowerCase().indexOf(q) >= 0 || id.toLowerCase().indexOf(q) >= 0 ||
        (annotations[id] || "").toLowerCase().indexOf(q) >= 0);
      g.classList.toggle("match", !!hit);
      if (hit) hits += 1;
    });
    document.getElementById("search-hits").textContent = q ? hits + " match" + (hits === 1 ? "" : "es") : "";
  }

  nodeEls.forEach(function (g, id) {
    g.addEventListener("mouseover", function () {
      g.classList.add("hover");
      if (selected === null) show(id);
    });
    g.addEventListener("mouseout", function () { g.classList.remove("hover"); });
    g.addEventListener("click", function (ev) { ev.stopPropagation(); select(id); });
  });
  document.getElementById("graph").addEventListener("click", function (ev) {
    if (ev.target.closest && !ev.target.closest("g.node")) clearSelection();
  });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") clearSelection(); });
  threshold.addEventListener("input", applyThreshold);
  document.getElementById("zoom-fit").addEventListener("click", function () { zoom(true); });
  document.getElementById("zoom-full").addEventListener("click", function () { zoom(false); });
  window.addEventListener("resize", function () { if (document.body.getAttribute("data-zoom") === "fit") zoom(true); });
  search.addEventListener("input", applySearch);
  if (groupSelect) groupSelect.addEventListener("change", function () {
    var id = selected || panel.getAttribute("data-node");
    if (id) show(id);
  });
  var params = {};
  window.location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    if (!part) return;
    var eq = part.indexOf("=");
    if (eq < 0) params[part] = true; else params[part.slice(0, eq)] = decodeURIComponent(part.slice(eq + 1));
  });
  var cap = viewer.first_screen_edges;
  threshold.value = String(firstScreenPercent(cap));
  var firstScreen = { value: threshold.value };
  if (params.threshold !== undefined) {
    var wantedPercent = Number(params.threshold);
    if (isFinite(wantedPercent) && wantedPercent >= 0 && wantedPercent <= 100) threshold.value = String(wantedPercent);
    else report("threshold=" + params.threshold + " is not a percentage from 0 to 100");
  }
  applyThreshold();
  zoom(true);

  function selfTest() {
    var failures = [];
    function check(ok, what) { if (!ok) failures.push(what); }
    check(nodeEls.size === circuit.nodes.length, "drawn nodes " + nodeEls.size + " != circuit nodes " + circuit.nodes.length);
    check(edgeEls.size === circuit.edges.length, "drawn edges " + edgeEls.size + " != circuit edges " + circuit.edges.length);
    nodeEls.forEach(function (g, id) {
      g.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
      var title = document.getElementById("panel-title");
      check(title && title.textContent.indexOf(nodes.get(id).label) === 0, "hover " + id + " did not show it");
      var info = featureInfo(nodes.get(id));
      if (info) {
        var shown = document.querySelectorAll("#contexts li").length;
        check(shown === info.contexts.length, "hover " + id + " showed " + shown + " contexts of " + info.contexts.length);
      }
      g.dispatchEvent(new MouseEvent("mouseout", { bubbles: true }));
    });
    var hub = circuit.nodes.filter(function (n) { return incoming.has(n.id) && outgoing.has(n.id); })[0];
    if (hub) {
      nodeEls.get(hub.id).dispatchEvent(new MouseEvent("click", { bubbles: true }));
      var expected = pathsThrough(hub.id);
      var lit = document.querySelectorAll("#graph path.edge.on-path").length;
      var dim = document.querySelectorAll("#graph path.edge.dim").length;
      check(lit === expected.edges.size && lit > 0, "click " + hub.id + " lit " + lit + " edges, expected " + expected.edges.size);
      check(lit + dim === edgeEls.size, "every edge is either on the path or dimmed");
      check(document.body.getAttribute("data-selected") === hub.id, "selection not recorded");
      document.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape" }));
      check(document.querySelectorAll("#graph .dim").length === 0, "Escape did not clear the selection");
    }
    threshold.value = "100";
    applyThreshold();
    var visible = document.querySelectorAll("#graph path.edge:not(.weak)").length;
    check(edgeEls.size === 0 || visible >= 1, "the strongest edge must stay visible at 100%");
    threshold.value = "0";
    applyThreshold();
    check(document.querySelectorAll("#graph path.edge.weak").length === 0, "threshold 0 hides nothing");

    // The first screen: at most `cap` edges, the slider where it opens, the drawing fitted.
    threshold.value = firstScreen.value;
    threshold.dispatchEvent(new Event("input", { bubbles: true }));
    var first = document.querySelectorAll("#graph path.edge:not(.weak)").length;
    check(first <= cap, "the first screen shows " + first + " edges, more than " + cap);
    check(edgeEls.size === 0 || first >= 1, "the first screen shows no edge");
    check(String(first) === document.body.getAttribute("data-edges-shown"), "data-edges-shown disagrees with the drawing");
    var firstNote = edgeNote.textContent;
    check(firstNote.indexOf("Edge faithfulness") >= 0, "no edge-faithfulness note: " + firstNote);
    // Moving the slider (as a user does: an input event) shows every edge and changes the note.
    threshold.value = "0";
    threshold.dispatchEvent(new Event("input", { bubbles: true }));
    var all = document.querySelectorAll("#graph path.edge:not(.weak)").length;
    check(all === edgeEls.size, "slider at 0 shows " + all + " of " + edgeEls.size + " edges");
    if (first < all) {
      check(edgeNote.textContent !== firstNote || sweep.length === 0, "moving the slider did not change the note: " + firstNote);
    }
    // Every annotated node shows its annotation beside its label.
    Object.keys(annotations).forEach(function (id) {
      var g = nodeEls.get(id);
      var label = g && g.querySelector("text");
      var note = g && g.querySelector("text.annotation");
      check(label && label.textContent === nodes.get(id).label && note && note.textContent === annotations[id],
        "node " + id + " is not labelled with " + annotations[id]);
    });
    zoom(true);
    if (svg) {
      // Fitted, the drawing needs no scrolling in its box, which is no taller than the window.
      check(graphBox.scrollWidth <= graphBox.clientWidth + 1 && graphBox.scrollHeight <= graphBox.clientHeight + 1 &&
        graphBox.clientHeight <= window.innerHeight,
        "the fitted drawing (" + graphBox.scrollWidth + "×" + graphBox.scrollHeight + ") does not fit its box (" +
        graphBox.clientWidth + "×" + graphBox.clientHeight + ") in the window (height " + window.innerHeight + ")");
    }
    threshold.value = firstScreen.value;
    applyThreshold();
    document.body.setAttribute("data-selftest", failures.length ? "fail: " + failures.join("; ") : "pass");
  }

  if (params.select !== undefined) {
    if (nodes.has(params.select)) select(params.select); else report("no node " + params.select + " to select");
  }
  if (params.selftest) {
    try { selfTest(); } catch (e) { report("self-test threw: " + e); document.body.setAttribute("data-selftest", "fail: threw " + e); }
  }
  document.body.setAttribute("data-ready", "ok");
})();
