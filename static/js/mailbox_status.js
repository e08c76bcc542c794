// Poll the sync status while a sync runs, updating the progress bars and counts.
(function () {
  var box = document.getElementById("sync-status");
  if (!box) return;
  var polls = 0;
  function update(data) {
    data.folders.forEach(function (folder) {
      var bar = box.querySelector('progress[data-folder="' + CSS.escape(folder.name) + '"]');
      var text = box.querySelector('[data-counts="' + CSS.escape(folder.name) + '"]');
      if (bar) { bar.max = folder.total || 1; bar.value = folder.done; }
      if (text) text.textContent = folder.done + " of " + folder.total + " messages read";
    });
    document.getElementById("last-error").textContent = data.last_error || "none";
    if (data.last_synced_at) document.getElementById("last-synced").textContent = new Date(data.last_synced_at).toLocaleString();
  }
  function poll() {
    fetch(box.dataset.statusUrl, {credentials: "same-origin"})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        update(data);
        polls += 1;
        // Keep polling while syncing, and briefly after load in case a queued sync starts.
        if (data.is_syncing || polls < 5) setTimeout(poll, 1500);
      });
  }
  poll();
})();
