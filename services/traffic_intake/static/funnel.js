/*! funnel.js — Funnel's first-party tracking script. No dependencies, no third parties.
 *
 * Paste the snippet (served at /v1/snippet.js, or see the README) on every page. It queues
 * calls made before this script loads, then:
 *  - keeps an anonymous id in localStorage and a first-party cookie (funnel_aid);
 *  - sends `page` on load with context.page (path, referrer, search, title, url) and
 *    context.campaign (utm_* and click ids: gclid, fbclid, msclkid, ttclid, li_fat_id);
 *  - exposes funnel.track / page / identify / group / alias / consent / reset;
 *  - batches to /v1/batch as text/plain (no CORS preflight), retries with exponential
 *    backoff and jitter while offline, keeping the queue in localStorage (bounded);
 *  - on page hide flushes with navigator.sendBeacon, so a click right before leaving
 *    still arrives;
 *  - funnel.consent({analytics, marketing, advertising}) is sent with every event as
 *    context.consent.categoryPreferences; with analytics denied it keeps no id and sends
 *    nothing personal (no user id, traits, URL query or referrer).
 * Every event carries a messageId: intake drops a retried duplicate.
 */
(function (w, d) {
  "use strict";
  var stub = w.funnel || [];
  if (stub.ready) return;
  var VERSION = "1.0.0";
  var MAX_QUEUE = 200, BATCH = 50, BEACON_BYTES = 60000, FLUSH_MS = 1000;
  var script = d.currentScript;
  var host = (stub.host || (script && script.src ? new URL(script.src).origin : "")).replace(/\/$/, "");
  var key = stub.writeKey || (script && script.getAttribute("data-write-key")) || "";
  var KEYS = { aid: "funnel:aid", uid: "funnel:uid", queue: "funnel:queue", consent: "funnel:consent" };
  var CLICK_IDS = ["gclid", "fbclid", "msclkid", "ttclid", "li_fat_id"];

  function store(name, value) {
    try {
      if (value === undefined) w.localStorage.removeItem(name);
      else w.localStorage.setItem(name, JSON.stringify(value));
    } catch (e) { /* private mode or full: memory only */ }
  }
  function load(name) {
    try { var v = w.localStorage.getItem(name); return v === null ? undefined : JSON.parse(v); }
    catch (e) { return undefined; }
  }
  function cookie(name, value) {
    if (value === undefined) {
      var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
      return m ? decodeURIComponent(m[1]) : undefined;
    }
    d.cookie = name + "=" + encodeURIComponent(value) + "; path=/; max-age=31536000; SameSite=Lax" +
      (w.location.protocol === "https:" ? "; Secure" : "");
  }
  function uuid() {
    if (w.crypto && w.crypto.randomUUID) return w.crypto.randomUUID();
    var b = new Uint8Array(16); w.crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  var consent = load(KEYS.consent) || {};
  function allowed() { return consent.analytics !== false; }
  var ephemeral = uuid(); // the id used while analytics is denied: never stored
  function anonymousId() {
    if (!allowed()) return ephemeral;
    var id = load(KEYS.aid) || cookie("funnel_aid");
    if (!id) id = uuid();
    store(KEYS.aid, id); cookie("funnel_aid", id);
    return id;
  }
  var userId = load(KEYS.uid);

  function campaign() {
    var out = {}, q = new URLSearchParams(w.location.search);
    var utm = { utm_source: "source", utm_medium: "medium", utm_campaign: "name", utm_term: "term", utm_content: "content" };
    Object.keys(utm).forEach(function (k) { if (q.get(k)) out[utm[k]] = q.get(k); });
    CLICK_IDS.forEach(function (k) { if (q.get(k)) out[k] = q.get(k); });
    return out;
  }
  function page() {
    var personal = allowed();
    return {
      path: w.location.pathname,
      referrer: personal ? d.referrer : "",
      search: personal ? w.location.search : "",
      title: d.title,
      url: personal ? w.location.href : w.location.origin + w.location.pathname
    };
  }
  function context() {
    var c = {
      library: { name: "funnel.js", version: VERSION },
      page: page(),
      locale: w.navigator.language,
      userAgent: w.navigator.userAgent
    };
    var utm = campaign();
    if (Object.keys(utm).length) c.campaign = utm;
    if (Object.keys(consent).length) c.consent = { categoryPreferences: consent };
    return c;
  }

  var queue = (load(KEYS.queue) || []).slice(-MAX_QUEUE);
  var sending = false, failures = 0, timer = null;
  function save() { store(KEYS.queue, queue.length ? queue : undefined); }
  function enqueue(type, fields) {
    var e = { type: type, messageId: uuid(), timestamp: new Date().toISOString(), anonymousId: anonymousId(), context: context() };
    if (allowed() && userId) e.userId = userId;
    for (var k in fields) if (fields[k] !== undefined) e[k] = fields[k];
    if (!allowed()) { delete e.userId; delete e.traits; }
    queue.push(e);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE); // oldest go first
    save();
    schedule(queue.length >= BATCH ? 0 : FLUSH_MS);
  }
  function schedule(ms) {
    if (timer) return;
    timer = setTimeout(function () { timer = null; flush(); }, ms);
  }
  function body(events) {
    return JSON.stringify({ writeKey: key, sentAt: new Date().toISOString(), batch: events });
  }
  function flush() {
    if (sending || !queue.length) return;
    if (w.navigator.onLine === false) return; // the "online" event flushes
    sending = true;
    var events = queue.slice(0, BATCH);
    w.fetch(host + "/v1/batch", {
      method: "POST", body: body(events), keepalive: true, mode: "cors",
      credentials: "omit", headers: { "Content-Type": "text/plain" }
    }).then(function (r) {
      // 2xx: taken (or some rejected for good: resending cannot help); 4xx but 429:
      // a request that will never be accepted; 429 / 5xx: retry later.
      if (r.ok || (r.status >= 400 && r.status < 500 && r.status !== 429)) return true;
      throw new Error("HTTP " + r.status);
    }).then(function () {
      var sent = {}; events.forEach(function (e) { sent[e.messageId] = 1; });
      queue = queue.filter(function (e) { return !sent[e.messageId]; });
      save(); failures = 0; sending = false;
      if (queue.length) schedule(0);
    }, function () {
      sending = false; failures += 1;
      var ceiling = Math.min(60000, 1000 * Math.pow(2, failures));
      schedule(1000 + Math.random() * ceiling); // backoff with full jitter
    });
  }
  function beacon() {
    if (!queue.length || !w.navigator.sendBeacon) return;
    var events = queue.slice(0, BATCH);
    while (events.length > 1 && body(events).length > BEACON_BYTES) events.pop();
    if (w.navigator.sendBeacon(host + "/v1/batch", new Blob([body(events)], { type: "text/plain" }))) {
      // Handed to the browser, which sends it after the page is gone; kept here too
      // until the next page confirms nothing (intake drops the duplicate by messageId).
      var sent = {}; events.forEach(function (e) { sent[e.messageId] = 1; });
      queue = queue.filter(function (e) { return !sent[e.messageId]; });
      save();
    }
  }

  var api = {
    ready: true,
    page: function (name, properties) {
      if (typeof name === "object") { properties = name; name = undefined; }
      var p = page(), props = {};
      for (var k in p) props[k] = p[k];
      for (var j in properties || {}) props[j] = properties[j];
      enqueue("page", { name: name, properties: props });
    },
    track: function (event, properties) { enqueue("track", { event: String(event), properties: properties || {} }); },
    identify: function (id, traits) {
      if (typeof id === "object" && id !== null) { traits = id; id = undefined; }
      if (id !== undefined && id !== null && allowed()) { userId = String(id); store(KEYS.uid, userId); }
      enqueue("identify", { traits: traits || {} });
    },
    group: function (groupId, traits) { enqueue("group", { groupId: String(groupId), traits: traits || {} }); },
    alias: function (id, previousId) {
      if (!allowed()) return;
      enqueue("alias", { userId: String(id), previousId: previousId ? String(previousId) : (userId || anonymousId()) });
    },
    consent: function (preferences) {
      ["analytics", "marketing", "advertising"].forEach(function (p) {
        if (preferences && typeof preferences[p] === "boolean") consent[p] = preferences[p];
      });
      store(KEYS.consent, consent);
      if (!allowed()) { // forget what identifies the person here
        store(KEYS.aid); store(KEYS.uid); userId = undefined;
        cookie("funnel_aid", ""); d.cookie = "funnel_aid=; path=/; max-age=0";
      }
    },
    reset: function () { store(KEYS.aid); store(KEYS.uid); userId = undefined; cookie("funnel_aid", uuid()); },
    flush: flush,
    user: function () { return { anonymousId: anonymousId(), userId: userId }; }
  };

  w.addEventListener("online", function () { failures = 0; flush(); });
  w.addEventListener("pagehide", beacon);
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") beacon(); });

  // Calls made before the script loaded, in their order; then the page view.
  var earlier = Array.isArray(stub) ? stub.slice() : [];
  w.funnel = api;
  var pageCalled = false;
  earlier.forEach(function (call) {
    if (call[0] === "page") pageCalled = true;
    if (typeof api[call[0]] === "function") api[call[0]].apply(null, call.slice(1));
  });
  if (!pageCalled && !(script && script.getAttribute("data-no-page") !== null)) api.page();
  if (queue.length) schedule(0);
})(window, document);
