// The upload page with JavaScript: the file goes to /upload/stream, which answers with one
// JSON line per committed chunk ({"done", "total"}) and then {"result"} or {"error"}; the
// page shows the progress, then the summary and the rejected rows with a CSV download.
// Without JavaScript the form posts to /upload and the page is rendered when the import ends.
"use strict";

(function () {
  const form = document.getElementById("upload-form");
  const out = document.getElementById("output");
  if (!form || !out || !window.fetch || !window.TextDecoder) return;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function csvCell(value) {
    let s = String(value);
    if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;  // no formulas in a spreadsheet
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function details(row) {
    return row.errors.map((e) => e.field + ": " + e.message).join("; ");
  }

  function showResult(result) {
    const summary = el("table", { class: "summary", id: "summary" });
    for (const [label, key, id] of [["format", "format", "format"], ["rows", "rows", "rows"],
        ["accepted", "accepted", "accepted"], ["duplicates", "duplicate", "duplicate"],
        ["rejected", "rejected", "rejected"]]) {
      const tr = el("tr");
      tr.append(el("th", {}, label), el("td", { id: id }, result[key]));
      summary.append(tr);
    }
    out.append(el("h2", {}, "Result"), summary);
    const rows = result.rejected_rows || [];
    if (!rows.length) return;
    const lines = [["line", "reason", "details"].join(",")].concat(
      rows.map((r) => [r.line, r.reason, details(r)].map(csvCell).join(",")));
    const link = el("a", { id: "rejected-download", download: "rejected-rows.csv",
      href: URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" })) },
      "Download the " + rows.length + " rejected rows (CSV)");
    const table = el("table", { class: "rejected", id: "rejected-rows" });
    const head = el("tr");
    head.append(el("th", {}, "line"), el("th", {}, "reason"), el("th", {}, "details"));
    table.append(head);
    for (const r of rows.slice(0, 500)) {
      const tr = el("tr");
      tr.append(el("td", {}, r.line), el("td", {}, r.reason), el("td", {}, details(r)));
      table.append(tr);
    }
    out.append(el("h3", {}, "Rejected rows"), el("p", {}).appendChild(link).parentNode, table);
    if (rows.length > 500) out.append(el("p", {}, "… and " + (rows.length - 500) + " more (in the download)."));
  }

  function showError(message) {
    out.append(el("p", { class: "error", id: "error", role: "alert" }, message));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    out.replaceChildren();
    const status = el("p", { id: "progress-text", role: "status", "aria-live": "polite" },
      "Uploading…");
    const bar = el("progress", { id: "progress", max: "1", value: "0" });
    out.append(bar, status);
    const button = document.getElementById("submit");
    button.disabled = true;
    try {
      const response = await fetch("/upload/stream", { method: "POST", body: new FormData(form) });
      if (!response.body) throw new Error("no response body");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (value) buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n")) >= 0 || (done && buffer.trim())) {
          const line = cut >= 0 ? buffer.slice(0, cut) : buffer;
          buffer = cut >= 0 ? buffer.slice(cut + 1) : "";
          if (!line.trim()) continue;
          const msg = JSON.parse(line);
          if (msg.total !== undefined) {
            bar.max = Math.max(1, msg.total);
            bar.value = msg.done;
            status.textContent = msg.done + " of " + msg.total + " rows imported";
          } else if (msg.result) {
            status.textContent = msg.result.rows + " of " + msg.result.rows + " rows imported";
            bar.max = 1;
            bar.value = 1;
            showResult(msg.result);
          } else if (msg.error) {
            status.textContent = "Not imported.";
            showError(msg.error);
          }
        }
        if (done) break;
      }
    } catch (err) {
      status.textContent = "Not imported.";
      showError("The upload failed: " + err.message);
    } finally {
      button.disabled = false;
      form.reset();
    }
  });
})();
