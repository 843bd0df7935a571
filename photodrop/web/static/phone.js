// photodrop's phone page: sends each picked photo on its own, in resumable pieces (tus 1.0), shows
// its progress, keeps the queue in IndexedDB across a reload, and keeps trying through a bad
// connection. Without this script the page's form still posts the photos.
(function () {
  "use strict";
  var root = document.getElementById("phone");
  if (!root || !window.XMLHttpRequest || !window.FormData) return;
  document.documentElement.classList.add("js");

  var strings = JSON.parse(root.dataset.strings);
  var sessionId = root.dataset.session;
  var uploadUrl = root.dataset.uploadUrl;
  var tusUrl = root.dataset.tusUrl;
  var maxImages = Number(root.dataset.max);
  // Room left: what the page was told, less what this page has sent since, or what the live feed
  // says (other phones may be sending too), whichever is less.
  var roomAtLoad = Number(root.dataset.remaining);
  var sentHere = 0;
  var roomOnServer = Infinity;
  var deadline = Date.now() + Number(root.dataset.secondsLeft) * 1000;
  // No progress for this long and the request is dropped and resumed; a test may shorten it, or
  // the pieces (a cut loses at most one piece; each piece costs one round trip).
  var query = new URLSearchParams(location.search);
  var stallMs = (Number(query.get("stall_seconds")) || Number(root.dataset.stallSeconds) || 30) * 1000;
  var CHUNK = (Number(query.get("chunk_kib")) || 1024) * 1024;
  var lang = document.documentElement.lang;
  var plurals = window.Intl && Intl.PluralRules
    ? new Intl.PluralRules(lang)
    : { select: function (n) { return n === 1 ? "one" : "other"; } };

  var form = document.getElementById("picker");
  var inputs = [document.getElementById("camera"), document.getElementById("gallery")];
  var queueList = document.getElementById("queue");
  var notice = document.getElementById("notice");
  var left = document.getElementById("left");
  var clock = document.getElementById("clock");
  var overall = document.getElementById("overall");
  var overallText = document.getElementById("overall-text");
  var overallBar = document.getElementById("overall-bar");
  var finishButton = document.getElementById("finish");

  var TUS = { "Tus-Resumable": "1.0.0" };
  var MAX_AUTOMATIC_TRIES = 8;
  var MAX_BACKOFF_MS = 60000;
  var SESSION_OVER = { SESSION_EXPIRED: true, SESSION_CLOSED: true, SESSION_FULL: true };
  var items = [];
  var sending = null;
  var timer = null;
  var closed = false;
  var ending = null;
  var leaving = false;
  var useTus = !!tusUrl;
  var events = null;

  // A catalogue string; {name} placeholders filled from vars, plural forms picked by count.
  function t(key, vars, count) {
    var text = strings[key];
    if (typeof text === "object") text = text[plurals.select(count)] || text.other;
    return String(text).replace(/\{(\w+)\}/g, function (whole, name) {
      return vars && name in vars ? vars[name] : whole;
    });
  }

  function say(text, isError) {
    notice.textContent = text;
    notice.hidden = !text;
    notice.classList.toggle("error", !!isError);
  }

  function pending(item) {
    return item.state !== "failed" && item.state !== "done";
  }

  // Photos still to come: the room left once every photo kept on this page has been sent.
  function room() {
    return remaining() - items.filter(pending).length;
  }

  function remaining() {
    return Math.max(0, Math.min(roomAtLoad - sentHere, roomOnServer));
  }

  function sent() {
    return items.filter(function (item) { return item.state === "done"; }).length;
  }

  function refresh() {
    left.textContent = t("n_of_max", { n: remaining(), max: maxImages });
    var open = !closed && room() > 0;
    inputs.forEach(function (input) {
      input.disabled = !open;
    });
    overall.hidden = !items.length;
    overallText.textContent = t("overall", { n: sent(), total: items.length });
    overallBar.max = Math.max(1, items.length);
    overallBar.value = sent();
    finishButton.hidden = closed || !sent() || items.some(pending);
    if (remaining() <= 0 && !closed && !sending) finish(t("summary", { n: sent() }, sent()), false);
  }

  function finish(text, isError) {
    closed = true;
    say(text, isError);
    form.hidden = true;
    inputs.forEach(function (input) { input.disabled = true; });
    finishButton.hidden = true;
    if (events) events.close();
    items.forEach(function (item) {
      // The photo on its way may still arrive in time; its own answer settles it.
      if (item !== sending && pending(item)) fail(item, null, false);
      item.view.retry.hidden = true;
      item.view.remove.hidden = true;
    });
    if (!sending) store.clear();
  }

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function duration(seconds) {
    var days = Math.floor(seconds / 86400);
    var hours = Math.floor((seconds % 86400) / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    if (days) return days + " " + t("unit_day") + " " + hours + " " + t("unit_hour");
    if (hours) return hours + " " + t("unit_hour") + " " + pad(minutes) + " " + t("unit_minute");
    return minutes + ":" + pad(seconds % 60);
  }

  // The countdown runs from the server's figure, so a phone whose clock is wrong still shows the truth.
  function tick() {
    var ms = deadline - Date.now();
    var seconds = Math.max(0, Math.ceil(ms / 1000));
    clock.textContent = duration(seconds);
    if (seconds > 0) setTimeout(tick, ms - (seconds - 1) * 1000);
    else if (!closed) finish(t("expired_now"), true);
  }

  function size(bytes) {
    var mb = bytes >= 1e6;
    var value = mb ? bytes / 1e6 : Math.ceil(bytes / 1e3);
    var text = window.Intl ? value.toLocaleString(lang, { maximumFractionDigits: mb ? 1 : 0 }) : String(value);
    return text + " " + t(mb ? "unit_mb" : "unit_kb");
  }

  // The queue kept in this browser: each photo's bytes, its idempotency key and its tus address.
  var store = (function () {
    var opened = null;
    function db() {
      if (!opened) {
        opened = new Promise(function (resolve, reject) {
          var request = indexedDB.open("photodrop", 1);
          request.onupgradeneeded = function () { request.result.createObjectStore("uploads", { keyPath: "id" }); };
          request.onsuccess = function () { resolve(request.result); };
          request.onerror = function () { reject(request.error); };
        });
      }
      return opened;
    }
    function run(mode, work) {
      if (!window.indexedDB) return Promise.resolve(null);
      return db().then(function (database) {
        return new Promise(function (resolve, reject) {
          var tx = database.transaction("uploads", mode);
          var request = work(tx.objectStore("uploads"));
          tx.oncomplete = function () { resolve(request ? request.result : null); };
          tx.onerror = tx.onabort = function () { reject(tx.error); };
        });
      }).catch(function () { return null; });
    }
    function mine(records) {
      return (records || []).filter(function (r) { return r.session === sessionId; });
    }
    return {
      all: function () {
        return run("readonly", function (s) { return s.getAll(); }).then(function (records) {
          return mine(records).sort(function (a, b) { return a.order - b.order; });
        });
      },
      put: function (item) {
        var record = {
          id: item.id, session: sessionId, order: item.order, file: item.state === "done" ? null : item.file,
          name: item.name, source: item.source, key: item.key, tusUrl: item.tusUrl, done: item.state === "done",
        };
        return run("readwrite", function (s) { s.put(record); });
      },
      drop: function (id) {
        return run("readwrite", function (s) { s.delete(id); });
      },
      clear: function () {
        return store.all().then(function (records) {
          return run("readwrite", function (s) {
            records.forEach(function (r) { s.delete(r.id); });
          });
        });
      },
    };
  })();

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function row(item) {
    var li = document.createElement("li");
    var thumb = document.createElement("img");
    thumb.alt = "";
    thumb.className = "thumb";
    thumb.onerror = function () { thumb.classList.add("none"); };
    if (item.file) thumb.src = URL.createObjectURL(item.file);
    else thumb.classList.add("none");
    var info = document.createElement("div");
    info.className = "info";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = item.name;
    var status = document.createElement("span");
    status.className = "status";
    var bytes = document.createElement("span");
    bytes.className = "bytes";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", item.name);
    var retry = button("retry", t("retry"));
    var remove = button("remove", t("remove"));
    remove.setAttribute("aria-label", t("remove_label", { name: item.name }));
    info.append(name, status, bytes, bar);
    li.append(thumb, info, retry, remove);
    return { li: li, thumb: thumb, status: status, bytes: bytes, bar: bar, retry: retry, remove: remove };
  }

  function button(className, text) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = className;
    b.textContent = text;
    b.hidden = true;
    return b;
  }

  function show(item, state, text) {
    item.state = state;
    item.view.li.dataset.state = state;
    item.view.status.textContent = text;
    item.view.retry.hidden = state !== "failed" || !item.retryable || closed;
    item.view.remove.hidden = state === "done" || closed;
    refresh();
  }

  function progress(item, bytes) {
    var total = item.file ? item.file.size : 0;
    var percent = total ? Math.min(100, Math.floor((bytes / total) * 100)) : 100;
    item.view.bar.value = total ? (bytes / total) * 100 : 100;
    item.view.bytes.textContent = t("progress_bytes", { sent: size(bytes), total: size(total), percent: percent });
  }

  function add(item) {
    item.view = row(item);
    item.tries = 0;
    item.due = 0;
    item.offset = null;
    item.view.retry.addEventListener("click", function () {
      item.tries = 0;
      item.due = 0;
      show(item, "queued", t("st_queued"));
      pump();
    });
    item.view.remove.addEventListener("click", function () { remove(item); });
    items.push(item);
    queueList.append(item.view.li);
    if (item.state === "done") {
      show(item, "done", t("st_done"));
      item.view.bar.value = 100;
    } else {
      show(item, "queued", t("st_queued"));
      progress(item, 0);
    }
  }

  function enqueue(files, source) {
    if (closed) return;
    var space = room();
    var picked = Array.prototype.slice.call(files, 0, Math.max(0, space));
    if (files.length > picked.length) {
      say(t("trimmed", { n: Math.max(0, space), dropped: files.length - picked.length }, files.length - picked.length));
    } else {
      say(navigator.onLine === false ? t("offline") : "");
    }
    var saved = picked.map(function (file, n) {
      var item = { id: uuid(), key: uuid(), order: Date.now() + n / 1000, file: file, name: file.name, source: source };
      add(item);
      return store.put(item);
    });
    // Stored before the first byte leaves, so a reload at any moment finds every picked photo.
    Promise.all(saved).then(pump);
  }

  // A photo taken back before it is sent: its upload on the server is ended too.
  function remove(item) {
    item.removed = true;
    if (item.xhr) item.xhr.abort();
    if (item.tusUrl) {
      var xhr = new XMLHttpRequest();
      xhr.open("DELETE", item.tusUrl);
      xhr.setRequestHeader("Tus-Resumable", "1.0.0");
      xhr.send();
    }
    store.drop(item.id);
    if (item.view.thumb.src) URL.revokeObjectURL(item.view.thumb.src);
    item.view.li.remove();
    items.splice(items.indexOf(item), 1);
    if (sending === item) sending = null;
    refresh();
    pump();
  }

  // The next photo to send: one at a time, so a weak connection carries one photo at full speed.
  function pump() {
    clearTimeout(timer);
    timer = null;
    if (sending || closed) return;
    var now = Date.now();
    var waiting = items.filter(function (item) { return item.state === "queued" || item.state === "waiting"; });
    if (navigator.onLine === false) {
      waiting.forEach(function (item) {
        item.due = 0;
        show(item, "waiting", t("st_offline"));
      });
      return;
    }
    // A photo already begun goes before any other: its bytes may all be on the server (only the
    // answer was lost), and a later photo could fill the session before it is settled.
    var begun = waiting.filter(function (item) { return item.tusUrl || item.tries > 0; }).slice(0, 1);
    if (begun.length) waiting = begun;
    var next = waiting.filter(function (item) { return item.due <= now; })[0];
    if (next) return send(next);
    var soonest = Math.min.apply(null, waiting.map(function (item) { return item.due; }));
    if (isFinite(soonest) && soonest > now) timer = setTimeout(pump, soonest - now);
  }

  function send(item) {
    sending = item;
    if (item.state !== "uploading") show(item, "uploading", t("st_uploading"));
    if (!useTus) return sendWhole(item);
    if (!item.tusUrl) return create(item);
    if (item.offset === null) return probe(item);
    return patch(item);
  }

  // One request for one photo, dropped when nothing moves for stallMs (bytes out or answer in).
  function request(item, method, url, headers, body, answered) {
    var xhr = new XMLHttpRequest();
    var base = item.offset || 0;
    var last = Date.now();
    var watchdog = setInterval(function () {
      if (Date.now() - last > stallMs) xhr.abort();
    }, Math.min(1000, stallMs / 4));
    function moved() { last = Date.now(); }
    function settled(then) {
      return function () {
        clearInterval(watchdog);
        if (item.xhr !== xhr) return;
        item.xhr = null;
        if (!item.removed) then();
      };
    }
    item.xhr = xhr;
    xhr.open(method, url);
    Object.keys(headers).forEach(function (name) { xhr.setRequestHeader(name, headers[name]); });
    xhr.upload.onprogress = function (event) {
      moved();
      if (body && event.lengthComputable) progress(item, base + event.loaded);
    };
    xhr.onprogress = xhr.onreadystatechange = moved;
    xhr.onload = settled(function () { answered(xhr); });
    xhr.onerror = xhr.onabort = xhr.ontimeout = settled(function () { unreachable(item, null); });
    xhr.send(body);
  }

  function header(xhr, name) {
    var value = xhr.getResponseHeader(name);
    return value === null || value === "" || isNaN(Number(value)) ? null : Number(value);
  }

  function metadata(item) {
    var pairs = { filename: item.name, filetype: item.file.type || "application/octet-stream", source: item.source };
    return Object.keys(pairs).map(function (name) {
      return name + " " + btoa(unescape(encodeURIComponent(pairs[name])));
    }).join(",");
  }

  // Creation with the first piece; the same key again returns the same upload, never a second one.
  function create(item) {
    var headers = Object.assign({}, TUS, {
      "Upload-Length": String(item.file.size),
      "Upload-Metadata": metadata(item),
      "Idempotency-Key": item.key,
      "Content-Type": "application/offset+octet-stream",
    });
    item.offset = 0;
    request(item, "POST", tusUrl, headers, item.file.slice(0, CHUNK), function (xhr) {
      var location = xhr.getResponseHeader("Location");
      if ((xhr.status === 201 || xhr.status === 200) && location) {
        item.tusUrl = new URL(location, window.location.href).href;
        store.put(item);
        return advance(item, header(xhr, "Upload-Offset"), true);
      }
      if ((xhr.status === 404 || xhr.status === 405) && !xhr.getResponseHeader("Tus-Resumable")) {
        useTus = false; // a server without tus: the whole photo in one request, as before
        return sendWhole(item);
      }
      // The first request with this key is still being settled on the server: ask again shortly.
      if (xhr.status === 409 && !SESSION_OVER[code(xhr)]) return unreachable(item, null);
      answer(item, xhr);
    });
  }

  // Where the server is: after a cut, a stall, a reload or a lost answer.
  function probe(item) {
    request(item, "HEAD", item.tusUrl, Object.assign({ "Cache-Control": "no-store" }, TUS), null, function (xhr) {
      var offset = header(xhr, "Upload-Offset");
      if ((xhr.status === 200 || xhr.status === 204) && offset !== null) return advance(item, offset, false);
      if (gone(item, xhr)) return;
      answer(item, xhr);
    });
  }

  function patch(item) {
    var headers = Object.assign({}, TUS, {
      "Upload-Offset": String(item.offset),
      "Content-Type": "application/offset+octet-stream",
    });
    var end = Math.min(item.file.size, item.offset + CHUNK);
    request(item, "PATCH", item.tusUrl, headers, item.file.slice(item.offset, end), function (xhr) {
      if (xhr.status === 204 || xhr.status === 200) return advance(item, header(xhr, "Upload-Offset"), true);
      if (xhr.status === 409 && !SESSION_OVER[code(xhr)]) {
        item.offset = null; // not where the server is: ask it
        return send(item);
      }
      if (gone(item, xhr)) return;
      answer(item, xhr);
    });
  }

  // An upload the server no longer knows (expired, or finished and forgotten): create it again
  // with the same key, which answers with the first upload's outcome if it was ever completed.
  function gone(item, xhr) {
    if ((xhr.status !== 404 && xhr.status !== 410) || SESSION_OVER[code(xhr)] || item.recreated) return false;
    item.recreated = true;
    item.tusUrl = null;
    item.offset = null;
    store.put(item);
    send(item);
    return true;
  }

  function advance(item, offset, answeredByUs) {
    if (offset === null) {
      item.offset = null;
      return send(item);
    }
    if (offset > (item.offset || 0)) item.tries = 0;
    item.offset = offset;
    progress(item, offset);
    if (offset >= item.file.size) return delivered(item, answeredByUs);
    if (closed) return done(item);
    patch(item);
  }

  function sendWhole(item) {
    var body = new FormData();
    body.append("source", item.source);
    body.append("idempotency_key", item.key);
    body.append("file", item.file, item.name);
    item.offset = 0;
    request(item, "POST", uploadUrl, { "Idempotency-Key": item.key }, body, function (xhr) {
      if (xhr.status === 201 || xhr.status === 200) return delivered(item, true);
      answer(item, xhr);
    });
  }

  // answeredByUs: this page sent the last byte and heard back, so the page's count of room left
  // did not include the photo yet (a photo found complete after a reload was already counted).
  function delivered(item, answeredByUs) {
    if (answeredByUs) sentHere += 1;
    item.view.bar.value = 100;
    show(item, "done", t("st_done"));
    store.put(item);
    if (item.view.thumb.src) URL.revokeObjectURL(item.view.thumb.src);
    done(item);
  }

  function done(item) {
    if (sending === item) sending = null;
    if (settle()) return;
    refresh();
    pump();
  }

  // The session ended on the server: said once the photo on its way has had its answer.
  function settle() {
    if (!ending || sending || closed) return false;
    finish(remaining() <= 0 ? t("summary", { n: sent() }, sent()) : ending, remaining() > 0);
    return true;
  }

  function code(xhr) {
    try {
      return (JSON.parse(xhr.responseText) || {}).code;
    } catch (ignored) {
      return undefined;
    }
  }

  // A refusal, in the page's language only; a photo the server will never take gets no Retry.
  function answer(item, xhr) {
    var status = xhr.status;
    if (status === 0 || status === 408 || status === 429 || status >= 500) {
      return unreachable(item, retryAfter(xhr.getResponseHeader("Retry-After")));
    }
    var why = code(xhr);
    var reason = strings["reason_" + why] || t("error_status", { status: status });
    fail(item, reason, false);
    store.drop(item.id);
    if (SESSION_OVER[why]) {
      if (why === "SESSION_FULL") roomOnServer = 0;
      sending = null;
      finish(why === "SESSION_FULL" ? t("summary", { n: sent() }, sent()) : reason, why !== "SESSION_FULL");
      return;
    }
    done(item);
  }

  // No answer, no progress, or a "not now" from the server: wait (longer each time), then go on
  // from wherever the server has got to.
  function unreachable(item, waitMs) {
    if (useTus && item.tusUrl) item.offset = null;
    else item.view.bar.value = 0;
    if (navigator.onLine === false) {
      item.due = 0;
      show(item, "waiting", t("st_offline"));
    } else if (item.tries + 1 >= MAX_AUTOMATIC_TRIES) {
      fail(item, t("st_failed"), true);
    } else {
      item.tries += 1;
      var backoff = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, item.tries - 1)) * (0.75 + Math.random() / 4);
      var wait = waitMs === null ? backoff : Math.max(waitMs, backoff);
      item.due = Date.now() + wait;
      show(item, "waiting", t("st_retrying", { s: Math.ceil(wait / 1000) }));
    }
    done(item);
  }

  function fail(item, text, retryable) {
    item.retryable = retryable;
    show(item, "failed", text || t("st_failed"));
  }

  // Retry-After in seconds or as an HTTP date; null when absent or unreadable.
  function retryAfter(value) {
    if (!value) return null;
    var seconds = Number(value);
    if (isFinite(seconds)) return Math.max(0, seconds * 1000);
    var when = Date.parse(value);
    return isNaN(when) ? null : Math.max(0, when - Date.now());
  }

  // The operator completing the session, or its end, reaches an open page within seconds.
  // Closed while offline (it would only fail and try again) and opened again when back.
  function follow() {
    if (!window.EventSource || !root.dataset.eventsUrl || closed || navigator.onLine === false) return;
    if (events) events.close();
    events = new EventSource(root.dataset.eventsUrl);
    events.addEventListener("session", function (event) {
      var state = JSON.parse(event.data);
      roomOnServer = Math.min(roomOnServer, state.remaining);
      if (state.status === "completed" || state.status === "expired") {
        events.close();
        if (closed) return;
        ending = t(state.status === "expired" ? "expired_now" : "completed_now");
        settle();
        return;
      }
      refresh();
    });
  }

  inputs.forEach(function (input) {
    input.addEventListener("change", function () {
      var files = Array.prototype.slice.call(input.files);
      input.value = "";
      if (files.length) enqueue(files, input.id === "camera" ? "camera" : "gallery");
    });
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
  });
  finishButton.addEventListener("click", function () {
    finish(t("summary", { n: sent() }, sent()), false);
  });
  // The language switch reloads the page, and the queue waits in IndexedDB: no need to ask.
  Array.prototype.forEach.call(document.querySelectorAll(".lang a"), function (link) {
    link.addEventListener("click", function () { leaving = true; });
  });
  window.addEventListener("beforeunload", function (event) {
    if (closed || leaving || !items.some(pending)) return;
    event.preventDefault();
    event.returnValue = "";
  });
  window.addEventListener("offline", function () {
    if (events) events.close();
    if (!closed) say(t("offline"));
    if (sending && sending.xhr) sending.xhr.abort();
  });
  window.addEventListener("online", function () {
    if (closed) return;
    say("");
    follow();
    items.forEach(function (item) {
      if (item.state === "waiting") item.due = 0;
    });
    pump();
  });

  refresh();
  tick();
  follow();
  store.all().then(function (records) {
    records.forEach(function (record) {
      if (!record.file && !record.done) return;
      add({
        id: record.id, key: record.key, order: record.order, file: record.file, name: record.name,
        source: record.source, tusUrl: record.tusUrl, state: record.done ? "done" : "queued",
      });
    });
    refresh();
    pump();
  });
})();
