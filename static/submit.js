// The submit form: rows added on demand, a folder chosen in the browser packed into a .tar.gz here
// (ustar headers written by hand, gzip by CompressionStream), and the form sent with fetch so that
// a problem is shown beside its field while the chosen files stay chosen.
// A file of its own: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  var SKIPPED = [".git", "__pycache__"];
  var encoder = new TextEncoder();

  // --- the tar packer ---------------------------------------------------------------------

  // Where a file goes in the archive: its path below the chosen folder, or null to leave it out.
  function archivePath(file) {
    var parts = (file.webkitRelativePath || file.name).split("/");
    if (parts.length > 1) parts = parts.slice(1); // the chosen folder itself is the archive's root
    for (var i = 0; i < parts.length; i++) {
      if (SKIPPED.indexOf(parts[i]) >= 0) return null;
    }
    return parts.join("/");
  }

  function writeText(block, offset, length, text) {
    var bytes = encoder.encode(text);
    if (bytes.length > length) throw new Error("'" + text + "' is too long for a tar header");
    block.set(bytes, offset);
  }

  function octal(block, offset, length, value) {
    // length - 1 octal digits and a NUL, as ustar writes numbers.
    var digits = value.toString(8);
    while (digits.length < length - 1) digits = "0" + digits;
    writeText(block, offset, length, digits + "\0");
  }

  // ustar keeps a path of up to 100 bytes in "name", longer ones split at a "/" into "prefix"
  // (up to 155 bytes) and "name".
  function splitPath(path) {
    var bytes = encoder.encode(path);
    if (bytes.length <= 100) return ["", path];
    for (var i = path.length - 1; i > 0; i--) {
      if (path[i] !== "/") continue;
      var prefix = path.slice(0, i), name = path.slice(i + 1);
      if (encoder.encode(prefix).length <= 155 && encoder.encode(name).length <= 100 && name) {
        return [prefix, name];
      }
    }
    throw new Error("The path '" + path + "' is too long for a tar archive (ustar)");
  }

  function header(path, size, mtime) {
    var block = new Uint8Array(512);
    var split = splitPath(path);
    writeText(block, 0, 100, split[1]);
    octal(block, 100, 8, 420); // mode 0644
    octal(block, 108, 8, 0); // uid
    octal(block, 116, 8, 0); // gid
    octal(block, 124, 12, size);
    octal(block, 136, 12, Math.floor(mtime / 1000));
    writeText(block, 148, 8, "        "); // the checksum counts its own field as spaces
    writeText(block, 156, 1, "0"); // a regular file
    writeText(block, 257, 6, "ustar\0");
    writeText(block, 263, 2, "00");
    writeText(block, 345, 155, split[0]);
    var sum = 0;
    for (var i = 0; i < 512; i++) sum += block[i];
    var digits = sum.toString(8);
    while (digits.length < 6) digits = "0" + digits;
    writeText(block, 148, 8, digits + "\0 ");
    return block;
  }

  // A .tar.gz Blob of the chosen files; the files' bytes are read only while it is compressed.
  function pack(files) {
    var parts = [];
    var count = 0;
    files.forEach(function (file) {
      var path = archivePath(file);
      if (path === null) return;
      parts.push(header(path, file.size, file.lastModified || Date.now()));
      parts.push(file);
      var pad = (512 - (file.size % 512)) % 512;
      if (pad) parts.push(new Uint8Array(pad));
      count += 1;
    });
    parts.push(new Uint8Array(1024)); // two empty blocks end the archive
    if (!("CompressionStream" in window)) {
      return Promise.reject(new Error("This browser cannot pack a folder: choose a .tar.gz archive instead"));
    }
    var gz = new Blob(parts).stream().pipeThrough(new CompressionStream("gzip"));
    return new Response(gz).blob().then(function (blob) {
      return { blob: blob, count: count };
    });
  }

  function kept(files) {
    return files.filter(function (f) { return archivePath(f) !== null; });
  }

  // --- the form ---------------------------------------------------------------------------

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || "";
    } catch (e) {
      return "";
    }
  }

  function showError(message) {
    var box = document.getElementById("submit-error");
    box.textContent = message;
    box.hidden = !message;
    if (message) box.focus();
  }

  function setUp(form) {
    var folderBox = document.getElementById("source-folder-box");
    var folder = document.getElementById("source-folder");
    var archive = document.getElementById("source-archive");
    var summary = document.getElementById("source-folder-summary");
    var progress = document.getElementById("submit-progress");
    var button = document.getElementById("submit-button");
    folderBox.hidden = false;

    folder.addEventListener("change", function () {
      var all = Array.prototype.slice.call(folder.files);
      var chosen = kept(all);
      var left = all.length - chosen.length;
      summary.textContent = all.length
        ? chosen.length + " files to pack" + (left ? " (" + left + " in .git or __pycache__ left out)" : "")
        : "";
      if (all.length) archive.value = "";
    });
    archive.addEventListener("change", function () {
      if (archive.files.length) {
        folder.value = "";
        summary.textContent = "";
      }
    });

    Array.prototype.forEach.call(form.querySelectorAll("button.add-row"), function (add) {
      add.hidden = false;
      add.addEventListener("click", function () {
        var rows = document.getElementById(add.dataset.rows).querySelectorAll(".pair");
        var last = rows[rows.length - 1];
        var row = last.cloneNode(true);
        Array.prototype.forEach.call(row.querySelectorAll("input"), function (input) {
          input.value = "";
          input.setAttribute("aria-label", input.getAttribute("aria-label").replace(/\d+$/, String(rows.length + 1)));
        });
        last.after(row);
        row.querySelector("input").focus();
      });
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var files = Array.prototype.slice.call(folder.files || []);
      button.disabled = true;
      showError("");
      var packed = files.length && !archive.files.length
        ? (progress.textContent = "Packing " + kept(files).length + " files…", pack(files))
        : Promise.resolve(null);
      packed
        .then(function (result) {
          var data = new FormData(form);
          if (result) {
            var top = (files[0].webkitRelativePath || "source").split("/")[0] || "source";
            data.set("source_archive", result.blob, top + ".tar.gz");
          }
          progress.textContent = "Sending…";
          return fetch(form.action, {
            method: "POST",
            body: data,
            credentials: "same-origin",
            headers: { "x-csrftoken": csrfToken(), "HX-Request": "true" },
          });
        })
        .then(function (response) {
          var where = response.headers.get("HX-Redirect");
          if (where) {
            progress.textContent = "Submitted.";
            window.location.assign(where);
            return null;
          }
          return response.text().then(function (html) { showAnswer(form, response.status, html); });
        })
        .catch(function (error) {
          showError(error.message || String(error));
        })
        .then(function () {
          button.disabled = false;
          if (progress.textContent !== "Submitted.") progress.textContent = "";
        });
    });
  }

  // The server's answer to a form with a problem: the same form with the messages beside the
  // fields. It replaces this one, keeping the files chosen here.
  function showAnswer(form, status, html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.getElementById("submit-form");
    if (!fresh) {
      var message = doc.getElementById("error-message");
      showError((message ? message.textContent : "The server answered " + status).trim());
      return;
    }
    ["source-archive", "source-folder"].forEach(function (id) {
      var mine = document.getElementById(id);
      var theirs = fresh.querySelector("#" + id);
      if (mine && theirs) {
        ["aria-invalid", "aria-describedby"].forEach(function (attr) {
          if (theirs.hasAttribute(attr)) mine.setAttribute(attr, theirs.getAttribute(attr));
          else mine.removeAttribute(attr);
        });
        theirs.replaceWith(mine);
      }
    });
    var summary = document.getElementById("source-folder-summary");
    var theirSummary = fresh.querySelector("#source-folder-summary");
    if (summary && theirSummary) theirSummary.replaceWith(summary);
    var general = doc.getElementById("submit-error");
    form.replaceWith(fresh);
    setUp(fresh);
    showError(general && !general.hidden ? general.textContent.trim() : "");
    var first = fresh.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("submit-form");
    if (form) setUp(form);
  });

  // For tests and the curious: pack(files) -> Promise of {blob, count}.
  window.trainhubPack = pack;
})();
