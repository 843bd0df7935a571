/* photodrop's dashboard: GraphQL over HTTP for reads and changes, graphql-transport-ws for live updates.
 *
 * The page never sees the API key: its HttpOnly cookie carries the sign-in, and the CSRF token the
 * server put on <body> goes with every GraphQL request, which a page of another site cannot send.
 */
(function () {
  "use strict";

  var body = document.body;
  var csrf = body.dataset.csrf || "";
  var LOGIN = "/dashboard/login";
  var TERMINAL = { completed: true, expired: true };
  var SESSION_FIELDS = "id status maxImages imageCount timeRemaining expiresAt createdAt url deliveryMode version";

  // ---- GraphQL over HTTP ------------------------------------------------------------------------

  function gql(query, variables) {
    return fetch("/graphql", {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
        "X-Photodrop-CSRF": csrf,
      },
      body: JSON.stringify({ query: query, variables: variables || {} }),
    }).then(function (response) {
      return response.json().then(function (payload) {
        var errors = payload.errors || [];
        if (errors.some(function (e) { return e.extensions && e.extensions.code === "UNAUTHENTICATED"; })) {
          window.location.assign(LOGIN);
        }
        if (errors.length) throw new Error(errors[0].message);
        return payload.data;
      });
    });
  }

  // ---- graphql-transport-ws ---------------------------------------------------------------------

  /* One websocket carrying every subscription of the page; it reconnects with back-off, subscribes
   * again, and asks the page to reload its state, since events may have passed while it was away. */
  function Live(onResync) {
    this.subs = {};
    this.next = 1;
    this.ws = null;
    this.ready = false;
    this.attempt = 0;
    this.connectedOnce = false;
    this.onResync = onResync;
    this.badge = document.getElementById("live");
  }

  Live.prototype.state = function (state, text) {
    if (!this.badge) return;
    this.badge.dataset.state = state;
    this.badge.textContent = text;
  };

  Live.prototype.connect = function () {
    var self = this;
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
    var ws = new WebSocket(url, "graphql-transport-ws");
    this.ws = ws;
    this.state("connecting", this.connectedOnce ? "Reconnecting…" : "Connecting…");
    ws.addEventListener("open", function () {
      ws.send(JSON.stringify({ type: "connection_init", payload: {} }));
    });
    ws.addEventListener("message", function (event) {
      self.receive(JSON.parse(event.data));
    });
    ws.addEventListener("close", function (event) {
      self.ready = false;
      if (event.code === 4403 || event.code === 4401) {
        window.location.assign(LOGIN);
        return;
      }
      self.state("offline", "Offline, retrying");
      var wait = Math.min(15000, 500 * Math.pow(2, self.attempt++));
      window.setTimeout(function () { self.connect(); }, wait);
    });
  };

  Live.prototype.send = function (message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  };

  Live.prototype.start = function (id) {
    var sub = this.subs[id];
    this.send({ id: id, type: "subscribe", payload: { query: sub.query, variables: sub.variables } });
  };

  Live.prototype.receive = function (message) {
    var sub = this.subs[message.id];
    switch (message.type) {
      case "connection_ack":
        this.ready = true;
        this.attempt = 0;
        for (var id in this.subs) this.start(id);
        this.state("live", "Live");
        if (this.connectedOnce && this.onResync) this.onResync();
        this.connectedOnce = true;
        body.dataset.live = "1";
        break;
      case "ping":
        this.send({ type: "pong" });
        break;
      case "next":
        if (sub && message.payload.data) sub.onNext(message.payload.data);
        break;
      case "error":
        if (sub) {
          delete this.subs[message.id];
          showError(message.payload && message.payload[0] ? message.payload[0].message : "live updates stopped");
        }
        break;
      case "complete":
        delete this.subs[message.id];
        break;
    }
  };

  Live.prototype.subscribe = function (query, variables, onNext) {
    var id = String(this.next++);
    this.subs[id] = { query: query, variables: variables, onNext: onNext };
    if (this.ready) this.start(id);
    return id;
  };

  // ---- little helpers ---------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) {
      if (name === "text") node.textContent = attrs[name];
      else if (name === "className") node.className = attrs[name];
      else node.setAttribute(name, attrs[name]);
    }
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function showError(text) {
    var box = document.getElementById("action-message") || document.getElementById("create-error");
    if (!box) return;
    box.textContent = text;
    box.className = "notice error";
    box.hidden = false;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + String(m).padStart(2, "0") + " min";
    return m + ":" + String(s).padStart(2, "0");
  }

  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(0) + " KB";
    return (n / 1048576).toFixed(1) + " MB";
  }

  var timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  /* The server says how many seconds are left; counting from our own clock's "now" keeps a
   * browser whose clock is off from showing a wrong countdown. */
  function withDeadline(session) {
    session.deadline = Date.now() + session.timeRemaining * 1000;
    return session;
  }

  function remainingText(session, suffix) {
    var status = session.status.toLowerCase();
    if (status === "completed") return "Completed";
    if (status === "expired") return "Expired";
    var left = (session.deadline - Date.now()) / 1000;
    return left > 0 ? duration(left) + (suffix === undefined ? " left" : suffix) : "Expiring…";
  }

  function tick(update) {
    update();
    window.setInterval(update, 1000);
  }

  // ---- the session list -------------------------------------------------------------------------

  function sessionsPage() {
    var list = document.getElementById("sessions");
    var empty = document.getElementById("empty");
    var summary = document.getElementById("summary");
    var known = {};

    function row(session) {
      var status = session.status.toLowerCase();
      var item = document.getElementById("row-" + session.id);
      if (!item) {
        item = el("li", { id: "row-" + session.id, "data-session-id": session.id });
        item.appendChild(el("a", { className: "id mono", href: "/dashboard/sessions/" + session.id, text: session.id }));
        item.appendChild(el("span", { className: "pill" }));
        var meta = el("div", { className: "meta" }, [
          el("span", { className: "uploads" }, [el("span", { className: "count" }), el("progress")]),
          el("span", { className: "remaining" }),
          el("span", { className: "since", text: "Created " + timeFormat.format(new Date(session.createdAt)) }),
          el("span", { className: "mode", text: session.deliveryMode.toLowerCase() }),
        ]);
        item.appendChild(meta);
      }
      item.dataset.status = status;
      var pill = item.querySelector(".pill");
      pill.dataset.status = status;
      pill.textContent = status;
      item.querySelector(".count").textContent = session.imageCount + " / " + session.maxImages + " photos";
      var bar = item.querySelector("progress");
      bar.max = session.maxImages;
      bar.value = session.imageCount;
      item.querySelector(".remaining").textContent = remainingText(session);
      return item;
    }

    function render() {
      var ids = Object.keys(known).sort().reverse(); // ids are time-ordered: newest first
      ids.forEach(function (id, position) {
        var item = row(known[id]);
        if (list.children[position] !== item) list.insertBefore(item, list.children[position] || null);
      });
      empty.hidden = ids.length > 0;
      var open = ids.filter(function (id) { return !TERMINAL[known[id].status.toLowerCase()]; }).length;
      summary.textContent = ids.length ? open + " open, " + (ids.length - open) + " closed" : "";
    }

    function upsert(session, flash) {
      var old = known[session.id];
      if (old && old.version > session.version) return;
      known[session.id] = withDeadline(session);
      render();
      var item = document.getElementById("row-" + session.id);
      if (flash && item) {
        item.classList.add("flash");
        window.setTimeout(function () { item.classList.remove("flash"); }, 50);
      }
    }

    function load() {
      return gql("query { sessions(first: 50) { edges { node { " + SESSION_FIELDS + " } } } }").then(function (data) {
        data.sessions.edges.forEach(function (edge) { upsert(edge.node, false); });
        body.dataset.loaded = "1";
      }).catch(function (error) { summary.textContent = "Could not load sessions: " + error.message; });
    }

    var live = new Live(load);
    // Subscribed before the first load, so nothing that happens in between is missed.
    live.subscribe("subscription { sessionsUpdated { " + SESSION_FIELDS + " } }", {}, function (data) {
      upsert(data.sessionsUpdated, true);
    });
    live.connect();
    load();
    tick(function () {
      Object.keys(known).forEach(function (id) {
        var item = document.getElementById("row-" + id);
        if (item) item.querySelector(".remaining").textContent = remainingText(known[id]);
      });
    });
    createForm(function (session) { upsert(session, true); });
  }

  function createForm(created) {
    var form = document.getElementById("create-form");
    var error = document.getElementById("create-error");
    var delivery = document.getElementById("delivery");
    var webhook = document.getElementById("webhook-field");
    delivery.addEventListener("change", function () {
      webhook.hidden = delivery.value !== "WEBHOOK";
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var data = new FormData(form);
      var input = {
        maxImages: parseInt(data.get("maxImages"), 10),
        expiresIn: parseInt(data.get("expiresIn"), 10),
        allowedMimeTypes: data.getAll("types"),
        deliveryMode: data.get("deliveryMode"),
      };
      if (input.allowedMimeTypes.indexOf("image/heic") >= 0) input.allowedMimeTypes.push("image/heif");
      if (input.deliveryMode === "WEBHOOK") input.webhookUrl = data.get("webhookUrl");
      if (data.get("password")) input.password = data.get("password");
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      error.hidden = true;
      var mutation = "mutation($input: CreateSessionInput!) { createSession(input: $input) { " +
        "session { " + SESSION_FIELDS + " } userErrors { field message } } }";
      gql(mutation, { input: input }).then(function (data) {
        var result = data.createSession;
        if (result.userErrors.length) throw new Error(result.userErrors[0].message);
        showCreated(result.session);
        created(result.session);
        form.querySelector("#password").value = "";
      }).catch(function (e) {
        error.textContent = e.message;
        error.hidden = false;
      }).then(function () { button.disabled = false; });
    });
    document.getElementById("copy-link").addEventListener("click", function () {
      var link = document.getElementById("created-link").href;
      var button = this;
      navigator.clipboard.writeText(link).then(function () { button.textContent = "Copied"; }, function () {
        button.textContent = "Select the link to copy it";
      });
    });
  }

  function showCreated(session) {
    var box = document.getElementById("created");
    document.getElementById("created-qr").src = "/v1/sessions/" + session.id + "/qr?format=svg&size=440";
    var link = document.getElementById("created-link");
    link.href = session.url;
    link.textContent = session.url;
    document.getElementById("created-open").href = "/dashboard/sessions/" + session.id;
    document.getElementById("created-card").href = "/dashboard/sessions/" + session.id + "/card";
    document.getElementById("copy-link").textContent = "Copy link";
    box.hidden = false;
    box.dataset.sessionId = session.id;
  }

  // ---- one session ------------------------------------------------------------------------------

  var DETAIL = "query($id: ID!) { session(id: $id) { " + SESSION_FIELDS + " images { id index filename " +
    "mimeType sizeBytes width height createdAt purgedAt deliveries { id kind status attempts lastError } } } }";

  function sessionPage() {
    var id = body.dataset.sessionId;
    var current = null;
    var photos = document.getElementById("photos");
    var complete = document.getElementById("complete");
    var message = document.getElementById("action-message");
    var loading = null;
    var again = false;

    function say(text) {
      message.textContent = text;
      message.className = "notice";
      message.hidden = false;
    }

    function showSession(session) {
      if (current && current.version > session.version) return;
      current = withDeadline(session);
      var status = session.status.toLowerCase();
      var pill = document.getElementById("status");
      pill.dataset.status = status;
      pill.textContent = status;
      document.getElementById("count").textContent = session.imageCount;
      document.getElementById("max").textContent = session.maxImages;
      var bar = document.getElementById("progress");
      bar.max = session.maxImages;
      bar.value = session.imageCount;
      document.getElementById("remaining").textContent = remainingText(session, "");
      complete.hidden = !!TERMINAL[status];
      body.dataset.status = status;
    }

    function delivery(d) {
      var status = d.status.toLowerCase();
      // A pulled photo waits for the client to fetch it rather than for photodrop to send it.
      var label = d.kind === "POLL" ? { pending: "awaiting pickup", sending: "lent out", succeeded: "picked up" }[status] : null;
      var item = el("li", { "data-delivery-id": d.id, "data-status": status }, [
        el("span", { className: "pill", "data-status": status, text: label || status }),
        el("span", { text: d.kind.toLowerCase() + (d.attempts ? " · " + d.attempts + (d.attempts > 1 ? " tries" : " try") : "") }),
      ]);
      if (status === "failed") {
        var retry = el("button", { type: "button", className: "retry", text: "Retry" });
        retry.addEventListener("click", function () { retryDelivery(d.id, retry); });
        item.appendChild(retry);
      }
      if (d.lastError && status !== "succeeded") item.appendChild(el("span", { className: "error", text: d.lastError }));
      return item;
    }

    function tile(image) {
      var item = document.getElementById("photo-" + image.id);
      if (!item) {
        item = el("li", { id: "photo-" + image.id, className: "photo", "data-image-id": image.id }, [
          el("div", { className: "frame" }),
          el("div", { className: "about" }, [
            el("span", { className: "name", text: "#" + (image.index + 1) + " " + image.filename, title: image.filename }),
            el("span", { className: "muted", text: image.width + " × " + image.height + " · " + bytes(image.sizeBytes) }),
          ]),
          el("ul", { className: "deliveries" }),
        ]);
      }
      var frame = item.querySelector(".frame");
      if (image.purgedAt && !frame.querySelector(".gone")) {
        frame.replaceChildren(el("span", { className: "gone", text: "Delivered; photodrop no longer keeps a copy" }));
      } else if (!image.purgedAt && !frame.firstChild) {
        frame.appendChild(el("img", {
          src: "/dashboard/images/" + image.id + "/thumbnail", alt: image.filename, loading: "lazy",
          width: "320", height: "240",
        }));
      }
      item.querySelector(".deliveries").replaceChildren.apply(item.querySelector(".deliveries"), image.deliveries.map(delivery));
      item.dataset.deliveries = image.deliveries.map(function (d) { return d.status.toLowerCase(); }).join(" ");
      return item;
    }

    function showImages(images) {
      images.forEach(function (image, position) {
        var item = tile(image);
        if (photos.children[position] !== item) photos.insertBefore(item, photos.children[position] || null);
      });
      document.getElementById("no-photos").hidden = images.length > 0;
    }

    /* Events only say that something changed; one query then reads the whole session, and a burst
     * of events while it runs costs one more query, not one each. */
    function refresh() {
      if (loading) {
        again = true;
        return loading;
      }
      loading = gql(DETAIL, { id: id }).then(function (data) {
        if (!data.session) return;
        showSession(data.session);
        showImages(data.session.images);
      }).catch(function (error) { say("Could not load the session: " + error.message); }).then(function () {
        loading = null;
        if (again) {
          again = false;
          refresh();
        }
      });
      return loading;
    }

    function retryDelivery(deliveryId, button) {
      button.disabled = true;
      gql("mutation($id: ID!) { retryDelivery(id: $id) { delivery { id status } userErrors { message } } }", { id: deliveryId })
        .then(function (data) {
          var result = data.retryDelivery;
          if (result.userErrors.length) throw new Error(result.userErrors[0].message);
          say("Delivery queued again.");
          refresh();
        })
        .catch(function (error) {
          button.disabled = false;
          showError(error.message);
        });
    }

    complete.addEventListener("click", function () {
      complete.disabled = true;
      gql("mutation($id: ID!) { completeSession(id: $id) { session { " + SESSION_FIELDS + " } userErrors { message } } }", { id: id })
        .then(function (data) {
          var result = data.completeSession;
          if (result.userErrors.length) throw new Error(result.userErrors[0].message);
          showSession(result.session);
          say("Session completed: it takes no more photos.");
        })
        .catch(function (error) { showError(error.message); })
        .then(function () { complete.disabled = false; });
    });

    var live = new Live(refresh);
    // The first message is the session as it is now: from then on nothing can be missed.
    live.subscribe("subscription($id: ID!) { sessionUpdated(id: $id) { " + SESSION_FIELDS + " } }", { id: id }, function (data) {
      var seen = current ? current.imageCount : -1;
      showSession(data.sessionUpdated);
      if (data.sessionUpdated.imageCount !== seen) refresh();
    });
    // Deliveries go on after the session closes, and only the event feed tells of them.
    live.subscribe("subscription($id: ID!) { events(sessionId: $id) { type } }", { id: id }, function (data) {
      if (data.events.type.indexOf("delivery.") === 0) refresh();
    });
    live.connect();
    refresh();
    tick(function () {
      if (current) document.getElementById("remaining").textContent = remainingText(current, "");
    });
  }

  // ---- the printable card -----------------------------------------------------------------------

  function cardPage() {
    document.getElementById("print").addEventListener("click", function () { window.print(); });
  }

  var pages = { sessions: sessionsPage, session: sessionPage, card: cardPage };
  if (pages[body.dataset.page]) pages[body.dataset.page]();
})();
