// share_magic's service worker: keeps Jupyter's versioned, immutable static files (content-hashed script chunks,
// extension entries) in Cache Storage and answers them from there; fetches the ones it lacks in one request per wave.
// Nothing else is touched: navigations, API calls, websockets, notebooks, files and anything with a query other
// than a version go to the network, where the gateway decides, as without the worker. So a share that has ended
// is never served: its pages come from the network (the gateway's refusal), and static files alone are inert.
"use strict";
var script = new URL(self.location.href);
var BASE = new URL("..", script).pathname;  // the worker lives at <base>share_magic/worker.js
var BUILD = script.searchParams.get("b") || "";
var CACHE = "share-magic-" + BUILD;
var BATCH = BASE + "share_magic/batch", PACK = BASE + "share_magic/pack";
var QUIET_MS = 15, WINDOW_MS = 80;  // a wave of chunk requests: until none came for QUIET_MS, at most WINDOW_MS
var MAX_BATCH = 150;
var VERSIONED = /[.\-_][0-9a-f]{8,}\.(js|css|wasm|woff2?|ttf|svg|png|json)$/;
var LOAD_MS = 10000;  // what a page asks for this soon after its first request is part of loading it
var pending = [], timer = null, since = 0, firstSeen = {};

function loading(event) {
  // Whether this request is part of its page's load (the helper packs those for later editors), not something
  // opened later (a terminal, a dialog), which is fetched when someone needs it.
  var id = event.clientId || event.resultingClientId || "", now = Date.now();
  if (Object.keys(firstSeen).length > 64) { firstSeen = {}; }
  if (!(id in firstSeen)) { firstSeen[id] = now; }
  return now - firstSeen[id] < LOAD_MS;
}

function versioned(url) {
  // Below Jupyter's static folders, named by their content (or versioned by ?v=<hash>), with no other query.
  if (url.origin !== self.location.origin || url.pathname.indexOf(BASE) !== 0) { return false; }
  var path = url.pathname.slice(BASE.length);
  if (!/^(static\/|lab\/extensions\/)/.test(path) || path.indexOf("..") >= 0 || url.hash) { return false; }
  if (url.search && !/^\?v=[0-9a-f]{6,64}$/.test(url.search)) { return false; }
  return VERSIONED.test(path) || /^\?v=/.test(url.search);
}

function unpack(response) {
  // [4-byte length][JSON index][bodies...] -> [{path, headers, body}]
  return response.arrayBuffer().then(function (buffer) {
    var view = new DataView(buffer), size = view.getUint32(0), at = 4 + size;
    var index = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, size)));
    return index.map(function (entry) {
      var body = buffer.slice(at, at + entry.size);
      at += entry.size;
      return {path: entry.path, status: entry.status, immutable: entry.immutable,
              headers: {"Content-Type": entry.type, "Cache-Control": entry.cache}, body: body};
    });
  });
}

function keep(cache, files) {
  return Promise.all(files.map(function (file) {
    if (file.status !== 200 || !file.immutable) { return null; }
    return cache.put(new Request(BASE + file.path), new Response(file.body, {status: 200, headers: file.headers}));
  }));
}

function flush() {
  timer = null;
  var batch = pending.splice(0, MAX_BATCH);
  if (pending.length) { timer = setTimeout(flush, 0); }
  var query = batch.map(function (item) { return "p=" + encodeURIComponent(item.path); }).join("&");
  var load = batch.every(function (item) { return item.load; }) ? "&l=1" : "";
  fetch(BATCH + "?b=" + encodeURIComponent(BUILD) + load + "&" + query, {credentials: "same-origin", cache: "no-store"})
    .then(function (response) {
      if (!response.ok) { throw new Error("batch " + response.status); }
      return unpack(response);
    })
    .then(function (files) {
      var found = {};
      files.forEach(function (file) { found[file.path] = file; });
      return caches.open(CACHE).then(function (cache) { return keep(cache, files); }).then(function () {
        batch.forEach(function (item) {
          var file = found[item.path];
          if (file && file.status === 200) {
            item.resolve(new Response(file.body, {status: 200, headers: file.headers}));
          } else {
            item.resolve(fetch(item.request));
          }
        });
      });
    })
    .catch(function () {  // the share ended, or anything else: each request goes over the network as it was
      batch.forEach(function (item) { item.resolve(fetch(item.request)); });
    });
}

function batched(request, path, load) {
  return new Promise(function (resolve) {
    pending.push({request: request, path: path, load: load, resolve: resolve});
    var now = Date.now();
    if (!timer) { since = now; }
    clearTimeout(timer);
    timer = null;
    if (pending.length >= MAX_BATCH) { flush(); }
    else { timer = setTimeout(flush, Math.max(0, Math.min(QUIET_MS, since + WINDOW_MS - now))); }
  });
}

function fromHttpCache(cache, path) {
  // A file the browser fetched before the worker took over (the page's icon) is in its HTTP cache: no request.
  return fetch(BASE + path, {cache: "only-if-cached", mode: "same-origin", credentials: "same-origin"})
    .then(function (response) {
      if (!response.ok || response.type !== "basic") { return null; }
      return cache.put(BASE + path, response.clone()).then(function () { return response; });
    })
    .catch(function () { return null; });
}

self.addEventListener("install", function (event) {
  // What loads of this build needed before, in one request (an unknown build gets an empty pack).
  event.waitUntil(
    fetch(PACK + "?b=" + encodeURIComponent(BUILD), {credentials: "same-origin", cache: "no-store"})
      .then(function (response) { return response.ok ? unpack(response) : []; })
      .then(function (files) { return caches.open(CACHE).then(function (cache) { return keep(cache, files); }); })
      .catch(function () { return null; })
      .then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (name) {
      return name.indexOf("share-magic-") === 0 && name !== CACHE;
    }).map(function (name) { return caches.delete(name); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET" || request.mode === "navigate") { return; }
  var url = new URL(request.url);
  if (!versioned(url)) { return; }
  var path = url.pathname.slice(BASE.length) + url.search, load = loading(event);
  event.respondWith(caches.open(CACHE).then(function (cache) {
    return cache.match(BASE + path).then(function (hit) { return hit || fromHttpCache(cache, path); })
      .then(function (hit) { return hit || batched(request, path, load); });
  }));
});
