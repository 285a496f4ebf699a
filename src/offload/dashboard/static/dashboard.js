// offload dashboard: charts (uPlot) and small conveniences. Loaded with the CSP nonce;
// it never evaluates strings or writes HTML: data goes into uPlot and into text nodes.
(function () {
  "use strict";
  var COLOURS = ["#2856c8", "#b42318", "#067647", "#b54708", "#7a2ec8", "#0e7490", "#9f1239", "#475467"];

  function options(el, lines) {
    var series = [{}];
    lines.forEach(function (line, i) {
      series.push({ label: line.label, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: true });
    });
    return { width: Math.max(300, el.clientWidth - 4), height: 220, series: series,
             axes: [{}, { size: 60 }], legend: { live: false } };
  }

  function draw(el, payload) {
    var lines = payload[el.dataset.chart] || [];
    var data = [payload.t].concat(lines.map(function (l) { return l.values; }));
    var key = lines.map(function (l) { return l.label; }).join("\u0000");
    if (el._plot && el._key === key) {
      el._plot.setData(data);
      return;
    }
    if (el._plot) { el._plot.destroy(); }
    el._key = key;
    el._plot = new uPlot(options(el, lines), data, el);
  }

  function refresh(el) {
    fetch(el.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (payload) { draw(el, payload); el.removeAttribute("data-error"); })
      .catch(function (e) { el.setAttribute("data-error", String(e)); });
  }

  function charts() {
    document.querySelectorAll(".chart[data-src]").forEach(function (el) {
      var every = Math.min(300, Math.max(0.5, parseFloat(el.dataset.every) || 2));
      refresh(el);
      setInterval(function () { refresh(el); }, every * 1000);
    });
  }

  function selectAll() {
    document.querySelectorAll("input[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var name = box.dataset.selectAll;
        box.form.querySelectorAll("input[type=checkbox][name='" + name + "']").forEach(function (b) {
          b.checked = box.checked;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { charts(); selectAll(); });
})();
