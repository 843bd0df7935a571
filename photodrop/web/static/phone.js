// photodrop's phone page: sends each picked photo on its own, shows its progress, and keeps
// trying through a bad connection. Without this script the page's form still posts the photos.
(function () {
  "use strict";
  var root = document.getElementById("phone");
  if (!root || !window.XMLHttpRequest || !window.FormData) return;
  document.documentElement.classList.add("js");

  var strings = JSON.parse(root.dataset.strings);
  var uploadUrl = root.dataset.uploadUrl;
  var maxImages = Number(root.dataset.max);
  var remaining = Number(root.dataset.remaining);
  var maxDimension = Number(root.dataset.maxDimension) || 0;
  var deadline = Date.now() + Number(root.dataset.secondsLeft) * 1000;
  var plurals = window.Intl && Intl.PluralRules
    ? new Intl.PluralRules(document.documentElement.lang)
    : { select: function (n) { return n === 1 ? "one" : "other"; } };

  var form = document.getElementById("picker");
  var inputs = [document.getElementById("camera"), document.getElementById("gallery")];
  var queueList = document.getElementById("queue");
  var notice = document.getElementById("notice");
  var left = document.getElementById("left");
  var clock = document.getElementById("clock");

  var MAX_AUTOMATIC_TRIES = 8;
  var MAX_BACKOFF_MS = 60000;
  var items = [];
  var sending = null;
  var timer = null;
  var closed = false;

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

  // Photos still to come: the room left once every photo kept on this page has been sent.
  function room() {
    var held = items.filter(function (item) { return item.state !== "failed" && item.state !== "done"; });
    return remaining - held.length;
  }

  function refresh() {
    left.textContent = t("n_of_max", { n: remaining, max: maxImages });
    var open = !closed && room() > 0;
    inputs.forEach(function (input) {
      input.disabled = !open;
    });
    if (remaining <= 0 && !closed) finish(t("all_sent"), false);
  }

  function finish(text, isError) {
    closed = true;
    say(text, isError);
    form.hidden = true;
    items.forEach(function (item) {
      // The photo on its way may still arrive in time; its own answer settles it.
      if (item !== sending && item.state !== "done" && item.state !== "failed") fail(item);
      item.view.retry.hidden = true;
    });
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

  function row(file) {
    var li = document.createElement("li");
    var thumb = document.createElement("img");
    thumb.alt = "";
    thumb.className = "thumb";
    thumb.onerror = function () { thumb.classList.add("none"); };
    thumb.src = URL.createObjectURL(file);
    var info = document.createElement("div");
    info.className = "info";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var status = document.createElement("span");
    status.className = "status";
    var detail = document.createElement("span");
    detail.className = "detail";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    var retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = t("retry");
    retry.hidden = true;
    info.append(name, status, detail, bar);
    li.append(thumb, info, retry);
    return { li: li, status: status, detail: detail, bar: bar, retry: retry };
  }

  function show(item, state, text, detail) {
    item.state = state;
    item.view.li.dataset.state = state;
    item.view.status.textContent = text;
    item.view.detail.textContent = detail || "";
    item.view.retry.hidden = state !== "failed" || closed;
  }

  function enqueue(files, source) {
    var space = room();
    var picked = Array.prototype.slice.call(files, 0, Math.max(0, space));
    if (files.length > picked.length) {
      say(t("trimmed", { n: Math.max(0, space), dropped: files.length - picked.length }, files.length - picked.length));
    } else {
      say(navigator.onLine === false ? t("offline") : "");
    }
    picked.forEach(function (file) {
      var item = { file: file, source: source, ready: null, tries: 0, due: 0, view: row(file) };
      item.view.retry.addEventListener("click", function () {
        item.tries = 0;
        item.due = 0;
        show(item, "queued", t("st_queued"));
        refresh();
        pump();
      });
      items.push(item);
      queueList.append(item.view.li);
      show(item, "queued", t("st_queued"));
    });
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
    var next = waiting.filter(function (item) { return item.due <= now; })[0];
    if (next) return send(next);
    var soonest = Math.min.apply(null, waiting.map(function (item) { return item.due; }));
    if (isFinite(soonest) && soonest > now) timer = setTimeout(pump, soonest - now);
  }

  function send(item) {
    sending = item;
    show(item, "preparing", t("st_preparing"));
    (item.ready || (item.ready = downscale(item.file))).then(function (blob) {
      if (closed) return;
      var body = new FormData();
      body.append("source", item.source);
      body.append("file", blob, item.file.name);
      var xhr = new XMLHttpRequest();
      item.xhr = xhr;
      xhr.open("POST", uploadUrl);
      xhr.upload.onprogress = function (event) {
        if (event.lengthComputable) item.view.bar.value = (event.loaded / event.total) * 100;
      };
      xhr.onload = function () { answered(item, xhr); };
      xhr.onerror = xhr.onabort = xhr.ontimeout = function () { unreachable(item, null); };
      show(item, "uploading", t("st_uploading"));
      xhr.send(body);
    });
  }

  function done(item) {
    item.xhr = null;
    sending = null;
    refresh();
    pump();
  }

  function answered(item, xhr) {
    var status = xhr.status;
    if (status === 201) {
      item.view.bar.value = 100;
      remaining -= 1;
      show(item, "done", t("st_done"));
      URL.revokeObjectURL(item.view.li.querySelector("img").src);
      return done(item);
    }
    if (status === 0 || status === 408 || status === 429 || status >= 500) {
      return unreachable(item, retryAfter(xhr.getResponseHeader("Retry-After")));
    }
    var body = {};
    try {
      body = JSON.parse(xhr.responseText) || {};
    } catch (ignored) {
      body = {};
    }
    var reason = strings["reason_" + body.code] || t("error_status", { status: status });
    fail(item, reason, body.message);
    if (status === 409 || status === 410 || (status === 422 && body.code === "SESSION_FULL")) {
      if (status === 422) remaining = 0;
      finish(reason, status !== 422);
    }
    done(item);
  }

  // No answer, or a "not now" from the server: wait (longer each time) and send it again.
  function unreachable(item, waitMs) {
    item.view.bar.value = 0;
    if (navigator.onLine === false) {
      item.due = 0;
      show(item, "waiting", t("st_offline"));
    } else if (item.tries + 1 >= MAX_AUTOMATIC_TRIES) {
      fail(item, t("st_failed"));
    } else {
      item.tries += 1;
      var backoff = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, item.tries - 1)) * (0.75 + Math.random() / 4);
      var wait = waitMs === null ? backoff : Math.max(waitMs, backoff);
      item.due = Date.now() + wait;
      show(item, "waiting", t("st_retrying", { s: Math.ceil(wait / 1000) }));
    }
    done(item);
  }

  function fail(item, text, detail) {
    show(item, "failed", text || t("st_failed"), detail);
  }

  // Retry-After in seconds or as an HTTP date; null when absent or unreadable.
  function retryAfter(header) {
    if (!header) return null;
    var seconds = Number(header);
    if (isFinite(seconds)) return Math.max(0, seconds * 1000);
    var when = Date.parse(header);
    return isNaN(when) ? null : Math.max(0, when - Date.now());
  }

  // Scale a photo down on the phone when the session asks for it; a format the browser cannot
  // write back as itself (HEIC, GIF ...) goes as it is.
  function downscale(file) {
    var writable = /^image\/(jpeg|png|webp)$/.test(file.type);
    if (!maxDimension || !writable || !window.createImageBitmap) return Promise.resolve(file);
    return createImageBitmap(file)
      .then(function (bitmap) {
        var longest = Math.max(bitmap.width, bitmap.height);
        if (longest <= maxDimension) {
          bitmap.close();
          return file;
        }
        var scale = maxDimension / longest;
        var canvas = document.createElement("canvas");
        canvas.width = bitmap.width >= bitmap.height ? maxDimension : Math.max(1, Math.round(bitmap.width * scale));
        canvas.height = bitmap.height > bitmap.width ? maxDimension : Math.max(1, Math.round(bitmap.height * scale));
        var context = canvas.getContext("2d");
        context.imageSmoothingQuality = "high";
        context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
        bitmap.close();
        return new Promise(function (resolve) {
          canvas.toBlob(function (blob) {
            resolve(blob && blob.type === file.type ? blob : file);
          }, file.type, 0.9);
        });
      })
      .catch(function () {
        return file;
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
  window.addEventListener("offline", function () {
    if (!closed) say(t("offline"));
    if (sending && sending.xhr) sending.xhr.abort();
  });
  window.addEventListener("online", function () {
    if (closed) return;
    say("");
    items.forEach(function (item) {
      if (item.state === "waiting") item.due = 0;
    });
    pump();
  });

  refresh();
  tick();
})();
