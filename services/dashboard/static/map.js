// The county map: US counties from the vendored us-atlas TopoJSON (already projected to
// Albers USA, 975 x 610), drawn as SVG paths with the vendored topojson-client, coloured
// from the table under the map (its rows carry data-fips, data-level, data-signal). The
// table is the map's text alternative; ZIP centroids are drawn by the server.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";

  function pathOf(geometry) {
    var polys = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
    return polys.map(function (rings) {
      return rings.map(function (ring) {
        return "M" + ring.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join("L") + "Z";
      }).join("");
    }).join("");
  }

  function colour(svg, table) {
    var byFips = {};
    table.querySelectorAll("tr[data-fips]").forEach(function (tr) { byFips[tr.getAttribute("data-fips")] = tr; });
    svg.querySelectorAll("path.county").forEach(function (p) {
      var tr = byFips[p.getAttribute("data-fips")];
      p.setAttribute("data-level", tr ? tr.getAttribute("data-level") : "0");
      p.setAttribute("data-signal", tr ? tr.getAttribute("data-signal") : "false");
      var title = p.querySelector("title");
      if (tr && title) title.textContent = tr.getAttribute("data-label");
    });
  }

  function draw(figure) {
    var svg = figure.querySelector("svg");
    var table = document.getElementById(figure.getAttribute("data-table"));
    if (!svg || !table || !window.topojson) return;
    fetch(figure.getAttribute("data-topology"), {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (topo) {
        var layer = document.createElementNS(SVGNS, "g");
        topojson.feature(topo, topo.objects.counties).features.forEach(function (f) {
          if (!f.geometry) return;
          var p = document.createElementNS(SVGNS, "path");
          p.setAttribute("class", "county");
          p.setAttribute("d", pathOf(f.geometry));
          p.setAttribute("data-fips", f.id);
          var t = document.createElementNS(SVGNS, "title");
          t.textContent = f.properties.name;
          p.appendChild(t);
          layer.appendChild(p);
        });
        var states = document.createElementNS(SVGNS, "path");
        states.setAttribute("class", "state");
        var mesh = topojson.mesh(topo, topo.objects.states, function (a, b) { return a !== b; });
        states.setAttribute("d", mesh.coordinates.map(function (line) {
          return "M" + line.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join("L");
        }).join(""));
        svg.insertBefore(states, svg.firstChild);
        svg.insertBefore(layer, svg.firstChild);
        colour(svg, table);
        figure.setAttribute("data-drawn", "true");
        document.addEventListener("lookout:updated", function () { colour(svg, table); });
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("figure.map[data-topology]").forEach(draw);
  });
})();
