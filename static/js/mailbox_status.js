// Keep the mailbox page's state and sync progress current: poll often while a sync runs, and
// every few seconds otherwise while the tab is visible (a sync can start or fail at any time).
(function () {
  var box = document.getElementById("sync-status");
  if (!box) return;
  var timer = null;
  function set(element, text) {
    if (element && element.textContent !== text) element.textContent = text;
  }
  function update(data) {
    data.folders.forEach(function (folder) {
      var bar = box.querySelector('progress[data-folder="' + CSS.escape(folder.name) + '"]');
      var text = box.querySelector('[data-counts="' + CSS.escape(folder.name) + '"]');
      if (bar) { bar.max = folder.total || 1; bar.value = folder.done; }
      set(text, folder.done + " of " + folder.total + " messages read");
    });
    var state = document.getElementById("mailbox-state");
    if (state && state.innerHTML.trim() !== data.state.trim()) state.innerHTML = data.state;
    var error = document.getElementById("last-error");
    if (error && error.dataset.error !== data.last_error) {
      error.dataset.error = data.last_error;
      error.textContent = data.last_error || "none";
    }
    if (data.last_synced_at) set(document.getElementById("last-synced"), new Date(data.last_synced_at).toLocaleString());
  }
  function schedule(syncing) {
    clearTimeout(timer);
    if (document.visibilityState === "visible") timer = setTimeout(poll, syncing ? 1500 : 5000);
  }
  function poll() {
    fetch(box.dataset.statusUrl, {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (data) update(data);
        schedule(data && data.is_syncing);
      })
      .catch(function () { schedule(false); });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") poll(); else clearTimeout(timer);
  });
  poll();
})();
