// The live SMS counter under every text box of an alert (textarea name="text_<lang>"):
// characters, GSM-7 or UCS-2, segments (GSM-7: 160, 153 per part; UCS-2: 70, 67 per part),
// and whether the STOP line is there. The GSM-7 alphabet comes from the page (rendered
// from shared/gsm.py, the same one the alerts service counts with).
(function () {
  "use strict";
  var data = document.getElementById("gsm7");
  if (!data) return;
  var sets = JSON.parse(data.textContent);
  var basic = new Set(Array.from(sets.basic)), extended = new Set(Array.from(sets.extended));

  function count(text) {
    var chars = Array.from(text), gsm = chars.every(function (c) { return basic.has(c) || extended.has(c); });
    if (!text) return {gsm: true, segments: 1, units: 0};
    if (gsm) {
      var units = chars.reduce(function (n, c) { return n + (extended.has(c) ? 2 : 1); }, 0);
      return {gsm: true, units: units, segments: units <= 160 ? 1 : Math.ceil(units / 153)};
    }
    var u16 = text.length;  // UTF-16 code units
    return {gsm: false, units: u16, segments: u16 <= 70 ? 1 : Math.ceil(u16 / 67)};
  }

  function attach(area) {
    var out = document.createElement("output");
    out.className = "segments";
    out.setAttribute("for", area.id);
    out.setAttribute("aria-live", "polite");
    out.id = area.id + "-count";
    area.insertAdjacentElement("afterend", out);
    function update() {
      var c = count(area.value), stop = /\bSTOP\b/.test(area.value);
      out.setAttribute("data-over", c.segments > 2 ? "true" : "false");
      out.setAttribute("data-segments", String(c.segments));
      out.textContent = c.units + " " + (c.gsm ? "GSM-7 characters" : "UCS-2 units (not GSM-7)") +
        ", " + c.segments + " segment" + (c.segments === 1 ? "" : "s") +
        "; STOP line " + (stop ? "present" : "MISSING");
    }
    area.addEventListener("input", update);
    update();
  }

  document.querySelectorAll('textarea[name^="text_"]').forEach(attach);
})();
