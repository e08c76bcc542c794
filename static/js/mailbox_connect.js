// Fill the connect form from a provider preset.
(function () {
  var preset = document.getElementById("preset");
  if (!preset) return;
  preset.addEventListener("change", function () {
    var option = preset.options[preset.selectedIndex];
    ["imap-host", "imap-port", "imap-security", "smtp-host", "smtp-port", "smtp-security"].forEach(function (key) {
      var value = option.dataset[key.replace(/-(\w)/g, function (_, c) { return c.toUpperCase(); })];
      var field = document.getElementById("id_" + key.replace("-", "_"));
      if (field && value) field.value = value;
    });
  });
})();
