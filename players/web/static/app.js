// postern web UI: mounts asciinema-player on the replay page and makes the
// marker list seek it. Served as a file: the Content-Security-Policy allows
// no inline script.
(function () {
  "use strict";
  var el = document.getElementById("player");
  if (!el) return;
  if (typeof AsciinemaPlayer === "undefined") {
    if (document.getElementById("assets-missing")) return;
    var p = document.createElement("p");
    p.className = "notice";
    p.id = "assets-missing";
    p.textContent = "player assets not built: run make web";
    el.appendChild(p);
    return;
  }
  var opts = { fit: "width", terminalFontSize: "small", idleTimeLimit: 2 };
  var cols = parseInt(el.dataset.cols, 10), rows = parseInt(el.dataset.rows, 10);
  if (cols > 0 && rows > 0) { opts.cols = cols; opts.rows = rows; }
  var src;
  if (el.dataset.live) {
    // Live: server-sent events, rendered as they arrive.
    src = { driver: "eventsource", url: el.dataset.live, bufferTime: 0 };
    opts.autoPlay = true;
    delete opts.idleTimeLimit;
  } else {
    src = el.dataset.cast;
    opts.preload = true;
    // A search hit opens the replay at its moment: the frame at that time
    // is shown (poster) and playing starts there. Pauses are kept as
    // recorded, so that the time is the recording's own.
    var at = parseFloat(el.dataset.startAt);
    if (at > 0) {
      opts.startAt = at;
      opts.poster = "npt:" + at;
      delete opts.idleTimeLimit;
    }
  }
  var player = AsciinemaPlayer.create(src, el, opts);
  window.posternPlayer = player;
  var buttons = document.querySelectorAll("button.seek");
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].addEventListener("click", function (ev) {
      var t = parseFloat(ev.currentTarget.dataset.seek);
      player.seek(t).then(function () { player.play(); });
    });
  }
})();
