// Charts drawn with uPlot from the table under each <figure class="chart">: the table is
// the text alternative and the one source of the numbers. Columns: the first is the x
// (an ISO date or a label), the others numeric series. Rows with data-colour (ESSENCE:
// red, yellow, blue, grey) colour the first series' points.
(function () {
  "use strict";
  var COLOURS = {red: "#c8102e", yellow: "#f2b705", blue: "#2b6cb0", grey: "#8a939c"};
  var SERIES = ["#102a43", "#2f855a", "#c05621", "#6b46c1", "#b83280", "#2c7a7b"];
  var DASH = {"expected": [6, 4], "upper bound": [2, 3]};

  function num(text) {
    var t = text.trim();
    if (t === "") return null;
    var v = Number(t.replace(/[,%]/g, ""));
    return isNaN(v) ? null : v;
  }

  function parse(figure) {
    var head = Array.prototype.map.call(figure.querySelectorAll("thead th"),
                                        function (th) { return th.textContent.trim(); });
    var rows = Array.prototype.slice.call(figure.querySelectorAll("tbody tr"))
      .filter(function (tr) { return tr.children.length === head.length; });
    var labels = rows.map(function (tr) { return tr.children[0].textContent.trim(); });
    var isTime = labels.length > 0 && labels.every(function (l) { return /^\d{4}-\d{2}-\d{2}/.test(l); });
    var x = labels.map(function (l, i) { return isTime ? Date.parse(l.slice(0, 10) + "T00:00:00Z") / 1000 : i; });
    var cols = [];
    for (var c = 1; c < head.length; c++) {
      var values = rows.map(function (tr) { return num(tr.children[c].textContent); });
      if (values.some(function (v) { return v !== null; })) cols.push({name: head[c], values: values});
    }
    var colours = rows.map(function (tr) { return tr.getAttribute("data-colour"); });
    return {x: x, labels: labels, isTime: isTime, cols: cols, colours: colours};
  }

  function colourPoints(colours) {  // a draw hook: ESSENCE-coloured dots on series 1
    return function (u) {
      var ctx = u.ctx, xs = u.data[0], ys = u.data[1];
      ctx.save();
      for (var i = 0; i < xs.length; i++) {
        if (ys[i] == null || !colours[i]) continue;
        var cx = u.valToPos(xs[i], "x", true), cy = u.valToPos(ys[i], "y", true);
        ctx.beginPath();
        ctx.fillStyle = COLOURS[colours[i]] || COLOURS.grey;
        ctx.arc(cx, cy, 4 * devicePixelRatio, 0, 2 * Math.PI);
        ctx.fill();
      }
      ctx.restore();
    };
  }

  function draw(figure) {
    var plot = figure.querySelector(".plot");
    if (!plot || !window.uPlot) return;
    var d = parse(figure);
    plot.innerHTML = "";
    if (d.x.length === 0 || d.cols.length === 0) return;
    var bars = figure.getAttribute("data-kind") === "bar";
    var series = [{label: d.cols.length ? figure.querySelector("thead th").textContent : "x"}];
    d.cols.forEach(function (col, i) {
      var s = {label: col.name, stroke: SERIES[i % SERIES.length], width: 2,
               points: {show: false}};
      if (DASH[col.name]) { s.dash = DASH[col.name]; s.stroke = "#718096"; s.width = 1.5; }
      if (bars) { s.paths = uPlot.paths.bars({size: [0.7, 40]}); s.fill = SERIES[i % SERIES.length]; }
      series.push(s);
    });
    var opts = {
      width: Math.max(plot.clientWidth || figure.clientWidth || 300, 240),
      height: 220,
      series: series,
      scales: {x: {time: d.isTime}},
      axes: [d.isTime ? {} : {values: function (u, ticks) {
        return ticks.map(function (t) { return d.labels[t] || ""; });
      }}, {}],
      legend: {show: true},
      hooks: {},
    };
    if (d.colours.some(Boolean)) opts.hooks.draw = [colourPoints(d.colours)];
    new uPlot(opts, [d.x].concat(d.cols.map(function (c) { return c.values; })), plot);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("figure.chart").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(); });
  document.addEventListener("lookout:updated", function (e) { drawAll(e.target); });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawAll, 200);
  });
})();
