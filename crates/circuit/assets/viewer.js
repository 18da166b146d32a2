// circuitry circuit viewer: hover a node for its details and top-activating contexts,
// click it to highlight every path through it, filter weak edges, search nodes.
// Data comes from two JSON blocks in the page (#circuit-data, #feature-data); the
// drawing is the inline SVG made by circuitry (g.node[data-id], path.edge[data-source][data-target]).
// Opening the page with #selftest exercises all of this and writes the outcome to
// <body data-selftest="pass|fail: …">, which the project's headless-Chromium test reads;
// #select=NODE_ID opens the page with that node clicked (for screenshots and links).
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
    panel.appendChild(el("h2", { id: "panel-title" }, [n.label + " — " + n.kind]));
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

  function applyThreshold() {
    var t = Number(threshold.value) / 100 * maxWeight;
    thresholdLabel.textContent = fmt(t);
    circuit.edges.forEach(function (e) {
      var p = edgeEls.get(edgeKey(e.source, e.target));
      if (p) p.classList.toggle("weak", Math.abs(e.weight.all) < t);
    });
  }
  function applySearch() {
    var q = search.value.trim().toLowerCase();
    var hits = 0;
    nodeEls.forEach(function (g, id) {
      var n = nodes.get(id);
      var hit = q.length > 0 && n && (n.label.toLowerCase().indexOf(q) >= 0 || id.toLowerCase().indexOf(q) >= 0);
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
  search.addEventListener("input", applySearch);
  if (groupSelect) groupSelect.addEventListener("change", function () {
    var id = selected || panel.getAttribute("data-node");
    if (id) show(id);
  });
  applyThreshold();

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
    document.body.setAttribute("data-selftest", failures.length ? "fail: " + failures.join("; ") : "pass");
  }

  var hash = window.location.hash;
  if (hash.indexOf("#select=") === 0) {
    var wanted = decodeURIComponent(hash.slice("#select=".length));
    if (nodes.has(wanted)) select(wanted); else report("no node " + wanted + " to select");
  }
  if (hash === "#selftest") {
    try { selfTest(); } catch (e) { report("self-test threw: " + e); document.body.setAttribute("data-selftest", "fail: threw " + e); }
  }
  document.body.setAttribute("data-ready", "ok");
})();
