// Live updates: the server pushes a Server-Sent Event when the read model changes; the page
// then fetches itself again and swaps every element marked `data-live` (by id), so forms
// being typed into are left alone. Without EventSource, or while the stream is down, it
// polls every POLL_MS instead.
(function () {
  "use strict";
  var POLL_MS = 5000;
  var status = document.getElementById("live-status");
  var streamUrl = document.body.getAttribute("data-stream") || "/stream";
  var pending = null, pollTimer = null, source = null;

  function setState(state) {
    if (!status) return;
    status.setAttribute("data-state", state);
    status.textContent = "live: " + state;
  }

  function refresh() {
    if (!document.querySelector("[data-live]")) return Promise.resolve();
    return fetch(window.location.href, {headers: {"X-Live": "1"}, credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh && fresh.innerHTML !== el.innerHTML) {
            el.innerHTML = fresh.innerHTML;
            el.dispatchEvent(new CustomEvent("lookout:updated", {bubbles: true}));
          }
        });
      })
      .catch(function () { /* the next event or poll tries again */ });
  }

  function soon() {  // many events in a burst make one fetch
    if (pending) return;
    pending = setTimeout(function () { pending = null; refresh(); }, 150);
  }

  function poll() {
    if (pollTimer) return;
    setState("polling");
    pollTimer = setInterval(refresh, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  if (!window.EventSource) { poll(); return; }
  source = new EventSource(streamUrl);
  source.onopen = function () { stopPolling(); setState("live"); };
  source.onmessage = soon;
  ["signal", "alert", "deliveries", "result", "report", "referral", "change"].forEach(function (name) {
    source.addEventListener(name, soon);
  });
  source.onerror = function () {  // EventSource reconnects by itself; poll meanwhile
    if (source.readyState === EventSource.CLOSED) { source = null; }
    poll();
  };
  window.lookoutLive = {refresh: refresh};
})();
