(function () {
  var main = document.getElementById("share-magic-notebook");
  var since = encodeURIComponent(main.getAttribute("data-version"));
  var stream = new EventSource(main.getAttribute("data-events") + "?since=" + since);
  var saved = {}, savedOrder = [], live = {}, liveOrder = null, images = {}, state = {}, following = true, i;
  for (i = 0; i < main.children.length; i++) {
    savedOrder.push(main.children[i].getAttribute("data-cell"));
    saved[savedOrder[i]] = main.children[i];
  }
  function byId(id) { return document.getElementById(id); }
  function cell(id, markup, isLive) {
    var element = document.createElement("div");
    element.className = "share-magic-cell" + (isLive ? " share-magic-live" : "");
    element.setAttribute("data-cell", id);
    element.innerHTML = markup;
    var found = element.getElementsByTagName("img"), k, src, at;
    for (k = 0; k < found.length; k++) {
      src = found[k].getAttribute("src") || "";
      at = src.indexOf("share-magic-image-");
      if (at >= 0 && images[src.slice(at + 18)]) { found[k].setAttribute("src", images[src.slice(at + 18)]); }
    }
    return element;
  }
  function show(keepScroll) {
    var x = window.scrollX, y = window.scrollY;
    var next = (liveOrder || savedOrder).map(function (id) { return live[id] || saved[id]; })
      .filter(function (element) { return element; });
    next.forEach(function (element, at) {
      if (main.children[at] !== element) { main.insertBefore(element, main.children[at] || null); }
    });
    while (main.children.length > next.length) { main.removeChild(main.lastElementChild); }
    if (keepScroll) { window.scrollTo(x, y); }
  }
  function follow() {
    var busy = main.querySelectorAll(".share-magic-busy"), k, running = state.running && live[state.running];
    for (k = 0; k < busy.length; k++) { busy[k].classList.remove("share-magic-busy"); }
    var words = state.words || "";
    if (running) {
      running.classList.add("share-magic-busy");
      var number = Array.prototype.indexOf.call(main.children, running) + 1;
      if (following) { running.scrollIntoView({block: "nearest"}); }
      else { words = "the presenter is at cell " + number; }
    }
    if (state.dropped) { words += " · " + state.dropped + " earlier live cells no longer kept"; }
    byId("share-magic-state").textContent = words;
  }
  stream.addEventListener("notebook", function (event) {
    var update = JSON.parse(event.data), id, kept = {};
    if (update.reset) { saved = {}; }
    for (id in update.cells) {
      if (Object.prototype.hasOwnProperty.call(update.cells, id)) { saved[id] = cell(id, update.cells[id], false); }
    }
    savedOrder = update.order || savedOrder;
    savedOrder.forEach(function (id) { kept[id] = saved[id]; });
    saved = kept;
    main.setAttribute("data-version", update.version);
    byId("share-magic-saved").textContent = update.saved;
    show(true);
  });
  stream.addEventListener("live", function (event) {
    var update = JSON.parse(event.data), key, kept = {};
    if (update.reset) { live = {}; images = {}; liveOrder = null; }
    for (key in update.images || {}) { images[key] = update.images[key]; }
    for (key in update.live || {}) {
      if (Object.prototype.hasOwnProperty.call(update.live, key)) { live[key] = cell(key, update.live[key], true); }
    }
    if (update.order) {
      liveOrder = update.order;
      liveOrder.forEach(function (id) { if (live[id]) { kept[id] = live[id]; } });
      live = kept;
    }
    ["kernel", "words", "running", "dropped"].forEach(function (name) {
      if (name in update) { state[name] = update[name]; }
    });
    show(!following);
    follow();
  });
  var toggle = byId("share-magic-follow");
  if (toggle) {
    toggle.addEventListener("click", function () {
      following = !following;
      toggle.textContent = following ? "following the presenter" : "follow the presenter";
      toggle.setAttribute("aria-pressed", following ? "true" : "false");
      follow();
    });
  }
  var dark = window.matchMedia("(prefers-color-scheme: dark)");
  function theme() { document.body.setAttribute("data-jp-theme-light", dark.matches ? "false" : "true"); }
  theme();
  if (dark.addEventListener) { dark.addEventListener("change", theme); }
})();
