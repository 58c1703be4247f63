// The fleet table's live updates: the server sends, by server-sent events, the rows that changed (rendered by
// the same template as the page) and the table's order; this swaps them in place, without a reload.
// No framework, no build, nothing from a CDN; the Content-Security-Policy allows only this file.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var body = document.getElementById("fleet-rows");
  if (!live || !body || !window.EventSource) {
    return;
  }
  var summary = document.getElementById("fleet-summary");
  var truncated = document.getElementById("fleet-truncated");
  var empty = document.getElementById("fleet-empty");
  var source = new EventSource(live.getAttribute("data-events"));

  function connected(on) {
    live.textContent = live.getAttribute(on ? "data-on" : "data-off");
    live.classList.toggle("on", on);
  }

  function rowsById() {
    var rows = {};
    for (var i = 0; i < body.rows.length; i += 1) {
      rows[body.rows[i].getAttribute("data-device")] = body.rows[i];
    }
    return rows;
  }

  source.addEventListener("open", function () { connected(true); });
  source.addEventListener("error", function () { connected(false); });
  source.addEventListener("logout", function () {
    source.close();
    window.location.reload();
  });
  source.addEventListener("fleet", function (event) {
    var update = JSON.parse(event.data);
    var rows = rowsById();
    var holder = document.createElement("template");
    update.rows.forEach(function (item) {
      holder.innerHTML = item.html.trim();  // the server's own escaped HTML, from the page's template
      var fresh = holder.content.firstElementChild;
      if (rows[item.id]) {
        rows[item.id].replaceWith(fresh);
      }
      rows[item.id] = fresh;
    });
    var wanted = {};
    update.order.forEach(function (id) {
      wanted[id] = true;
      if (rows[id]) {
        body.appendChild(rows[id]);  // appending an attached row moves it: this puts every row in order
      }
    });
    Object.keys(rows).forEach(function (id) {
      if (!wanted[id] && rows[id].parentNode) {
        rows[id].remove();
      }
    });
    summary.textContent = update.summary;
    truncated.textContent = update.truncated;
    truncated.hidden = !update.truncated;
    empty.hidden = update.order.length > 0;
    connected(true);
  });
}());
