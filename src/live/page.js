"use strict";
// Polls /decisions and renders it. Everything shown comes from requests
// clients made, so it is written as text only (textContent), never as HTML.
(function () {
  var cursor = 0;
  var latest = [];
  var KEEP = 200;
  var selected = {};   // rule -> whether the user ticked it (when they touched it)
  var suggestions = [];

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function when(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  // Port 0: a DNS lookup, refused before any connection.
  function dest(host, port) { return port ? host + ":" + port : host + " (DNS lookup)"; }

  function renderDenied(rows) {
    var body = document.querySelector("#denied tbody");
    body.replaceChildren();
    rows.forEach(function (d) {
      var tr = el("tr");
      tr.dataset.host = d.host;
      tr.appendChild(el("td", d.requests, "num"));
      tr.appendChild(el("td", dest(d.host, d.port), "mono"));
      tr.appendChild(el("td", d.reasons.join(", ")));
      tr.appendChild(el("td", when(d.first_seen_ms)));
      tr.appendChild(el("td", when(d.last_seen_ms)));
      tr.appendChild(el("td", d.clients.concat(d.users).join(", ")));
      tr.appendChild(el("td", d.examples[0] || "", "mono"));
      body.appendChild(tr);
    });
    document.getElementById("denied-count").textContent = "(" + rows.length + ")";
  }

  // Ticked unless the user unticked it; the browser's own background
  // hosts start unticked.
  function ticked(s) { return s.rule in selected ? selected[s.rule] : !s.background; }

  function renderToml() {
    var lines = suggestions
      .filter(ticked)
      .map(function (s) { return "  " + s.toml + ",  # " + s.requests + " requests: " + s.hosts.join(", "); });
    document.getElementById("toml").value = lines.length ? "allow = [\n" + lines.join("\n") + "\n]\n" : "";
  }

  function renderSuggestions(list) {
    suggestions = list;
    var ul = document.getElementById("suggestions");
    ul.replaceChildren();
    list.forEach(function (s) {
      var li = el("li");
      li.dataset.rule = s.rule;
      var box = el("input");
      box.type = "checkbox";
      box.checked = ticked(s);
      box.addEventListener("change", function () { selected[s.rule] = box.checked; renderToml(); });
      var label = el("label");
      label.appendChild(box);
      label.appendChild(el("code", " " + s.toml));
      var note = s.background ? " (the browser's own: updates, safe browsing)" : "";
      label.appendChild(el("span", "  " + s.requests + " requests: " + s.hosts.join(", ") + note, "hint"));
      li.appendChild(label);
      ul.appendChild(li);
    });
    document.getElementById("suggestion-count").textContent = "(" + list.length + ")";
    renderToml();
  }

  function renderDecisions() {
    var body = document.querySelector("#decisions tbody");
    body.replaceChildren();
    for (var i = latest.length - 1; i >= 0; i--) {
      var e = latest[i];
      var tr = el("tr", null, e.decision);
      tr.appendChild(el("td", when(e.time_ms)));
      tr.appendChild(el("td", e.user ? e.client + " (" + e.user + ")" : e.client));
      tr.appendChild(el("td", e.decision, "decision"));
      var what = e.kind === "dns" ? "DNS " + e.method + " " + e.host : e.method + " " + dest(e.host, e.port) + (e.path || "");
      tr.appendChild(el("td", what, "mono"));
      tr.appendChild(el("td", e.reason));
      tr.appendChild(el("td", e.rule || ""));
      tr.appendChild(el("td", e.status || "", "num"));
      body.appendChild(tr);
    }
  }

  function render(s) {
    if (s.gap) latest = [];
    latest = latest.concat(s.decisions).slice(-KEEP);
    cursor = s.next;
    var p = s.policy;
    document.getElementById("status").textContent =
      "Policy " + p.origin + " (" + p.version + ", " + p.mode + " mode). " +
      s.decisions_total + " decisions and " + s.refused_total + " refusals since " + when(s.started_at_ms) +
      (s.destinations_dropped ? "; " + s.destinations_dropped + " refusals to destinations beyond the first 10,000 not itemised" : "") +
      ". Updated " + when(s.now_ms) + ".";
    renderDenied(s.denied);
    renderSuggestions(s.suggestions);
    renderDecisions();
    document.body.dataset.rendered = String(s.next);
  }

  function poll() {
    fetch("/decisions?since=" + cursor, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("/decisions answered " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (err) {
        document.getElementById("status").textContent = "Cannot read decisions: " + err.message;
      })
      .then(function () { setTimeout(poll, 2000); });
  }

  document.getElementById("copy").addEventListener("click", function () {
    var t = document.getElementById("toml");
    var done = function (ok) { document.getElementById("copied").textContent = ok ? "copied" : "select the text and copy it"; };
    if (navigator.clipboard) {
      navigator.clipboard.writeText(t.value).then(function () { done(true); }, function () { t.select(); done(false); });
    } else {
      t.select();
      done(document.execCommand && document.execCommand("copy"));
    }
  });
  poll();
})();
