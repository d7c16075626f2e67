// The JupyterHub launch page (launch/jupyterhub.html?path=notebooks/NN_name.ipynb): the reader types their hub's
// address, the page makes nbgitpuller's link (the same form as tools/build_site.py's nbgitpuller_link) and keeps
// the address in this browser (localStorage) for the next notebook. Does nothing on other pages.
(function () {
  "use strict";
  function nbgitpullerLink(hub, repo, branch, path) {
    var name = repo.replace(/\/+$/, "").split("/").pop();
    return hub.replace(/\/+$/, "") + "/hub/user-redirect/git-pull?repo=" + encodeURIComponent(repo) +
      "&urlpath=" + encodeURIComponent("lab/tree/" + name + "/" + path) + "&branch=" + encodeURIComponent(branch);
  }
  function init() {
    var form = document.getElementById("hub-form");
    if (!form) return;
    var input = document.getElementById("hub-url");
    var pathBox = document.getElementById("hub-path");
    var params = new URLSearchParams(window.location.search);
    var path = params.get("path");
    if (path && /^[\w./-]+\.ipynb$/.test(path) && path.indexOf("..") < 0) pathBox.textContent = path;
    var stored = null;
    try { stored = window.localStorage.getItem("lora-edu-jupyterhub"); } catch (e) { /* storage off */ }
    if (stored) input.value = stored;
    function show() {
      var hub = input.value.trim();
      if (!/^https?:\/\/[^\s/]+/.test(hub)) return false;
      var link = document.getElementById("hub-link");
      link.href = nbgitpullerLink(hub, form.dataset.repo, form.dataset.branch, pathBox.textContent);
      link.textContent = link.href;
      document.getElementById("hub-result").hidden = false;
      try { window.localStorage.setItem("lora-edu-jupyterhub", hub); } catch (e) { /* storage off */ }
      return true;
    }
    form.addEventListener("submit", function (event) { event.preventDefault(); show(); });
    if (stored) show();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
