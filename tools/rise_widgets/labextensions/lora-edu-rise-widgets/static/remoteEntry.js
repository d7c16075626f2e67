/*
 * lora-edu-rise-widgets: live ipywidgets inside jupyterlab-rise slideshows.
 *
 * Why: jupyterlab-rise 0.43.1 presents a notebook in its own small JupyterLab application (the
 * /rise/ page in the slideshow panel), which loads the installed federated extensions but ships no
 * @jupyterlab/console. The widget manager (@jupyter-widgets/jupyterlab-manager >= 5.0.11, i.e.
 * ipywidgets >= 8.1.3) imports IConsoleTracker from @jupyterlab/console, so in that application it
 * fails to load ("Shared module @jupyterlab/console doesn't exist in shared scope default") and
 * every slider shows as plain text (jupyterlab-contrib/rise issues #119 and #126).
 *
 * What: a module-federation container with no plugins. When an application initialises it, it
 * looks for @jupyterlab/console in the shared scope; JupyterLab itself has the real one, and then
 * this does nothing. Only where it is missing (the RISE application) it provides a module with
 * just the IConsoleTracker token, which no plugin there provides: the widget manager treats the
 * console tracker as optional, gets null, and renders widgets in notebooks as usual. The manager
 * uses CodeConsole and ConsolePanel only as TypeScript types, so they are not needed at run time.
 * RISE loads every extension's container (this init included) before it creates any extension's
 * module, so the token is in place before the widget manager asks for it.
 */
(function () {
  var NAME = "lora-edu-rise-widgets";
  var CONSOLE = "@jupyterlab/console";

  function highest(versions) {
    return Object.keys(versions).sort(function (a, b) {
      var x = a.split(/[.-]/).map(Number), y = b.split(/[.-]/).map(Number);
      for (var i = 0; i < 3; i++) { if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0); }
      return 0;
    }).pop();
  }

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = {
    init: function (shareScope) {
      if (!shareScope || shareScope[CONSOLE] || !shareScope["@lumino/coreutils"]) {
        return Promise.resolve();  // JupyterLab proper: the real console package is shared
      }
      var lumino = shareScope["@lumino/coreutils"][highest(shareScope["@lumino/coreutils"])];
      var siblings = shareScope["@jupyterlab/notebook"];
      var version = siblings ? highest(siblings) : "4.0.0";  // the application's own @jupyterlab version
      shareScope[CONSOLE] = {};
      shareScope[CONSOLE][version] = {
        from: NAME,
        eager: false,
        get: function () {
          return Promise.resolve(lumino.get()).then(function (factory) {
            var coreutils = factory();
            var module = {
              IConsoleTracker: new coreutils.Token(CONSOLE + ":IConsoleTracker",
                "A console tracker (none in a RISE slideshow; provided by lora-edu-rise-widgets).")
            };
            Object.defineProperty(module, "__esModule", { value: true });
            return function () { return module; };
          });
        }
      };
      return Promise.resolve();
    },
    get: function (request) {
      return Promise.reject(new Error(NAME + " exposes no module (" + request + ")"));
    }
  };
})();
