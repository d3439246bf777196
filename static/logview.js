/* trainhub's log viewer (templates/runs/_log.html). No framework, no innerHTML of log text: every
   piece of a log goes into the page as textContent. The page holds at most MAX_CHARS characters of log: blocks
   scrolled far away are dropped and read again by byte range when scrolled back to. */
(function () {
  "use strict";
  if (window.trainhubLogView) { window.trainhubLogView.scan(document); return; }

  var MAX_CHARS = 1024 * 1024; // log text the page holds at most (~30,000 lines of 35 characters)
  var BLOCK = 64 * 1024; // bytes one scroll step reads
  var NEAR = 120; // pixels from an edge that count as "at" it

  function countLines(text) {
    var n = 0;
    for (var i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) n++;
    return n;
  }

  function makeBlock(start, end, text, cls) {
    var span = document.createElement("span");
    span.className = "blk" + (cls ? " " + cls : "");
    span.dataset.start = String(start);
    span.dataset.end = String(end);
    span.dataset.lines = String(countLines(text));
    span.dataset.chars = String(text.length);
    span.textContent = text;
    return span;
  }

  function Viewer(view) {
    this.view = view;
    this.pre = view.querySelector("#log-lines");
    this.base = view.dataset.base;
    this.log = view.dataset.log;
    this.size = Number(view.dataset.size) || 0;
    this.liveEnd = Number(view.dataset.end) || 0;
    this.detached = false;
    this.loading = false;
    this.source = null;
    var first = this.pre.querySelector(".blk");
    if (first) {
      first.dataset.lines = String(countLines(first.textContent));
      first.dataset.chars = String(first.textContent.length);
    }
    this.pre.scrollTop = this.pre.scrollHeight;
    this.pre.addEventListener("scroll", this.onScroll.bind(this));
    view.addEventListener("click", this.onClick.bind(this));
    if (view.dataset.stream) this.stream(view.dataset.stream);
    var self = this;
    view.addEventListener("htmx:beforeCleanupElement", function (event) {
      if (event.target === view && self.source) self.source.close();
    });
  }

  Viewer.prototype.blocks = function () { return this.pre.querySelectorAll(".blk"); };
  Viewer.prototype.firstStart = function () {
    var b = this.pre.querySelector(".blk");
    return b ? Number(b.dataset.start) : this.liveEnd;
  };
  Viewer.prototype.lastEnd = function () {
    var all = this.blocks();
    return all.length ? Number(all[all.length - 1].dataset.end) : this.liveEnd;
  };
  Viewer.prototype.charCount = function () {
    var n = 0;
    this.blocks().forEach(function (b) { n += Number(b.dataset.chars) || 0; });
    return n;
  };
  Viewer.prototype.atBottom = function () {
    return this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < NEAR;
  };
  Viewer.prototype.url = function (path, params) {
    var q = "log=" + encodeURIComponent(this.log);
    Object.keys(params).forEach(function (k) { q += "&" + k + "=" + encodeURIComponent(params[k]); });
    return this.base + path + "?" + q;
  };
  Viewer.prototype.setOlderHint = function () {
    var hint = this.view.querySelector("#log-older");
    if (!hint) return;
    var start = this.firstStart();
    hint.textContent = start > 0 ? "Scroll up for older lines (" + start + " bytes before)" : "";
  };
  Viewer.prototype.setDetached = function (detached) {
    this.detached = detached;
    var button = this.view.querySelector("#log-to-end");
    if (button) button.hidden = !detached;
  };

  // Drop whole blocks from one end (never the one just added at the other) until the page
  // holds at most MAX_CHARS characters of log.
  Viewer.prototype.trim = function (fromTop) {
    var total = this.charCount();
    while (total > MAX_CHARS) {
      var all = this.blocks();
      if (all.length < 2) break;
      var victim = fromTop ? all[0] : all[all.length - 1];
      var height = victim.offsetHeight;
      total -= Number(victim.dataset.chars) || 0;
      victim.remove();
      if (fromTop) this.pre.scrollTop -= height;
      else this.setDetached(true);
    }
    this.setOlderHint();
  };

  Viewer.prototype.fetchBlock = function (params) {
    return fetch(this.url("/range", params), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); });
  };

  Viewer.prototype.loadOlder = function () {
    var start = this.firstStart();
    if (this.loading || start <= 0) return;
    this.loading = true;
    var self = this;
    this.fetchBlock({ before: start, size: BLOCK }).then(function (block) {
      if (block.end !== start || !block.text) return;
      var height = self.pre.scrollHeight;
      self.pre.insertBefore(makeBlock(block.start, block.end, block.text), self.pre.firstChild);
      self.pre.scrollTop += self.pre.scrollHeight - height;
      self.trim(false);
      self.setOlderHint();
    }).catch(function () {}).finally(function () { self.loading = false; });
  };

  Viewer.prototype.loadNewer = function () {
    var end = this.lastEnd();
    if (this.loading || !this.detached) return;
    this.loading = true;
    var self = this;
    this.fetchBlock({ after: end, size: BLOCK }).then(function (block) {
      self.size = block.fileSize;
      if (!block.text) { if (end >= self.liveEnd) self.setDetached(false); return; }
      self.pre.appendChild(makeBlock(block.start, block.end, block.text));
      self.trim(true);
      if (block.end >= Math.max(self.liveEnd, block.fileSize)) self.setDetached(false);
    }).catch(function () {}).finally(function () { self.loading = false; });
  };

  Viewer.prototype.onScroll = function () {
    if (this.pre.scrollTop < NEAR) this.loadOlder();
    else if (this.detached && this.atBottom()) this.loadNewer();
  };

  // Jump to a search result: the lines from its byte offset, the matching one marked.
  Viewer.prototype.jump = function (offset) {
    var self = this;
    this.fetchBlock({ after: offset, size: BLOCK }).then(function (block) {
      while (self.pre.firstChild) self.pre.removeChild(self.pre.firstChild);
      var cut = block.text.indexOf("\n") + 1 || block.text.length;
      var hit = makeBlock(block.start, block.start + new TextEncoder().encode(block.text.slice(0, cut)).length, block.text.slice(0, cut), "hit");
      self.pre.appendChild(hit);
      if (cut < block.text.length) self.pre.appendChild(makeBlock(Number(hit.dataset.end), block.end, block.text.slice(cut)));
      self.setDetached(block.end < Math.max(self.liveEnd, block.fileSize));
      self.setOlderHint();
      self.pre.scrollTop = 0;
      hit.scrollIntoView({ block: "nearest" });
    }).catch(function () {});
  };

  Viewer.prototype.onClick = function (event) {
    var jump = event.target.closest(".log-jump");
    if (jump) { this.jump(Number(jump.dataset.offset)); return; }
    if (event.target.closest(".log-close-results")) {
      var results = this.view.querySelector("#log-results");
      while (results.firstChild) results.removeChild(results.firstChild);
      return;
    }
    if (event.target.closest("#log-to-end")) this.reload();
  };

  Viewer.prototype.reload = function () {
    if (this.source) this.source.close();
    if (window.htmx) window.htmx.ajax("GET", this.url("", {}), { target: this.view, swap: "outerHTML" });
    else window.location.reload();
  };

  Viewer.prototype.stream = function (url) {
    var self = this;
    var source = new EventSource(url);
    this.source = source;
    source.addEventListener("log", function (event) {
      if (!document.body.contains(self.view)) { source.close(); return; }
      var block = JSON.parse(event.data);
      var previous = self.liveEnd;
      self.liveEnd = block.end;
      self.size = Math.max(self.size, block.fileSize);
      if (self.detached) return;
      var stick = self.atBottom();
      if (block.start > previous) {
        self.pre.appendChild(makeBlock(previous, block.start, "… " + (block.start - previous) + " bytes written too fast to show live: scroll up or download …\n", "gap"));
      }
      self.pre.appendChild(makeBlock(block.start, block.end, block.text));
      self.trim(true);
      if (stick) self.pre.scrollTop = self.pre.scrollHeight;
    });
    source.addEventListener("end", function (event) {
      source.close();
      var info = JSON.parse(event.data);
      var state = self.view.querySelector("#log-state");
      if (state) state.textContent = "run " + info.status;
      self.view.dataset.ended = info.status;
    });
  };

  function scan(root) {
    var scope = root && root.querySelectorAll ? root : document;
    var views = [];
    if (scope.id === "log-view") views.push(scope);
    scope.querySelectorAll("#log-view").forEach(function (v) { views.push(v); });
    views.forEach(function (v) {
      if (v.dataset.ready) return;
      v.dataset.ready = "1";
      v.trainhubViewer = new Viewer(v);
    });
  }

  window.trainhubLogView = { scan: scan };
  if (window.htmx) window.htmx.onLoad(scan);
  else document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) window.htmx.onLoad(scan);
    scan(document);
  });
  scan(document);
})();
