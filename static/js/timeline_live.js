// Keep an open record page's timeline current without a reload: ask the server every few
// seconds (while the tab is visible) whether the timeline changed, a one-query token, and
// when it did, read the page again and swap the timeline in. An email that arrives while the
// keyboard is inside the timeline waits behind a button, so focus never jumps away.
(function () {
  var live = document.getElementById("timeline-live");
  if (!live || !live.dataset.versionUrl) return;
  var news = document.getElementById("timeline-news");
  var waiting = document.getElementById("timeline-new");
  var version = live.dataset.version;
  var timer = null;
  var busy = false;

  function delay() {
    // Faster while an email is waiting to be sent, so "Sending…" turns into its outcome.
    return live.querySelector("[data-pending]") ? 2000 : 4000;
  }

  function schedule() {
    clearTimeout(timer);
    if (document.visibilityState === "visible") timer = setTimeout(check, delay());
  }

  function check() {
    if (busy) return;
    busy = true;
    fetch(live.dataset.versionUrl, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data || data.version === version) return null;
        if (live.contains(document.activeElement)) {
          waiting.hidden = false;
          return null;
        }
        return refresh();
      })
      .catch(function () { /* offline or restarting: ask again later */ })
      .then(function () { busy = false; schedule(); });
  }

  function refresh() {
    return fetch(window.location.href, {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("timeline-live");
        if (!fresh) return;
        live.innerHTML = fresh.innerHTML;
        version = fresh.dataset.version;
        live.dataset.version = version;
        waiting.hidden = true;
        news.textContent = "The email timeline was updated.";
      });
  }

  waiting.querySelector("button").addEventListener("click", function () {
    refresh().then(function () {
      var heading = document.getElementById("timeline-title");
      if (heading) { heading.tabIndex = -1; heading.focus(); }
    });
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") check(); else clearTimeout(timer);
  });
  schedule();
})();
