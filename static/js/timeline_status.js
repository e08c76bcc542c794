// While an email on this page is waiting to be sent, look again every few seconds (a minute at
// most), so "Sending…" turns into "Sent" or the reason it was not sent.
(function () {
  if (!document.querySelector(".timeline [data-pending]")) {
    sessionStorage.removeItem("threadline-pending-reloads");
    return;
  }
  var reloads = Number(sessionStorage.getItem("threadline-pending-reloads") || 0);
  if (reloads >= 20) return;
  setTimeout(function () {
    sessionStorage.setItem("threadline-pending-reloads", String(reloads + 1));
    window.location.reload();
  }, 3000);
})();
